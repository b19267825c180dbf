import Foundation
import Logging
import ServiceKit
import Telemetry
import Testing

@Suite("ServiceConfiguration")
struct ServiceConfigurationTests {
    @Test func defaultsApplyToAnEmptyEnvironment() throws {
        let config = try ServiceConfiguration(
            environment: [:], service: "router", defaultHTTPPort: 8081, defaultOpsPort: 9091)
        #expect(config.service == "router")
        #expect(config.natsServers == ["nats://127.0.0.1:4222"])
        #expect(config.natsUser == nil)
        #expect(config.natsPassword == nil)
        #expect(config.databaseURL == "postgresql://switchyard@127.0.0.1:5432/switchyard")
        #expect(config.databasePoolSize == 4)
        #expect(config.httpHost == "0.0.0.0")
        #expect(config.httpPort == 8081)
        #expect(config.opsPort == 9091)
        #expect(config.logLevel == .info)
        #expect(config.logFormat == .json)
        #expect(config.instanceID.hasSuffix("-\(getpid())"))
        #expect(config.drainSeconds == 20)
        #expect(config.drainTimeout == .seconds(20))
    }

    @Test func overridesAreRead() throws {
        let config = try ServiceConfiguration(
            environment: [
                "SWITCHYARD_NATS_URL": "nats://a:4222, tls://b:4223",
                "SWITCHYARD_NATS_USER": "svc",
                "SWITCHYARD_NATS_PASSWORD": "pw",
                "SWITCHYARD_DATABASE_URL": "postgres://u:p@db:5433/sy?sslmode=require",
                "SWITCHYARD_DB_POOL_SIZE": "16",
                "SWITCHYARD_HTTP_HOST": "127.0.0.1",
                "SWITCHYARD_HTTP_PORT": "0",
                "SWITCHYARD_OPS_PORT": "9999",
                "SWITCHYARD_LOG_LEVEL": "DEBUG",
                "SWITCHYARD_LOG_FORMAT": "text",
                "SWITCHYARD_INSTANCE_ID": "gw-7",
                "SWITCHYARD_DRAIN_SECONDS": "5",
                "UNRELATED": "x",
            ],
            service: "api-gateway")
        #expect(config.natsServers == ["nats://a:4222", "tls://b:4223"])
        #expect(config.natsUser == "svc")
        #expect(config.natsPassword == "pw")
        #expect(config.databaseURL == "postgres://u:p@db:5433/sy?sslmode=require")
        #expect(config.databasePoolSize == 16)
        #expect(config.httpHost == "127.0.0.1")
        #expect(config.httpPort == 0)
        #expect(config.opsPort == 9999)
        #expect(config.logLevel == .debug)
        #expect(config.logFormat == .text)
        #expect(config.instanceID == "gw-7")
        #expect(config.drainSeconds == 5)
    }

    @Test func descriptionNeverShowsSecrets() throws {
        let config = try ServiceConfiguration(
            environment: [
                "SWITCHYARD_NATS_URL": "nats://user:natsSecret@a:4222",
                "SWITCHYARD_NATS_PASSWORD": "pwSecret",
                "SWITCHYARD_DATABASE_URL": "postgresql://sy:dbSecret@db/sy",
            ],
            service: "tenant")
        let text = "\(config)"
        #expect(!text.contains("natsSecret"))
        #expect(!text.contains("pwSecret"))
        #expect(!text.contains("dbSecret"))
        #expect(text.contains("postgresql://[redacted]@db/sy"))
    }

    struct InvalidCase: Sendable, CustomTestStringConvertible {
        let variable: String
        let value: String
        let code: ConfigurationError.Code
        var testDescription: String { "\(variable)=\(value)" }
    }

    @Test(arguments: [
        InvalidCase(variable: "SWITCHYARD_HTTP_PORT", value: "65536", code: .invalidPort),
        InvalidCase(variable: "SWITCHYARD_HTTP_PORT", value: "-1", code: .invalidPort),
        InvalidCase(variable: "SWITCHYARD_HTTP_PORT", value: "http", code: .invalidPort),
        InvalidCase(variable: "SWITCHYARD_OPS_PORT", value: "99999", code: .invalidPort),
        InvalidCase(variable: "SWITCHYARD_NATS_URL", value: "http://secretUser:secretPass@a:4222", code: .unsupportedScheme),
        InvalidCase(variable: "SWITCHYARD_NATS_URL", value: "nats://a:4222,redis://secretPass@b", code: .unsupportedScheme),
        InvalidCase(variable: "SWITCHYARD_NATS_URL", value: "nats://a:4222,,nats://b", code: .invalidURL),
        InvalidCase(variable: "SWITCHYARD_NATS_URL", value: "secretPass@localhost", code: .invalidURL),
        InvalidCase(variable: "SWITCHYARD_NATS_URL", value: "nats://", code: .invalidURL),
        InvalidCase(variable: "SWITCHYARD_DATABASE_URL", value: "mysql://u:secretPass@db/x", code: .unsupportedScheme),
        InvalidCase(variable: "SWITCHYARD_DATABASE_URL", value: "postgres://u:secretPass@db:99999/x", code: .invalidURL),
        InvalidCase(variable: "SWITCHYARD_DATABASE_URL", value: "host=db password=secretPass", code: .invalidURL),
        InvalidCase(variable: "SWITCHYARD_DB_POOL_SIZE", value: "-3", code: .outOfRange),
        InvalidCase(variable: "SWITCHYARD_DB_POOL_SIZE", value: "0", code: .outOfRange),
        InvalidCase(variable: "SWITCHYARD_DB_POOL_SIZE", value: "four", code: .invalidInteger),
        InvalidCase(variable: "SWITCHYARD_DRAIN_SECONDS", value: "-1", code: .outOfRange),
        InvalidCase(variable: "SWITCHYARD_LOG_LEVEL", value: "loud", code: .invalidChoice),
        InvalidCase(variable: "SWITCHYARD_LOG_FORMAT", value: "xml", code: .invalidChoice),
        InvalidCase(variable: "SWITCHYARD_INSTANCE_ID", value: "   ", code: .empty),
        InvalidCase(variable: "SWITCHYARD_HTTP_HOST", value: "", code: .empty),
        InvalidCase(variable: "SWITCHYARD_HTTP_HEADER_TIMEOUT_SECONDS", value: "0", code: .outOfRange),
        InvalidCase(variable: "SWITCHYARD_HTTP_BODY_TIMEOUT_SECONDS", value: "3601", code: .outOfRange),
        InvalidCase(variable: "SWITCHYARD_HTTP_MAX_CONNECTIONS", value: "0", code: .outOfRange),
        InvalidCase(variable: "SWITCHYARD_HTTP_MAX_CONNECTIONS", value: "many", code: .invalidInteger),
    ])
    func invalidValuesAreRejectedWithoutEchoingThem(invalid: InvalidCase) {
        do {
            _ = try ServiceConfiguration(environment: [invalid.variable: invalid.value], service: "router")
            Issue.record("accepted \(invalid.variable)")
        } catch {
            #expect(error.code == invalid.code)
            #expect(error.variable == invalid.variable)
            let message = "\(error)"
            #expect(message.hasPrefix(invalid.variable + ": "))
            #expect(!message.contains("secret"))
            if invalid.value.count > 3, !invalid.value.hasSuffix("://") {
                #expect(!message.contains(invalid.value))
            }
        }
    }

    @Test func invalidServiceDefaultPortIsRejected() {
        #expect(throws: ConfigurationError.self) {
            _ = try ServiceConfiguration(environment: [:], service: "x", defaultHTTPPort: 70000)
        }
    }

    @Test func mirrorPublicKeyMustBeA32ByteEd25519Key() throws {
        for bad in ["zz", "00", String(repeating: "ab", count: 33), "not hex at all"] {
            #expect(throws: ConfigurationError.self) {
                _ = try ServiceConfiguration(environment: ["SWITCHYARD_MIRROR_PUBLIC_KEY": bad], service: "x")
            }
        }
        let good = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
        let configuration = try ServiceConfiguration(environment: ["SWITCHYARD_MIRROR_PUBLIC_KEY": good], service: "x")
        #expect(configuration.mirrorVerifier != nil)
        #expect(try ServiceConfiguration(environment: [:], service: "x").mirrorVerifier == nil)
    }

    @Test func streamReplicasAreOneToFive() throws {
        #expect(try ServiceConfiguration(environment: [:], service: "x").streamReplicas == 1)
        #expect(try ServiceConfiguration(environment: ["SWITCHYARD_STREAM_REPLICAS": "3"], service: "x").streamReplicas == 3)
        for bad in ["0", "6", "three"] {
            #expect(throws: ConfigurationError.self) {
                try ServiceConfiguration(environment: ["SWITCHYARD_STREAM_REPLICAS": bad], service: "x")
            }
        }
    }

    @Test func documentationListsEveryVariableOnce() {
        let docs = ServiceConfiguration.documentation()
        let names = docs.map(\.name)
        #expect(Set(names).count == names.count)
        #expect(
            Set(names) == [
                "SWITCHYARD_NATS_URL", "SWITCHYARD_NATS_USER", "SWITCHYARD_NATS_PASSWORD", "SWITCHYARD_DATABASE_URL",
                "SWITCHYARD_DB_POOL_SIZE", "SWITCHYARD_HTTP_HOST", "SWITCHYARD_HTTP_PORT", "SWITCHYARD_OPS_PORT",
                "SWITCHYARD_LOG_LEVEL", "SWITCHYARD_LOG_FORMAT", "SWITCHYARD_INSTANCE_ID",
                "SWITCHYARD_DRAIN_SECONDS", "SWITCHYARD_MIRROR_PUBLIC_KEY", "SWITCHYARD_HTTP_IDLE_TIMEOUT_SECONDS",
                "SWITCHYARD_HTTP_HEADER_TIMEOUT_SECONDS", "SWITCHYARD_HTTP_BODY_TIMEOUT_SECONDS",
                "SWITCHYARD_HTTP_MAX_CONNECTIONS", "SWITCHYARD_STREAM_REPLICAS",
            ])
        #expect(docs.first { $0.name == "SWITCHYARD_DB_POOL_SIZE" }?.defaultValue == "4")
        #expect(docs.first { $0.name == "SWITCHYARD_HTTP_HEADER_TIMEOUT_SECONDS" }?.defaultValue == "10")
        #expect(docs.first { $0.name == "SWITCHYARD_HTTP_MAX_CONNECTIONS" }?.defaultValue == "10000")
        #expect(docs.first { $0.name == "SWITCHYARD_NATS_URL" }?.defaultValue == "nats://127.0.0.1:4222")
        #expect(docs.allSatisfy { !$0.description.isEmpty })
    }
}
