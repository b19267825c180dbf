import Messaging

/// A durable consumer: the stream it reads and its spec. Owned (created and updated) by the service that
/// consumes it; replicas of that service share it.
public struct ConsumerContract: Sendable, Equatable {
    public var stream: StreamContract
    public var spec: ConsumerSpec
    public var owner: ServiceName
    public var durable: String { spec.durable }

    public init(stream: StreamContract, _ spec: ConsumerSpec, owner: ServiceName) {
        self.stream = stream
        self.spec = spec
        self.owner = owner
    }
}

/// Every durable consumer of the platform.
public enum Consumers {
    /// The router's consumer of chat requests.
    public static let routerRequests = ConsumerContract(
        stream: Streams.requests,
        ConsumerSpec(durable: "router-requests", ackWait: .seconds(10), maxDeliver: 5),
        owner: .router)
    /// The orchestrator's consumer of routed tasks. AckWait covers a slow provider: the consume loop also sends
    /// in-progress acks while a task runs (`SWITCHYARD_TASK_ACK_WAIT_MS` overrides it).
    public static let orchestratorTasks = ConsumerContract(
        stream: Streams.tasks,
        ConsumerSpec(durable: "orchestrator-tasks", ackWait: .seconds(30), maxDeliver: 5),
        owner: .orchestrator)
    /// The tenant service's consumer of `evt.chat.requested.*` (API key last use).
    public static let tenantKeyUsage = ConsumerContract(
        stream: Streams.events,
        ConsumerSpec(durable: "tenant-key-usage", filterSubject: Subjects.eventAll(.chatRequested),
                     ackWait: .seconds(30), maxDeliver: 5),
        owner: .tenant)

    public static let all = [routerRequests, orchestratorTasks, tenantKeyUsage]
}
