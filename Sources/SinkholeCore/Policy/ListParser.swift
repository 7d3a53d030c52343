import Foundation
/// A line of a list file that was skipped, and why: printed as `file:line: reason: 'text'`.
public struct ListLineError: Sendable, CustomStringConvertible, Equatable {
    public var file: String
    public var line: Int
    public var reason: String
    /// The line, or its first `kept` bytes (a bad line of a feed can be 4 MiB, and up to 100 are
    /// kept per file): what is quoted of it.
    public var text: String
    /// The line's length in bytes.
    public var length: Int

    static let kept = 200

    public init(file: String, line: Int, reason: String, text: String) {
        self.file = file
        self.line = line
        self.reason = reason
        length = text.utf8.count
        self.text = String(LogText.head(text, limit: ListLineError.kept))
    }

    /// `file:line: reason: 'text'`, a long line cut. The text is a feed's: it reaches the
    /// operational log through its escaping handler, and `check` prints it through
    /// `LogText.printable` (escaped once, wherever it goes).
    public var description: String {
        let more = length - text.utf8.count
        return "\(file):\(line): \(LogText.cut(reason)): '\(text)\(more > 0 ? "... (\(more) more bytes)" : "")'"
    }
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
        // Red Hat and Fedora's /etc/hosts
        "localhost4", "localhost4.localdomain4", "localhost6", "localhost6.localdomain6",
    ]

    /// Parses whole lines; `firstLine` is the number of the first one (for files read in chunks).
    /// Returns the number of lines seen.
    @discardableResult
    public static func parse(
        _ bytes: ArraySlice<UInt8>, file: String, firstLine: Int = 1, allowList: Bool = false,
        add: (_ name: [UInt8], _ kind: DomainMatcher.Kind, _ line: Int) -> Void,
        addAddress: ((_ address: [UInt8], _ prefix: Int, _ line: Int) -> Void)? = nil,
        mapped: ((MappedLine) -> Void)? = nil,
        reject: (ListLineError) -> Void
    ) -> Int {
        bytes.withUnsafeBufferPointer {
            parse($0, file: file, firstLine: firstLine, allowList: allowList, add: add, addAddress: addAddress, mapped: mapped, reject: reject)
        }
    }

    @discardableResult
    public static func parse(
        _ buffer: UnsafeBufferPointer<UInt8>, file: String, firstLine: Int = 1, allowList: Bool = false,
        add: (_ name: [UInt8], _ kind: DomainMatcher.Kind, _ line: Int) -> Void,
        addAddress: ((_ address: [UInt8], _ prefix: Int, _ line: Int) -> Void)? = nil,
        mapped: ((MappedLine) -> Void)? = nil,
        reject: (ListLineError) -> Void
    ) -> Int {
        var lineNumber = firstLine - 1
        let count = buffer.count
        var start = 0
        while start < count {
            var end = start
            while end < count && buffer[end] != UInt8(ascii: "\n") { end += 1 }
            lineNumber += 1
            if let wire = plainName(UnsafeBufferPointer(rebasing: buffer[start..<end])) {
                add(wire, .block, lineNumber)
            } else {
                var lineBytes = ArraySlice(buffer[start..<end])
                if lineBytes.last == UInt8(ascii: "\r") { lineBytes = lineBytes.dropLast() }
                parseLine(lineBytes, number: lineNumber, file: file, allowList: allowList, add: add,
                          addAddress: addAddress, mapped: mapped, reject: reject)
            }
            start = end + 1
        }
        return lineNumber - firstLine + 1
    }

    public static func parse(
        _ bytes: [UInt8], file: String,
        add: (_ name: [UInt8], _ kind: DomainMatcher.Kind, _ line: Int) -> Void,
        reject: (ListLineError) -> Void
    ) {
        parse(bytes[...], file: file, add: add, reject: reject)
    }

    /// Fast path for the common line: one valid hostname and nothing else (no comment, no
    /// address, no pattern). Returns its lowercase wire form, or nil to let `parseLine` decide
    /// (and explain, when the line is bad). Multi-million-entry feeds are mostly such lines.
    static func plainName(_ line: UnsafeBufferPointer<UInt8>) -> [UInt8]? {
        var lo = 0
        var hi = line.count
        while lo < hi, line[lo] == 0x20 || line[lo] == 0x09 { lo += 1 }
        while hi > lo, line[hi - 1] == 0x20 || line[hi - 1] == 0x09 || line[hi - 1] == 0x0D { hi -= 1 }
        if hi > lo, line[hi - 1] == UInt8(ascii: ".") { hi -= 1 }
        guard hi > lo, hi - lo <= 253 else { return nil }
        var wire = [UInt8](repeating: 0, count: hi - lo + 2)
        var labelStart = 0          // index in wire of the current label's length byte
        var hasLetter = false
        var out = 1
        for i in lo..<hi {
            var b = line[i]
            switch b {
            case UInt8(ascii: "."):
                let length = out - labelStart - 1
                guard length >= 1, length <= 63, wire[labelStart + 1] != UInt8(ascii: "-"),
                      wire[out - 1] != UInt8(ascii: "-") else { return nil }
                wire[labelStart] = UInt8(length)
                labelStart = out
                out += 1
                continue
            case UInt8(ascii: "A")...UInt8(ascii: "Z"):
                b |= 0x20
                hasLetter = true
            case UInt8(ascii: "a")...UInt8(ascii: "z"):
                hasLetter = true
            case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "_"):
                break
            default:
                return nil
            }
            wire[out] = b
            out += 1
        }
        let length = out - labelStart - 1
        // labelStart > 0: two labels at least. A lone label is left to parseLine, which refuses it.
        guard hasLetter, labelStart > 0, length >= 1, length <= 63, wire[labelStart + 1] != UInt8(ascii: "-"),
              wire[out - 1] != UInt8(ascii: "-") else { return nil }
        wire[labelStart] = UInt8(length)
        wire[out] = 0
        return wire
    }

    static func parseLine(
        _ raw: ArraySlice<UInt8>, number: Int, file: String, allowList: Bool = false,
        add: (_ name: [UInt8], _ kind: DomainMatcher.Kind, _ line: Int) -> Void,
        addAddress: ((_ address: [UInt8], _ prefix: Int, _ line: Int) -> Void)? = nil,
        mapped: ((MappedLine) -> Void)? = nil,
        reject: (ListLineError) -> Void
    ) {
        let original = String(decoding: raw, as: UTF8.self)
        var content = Substring(original)
        // In a dnsmasq rule `#` is part of it (`server=/name/#`, `10.0.0.1#5353`): a comment
        // there starts after white space only.
        let dnsmasq = ListParser.isDnsmasqRule(content)
        if dnsmasq, let hash = content.indices.first(where: { content[$0] == "#" && $0 > content.startIndex
                                                               && [" ", "\t"].contains(content[content.index(before: $0)]) }) {
            content = content[..<hash]
        } else if !dnsmasq, let hash = content.firstIndex(of: "#") {
            // An Adblock cosmetic or scriptlet rule (`site.example##.ad-slot`, `#@#`, `#?#`,
            // `#$#`, `#%#`) hides page elements of that site in a browser; it says nothing about
            // the name, and is skipped as AdGuard Home skips it. Read as a domain and a comment,
            // it blocked the whole site: an EasyList took hundreds of sites offline.
            if ListParser.isCosmeticRule(content, hash: hash) { return }
            content = content[..<hash]
        }
        content = trimmed(content)
        if content.isEmpty || content.hasPrefix("!") || content.hasPrefix("[") { return }   // blank, comment, Adblock header
        // AdGuard's HTML filtering rules (`site.example$$script[...]`, `$@$`): a page's, skipped
        // as the cosmetic ones are.
        if ListParser.has(content, "$$") || ListParser.has(content, "$@$") { return }

        func fail(_ reason: String) {
            reject(ListLineError(file: file, line: number, reason: reason, text: original.trimmingTrailingSpace))
        }
        func accept(_ nameText: Substring, _ kind: DomainMatcher.Kind, wholeTLD: Bool = false) {
            switch DomainName.parse(nameText) {
            case .success(let wire):
                // A lone word as a plain or hosts-file entry of a blocklist is far more often what
                // a failed download leaves ("Unauthorized", "Forbidden") than a top-level domain
                // meant to go dark: it would block every name in it. Pi-hole's gravity refuses such
                // entries too. In an allowlist, `com` would lift every block rule under .com (the
                // 3CX domains with them), with nothing said. A whole TLD is meant by saying so:
                // `||zip^` (or `*.zip`, the names below it), `||lan^` in an allowlist.
                if !wholeTLD, wire.count == Int(wire[0]) + 2 {
                    let label = String(decoding: wire[1..<wire.count - 1], as: UTF8.self)
                    if kind.action == .allow && !allowList {
                        return fail("an exception for a whole top-level domain, which would lift every list's block rules in it: not applied (to mean that, write ||\(label)^ in a .allow file)")
                    }
                    return fail(allowList
                        ? "a single label, which would allow a whole top-level domain and lift every block rule in it (to mean that, write ||\(label)^)"
                        : "a single label, which would block a whole top-level domain (to mean that, write ||\(label)^)")
                }
                add(wire, kind, number)
            case .failure(let problem): fail(ListParser.looksLikePattern(nameText) ?? problem.description)
            }
        }

        // Adblock-style domain rules: ||name^ and @@||name^ (the name and below), |name^ and
        // @@|name^ (the name alone, as AdGuard Home reads a rule anchored at the start).
        if content.hasPrefix("|") || content.hasPrefix("@@|") {
            let allow = content.hasPrefix("@@")
            var rule = content.dropFirst(allow ? 2 : 0)
            let exact = !rule.hasPrefix("||")
            rule = rule.dropFirst(exact ? 1 : 2)
            var important = false
            if let dollar = rule.firstIndex(of: "$") {
                // Modifiers: `$important` is a block rule as any other. The rest are a browser's
                // (`$third-party`, `$script`, `$domain=`, `$elemhide`, ...) or undo another rule
                // (`$badfilter`): such a rule is not applied, as AdGuard Home does not apply it.
                // With its modifiers dropped, an exception meant for page elements
                // (`@@||site^$elemhide`) allowed the name outright, over every list.
                let modifiers = rule[rule.index(after: dollar)...].split(separator: ",")
                if let other = modifiers.first(where: { $0.lowercased() != "important" }) {
                    let name = other.split(separator: "=").first.map { $0.lowercased() } ?? ""
                    if ListParser.adGuardHomeModifiers.contains(name.hasPrefix("~") ? String(name.dropFirst()) : name) {
                        // AdGuard Home applies these; sinkhole has no per-client, per-type or
                        // rewrite rules. Skipped, never applied to every client and type.
                        return fail("Adblock rule with AdGuard Home's modifier $\(other), which sinkhole does not support: not applied (the rule is skipped, not widened to every client and type)")
                    }
                    return fail("Adblock rule with the modifier $\(other), a browser's, which a DNS resolver cannot apply: not applied")
                }
                important = !modifiers.isEmpty
                rule = rule[..<dollar]
            }
            // `^|`: the separator, then the end of the address; for a name, the same as `^`.
            if rule.hasSuffix("^|") { rule = rule.dropLast() }
            if rule.hasPrefix("/") && rule.hasSuffix("/") && rule.count > 2 {
                return fail(ListParser.regexRuleReason)
            }
            guard rule.hasSuffix("^") else { return fail("Adblock rule without the closing '^' (only domain rules are supported)") }
            rule = rule.dropLast()
            // `||*.name^`: the names below `name`, not `name` itself (AdGuard's `*` needs the dot).
            var scope: DomainMatcher.Scope = exact ? .exact : .subtree
            if !exact, rule.hasPrefix("*.") {
                scope = .below
                rule = rule.dropFirst(2)
            }
            if rule.utf8.contains(0x2F) || rule.utf8.contains(0x2A) { return fail("Adblock rule with a path or pattern (only domain rules are supported)") }
            // An exception for a whole top-level domain (`@@||com^`) in a feed would lift every
            // block rule under it, the other lists' with them: only an allowlist says that.
            return accept(rule, DomainMatcher.Kind(scope, allow ? .allow : .block, important: important), wholeTLD: !allow || allowList)
        }

        // A regular-expression rule (`/ads[0-9]+\.example/`): a browser's or AdGuard Home's.
        let regexBody = content.hasPrefix("@@") ? content.dropFirst(2) : content
        if regexBody.count > 2, regexBody.hasPrefix("/"), regexBody.hasSuffix("/"), !regexBody.utf8.contains(0x20) {
            return fail(ListParser.regexRuleReason)
        }

        // dnsmasq rules, as the feeds in its format write them: `address=/name/0.0.0.0` (or `::`,
        // `#`, nothing), `local=/name/` and `server=/name/` each answer `name` and every name
        // below it locally, which a block here is. Several names may share one rule.
        if dnsmasq, let equals = content.firstIndex(of: "=") {
            let directive = content[..<equals].lowercased()
            let parts = content[content.index(after: equals)...].split(separator: "/", omittingEmptySubsequences: false)
            guard parts.count >= 3, parts.first?.isEmpty == true else {
                return fail("a dnsmasq \(directive)= line without /name/ (e.g. \(directive)=/ads.example/)")
            }
            let target = parts.last!.trimmingCharacters(in: .whitespaces)
            let names = parts.dropFirst().dropLast()
            if directive == "server", target == "#" {
                return fail("dnsmasq's 'use the usual servers' for these names (server=/name/#): not a block rule (to exempt a name from the lists, put it in a .allow file)")
            }
            if directive != "address", !target.isEmpty {
                // dnsmasq writes a port after '#': sinkhole's flag takes host:port ([v6]:port).
                let upstream = target.split(separator: "#", maxSplits: 1).map(String.init)
                var address = upstream[0]
                if upstream.count == 2 { address = (address.utf8.contains(0x3A) ? "[\(address)]" : address) + ":" + upstream[1] }
                let flags = names.filter { !$0.isEmpty }.map { "--forward-zone \($0)=\(address)" }.joined(separator: " ")
                return fail("dnsmasq forwarding of a zone to \(target): not a block rule (forward it with \(flags))")
            }
            if names.contains(where: { $0.isEmpty || $0 == "#" }) {
                return fail("a dnsmasq rule for every name (an empty or '#' domain): not applied")
            }
            if directive == "address", !target.isEmpty, target != "#" {
                guard IPAddress.isAddress(target) else { return fail("a dnsmasq address= line whose address '\(target)' is not an IP address") }
                if !ListParser.isBlockingAddress(target) { mapped?(MappedLine(line: number, text: original.trimmingTrailingSpace)) }
            }
            for name in names { accept(name.hasPrefix(".") ? name.dropFirst() : name, .block) }
            return
        }

        let tokens = content.split(whereSeparator: { $0 == " " || $0 == "\t" })
        guard let first = tokens.first else { return }
        // A lone address or CIDR: an IP indicator (answers with an address in it are blocked),
        // as in an `.ips` file. IOC exports mix addresses and domains in one file.
        if tokens.count == 1, let addAddress, let (address, prefix) = IPPrefixSet.parseCIDR(first) {
            if !allowList, let wide = IPPrefixSet.refusedIndicator(address, prefix) { return fail(wide) }
            return addAddress(address, prefix, number)
        }
        // An IPv6 address may carry a zone (macOS's `fe80::1%lo0 localhost`).
        if IPAddress.isAddress(String(first.utf8.contains(0x3A) ? first.prefix { $0 != "%" } : first)) {
            // Hosts-file line: ADDRESS name [name ...].
            let names = tokens.dropFirst()
            if names.isEmpty { return fail("an IP address where a domain name is expected (a hosts-file line needs a name after the address)") }
            var blocked = 0
            var shortNames = 0
            let realAddress = !ListParser.isBlockingAddress(String(first))
            for name in names {
                var bare = name.lowercased()
                if bare.hasSuffix(".") { bare.removeLast() }
                if hostsFileSelfNames.contains(bare) { continue }
                // With a real address, a host's short name beside its full one (`192.168.1.20
                // printer.home.lan printer`): an alias, not a top-level domain to block. With a
                // sinkhole's (`0.0.0.0 wpad`), a name meant blocked: refused below, with a reason.
                if realAddress, !bare.isEmpty, !bare.utf8.contains(0x2E), case .success = DomainName.parse(name) {
                    shortNames += 1
                    continue
                }
                blocked += 1
                accept(name, .block)
            }
            if shortNames > 0, blocked == 0 {
                fail("a hosts-file line with only a host's short name (no domain): nothing blocked")
            }
            if blocked > 0, realAddress {
                mapped?(MappedLine(line: number, text: original.trimmingTrailingSpace))
            }
            return
        }
        if tokens.count > 1 { return fail("unexpected text after the name") }
        // `*.name`: in a block list, `name` and every name below it, as Blocky and the feeds
        // published in its wildcard format mean it (a feed's `*.evil.example` left
        // `evil.example` itself resolving). In an allowlist, only the names below `name`: the
        // narrower reading, which lifts no more than was written.
        if first.hasPrefix("*.") { return accept(first.dropFirst(2), allowList ? .blockBelow : .blockStarred, wholeTLD: true) }
        accept(first, .block)
    }

    /// A hosts-file or dnsmasq line whose address is a real one, not a sinkhole's (`0.0.0.0`,
    /// `127.x`, `::`, `::1`): a local DNS record (Pi-hole's `custom.list`), whose names are
    /// blocked here all the same. Reported once per file, with the first such line.
    public struct MappedLine: Sendable, Equatable {
        public var line: Int
        public var text: String
    }

    /// Whether `text` holds the bytes of `needle` (a byte scan: `contains` with a string went
    /// through Foundation's NSString search, most of the time a feed's rejected lines took).
    static func has(_ text: Substring, _ needle: StaticString) -> Bool {
        let n = UnsafeBufferPointer(start: needle.utf8Start, count: needle.utf8CodeUnitCount)
        guard let first = n.first else { return true }
        var view = text.utf8[...]
        while let at = view.firstIndex(of: first) {
            if view[at...].starts(with: n) { return true }
            view = view[view.index(after: at)...]
        }
        return false
    }

    /// Whether the line is a dnsmasq rule sinkhole reads (`address=`, `local=`, `server=`).
    static func isDnsmasqRule(_ line: Substring) -> Bool {
        // Most lines are not: a look at the first byte first (this runs for every line the
        // fast path leaves, a feed's every rejected line among them).
        guard let lead = line.utf8.first(where: { $0 != 0x20 && $0 != 0x09 && $0 != 0xEF && $0 != 0xBB && $0 != 0xBF }),
              [UInt8(ascii: "a"), UInt8(ascii: "l"), UInt8(ascii: "s"), UInt8(ascii: "A"), UInt8(ascii: "L"), UInt8(ascii: "S")].contains(lead)
        else { return false }
        var text = line
        while let c = text.first, c == " " || c == "\t" || c == "\u{FEFF}" { text = text.dropFirst() }
        guard let equals = text.firstIndex(of: "="), text.distance(from: text.startIndex, to: equals) <= 7 else { return false }
        return ["address", "local", "server"].contains(text[..<equals].lowercased())
    }

    /// Why an Adblock `/.../` rule is refused.
    static let regexRuleReason = "an Adblock regular-expression rule, which sinkhole does not support (it matches names and the names below them, not patterns): not applied"

    /// AdGuard Home's DNS modifiers, which it applies and sinkhole does not.
    static let adGuardHomeModifiers: Set<String> = ["client", "denyallow", "dnsrewrite", "dnstype", "ctag", "badfilter"]

    /// The addresses hosts files and dnsmasq rules block with: unspecified and loopback.
    static func isBlockingAddress(_ text: String) -> Bool {
        let bare = text.utf8.contains(0x3A) ? String(text.prefix { $0 != "%" }) : text
        guard let address = IPAddress.parse(bare).map(IPAddress.unmapped) else { return false }
        return IPAddress.isLoopback(address) || IPAddress.isUnspecified(address) || (address.count == 4 && address[0] == 0)
    }

    /// Why `text`, which is not a domain name, looks like a pattern: a regular expression (as in
    /// Pi-hole's regex lists) or a wildcard inside a name; nil when it does not.
    static func looksLikePattern(_ text: Substring) -> String? {
        // A control character or non-ASCII byte is said as such (a terminal escape is no regex).
        guard text.unicodeScalars.allSatisfy({ (0x21...0x7E).contains($0.value) }) else { return nil }
        // Adblock rules for a path or URL pattern (`/adserver/*`, `/^https?:…$/$script`) and
        // other non-domain Adblock rules (`-ds.metric.example^|`, `ads.$third-party`).
        if text.utf8.contains(0x2F) {
            return "an Adblock rule for a path or URL pattern, which sinkhole does not support (only domain rules: ||name^)"
        }
        let regexMarks: Set<Character> = ["(", ")", "\\", "[", "]", "{", "}", "+", "?"]
        if text.contains(where: regexMarks.contains) || text.hasPrefix("^") || ListParser.has(text, ".*")
            || (text.hasSuffix("$") && !text.utf8.contains(0x5E)) {
            return "a regular expression (as in Pi-hole's regex lists), which sinkhole does not support: it matches names and the names below them, not patterns (list the domain instead)"
        }
        if text.contains(where: { $0 == "^" || $0 == "|" || $0 == "$" }) {
            return "an Adblock rule that is not a domain rule, which sinkhole does not support (only ||name^)"
        }
        if text.utf8.contains(0x2A) {
            return "a wildcard inside a name, which sinkhole does not support (only a leading '*.' is: *.name)"
        }
        return nil
    }

    /// Whether the `#` at `hash` starts an Adblock cosmetic or scriptlet rule's separator
    /// (`##`, `#@#`, `#?#`, `#$#`, `#%#`, `#@?#`, `#@$#`, `#@%#`, `#$?#`, `#@$?#`) right after the
    /// site it applies to, with no space between: a comment starts after white space or a line.
    static func isCosmeticRule(_ line: Substring, hash: Substring.Index) -> Bool {
        guard hash > line.startIndex else { return false }
        let before = line[line.index(before: hash)]
        guard before != " ", before != "\t" else { return false }
        let rest = line[hash...].prefix(6)
        return ["##", "#@#", "#?#", "#$#", "#%#", "#@?#", "#@$#", "#@%#", "#$?#", "#@$?#"].contains { rest.hasPrefix($0) }
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
