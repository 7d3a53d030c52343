import Foundation
import SinkholeCore

enum DefaultPaths {
    /// `blocklists/` of the source checkout the running binary was built in (found by walking up
    /// from the executable to a folder holding Package.swift), else the installed location.
    static func blocklistDirectory() -> String {
        var url = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        if let exe = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") {
            url = URL(fileURLWithPath: exe)
        }
        var dir = url.deletingLastPathComponent()
        for _ in 0..<8 {
            let candidate = dir.appendingPathComponent("blocklists").path
            if FileManager.default.fileExists(atPath: dir.appendingPathComponent("Package.swift").path),
               FileManager.default.fileExists(atPath: candidate) {
                return candidate
            }
            dir = dir.deletingLastPathComponent()
        }
        return ServerConfiguration.installedBlocklistDirectory
    }
}
