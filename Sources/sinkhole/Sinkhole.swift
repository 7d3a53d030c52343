import ArgumentParser
import Foundation
import SinkholeCore

@main
struct Sinkhole: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sinkhole",
        abstract: "A DNS sinkhole: answers listed names with NXDOMAIN or a sinkhole address, forwards the rest, logs every blocked attempt.",
        version: SinkholeVersion.string,
        subcommands: [Serve.self, Check.self, Explain.self, Report.self, Hunt.self],
        defaultSubcommand: Serve.self
    )

    static func main() {
        // The one-shot commands read whole lists on the main thread (see HeapTuning); serve
        // reads them on its reload threads and keeps its memory as it was measured.
        if let first = CommandLine.arguments.dropFirst().first, ["check", "explain", "hunt", "report"].contains(first) {
            HeapTuning.apply()
        }
        // serve, the default, takes no bare word: a first argument that is not an option nor a
        // subcommand is a mistyped subcommand, which the parser would report as an unexpected
        // argument of serve, under serve's usage.
        if let first = CommandLine.arguments.dropFirst().first, let message = unknownSubcommand(first) {
            FileHandle.standardError.write(Data("Error: \(message)\n".utf8))
            Foundation.exit(ExitCode.validationFailure.rawValue)
        }
        main(nil)
    }

    /// The message for `word` as a first argument that names no subcommand; nil when it is fine.
    static func unknownSubcommand(_ word: String) -> String? {
        let names = configuration.subcommands.map { $0._commandName }
        guard !word.hasPrefix("-"), !names.contains(word), word != "help" else { return nil }
        let closest = names.map { ($0, Spelling.distance($0, word)) }.min { $0.1 < $1.1 }
        var hint = closest.flatMap { $0.1 <= 2 ? " Did you mean '\($0.0)'?" : nil } ?? ""
        if word.hasSuffix(".yaml") || word.hasSuffix(".yml") {
            hint = " To start with a configuration file: sinkhole serve --config \(word)."
        }
        return "unknown subcommand '\(word)'.\(hint) Subcommands: \(names.joined(separator: ", ")) (sinkhole --help)."
    }
}
