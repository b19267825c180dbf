import Schemas

/// A contract message that carries ``EventMeta`` (event id, tenant, occurred-at, producer): everything that
/// travels on a stream. Typed consumers decode these and validate the meta before a handler runs.
public protocol EventMessage: ProtoMessage {
    var meta: EventMeta? { get }
}

extension ChatRequested: EventMessage {}
extension ChatRouted: EventMessage {}
extension ChatCompleted: EventMessage {}
extension ChatFailed: EventMessage {}
extension StreamChunk: EventMessage {}
extension UsageRecorded: EventMessage {}
extension HandoffRequested: EventMessage {}
extension ConsentChecked: EventMessage {}
extension AgentDecision: EventMessage {}
extension TenantChanged: EventMessage {}
extension EvalRequested: EventMessage {}
extension EvalCompleted: EventMessage {}
extension AuditRecorded: EventMessage {}
extension BudgetExceeded: EventMessage {}
extension BudgetWarning: EventMessage {}
