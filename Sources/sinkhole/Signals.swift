import Dispatch
import Foundation
import Logging
import SinkholeCore

/// SIGTERM/SIGINT stop gracefully and exit 0; SIGHUP reopens the block log and reloads lists.
enum Signals {
    nonisolated(unsafe) static var sources: [DispatchSourceSignal] = []

    static func handle(server: SinkholeServer, logger: Logger) {
        let queue = DispatchQueue(label: "sinkhole.signals")
        for sig in [SIGTERM, SIGINT, SIGHUP] {
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: queue)
            source.setEventHandler {
                if sig == SIGHUP {
                    logger.info("SIGHUP: reopening block log and reloading lists")
                    server.reload()
                } else {
                    logger.info("signal \(sig): stopping")
                    server.stop()
                    exit(0)
                }
            }
            source.resume()
            sources.append(source)
        }
    }
}
