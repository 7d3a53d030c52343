import ArgumentParser

@main
struct Sinkhole: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sinkhole",
        abstract: "A DNS sinkhole: answers listed names with NXDOMAIN or a sinkhole address, forwards the rest, logs every blocked attempt.",
        subcommands: [Serve.self, Check.self, Explain.self, Report.self, Hunt.self],
        defaultSubcommand: Serve.self
    )
}
