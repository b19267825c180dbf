/// A service of the platform. The raw value is the executable's product name, the k8s `app:` label, the
/// `producer` of the events it writes and the owner named by stream and consumer contracts.
public struct ServiceName: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }
    public init(_ rawValue: String) { self.rawValue = rawValue }
    public var description: String { rawValue }

    public static let apiGateway = ServiceName("api-gateway")
    public static let router = ServiceName("router")
    public static let orchestrator = ServiceName("orchestrator")
    public static let tenant = ServiceName("tenant")
    public static let billing = ServiceName("billing")
    public static let analytics = ServiceName("analytics")
    public static let eval = ServiceName("eval")

    /// The platform's seven services.
    public static let all: [ServiceName] = [.apiGateway, .router, .orchestrator, .tenant, .billing, .analytics, .eval]
}
