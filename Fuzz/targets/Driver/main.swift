// Entry point shared by every fuzz target (build.sh links it into each one as main.swift).
//
// SwiftPM links an executable's `main` to the module's own entry point, so libFuzzer's `main`
// is never pulled in; this hands control to libFuzzer's driver instead, with the target's
// `fuzzOne` (also exported as LLVMFuzzerTestOneInput) as the callback.
#if canImport(Glibc)
import Glibc
#endif

@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
) -> CInt

var fuzzArgc = CommandLine.argc
var fuzzArgv = CommandLine.unsafeArgv
exit(LLVMFuzzerRunDriver(&fuzzArgc, &fuzzArgv, { data, size in fuzzOne(data, size) }))
