/// Near misses of a known word, for "did you mean" hints: a mistyped subcommand, an unknown key
/// of the configuration file.
public enum Spelling {
    /// Levenshtein distance over the UTF-8 bytes.
    public static func distance(_ a: String, _ b: String) -> Int {
        let a = Array(a.utf8), b = Array(b.utf8)
        var row = Array(0...b.count)
        for i in 1...max(1, a.count) where !a.isEmpty {
            var previous = row[0]
            row[0] = i
            for j in stride(from: 1, through: b.count, by: 1) {
                let saved = row[j]
                row[j] = min(row[j] + 1, row[j - 1] + 1, previous + (a[i - 1] == b[j - 1] ? 0 : 1))
                previous = saved
            }
        }
        return a.isEmpty ? b.count : row[b.count]
    }

    /// The known words nearest `word`, at most `within` edits away (sorted; several when they are
    /// equally near), or none. Case, `_` or a space for `-`, and leading dashes (a flag written
    /// as a key) count as no edit: `Block_Mode` and `--block-mode` are `block-mode` exactly.
    public static func nearest(_ word: String, among known: some Sequence<String>, within: Int = 2) -> [String] {
        var folded = word.lowercased().replacingOccurrences(of: "_", with: "-").replacingOccurrences(of: " ", with: "-")
        while folded.hasPrefix("-") { folded.removeFirst() }
        let scored = known.map { ($0, distance($0, folded)) }
        guard let best = scored.map(\.1).min(), best <= within else { return [] }
        return scored.filter { $0.1 == best }.map(\.0).sorted()
    }
}
