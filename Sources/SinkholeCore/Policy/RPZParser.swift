import CLdns
import Glibc

/// Reads an RPZ zone file (the format Spamhaus, URLhaus and commercial feeds publish) record by
/// record with ldns's zone-file reader (`ldns_rr_new_frm_fp_l`, which handles `$ORIGIN`, `$TTL`,
/// parentheses and relative names), and turns QNAME triggers into rules:
///
/// | record                          | rule                                  |
/// |---------------------------------|---------------------------------------|
/// | `name CNAME .`                  | NXDOMAIN for `name`                   |
/// | `name CNAME *.`                 | NODATA for `name`                     |
/// | `name CNAME rpz-passthru.`      | allow `name`                          |
/// | `name CNAME rpz-drop.`          | no answer for `name`                  |
/// | `name A/AAAA addr`              | answer with that address (local data) |
/// | `*.name ...`                    | the same for names below `name`       |
///
/// Trigger names are relative to the zone's origin (the SOA owner or `$ORIGIN`). A record that
/// ldns cannot parse, or a trigger we do not support (rpz-ip, rpz-nsdname, rpz-client-ip,
/// rpz-nsip, a CNAME to another name), is skipped and reported with its line.
enum RPZParser {
    static let unsupportedTriggers = ["rpz-nsdname", "rpz-nsip", "rpz-client-ip"]

    /// Follows a zone file's parentheses, fed its bytes a chunk at a time, outside quotes and
    /// `;` comments. ldns joins the lines of a `(` until its `)`: one that never closes (a `(`
    /// typed for a quote, or `((`) makes every record after it part of the bad one, and they
    /// were lost with only a line of warning naming another record. BIND, Knot and Unbound
    /// refuse such a zone and keep serving the one they have; so does sinkhole (`unclosedLine`).
    struct Parentheses {
        private var depth = 0
        private var line = 1
        private var inQuote = false
        private var inComment = false
        private var escaped = false
        /// The line of the outermost `(` still open.
        private var openedAt = 0

        mutating func feed(_ bytes: UnsafeBufferPointer<UInt8>) {
            for b in bytes {
                if b == UInt8(ascii: "\n") {
                    line += 1
                    inComment = false
                    escaped = false
                    continue
                }
                if inComment { continue }
                if escaped { escaped = false; continue }
                switch b {
                case UInt8(ascii: "\\"): escaped = true
                case UInt8(ascii: "\""): inQuote.toggle()
                case _ where inQuote: break
                case UInt8(ascii: ";"): inComment = true
                case UInt8(ascii: "("):
                    if depth == 0 { openedAt = line }
                    depth += 1
                case UInt8(ascii: ")"): depth = max(0, depth - 1)
                default: break
                }
            }
        }

        /// At the end of the file: the line of a `(` never closed, nil when all are.
        var unclosedLine: Int? { depth > 0 ? openedAt : nil }
    }

    /// Follows a zone file's bytes forward to tell the line a record starts on: the first line at
    /// or after an offset that is neither blank nor only a `;` comment.
    struct LineCounter {
        private let fp: UnsafeMutablePointer<FILE>
        private var offset: off_t = 0
        private var line = 1
        /// The current line holds only spaces and tabs so far.
        private var blankSoFar = true
        /// Where the first non-blank line found by the last call starts, and its number: a later
        /// call at or before that offset finds it again.
        private var found: (offset: off_t, line: Int)?

        init?(path: String) {
            guard let fp = fopen(path, "r") else { return nil }
            self.fp = fp
        }

        /// Closes the file; the counter is not used after this.
        func close() { fclose(fp) }

        mutating func firstRecordLine(from start: off_t) -> Int? {
            guard start >= 0 else { return nil }
            if let found, start <= found.offset { return found.line }
            // Count the newlines up to `start`.
            while offset < start {
                let c = getc_unlocked(fp)
                if c == EOF { return nil }
                offset += 1
                if c == 0x0A { line += 1; blankSoFar = true } else if c != 0x20 && c != 0x09 && c != 0x0D { blankSoFar = false }
            }
            // Then skip lines that are blank or only a comment. A line already begun counts as the
            // record's when it holds more than spaces before `start` (ldns stopped mid-line).
            if !blankSoFar { return line }
            var lineStart = offset
            var inComment = false
            while true {
                let c = getc_unlocked(fp)
                if c == EOF { return line }
                offset += 1
                switch c {
                case 0x0A:
                    line += 1
                    lineStart = offset
                    inComment = false
                case 0x20, 0x09, 0x0D: continue
                case 0x3B where !inComment: inComment = true   // ';'
                default:
                    if inComment { continue }
                    blankSoFar = false
                    found = (lineStart, line)
                    return line
                }
            }
        }
    }

    /// The text of 1-based line `n` of `bytes`, for error messages.
    static func lineText(_ bytes: [UInt8], _ n: Int) -> String {
        var line = 1
        var start = 0
        for (i, b) in bytes.enumerated() where b == UInt8(ascii: "\n") {
            if line == n { return String(decoding: bytes[start..<i], as: UTF8.self).trimmingSpace }
            line += 1
            start = i + 1
        }
        return line == n ? String(decoding: bytes[start...], as: UTF8.self).trimmingSpace : ""
    }

    static func parse(
        path: String, file: String, lineText: (Int) -> String,
        add: (_ name: [UInt8], _ kind: DomainMatcher.Kind, _ line: Int, _ local: LocalRecord?) -> Void,
        addAddress: (_ address: [UInt8], _ prefix: Int, _ action: DomainMatcher.Action, _ line: Int) -> Void = { _, _, _, _ in },
        note: (String) -> Void = { _ in },
        reject: (ListLineError) -> Void
    ) -> Bool {
        guard let fp = fopen(path, "r") else { return false }
        defer { fclose(fp) }
        var defaultTTL: UInt32 = 3600
        var origin: UnsafeMutablePointer<ldns_rdf>?
        var previous: UnsafeMutablePointer<ldns_rdf>?
        var lineNumber: Int32 = 0
        // ldns's own line count drifts after a record in parentheses (the records after one were
        // reported a line early or late), and names a record's last line: the line of each
        // record's first token is counted here instead, by a reader of the same file that
        // follows ldns's position.
        var lines = LineCounter(path: path)
        defer {
            lines?.close()
            if let origin { ldns_rdf_deep_free(origin) }
            if let previous { ldns_rdf_deep_free(previous) }
        }
        var zoneOrigin: [UInt8]?   // lowercase wire, with root byte
        var badRecords = 0
        // An `@ SOA` with no $ORIGIN before it is owned by the root: the zone's name came from
        // the server's configuration (BIND's named.conf), and triggers written under it in full
        // (`evil.example.rpz.feed.example.`) are read as whole names, each blocking only itself.
        // Said when they end in the SOA's server name, which is most often the zone's.
        var rootSOAServer: [UInt8]?
        var underRootSOAServer = 0
        var firstUnderRootSOAServer = ""
        defer {
            if let server = rootSOAServer, underRootSOAServer > 0 {
                let zone = WireName.text(server)
                note("the SOA is owned by the root (no $ORIGIN before it), and \(LogText.count(underRootSOAServer, "trigger")) end in its server name \(zone). (the first: \(firstUnderRootSOAServer)): they are read as whole names, each blocking only itself; if \(zone). is the zone's name, add '$ORIGIN \(zone).' as the first line")
            }
        }
        while feof(fp) == 0 {
            var rr: UnsafeMutablePointer<ldns_rr>?
            let start = ftello(fp)
            let status = ldns_rr_new_frm_fp_l(&rr, fp, &defaultTTL, &origin, &previous, &lineNumber)
            let line = lines?.firstRecordLine(from: start) ?? max(1, Int(lineNumber))
            switch status {
            case LDNS_STATUS_OK:
                break
            case LDNS_STATUS_SYNTAX_EMPTY, LDNS_STATUS_SYNTAX_TTL, LDNS_STATUS_SYNTAX_ORIGIN,
                 LDNS_STATUS_SYNTAX_INCLUDE:
                continue
            default:
                badRecords += 1
                let reason = String(cString: ldns_get_errorstr_by_id(status))
                reject(ListLineError(file: file, line: line, reason: "not a valid zone-file record: \(reason)",
                                     text: lineText(line)))
                if badRecords > 10_000 { return true }
                continue
            }
            guard let rr else { continue }
            defer { ldns_rr_free(rr) }
            // ldns reads TYPEnnn with any number; a record type is 16 bits (TYPE922001 is not one).
            guard let type = UInt16(exactly: ldns_rr_get_type(rr).rawValue) else {
                badRecords += 1
                reject(ListLineError(file: file, line: line, reason: "record type out of range (at most TYPE65535)",
                                     text: lineText(line)))
                continue
            }
            guard let ownerRdf = ldns_rr_owner(rr), let ownerData = ldns_rdf_data(ownerRdf) else { continue }
            let owner = WireName.lowercased(Array(UnsafeBufferPointer(start: ownerData, count: ldns_rdf_size(ownerRdf))))
            if type == RRType.soa || type == 2 /* NS */ {
                // An `@ SOA` before any $ORIGIN is owned by the root: not the zone's apex, which
                // the $ORIGIN its triggers are written under then gives (they were read as
                // `evil.example.rpz.threat.example`, blocking nothing, with nothing said).
                if type == RRType.soa && zoneOrigin == nil && owner.count > 1 { zoneOrigin = owner }
                if type == RRType.soa, owner.count == 1, rootSOAServer == nil, zoneOrigin == nil || zoneOrigin == [0],
                   let server = ldns_rr_rdf(rr, 0), let data = ldns_rdf_data(server), ldns_rdf_size(server) > 1 {
                    rootSOAServer = WireName.lowercased(Array(UnsafeBufferPointer(start: data, count: ldns_rdf_size(server))))
                }
                continue
            }
            if zoneOrigin == nil, let origin, let data = ldns_rdf_data(origin) {
                // No SOA (yet): the $ORIGIN in force is the zone apex.
                zoneOrigin = WireName.lowercased(Array(UnsafeBufferPointer(start: data, count: ldns_rdf_size(origin))))
            }
            var name = owner
            if let zoneOrigin, zoneOrigin.count > 1 {
                if name == zoneOrigin {
                    reject(ListLineError(file: file, line: line, reason: "a trigger for the zone apex itself",
                                         text: WireName.text(name)))
                    continue
                }
                if name.count > zoneOrigin.count, name.suffix(zoneOrigin.count).elementsEqual(zoneOrigin) {
                    name = Array(name.prefix(name.count - zoneOrigin.count)) + [0]
                }
            }
            if let server = rootSOAServer, name.count > server.count,
               name.withUnsafeBufferPointer({ WireName.isWithin($0, zone: server) }) {
                if underRootSOAServer == 0 { firstUnderRootSOAServer = WireName.text(name) }
                underRootSOAServer += 1
            }
            var scope = DomainMatcher.Scope.exact
            if name.count >= 2, name[0] == 1, name[1] == UInt8(ascii: "*") {
                scope = .below
                name = Array(name.dropFirst(2))
            }
            let nameText = WireName.text(name)
            if nameText.hasSuffix(".rpz-ip") {
                // Response IP trigger: the answer holds an address in this range.
                let labels = nameText.dropLast(".rpz-ip".count).split(separator: ".")
                guard let (address, prefix) = IPPrefixSet.parseRPZTrigger(labels) else {
                    reject(ListLineError(file: file, line: line, reason: "not a valid rpz-ip trigger", text: nameText))
                    continue
                }
                var action = DomainMatcher.Action.nxdomain
                if type == RRType.cname, let target = ldns_rr_rdf(rr, 0), let data = ldns_rdf_data(target) {
                    switch WireName.text(WireName.lowercased(Array(UnsafeBufferPointer(start: data, count: ldns_rdf_size(target))))) {
                    case ".": action = .nxdomain
                    case "*": action = .nodata
                    case "rpz-passthru": action = .allow
                    case "rpz-drop": action = .drop
                    default:
                        reject(ListLineError(file: file, line: line, reason: "rpz-ip with a CNAME redirect is not supported", text: nameText))
                        continue
                    }
                } else {
                    reject(ListLineError(file: file, line: line, reason: "rpz-ip triggers need a CNAME action", text: nameText))
                    continue
                }
                addAddress(address, prefix, action, line)
                continue
            }
            if let trigger = unsupportedTriggers.first(where: { name.count > 1 && WireName.text(name).hasSuffix("." + $0) }) {
                reject(ListLineError(file: file, line: line, reason: "\(trigger) triggers are not supported", text: nameText))
                continue
            }
            func fail(_ reason: String) {
                reject(ListLineError(file: file, line: line, reason: reason, text: nameText))
            }
            guard name.count > 1 else { fail("a trigger for the zone apex itself"); continue }
            switch type {
            case RRType.cname:
                guard let target = ldns_rr_rdf(rr, 0), let data = ldns_rdf_data(target) else { continue }
                let wire = WireName.lowercased(Array(UnsafeBufferPointer(start: data, count: ldns_rdf_size(target))))
                switch WireName.text(wire) {
                case ".": add(name, .init(scope, .nxdomain), line, nil)
                case "*": add(name, .init(scope, .nodata), line, nil)
                case "rpz-passthru": add(name, .init(scope, .allow), line, nil)
                case "rpz-drop": add(name, .init(scope, .drop), line, nil)
                case "rpz-tcp-only": fail("rpz-tcp-only is not supported")
                default: fail("CNAME to another name (a redirect) is not supported")
                }
            case RRType.a, RRType.aaaa:
                guard let rdf = ldns_rr_rdf(rr, 0), let data = ldns_rdf_data(rdf) else { continue }
                let address = Array(UnsafeBufferPointer(start: data, count: ldns_rdf_size(rdf)))
                add(name, .init(scope, .localData), line, LocalRecord(type: type, rdata: address))
            default:
                fail("\(RRType.name(type)) records are not an RPZ action sinkhole supports")
            }
        }
        return true
    }
}
