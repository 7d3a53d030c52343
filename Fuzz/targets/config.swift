// Fuzz target `config`: the configuration file (`--config sinkhole.yaml`) through Yams and
// Settings.parse, then the full validation into a ServerConfiguration. Errors are expected;
// only crashes, hangs and leaks are findings.
import SinkholeCore

private let resolvConf = FuzzSupport.write(Array("nameserver 192.0.2.53\nnameserver 2001:db8::53\n".utf8), name: "resolv.conf")

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let text = String(decoding: FuzzSupport.bytes(data, size), as: UTF8.self)
    do {
        let settings = try Settings.parse(yaml: text, file: "fuzz.yaml")
        _ = settings.logLevel
        let flags = Settings().overridden(by: settings)
        _ = try flags.configuration(defaultBlocklistDirectory: "/nonexistent/blocklists", resolvConf: resolvConf)
    } catch let error as ConfigurationError {
        _ = error.description
    } catch {
        fatalError("Settings threw something other than a ConfigurationError: \(error)")
    }
    return 0
}
