import Contracts
import Foundation
import Logging
import Messaging
import Schemas
import ServiceKit
import Telemetry
import Tenancy

/// The tenant service's admin commands (`admin.tenant.*`, `POST /admin/v1/tenant/*`): decodes each (protobuf
/// from NATS, JSON from HTTP), runs it on ``TenantAdmin`` and encodes the response (ServiceKit's
/// `AdminNATSService` and `AdminHTTPRoutes` serve it).
public struct AdminDispatcher: AdminCommandDispatcher {
    let admin: TenantAdmin
    /// `admin.tenant.doctor` (nil: refused as unavailable).
    var doctor: PlatformDoctor?

    public init(admin: TenantAdmin, doctor: PlatformDoctor? = nil) {
        self.admin = admin
        self.doctor = doctor
    }

    public var service: String { AdminCommand.service }
    public var commandNames: [String] { AdminCommand.allCases.map(\.rawValue) }

    public func handle(command name: String, body: [UInt8], wire: AdminWire, bearerToken: String?) async
        -> (error: AdminErrorCode?, body: [UInt8])?
    {
        guard let command = AdminCommand(rawValue: name) else { return nil }
        return await handle(command, body: body, wire: wire, bearerToken: bearerToken)
    }

    /// - Parameter bearerToken: the HTTP `Authorization` token; replaces any `adminToken` in a JSON body.
    public func handle(_ command: AdminCommand, body: [UInt8], wire: AdminWire, bearerToken: String? = nil) async
        -> (error: AdminErrorCode?, body: [UInt8])
    {
        let a = admin
        func run<Request: AdminRequest & Codable, Response: AdminResponse & Codable>(
            _ type: Request.Type, _ operation: (Request) async throws(AdminFailure) -> Response
        ) async -> (error: AdminErrorCode?, body: [UInt8]) {
            await AdminCall.run(body, wire, bearerToken, type, operation)
        }
        switch command {
        case .create: return await run(CreateTenantRequest.self) { r throws(AdminFailure) in try await a.create(r) }
        case .update: return await run(UpdateTenantRequest.self) { r throws(AdminFailure) in try await a.update(r) }
        case .suspend: return await run(SuspendTenantRequest.self) { r throws(AdminFailure) in try await a.suspend(r) }
        case .delete: return await run(DeleteTenantRequest.self) { r throws(AdminFailure) in try await a.delete(r) }
        case .get: return await run(GetTenantRequest.self) { r throws(AdminFailure) in try await a.get(r) }
        case .list: return await run(ListTenantsRequest.self) { r throws(AdminFailure) in try await a.list(r) }
        case .issueKey: return await run(IssueKeyRequest.self) { r throws(AdminFailure) in try await a.issueKey(r) }
        case .revokeKey: return await run(RevokeKeyRequest.self) { r throws(AdminFailure) in try await a.revokeKey(r) }
        case .rotateKey: return await run(RotateKeyRequest.self) { r throws(AdminFailure) in try await a.rotateKey(r) }
        case .listKeys: return await run(ListKeysRequest.self) { r throws(AdminFailure) in try await a.listKeys(r) }
        case .setPlan: return await run(SetPlanRequest.self) { r throws(AdminFailure) in try await a.setPlan(r) }
        case .setManifest: return await run(SetManifestRequest.self) { r throws(AdminFailure) in try await a.setManifest(r) }
        case .setRollout: return await run(SetRolloutRequest.self) { r throws(AdminFailure) in try await a.setRollout(r) }
        case .knowledgeUpsert: return await run(KnowledgeUpsertRequest.self) { r throws(AdminFailure) in try await a.knowledgeUpsert(r) }
        case .knowledgeDelete: return await run(KnowledgeDeleteRequest.self) { r throws(AdminFailure) in try await a.knowledgeDelete(r) }
        case .knowledgeList: return await run(KnowledgeListRequest.self) { r throws(AdminFailure) in try await a.knowledgeList(r) }
        case .doctor:
            guard let doctor else { return (.unavailable, []) }
            return await run(DoctorRequest.self) { r throws(AdminFailure) in try await doctor.run(r) }
        }
    }
}
