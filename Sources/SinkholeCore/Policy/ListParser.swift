/// A line of a list file that was skipped, and why: printed as `file:line: reason: 'text'`.
public struct ListLineError: Sendable, CustomStringConvertible, Equatable {
    public var file: String
    public var line: Int
    public var reason: String
    public var text: String

    public var description: String { "\(file):\(line): \(reason): '\(text)'" }
}

/// Parses the line-oriented list formats: plain domain lists, hosts files, `*.name` wildcards
/// and Adblock-style domain rules (`||name^`, `@@||name^`).
///
/// Each accepted line is handed to `add` as a lowercase wire name with its kind and line number;
/// each refused line is reported to `reject`. Nothing is allocated per line beyond the name.
public enum ListParser {
    /// Names that hosts files carry for the machine itself; they are not blocking rules.
    static let hostsFileSelfNames: Set<String> = [
        "localhost", "localhost.localdomain", "local", "broadcasthost", "ip6-localhost",
        "ip6-loopback", "ip6-localnet", "ip6-mcastprefix", "ip6-allnodes", "ip6-allrouters",
        "ip6-allhosts", "0.0.0.0",
    ]

    public static func parse(
        _ bytes: [UInt8], file: String,
        add: (_ name: [UInt8], _ kind: DomainMatcher.Kind, _ line: Int, _ text: Substring) -> Void,
        reject: (ListLineError) -> Void
    ) {
        var lineNumber = 0
        var start = 0
        let count = bytes.count
        while start < count {
            var end = start
            while end < count && bytes[end] != UInt8(ascii: "\n") { end += 1 }
            lineNumber += 1
            var lineBytes = bytes[start..<end]
            if lineBytes.last == UInt8(ascii: "\r") { lineBytes = lineBytes.dropLast() }
            parseLine(lineBytes, number: lineNumber, file: file, add: add, reject: reject)
            start = end + 1
        }
    }

    static func parseLine(
        _ raw: ArraySlice<UInt8>, number: Int, file: String,
        add: (_ name: [UInt8], _ kind: DomainMatcher.Kind, _ line: Int, _ text: Substring) -> Void,
        reject: (ListLineError) -> Void
    ) {
        let original = String(decoding: raw, as: UTF8.self)
        var content = Substring(original)
        if let hash = content.firstIndex(of: "#") { content = content[..<hash] }
        content = trimmed(content)
        if content.isEmpty || content.hasPrefix("!") || content.hasPrefix("[") { return }   // blank, comment, Adblock header

        func fail(_ reason: String) {
            reject(ListLineError(file: file, line: number, reason: reason, text: original.trimmingTrailingSpace))
        }
        func accept(_ nameText: Substring, _ kind: DomainMatcher.Kind) {
            switch DomainName.parse(nameText) {
            case .success(let wire): add(wire, kind, number, nameText)
            case .failure(let problem): fail(problem.description)
            }
        }

        // Adblock-style domain rules: ||name^ and @@||name^ (optionally with $options we do not honour).
        if content.hasPrefix("||") || content.hasPrefix("@@||") {
            let allow = content.hasPrefix("@@")
            var rule = content.dropFirst(allow ? 4 : 2)
            if let dollar = rule.firstIndex(of: "$") { rule = rule[..<dollar] }
            guard rule.hasSuffix("^") else { return fail("Adblock rule without the closing '^' (only domain rules are supported)") }
            rule = rule.dropLast()
            if rule.contains("/") || rule.contains("*") { return fail("Adblock rule with a path or pattern (only domain rules are supported)") }
            return accept(rule, allow ? .allow : .block)
        }

        let tokens = content.split(whereSeparator: { $0 == " " || $0 == "\t" })
        guard let first = tokens.first else { return }
        if IPAddress.isAddress(String(first)) {
            // Hosts-file line: ADDRESS name [name ...].
            let names = tokens.dropFirst()
            if names.isEmpty { return fail("an IP address where a domain name is expected (a hosts-file line needs a name after the address)") }
            for name in names where !hostsFileSelfNames.contains(name.lowercased()) {
                accept(name, .block)
            }
            return
        }
        if tokens.count > 1 { return fail("unexpected text after the name") }
        if first.hasPrefix("*.") { return accept(first.dropFirst(2), .blockBelow) }
        accept(first, .block)
    }

    static func trimmed(_ s: Substring) -> Substring {
        var t = s
        while let c = t.first, c == " " || c == "\t" || c == "\r" || c == "\u{FEFF}" { t = t.dropFirst() }
        while let c = t.last, c == " " || c == "\t" || c == "\r" { t = t.dropLast() }
        return t
    }
}

extension String {
    var trimmingTrailingSpace: String {
        var s = Substring(self)
        while let c = s.last, c == " " || c == "\t" || c == "\r" { s = s.dropLast() }
        return String(s)
    }
}
