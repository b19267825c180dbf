import Logging

/// How log lines are rendered.
public enum LogFormat: String, Sendable, CaseIterable {
    /// One JSON object per line (``JSONLogHandler``); the production default.
    case json
    /// swift-log's human-readable `StreamLogHandler` (local development).
    case text
}

/// Building loggers without touching the global `LoggingSystem` (libraries, tests), and bootstrapping it
/// once from `@main`.
public enum TelemetryLogging {
    /// A log handler factory for `service` in `format`; trace ids come from the task-local `ServiceContext`.
    public static func handlerFactory(
        service: String,
        level: Logger.Level,
        format: LogFormat,
        sink: LogSink = .stdout
    ) -> @Sendable (String) -> any LogHandler {
        { label in
            switch format {
            case .json:
                return JSONLogHandler(
                    label: label, service: service, logLevel: level, sink: sink,
                    metadataProvider: .switchyardTracing)
            case .text:
                var handler = StreamLogHandler.standardOutput(label: label, metadataProvider: .switchyardTracing)
                handler.logLevel = level
                return handler
            }
        }
    }

    /// A logger for `label` that does not depend on `LoggingSystem.bootstrap`.
    public static func makeLogger(
        label: String,
        service: String,
        level: Logger.Level = .info,
        format: LogFormat = .json,
        sink: LogSink = .stdout
    ) -> Logger {
        let factory = handlerFactory(service: service, level: level, format: format, sink: sink)
        return Logger(label: label, factory: factory)
    }

    /// Installs the Switchyard handler as the process-wide default. Call once, from `@main` only.
    public static func bootstrap(service: String, level: Logger.Level, format: LogFormat) {
        let factory = handlerFactory(service: service, level: level, format: format)
        LoggingSystem.bootstrap(factory)
    }
}
