/// How a query reached us; decides the reply size limit and is logged as `network.transport`.
public enum Transport: String, Sendable {
    case udp
    case tcp
}

/// Called by a listener for each received message. The handler calls `respond` exactly once,
/// from any thread; an empty reply means nothing is sent (a dropped query).
public typealias QueryHandler = @Sendable (
    _ packet: [UInt8], _ client: SocketAddress, _ transport: Transport,
    _ respond: @escaping @Sendable ([UInt8]) -> Void
) -> Void
