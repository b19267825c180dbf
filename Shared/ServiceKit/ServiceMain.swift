import Contracts
import Foundation
import Logging
import ServiceLifecycle
import Telemetry

/// What `ServiceMain` hands a service's build function: validated configuration, the environment (for the
/// service's own settings), the bootstrapped logger and metrics.
public struct ServiceSetup: Sendable {
    public let configuration: ServiceConfiguration
    public let environment: EnvironmentReader
    public let logger: Logger
    public let metrics: TelemetryMetrics
}

/// The body of every `App/main.swift`: reads and validates the configuration (a bad variable ends the process
/// with one line naming it, exit code 78), bootstraps logging and metrics once, builds the service group and
/// runs it until SIGTERM/SIGINT.
public enum ServiceMain {
    public static func run(
        _ service: ServiceName, httpPort: Int, opsPort: Int,
        build: @Sendable (ServiceSetup) async throws -> ServiceGroup
    ) async {
        let environment = EnvironmentReader()
        let configuration: ServiceConfiguration
        do {
            configuration = try ServiceConfiguration(environment: environment.environment, service: service.rawValue,
                                                     defaultHTTPPort: httpPort, defaultOpsPort: opsPort)
        } catch {
            FileHandle.standardError.write(Data("\(service.rawValue): configuration error: \(error)\n".utf8))
            exit(78)  // EX_CONFIG
        }
        TelemetryLogging.bootstrap(service: service.rawValue, level: configuration.logLevel,
                                   format: configuration.logFormat)
        let metrics = TelemetryMetrics()
        metrics.bootstrap()
        let logger = Logger(label: service.rawValue)
        do {
            let group = try await build(ServiceSetup(configuration: configuration, environment: environment,
                                                     logger: logger, metrics: metrics))
            try await group.run()
        } catch let error as ConfigurationError {
            logger.critical("configuration error", metadata: ["error": "\(error)"])
            exit(78)
        } catch {
            logger.critical("service stopped with an error", metadata: ["error": "\(error)"])
            exit(1)
        }
    }
}
