import ServiceLifecycle

/// Runs `close` when graceful shutdown reaches it (put it before the services that use the resource, so it
/// closes after they stopped).
public struct ClosingService: Service {
    let close: @Sendable () async -> Void
    public init(_ close: @escaping @Sendable () async -> Void) { self.close = close }
    public func run() async throws {
        try? await gracefulShutdown()
        await close()
    }
}
