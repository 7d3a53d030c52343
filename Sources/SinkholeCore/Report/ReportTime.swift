import Glibc

/// Times in the block log and in `sinkhole report --since/--until`, as milliseconds since the
/// Unix epoch (UTC). Parsing and formatting are done by hand: the log's `@timestamp` is parsed
/// once per line, so it must be cheap, and the result must not depend on the local time zone.
public enum ReportTime {
    public static let millisecondsPerDay: Int64 = 86_400_000

    /// Parses an RFC 3339 date-time: `2026-11-26T21:00:30.875Z`, `2026-11-26T22:00:30+01:00`.
    /// Lenient where that cannot mislead: `t` or a space for `T`, `z` for `Z`, seconds may be
    /// left out, any number of fraction digits (truncated to milliseconds), and no offset at all
    /// means UTC. Nil when the text is not such a time or names an impossible date.
    public static func parse(_ text: String) -> Int64? {
        var text = text
        return text.withUTF8 { parse(UnsafeRawBufferPointer($0)) }
    }

    /// As `parse(_:)`, on the bytes of a line.
    public static func parse(_ b: UnsafeRawBufferPointer) -> Int64? {
        let n = b.count
        var i = 0
        func digits(_ count: Int) -> Int? {
            guard i + count <= n else { return nil }
            var v = 0
            for k in i..<(i + count) {
                let d = Int(b[k]) &- 48
                guard d >= 0, d <= 9 else { return nil }
                v = v * 10 + d
            }
            i += count
            return v
        }
        func expect(_ c: UInt8) -> Bool {
            guard i < n, b[i] == c else { return false }
            i += 1
            return true
        }
        guard let year = digits(4), expect(0x2D), let month = digits(2), expect(0x2D), let day = digits(2) else { return nil }
        guard month >= 1, month <= 12, day >= 1, day <= daysInMonth(year: year, month: month) else { return nil }
        guard i < n, b[i] == UInt8(ascii: "T") || b[i] == UInt8(ascii: "t") || b[i] == UInt8(ascii: " ") else { return nil }
        i += 1
        guard let hour = digits(2), expect(0x3A), let minute = digits(2) else { return nil }
        var second = 0
        if expect(0x3A) {
            guard let s = digits(2) else { return nil }
            second = s
        }
        guard hour <= 23, minute <= 59, second <= 60 else { return nil }
        second = min(second, 59)   // a leap second counts as the last second of its minute
        var millis = 0
        if expect(0x2E) {
            var count = 0
            while i < n, b[i] >= 0x30, b[i] <= 0x39 {
                if count < 3 { millis = millis * 10 + Int(b[i] - 0x30) }
                count += 1
                i += 1
            }
            guard count > 0 else { return nil }
            for _ in count..<max(count, 3) { millis *= 10 }
        }
        var offsetMinutes = 0
        if i < n {
            switch b[i] {
            case UInt8(ascii: "Z"), UInt8(ascii: "z"):
                i += 1
            case UInt8(ascii: "+"), UInt8(ascii: "-"):
                let sign = b[i] == UInt8(ascii: "-") ? -1 : 1
                i += 1
                guard let oh = digits(2), expect(0x3A), let om = digits(2), oh <= 23, om <= 59 else { return nil }
                offsetMinutes = sign * (oh * 60 + om)
            default:
                return nil
            }
        }
        guard i == n else { return nil }
        let days = daysFromCivil(year: year, month: month, day: day)
        let seconds = Int64(hour * 3600 + minute * 60 + second - offsetMinutes * 60)
        return days * millisecondsPerDay + seconds * 1000 + Int64(millis)
    }

    /// Midnight UTC at the start of a `YYYY-MM-DD` date, or nil.
    public static func parseDate(_ text: String) -> Int64? {
        let u = Array(text.utf8)
        guard u.count == 10, u[4] == 0x2D, u[7] == 0x2D else { return nil }
        func number(_ r: Range<Int>) -> Int? {
            var v = 0
            for k in r {
                let d = Int(u[k]) &- 48
                guard d >= 0, d <= 9 else { return nil }
                v = v * 10 + d
            }
            return v
        }
        guard let year = number(0..<4), let month = number(5..<7), let day = number(8..<10),
              month >= 1, month <= 12, day >= 1, day <= daysInMonth(year: year, month: month) else { return nil }
        return daysFromCivil(year: year, month: month, day: day) * millisecondsPerDay
    }

    /// A duration such as `30m`, `24h`, `7d` (also `s` and `w`), in milliseconds, or nil.
    public static func parseDuration(_ text: String) -> Int64? {
        guard let unit = text.last, let value = Int64(text.dropLast()), value >= 0 else { return nil }
        let scale: Int64
        switch unit {
        case "s": scale = 1000
        case "m": scale = 60_000
        case "h": scale = 3_600_000
        case "d": scale = millisecondsPerDay
        case "w": scale = 7 * millisecondsPerDay
        default: return nil
        }
        let (product, overflow) = value.multipliedReportingOverflow(by: scale)
        return overflow ? nil : product
    }

    public enum BoundError: Error, CustomStringConvertible, Equatable {
        case unrecognised(String)
        public var description: String {
            switch self {
            case .unrecognised(let text):
                return "'\(text)' is not a time: use RFC 3339 (2026-11-26T10:00:00Z), a date (2026-11-26) or a duration before now (30m, 24h, 7d)"
            }
        }
    }

    /// The instant meant by a `--since` or `--until` value: an RFC 3339 time, a `YYYY-MM-DD`
    /// date (UTC), or a duration meaning that long before `now`. A date given as the upper bound
    /// means the end of that day, so `--since D --until D` covers all of day D.
    public static func bound(_ text: String, now: Int64, upper: Bool) throws(BoundError) -> Int64 {
        let trimmed = trimmed(text)
        if trimmed == "now" { return now }
        if let duration = parseDuration(trimmed) { return now - duration }
        if let midnight = parseDate(trimmed) { return upper ? midnight + millisecondsPerDay : midnight }
        if let time = parse(trimmed) { return time }
        throw .unrecognised(text)
    }

    /// The current time.
    public static func now() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec / 1_000_000)
    }

    /// `2026-11-26T21:00:30.875Z`, the block log's own form.
    public static func format(_ ms: Int64) -> String {
        let days = floorDiv(ms, millisecondsPerDay)
        let rest = ms - days * millisecondsPerDay
        let (year, month, day) = civilFromDays(days)
        let seconds = Int(rest / 1000)
        let millis = Int(rest % 1000)
        func pad(_ v: Int, _ width: Int) -> String {
            let s = String(v)
            return String(repeating: "0", count: max(0, width - s.count)) + s
        }
        return "\(pad(year, 4))-\(pad(month, 2))-\(pad(day, 2))T\(pad(seconds / 3600, 2)):\(pad(seconds / 60 % 60, 2)):"
            + "\(pad(seconds % 60, 2)).\(pad(millis, 3))Z"
    }

    static func trimmed(_ text: String) -> String {
        let u = Array(text.utf8)
        var start = 0
        var end = u.count
        while start < end, u[start] == 0x20 || u[start] == 0x09 { start += 1 }
        while end > start, u[end - 1] == 0x20 || u[end - 1] == 0x09 { end -= 1 }
        return String(decoding: u[start..<end], as: UTF8.self)
    }

    static func floorDiv(_ a: Int64, _ b: Int64) -> Int64 {
        let q = a / b
        return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q
    }

    static func isLeap(_ year: Int) -> Bool { (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 }

    static func daysInMonth(year: Int, month: Int) -> Int {
        switch month {
        case 2: return isLeap(year) ? 29 : 28
        case 4, 6, 9, 11: return 30
        default: return 31
        }
    }

    /// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
    static func daysFromCivil(year: Int, month: Int, day: Int) -> Int64 {
        let y = Int64(month <= 2 ? year - 1 : year)
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let m = Int64(month)
        let doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + Int64(day) - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }

    static func civilFromDays(_ days: Int64) -> (year: Int, month: Int, day: Int) {
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let day = doy - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        let year = yoe + era * 400 + (month <= 2 ? 1 : 0)
        return (Int(year), Int(month), Int(day))
    }
}
