/// How a report is written.
public enum ReportFormat: String, Sendable, CaseIterable {
    /// Aligned columns for people.
    case table
    /// One JSON array of objects, snake_case keys; counts are numbers, times RFC 3339 strings,
    /// lists are arrays.
    case json
    /// RFC 4180: a header row, CRLF line ends, fields quoted when they hold `,` `"` CR or LF;
    /// text from the log that a spreadsheet would take for a formula is prefixed with `'`.
    case csv
}

public enum ReportFormatter {
    public static func render(_ table: ReportTable, as format: ReportFormat) -> String {
        switch format {
        case .table: return text(table)
        case .json: return json(table)
        case .csv: return csv(table)
        }
    }

    /// A cell as plain text (table and CSV).
    static func plain(_ value: ReportValue) -> String {
        switch value {
        case .text(let s): return s
        case .count(let n): return String(n)
        case .time(let t): return ReportTime.format(t)
        case .texts(let items): return items.joined(separator: ", ")
        case .counts(let items): return items.map { "\($0.name) (\($0.count))" }.joined(separator: ", ")
        }
    }

    static func noun(_ grouping: ReportGrouping, _ count: Int) -> String {
        let s = count == 1 ? "" : "s"
        switch grouping {
        case .client: return "client" + s
        case .domain: return "domain" + s
        case .list: return "list" + s
        }
    }

    /// Columns padded to their widest cell, two spaces apart, counts right-aligned. Control
    /// characters in names (possible only in a hand-made log) are shown as `\DDD`, never sent
    /// to the terminal.
    public static func text(_ table: ReportTable) -> String {
        guard !table.rows.isEmpty else { return "no blocked attempts match\n" }
        let cells = table.rows.map { $0.map { safeForTerminal(plain($0)) } }
        let rightAligned = table.columns.indices.map { c -> Bool in
            if case .count? = table.rows.first?[c] { return true }
            return false
        }
        // Width in Unicode scalars: names are ASCII in practice, and counting graphemes is slow.
        var widths = table.columns.map { $0.title.unicodeScalars.count }
        for row in cells {
            for (c, cell) in row.enumerated() where c < widths.count { widths[c] = max(widths[c], cell.unicodeScalars.count) }
        }
        func line(_ row: [String]) -> String {
            var out = ""
            for (c, cell) in row.enumerated() {
                let pad = String(repeating: " ", count: max(0, widths[c] - cell.unicodeScalars.count))
                let last = c == row.count - 1
                if c > 0 { out += "  " }
                if rightAligned[c] {
                    out += pad + cell
                } else {
                    out += last ? cell : cell + pad
                }
            }
            return out + "\n"
        }
        var out = line(table.columns.map(\.title))
        for row in cells { out += line(row) }
        if table.totalRows > table.rows.count {
            out += "… and \(table.totalRows - table.rows.count) more \(noun(table.grouping, table.totalRows - table.rows.count)) (\(table.totalRows) in all)\n"
        }
        return out
    }

    static func safeForTerminal(_ s: String) -> String {
        guard s.unicodeScalars.contains(where: isControl) else { return s }
        var out = ""
        for scalar in s.unicodeScalars {
            if isControl(scalar) {
                let d = String(scalar.value)
                out += "\\" + String(repeating: "0", count: max(0, 3 - d.count)) + d
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
        return out
    }

    static func isControl(_ scalar: Unicode.Scalar) -> Bool {
        scalar.value < 0x20 || (scalar.value >= 0x7F && scalar.value < 0xA0)
    }

    /// `[` and `]` on their own lines, one object per line between them.
    public static func json(_ table: ReportTable) -> String {
        guard !table.rows.isEmpty else { return "[]\n" }
        var out = "[\n"
        for (r, row) in table.rows.enumerated() {
            out += "  {"
            for (c, value) in row.enumerated() {
                if c > 0 { out += "," }
                let column = table.columns[c]
                JSONObjectWriter.appendString(column.name, to: &out)
                out += ":"
                switch value {
                case .text(let s):
                    JSONObjectWriter.appendString(s, to: &out)
                case .count(let n):
                    out += String(n)
                case .time(let t):
                    JSONObjectWriter.appendString(ReportTime.format(t), to: &out)
                case .texts(let items):
                    out += "["
                    for (k, item) in items.enumerated() {
                        if k > 0 { out += "," }
                        JSONObjectWriter.appendString(item, to: &out)
                    }
                    out += "]"
                case .counts(let items):
                    out += "["
                    for (k, item) in items.enumerated() {
                        if k > 0 { out += "," }
                        out += "{"
                        JSONObjectWriter.appendString(column.itemKey ?? "name", to: &out)
                        out += ":"
                        JSONObjectWriter.appendString(item.name, to: &out)
                        out += ",\"attempts\":\(item.count)}"
                    }
                    out += "]"
                }
            }
            out += r == table.rows.count - 1 ? "}\n" : "},\n"
        }
        return out + "]\n"
    }

    /// RFC 4180, each cell made safe for a spreadsheet (see `cell`).
    public static func csv(_ table: ReportTable) -> String {
        var out = table.columns.map { field($0.name) }.joined(separator: ",") + "\r\n"
        for row in table.rows {
            out += row.map(cell).joined(separator: ",") + "\r\n"
        }
        return out
    }

    /// One CSV cell. Text from the log (names asked, clients, rules, lists) is chosen by whoever
    /// sent the query or wrote the list, and a spreadsheet opening the file would run a cell such
    /// as `=1+2.msstorageboxes.com` as a formula. A text cell that begins with `=` `+` `-` `@`,
    /// tab or CR is prefixed with `'` and quoted, as OWASP's CSV injection guidance says; counts
    /// and times are written by us and left as they are.
    static func cell(_ value: ReportValue) -> String {
        let s = plain(value)
        switch value {
        case .count, .time:
            return field(s)
        case .text, .texts, .counts:
            return startsLikeFormula(s) ? quoted("'" + s) : field(s)
        }
    }

    static func startsLikeFormula(_ s: String) -> Bool {
        switch s.utf8.first {
        case UInt8(ascii: "="), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "@"), 0x09, 0x0D: return true
        default: return false
        }
    }

    /// `s`, quoted only when it holds `,` `"` CR or LF.
    static func field(_ s: String) -> String {
        guard s.utf8.contains(where: { $0 == 0x2C || $0 == 0x22 || $0 == 0x0A || $0 == 0x0D }) else { return s }
        return quoted(s)
    }

    /// `s` between double quotes, the double quotes in it doubled.
    static func quoted(_ s: String) -> String {
        var out = "\""
        for ch in s.unicodeScalars {
            if ch == "\"" { out += "\"\"" } else { out.unicodeScalars.append(ch) }
        }
        return out + "\""
    }
}
