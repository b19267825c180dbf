import Contracts
import Foundation
import Messaging
import Tenancy
import TestKit
import Testing

/// The per-service NATS users of `scripts/nats-auth.conf.tmpl` (what `make run` starts nats-server with),
/// against a real nats-server: each user can do what its service needs and nothing the template denies.
///
/// A denied publish is dropped by the server (the client only gets an asynchronous `-ERR`), so "never
/// arrives" is proven with an ordered marker: the denied message is published before an allowed marker on
/// the same connection, and a subscriber that sees the marker would have seen the denied message first.
@Suite("NATS users and subject permissions (scripts/nats-auth.conf.tmpl)")
struct NATSPermissionTests {
    static let serviceUsers = ["gateway", "router", "orchestrator", "billing", "analytics"]

    // MARK: the template itself

    @Test("the template renders every placeholder and refuses missing, unknown or unsafe passwords")
    func rendering() throws {
        let passwords = NATSAuthTemplate.randomPasswords()
        let config = try NATSAuthTemplate.render(passwords: passwords)
        #expect(config.contains("authorization"))
        #expect(config.firstMatch(of: try Regex("@@PASSWORD_[A-Z0-9_]+@@")) == nil)
        for user in NATSAuthTemplate.users {
            #expect(config.contains("password: \"\(try #require(passwords[user]))\""), "password of \(user)")
        }
        var missing = passwords
        missing["router"] = nil
        #expect(throws: TestProcessError.self) { try NATSAuthTemplate.render(passwords: missing) }
        var unknown = passwords
        unknown["nobody"] = "abc"
        #expect(throws: TestProcessError.self) { try NATSAuthTemplate.render(passwords: unknown) }
        for unsafe in ["", "a\"b", "a b", "a\nb", "a\\b", "a|b", "a&b", "pässword"] {
            var bad = passwords
            bad["admin"] = unsafe
            #expect(throws: TestProcessError.self, "password \(unsafe.debugDescription)") {
                try NATSAuthTemplate.render(passwords: bad)
            }
        }
    }

    // MARK: authentication

    @Test("a wrong password, an unknown user and no credentials cannot connect")
    func authentication() async throws {
        try await withAuthServer { server, passwords in
            for (user, password) in [("gateway", "wrong-password"), ("admin", passwords["tenant"]!),
                                     ("nobody", passwords["gateway"]!)] {
                await #expect(throws: (any Error).self, "\(user) with a wrong password") {
                    let connection = try await connect(server, user: user, password: password)
                    connection.close()
                }
            }
            await #expect(throws: (any Error).self, "no credentials") {
                let connection = try await NATSConnection.connect(
                    NATSConfiguration(servers: [server.url], name: "anonymous", connectAttempts: 1),
                    logger: Harness.logger)
                connection.close()
            }
            // The right password works for every user.
            for user in NATSAuthTemplate.users {
                let connection = try await connect(server, user: user, password: passwords[user])
                try await connection.flush()
                connection.close()
            }
        }
    }

    // MARK: admin commands

    @Test("service users can neither send nor receive admin commands; the admin user's request is answered")
    func adminCommands() async throws {
        try await withAuthServer { server, passwords in
            let tenant = try await connect(server, user: "tenant", password: passwords["tenant"])
            defer { tenant.close() }
            let service = try tenant.subscribe("admin.tenant.ping", queue: "tenant")
            let seen = Recorder()
            let responder = Task {
                for await message in service.messages {
                    await seen.add(text(message.payload))
                    guard let reply = message.reply else { continue }
                    try? tenant.publish(reply, payload: bytes("pong:" + text(message.payload)))
                }
            }
            defer { responder.cancel(); service.unsubscribe() }
            try await tenant.flush()

            // A service user also subscribes to the admin subject: the server must refuse that subscription.
            let gateway = try await connect(server, user: "gateway", password: passwords["gateway"])
            defer { gateway.close() }
            let eavesdropper = try gateway.subscribe("admin.tenant.ping")
            try await gateway.flush()
            #expect(await refusedSubscription(gateway, "admin.tenant.ping"),
                    "the server must refuse a service user's subscription to admin commands")
            // …and to the admin user's reply inbox (issue-key replies carry a plaintext key once).
            let replySniffer = try gateway.subscribe("_INBOX_admin.>")
            try await gateway.flush()
            #expect(await refusedSubscription(gateway, "_INBOX_admin.>"),
                    "the server must refuse a service user's subscription to the admin reply inbox")

            for user in Self.serviceUsers {
                let connection = try await connect(server, user: user, password: passwords[user])
                await #expect(throws: NATSError.self, "\(user)'s admin request must fail") {
                    _ = try await connection.request("admin.tenant.ping", payload: bytes("from-\(user)"),
                                                     timeout: .seconds(1))
                }
                // Once the server has answered this PING, it has processed (dropped) the request above, and
                // anything it had routed to the responder is ahead of the admin request below.
                try await connection.flush()
                connection.close()
            }

            let admin = try await connect(server, user: "admin", password: passwords["admin"])
            defer { admin.close() }
            let reply = try await admin.request("admin.tenant.ping", payload: bytes("from-admin"), timeout: .seconds(5))
            #expect(text(reply.payload) == "pong:from-admin")
            #expect(await seen.values == ["from-admin"], "the responder saw only the admin's request")

            // The refused subscriptions never existed on the server, so nothing can have reached them; drop them.
            eavesdropper.unsubscribe()
            replySniffer.unsubscribe()
        }
    }

    @Test("each kind of work has one publisher: eval requests only eval, chat requests only gateway, routed work only router, usage only orchestrator",
          arguments: [("evt.eval.requested.acme", "eval"), ("evt.chat.requested.acme", "gateway"),
                      ("evt.chat.routed.acme", "router"), ("usage.acme", "orchestrator")])
    func workHasOnePublisher(subject: String, owner: String) async throws {
        try await withAuthServer { server, passwords in
            let listener = try await connect(server, user: "tenant", password: passwords["tenant"])
            defer { listener.close() }
            let subscription = try listener.subscribe(subject)
            let seen = Recorder()
            let recorder = Task { for await message in subscription.messages { await seen.add(text(message.payload)) } }
            defer { recorder.cancel(); subscription.unsubscribe() }
            try await listener.flush()
            for user in Self.serviceUsers + ["eval", "tenant", "admin"] where user != owner {
                let connection = try await connect(server, user: user, password: passwords[user])
                try? connection.publish(subject, payload: bytes("from-\(user)"))
                // Once the server has answered this PING it has processed (dropped) the publish above.
                try await connection.flush()
                connection.close()
            }
            let publisher = try await connect(server, user: owner, password: passwords[owner])
            defer { publisher.close() }
            try publisher.publish(subject, payload: bytes("from-\(owner)"))
            try await publisher.flush()
            let deadline = ContinuousClock.now + .seconds(5)
            while await seen.values.isEmpty && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
            #expect(await seen.values == ["from-\(owner)"], "\(subject)")
        }
    }

    @Test("eval's rollout controller sends admin.tenant.set-rollout and admin.analytics.stats, and no other admin command of any service")
    func evalSendsOnlyItsTwoAdminCommands() async throws {
        try await withAuthServer { server, passwords in
            let listener = try await connect(server, user: "tenant", password: passwords["tenant"])
            defer { listener.close() }
            let subscription = try listener.subscribe("admin.>")
            let seen = Recorder()
            let recorder = Task { for await message in subscription.messages { await seen.add(message.subject) } }
            defer { recorder.cancel(); subscription.unsubscribe() }
            try await listener.flush()
            // Every command the code knows, plus subjects of other shapes (a new service needs its own deny entry).
            let subjects = AdminCommand.allCases.map(\.subject) + BillingAdminCommand.allCases.map(\.subject)
                + AnalyticsAdminCommand.allCases.map(\.subject) + EvalAdminCommand.allCases.map(\.subject)
                + ["admin", "admin.tenant", "admin.analytics", "admin.billing", "admin.eval",
                   "admin.tenant.set-rollout.extra", "admin.analytics.stats.x"]
            let eval = try await connect(server, user: "eval", password: passwords["eval"])
            defer { eval.close() }
            for subject in subjects { try? eval.publish(subject, payload: bytes("x")) }
            // In order on one connection: once the marker arrives, everything before it has arrived or was dropped.
            try eval.publish(AnalyticsAdminCommand.stats.subject, payload: bytes("marker"))
            try await eval.flush()
            let deadline = ContinuousClock.now + .seconds(5)
            while await seen.values.count < 3 && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
            #expect(await seen.values == [AdminCommand.setRollout.subject, AnalyticsAdminCommand.stats.subject,
                                          AnalyticsAdminCommand.stats.subject],
                    "eval's admin publishes that reached a subscriber")
        }
    }

    @Test("billing and analytics serve their own admin commands (answering into the admin inbox) but never receive the tenant service's or each other's",
          arguments: [("billing", "analytics"), ("analytics", "billing")])
    func servicesServeOnlyTheirOwnAdminCommands(user: String, other: String) async throws {
        try await withAuthServer { server, passwords in
            let service = try await connect(server, user: user, password: passwords[user])
            defer { service.close() }
            let own = try service.subscribe("admin.\(user).ping", queue: user)
            let responder = Task {
                for await message in own.messages {
                    guard let reply = message.reply else { continue }
                    try? service.publish(reply, payload: bytes("pong:" + text(message.payload)))
                }
            }
            defer { responder.cancel(); own.unsubscribe() }
            try await service.flush()
            var refused: [NATSSubscription] = []
            for subject in ["admin.tenant.ping", "admin.\(other).ping", "_INBOX_admin.>"] {
                refused.append(try service.subscribe(subject))
                try await service.flush()
                #expect(await refusedSubscription(service, subject), "\(user) may subscribe to \(subject)")
            }

            let admin = try await connect(server, user: "admin", password: passwords["admin"])
            defer { admin.close() }
            let reply = try await admin.request("admin.\(user).ping", payload: bytes("from-admin"), timeout: .seconds(5))
            #expect(text(reply.payload) == "pong:from-admin")
            await #expect(throws: NATSError.self, "\(user) must not send admin commands") {
                _ = try await service.request("admin.tenant.ping", payload: bytes("x"), timeout: .seconds(1))
            }
            for subscription in refused { subscription.unsubscribe() }
        }
    }

    // MARK: the read-only reader (outside consumers)

    @Test("the reader creates its own durable on the event log, pulls and acks live events, and receives core events")
    func readerConsumesTheEventLog() async throws {
        try await withAuthServer { server, passwords in
            let service = try await connect(server, user: "router", password: passwords["router"])
            defer { service.close() }
            let serviceJS = try JetStream(connection: service)
            try await serviceJS.ensureStream(Streams.events.spec)
            let reader = try await connect(server, user: "reader", password: passwords["reader"])
            defer { reader.close() }
            let readerJS = try JetStream(connection: reader)
            let live = try reader.subscribe("evt.>")
            try await reader.flush()
            try await readerJS.ensureConsumer(stream: StreamNames.events,
                                              ConsumerSpec(durable: "my-dashboard", filterSubject: "evt.>", start: .all))
            _ = try await serviceJS.publish(OutboundMessage(subject: "evt.chat.completed.acme", payload: bytes("one")))
            let consumer = try await PullConsumer.bind(jetStream: readerJS, stream: StreamNames.events,
                                                       durable: "my-dashboard")
            defer { consumer.stop() }
            guard let message = try await consumer.next(timeout: .seconds(5)) else {
                Issue.record("the reader's durable delivered nothing")
                return
            }
            #expect(text(message.delivery.payload) == "one")
            try message.ack()
            #expect(text(try #require(await firstMessage(of: live, within: .seconds(5))).payload) == "one")
            live.unsubscribe()
            // The ack reached the server: nothing is pending for the reader's durable.
            var state = try await readerJS.consumerState(stream: StreamNames.events, durable: "my-dashboard")
            for _ in 0..<100 where state.ackPending > 0 {
                try await Task.sleep(for: .milliseconds(20))
                state = try await readerJS.consumerState(stream: StreamNames.events, durable: "my-dashboard")
            }
            #expect(state.ackPending == 0 && state.pending == 0)
            try await readerJS.deleteConsumer(stream: StreamNames.events, durable: "my-dashboard")
        }
    }

    @Test("the reader can neither touch a platform durable (every one of Consumers.all), nor publish, nor read replies, KV or admin subjects")
    func readerIsReadOnly() async throws {
        try await withAuthServer { server, passwords in
            let reader = try await connect(server, user: "reader", password: passwords["reader"])
            defer { reader.close() }
            var subjects: [String] = []
            for contract in Consumers.all {
                let stream = contract.stream.name, durable = contract.durable
                subjects += ["$JS.API.CONSUMER.MSG.NEXT.\(stream).\(durable)",
                             "$JS.API.CONSUMER.DURABLE.CREATE.\(stream).\(durable)",
                             "$JS.API.CONSUMER.CREATE.\(stream).\(durable)",
                             "$JS.API.CONSUMER.CREATE.\(stream).\(durable).evt.chat",
                             "$JS.API.CONSUMER.INFO.\(stream).\(durable)",
                             "$JS.API.CONSUMER.DELETE.\(stream).\(durable)",
                             "$JS.ACK.\(stream).\(durable).1.1.1.1.0"]
            }
            subjects += ["evt.chat.completed.acme", "usage.acme", "admin.tenant.create", "$KV.tenants.acme",
                         "$JS.API.STREAM.DELETE.EVENTS", "$JS.API.STREAM.PURGE.EVENTS", "$JS.API.STREAM.CREATE.MINE",
                         "$JS.API.STREAM.MSG.DELETE.EVENTS", "$JS.API.CONSUMER.DURABLE.CREATE.KV_tenants.x",
                         "$JS.API.CONSUMER.MSG.NEXT.ADVISORIES.x"]
            for subject in subjects {
                try reader.publish(subject, payload: bytes("{}"))
                try await reader.flush()
                #expect(await refusedPublish(reader, subject), "the reader may publish to \(subject)")
            }
            for subject in ["_INBOX.>", "_INBOX_admin.>", "admin.>", "$KV.>", "chat.>", "agent.>", ">"] {
                let subscription = try reader.subscribe(subject)
                try await reader.flush()
                #expect(await refusedSubscription(reader, subject), "the reader may subscribe to \(subject)")
                subscription.unsubscribe()
            }
        }
    }

    // MARK: KV ownership

    @Test("service users cannot write, purge or delete the tenants/apikeys buckets")
    func kvWritesDenied() async throws {
        try await withAuthServer { server, passwords in
            let tenant = try await connect(server, user: "tenant", password: passwords["tenant"])
            defer { tenant.close() }
            let tenantJS = try JetStream(connection: tenant)
            let apiKeys = try await tenantJS.keyValue(KVBucketSpec(name: "apikeys", history: 5))
            try await apiKeys.put("existing", bytes("record"))
            let sniffer = try tenant.subscribe(">")
            try await tenant.flush()

            for user in Self.serviceUsers {
                let connection = try await connect(server, user: user, password: passwords[user])
                defer { connection.close() }
                let marker = "probe.\(user).done"
                try connection.publish("$KV.apikeys.x", payload: bytes("forged by \(user)"))
                try connection.publish("$KV.tenants.acme", payload: bytes("forged by \(user)"))
                try connection.publish(marker, payload: [])
                let before = try await subjects(of: sniffer, until: marker)
                #expect(!before.contains { $0.hasPrefix("$KV.") },
                        "\(user)'s KV writes reached a subscriber: \(before)")
            }

            // Through the KV API: binding and reading work, writing and purging don't.
            let gateway = try await connect(server, user: "gateway", password: passwords["gateway"])
            defer { gateway.close() }
            let gatewayKeys = try await JetStream(connection: gateway)
                .keyValue(KVBucketSpec(name: "apikeys", history: 5))
            #expect(text(try #require(try await gatewayKeys.get("existing")).value) == "record")
            await #expect(throws: NATSError.self, "gateway KV put") { try await gatewayKeys.put("x", bytes("forged")) }
            await #expect(throws: NATSError.self, "gateway KV delete") { try await gatewayKeys.delete("existing") }
            await #expect(throws: NATSError.self, "gateway stream purge") {
                _ = try await gateway.request("$JS.API.STREAM.PURGE.KV_apikeys", payload: bytes("{}"),
                                              timeout: .seconds(1))
            }
            await #expect(throws: NATSError.self, "gateway stream delete") {
                _ = try await gateway.request("$JS.API.STREAM.DELETE.KV_apikeys", payload: [], timeout: .seconds(1))
            }

            #expect(try await apiKeys.get("x") == nil)
            let existing = try #require(try await apiKeys.get("existing"))
            #expect(existing.operation == .put && text(existing.value) == "record")
            // The owner can write (the denials above are about the user, not the bucket).
            try await apiKeys.put("x", bytes("by tenant"))
            #expect(text(try #require(try await gatewayKeys.get("x")).value) == "by tenant")
        }
    }

    @Test("service users can watch buckets the tenant user created and writes")
    func kvWatchAllowed() async throws {
        try await withAuthServer { server, passwords in
            let tenant = try await connect(server, user: "tenant", password: passwords["tenant"])
            defer { tenant.close() }
            let tenantJS = try JetStream(connection: tenant)
            for name in ["tenants", "apikeys"] {
                let spec = KVBucketSpec(name: name, history: 5)
                let owned = try await tenantJS.keyValue(spec)
                try await owned.put("acme", bytes("active"))

                for user in Self.serviceUsers {
                    let connection = try await connect(server, user: user, password: passwords[user])
                    defer { connection.close() }
                    // The same call the services make (TenantDirectoryService): provision-or-bind, then watch.
                    let bucket = try await JetStream(connection: connection).keyValue(spec)
                    let events = WatchReader(try await bucket.watchAll())
                    defer { events.stop() }
                    let initial = try await events.next()
                    guard case .entry(let first) = initial else {
                        Issue.record("\(user) on \(name): expected the current value, got \(initial)")
                        continue
                    }
                    #expect(first.key == "acme" && text(first.value) == "active")
                    #expect(try await events.next() == .initialValuesDone)

                    try await owned.put("acme", bytes("suspended-by-\(user)"))
                    guard case .entry(let changed) = try await events.next() else {
                        Issue.record("\(user) on \(name): expected the live change")
                        continue
                    }
                    #expect(changed.key == "acme" && text(changed.value) == "suspended-by-\(user)")
                    try await owned.delete("acme")
                    guard case .entry(let deleted) = try await events.next() else {
                        Issue.record("\(user) on \(name): expected the delete")
                        continue
                    }
                    #expect(deleted.key == "acme" && deleted.operation == .delete)
                    try await owned.put("acme", bytes("active"))
                }
            }
        }
    }

    // MARK: the admin user

    @Test("the admin user can only publish admin commands and only read replies and events")
    func adminUserLimits() async throws {
        try await withAuthServer { server, passwords in
            let tenant = try await connect(server, user: "tenant", password: passwords["tenant"])
            defer { tenant.close() }
            let sniffer = try tenant.subscribe(">")
            try await tenant.flush()
            let admin = try await connect(server, user: "admin", password: passwords["admin"])
            defer { admin.close() }

            try admin.publish("chat.request.x", payload: bytes("{}"))
            try admin.publish("evt.chat.completed.acme", payload: [])
            try admin.publish("$KV.tenants.acme", payload: [])
            try admin.publish("admin.tenant.marker", payload: [])
            let before = try await subjects(of: sniffer, until: "admin.tenant.marker")
            let forbidden: Set = ["chat.request.x", "evt.chat.completed.acme", "$KV.tenants.acme"]
            #expect(before.filter(forbidden.contains).isEmpty, "the admin user published outside admin.>: \(before)")

            // Reading events works; subscribing elsewhere is refused.
            let events = try admin.subscribe("evt.>")
            let requests = try admin.subscribe("chat.request.>")
            try await admin.flush()
            #expect(await refusedSubscription(admin, "chat.request.>"), "the admin user must not read chat.request.>")
            requests.unsubscribe()
            let gateway = try await connect(server, user: "gateway", password: passwords["gateway"])
            defer { gateway.close() }
            try gateway.publish("chat.request.x", payload: [])
            try gateway.publish("evt.chat.completed.acme", payload: bytes("event"))
            try await gateway.flush()
            let event = try #require(await firstMessage(of: events, within: .seconds(5)), "admin reads evt.>")
            #expect(event.subject == "evt.chat.completed.acme" && text(event.payload) == "event")

            // No JetStream API and so no KV.
            await #expect(throws: NATSError.self, "admin JetStream/KV") {
                _ = try await JetStream(connection: admin).keyValue(KVBucketSpec(name: "tenants"))
            }
        }
    }
}

// MARK: helpers

/// A nats-server started with the rendered template and fresh random passwords.
private func withAuthServer<T>(_ body: (NATSServer, [String: String]) async throws -> T) async throws -> T {
    let passwords = NATSAuthTemplate.randomPasswords()
    let configuration = try NATSAuthTemplate.render(passwords: passwords)
    return try await NATSServer.withServer(configuration: configuration) { server in
        do {
            return try await body(server, passwords)
        } catch {
            Issue.record("nats-server log:\n\(server.log.suffix(4000))")
            throw error
        }
    }
}

private func connect(_ server: NATSServer, user: String, password: String?) async throws -> NATSConnection {
    try await NATSConnection.connect(
        NATSConfiguration(servers: [server.url], user: user, password: password, name: "permissions-\(user)",
                          connectAttempts: 1, requestTimeout: .seconds(2),
                          inboxPrefix: user == "admin" ? "_INBOX_admin" : user == "reader" ? "_INBOX_reader" : "_INBOX"),
        logger: Harness.logger)
}

private actor Recorder {
    private(set) var values: [String] = []
    func add(_ value: String) { values.append(value) }
}

private struct TimedOut: Error, CustomStringConvertible {
    let what: String
    var description: String { "timed out waiting for \(what)" }
}

/// Races `body` against a deadline (the loser is cancelled).
private func within<T: Sendable>(_ timeout: Duration, _ what: String,
                                 _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    try await withThrowingTaskGroup(of: T.self) { group in
        group.addTask(operation: body)
        group.addTask {
            try await Task.sleep(for: timeout)
            throw TimedOut(what: what)
        }
        defer { group.cancelAll() }
        return try await group.next()!
    }
}

/// The subjects `subscription` delivers before one equal to `marker` (fails if the marker doesn't come).
private func subjects(of subscription: NATSSubscription, until marker: String,
                      timeout: Duration = .seconds(5)) async throws -> [String] {
    try await within(timeout, "marker \(marker)") {
        var seen: [String] = []
        for await message in subscription.messages {
            if message.subject == marker { return seen }
            seen.append(message.subject)
        }
        throw TimedOut(what: "marker \(marker) (subscription ended)")
    }
}

/// The first message `subscription` delivers within `timeout`, or nil.
/// Waits (up to 10 s) for the observable fact that the server refused a subscription: its permissions
/// violation for `subject`, reported on the connection.
private func refusedSubscription(_ connection: NATSConnection, _ subject: String) async -> Bool {
    let deadline = ContinuousClock.now + .seconds(10)
    while ContinuousClock.now < deadline {
        if let error = connection.lastErrorText?.lowercased(),
           error.contains("permissions violation for subscription"), error.contains(subject.lowercased()) {
            return true
        }
        try? await Task.sleep(for: .milliseconds(10))
    }
    return false
}

/// Waits (up to 10 s) for the server's permissions violation for a publish to `subject`.
private func refusedPublish(_ connection: NATSConnection, _ subject: String) async -> Bool {
    let deadline = ContinuousClock.now + .seconds(10)
    while ContinuousClock.now < deadline {
        if let error = connection.lastErrorText?.lowercased(),
           error.contains("permissions violation for publish"), error.contains(subject.lowercased()) {
            return true
        }
        try? await Task.sleep(for: .milliseconds(10))
    }
    return false
}

private func firstMessage(of subscription: NATSSubscription, within timeout: Duration) async -> NATSMessage? {
    try? await within(timeout, "a message") {
        var iterator = subscription.messages.makeAsyncIterator()
        guard let message = await iterator.next() else { throw TimedOut(what: "a message (subscription ended)") }
        return message
    }
}

/// Reads a KV watch on a task of its own so a test can wait for the next event with a deadline (a stuck
/// watch fails the test instead of hanging it). `stop()` ends the watch.
private final class WatchReader: Sendable {
    private actor Buffer {
        var events: [KVWatchEvent] = []
        var end: String?
        func append(_ event: KVWatchEvent) { events.append(event) }
        func finish(_ reason: String) { end = reason }
        func take() -> (KVWatchEvent?, String?) { events.isEmpty ? (nil, end) : (events.removeFirst(), nil) }
    }

    private let buffer: Buffer
    private let feeder: Task<Void, Never>

    init(_ stream: AsyncThrowingStream<KVWatchEvent, any Error>) {
        let buffer = Buffer()
        self.buffer = buffer
        feeder = Task {
            do {
                for try await event in stream { await buffer.append(event) }
                await buffer.finish("the watch ended")
            } catch {
                await buffer.finish("the watch failed: \(error)")
            }
        }
    }

    deinit { feeder.cancel() }

    func stop() { feeder.cancel() }

    func next(timeout: Duration = .seconds(5)) async throws -> KVWatchEvent {
        let deadline = ContinuousClock.now + timeout
        while true {
            let (event, end) = await buffer.take()
            if let event { return event }
            if let end { throw TimedOut(what: "a watch event (\(end))") }
            if ContinuousClock.now >= deadline { throw TimedOut(what: "a watch event") }
            try await Task.sleep(for: .milliseconds(5))
        }
    }
}
