/// The platform's services. The raw value is the executable's product name, the k8s `app:` label, the
/// `producer` of the events it writes and the owner named by the stream and consumer contracts.
public enum ServiceName: String, Sendable, CaseIterable {
    case apiGateway = "api-gateway"
    case router
    case orchestrator
    case tenant
    case billing
    case analytics
    case eval
}
