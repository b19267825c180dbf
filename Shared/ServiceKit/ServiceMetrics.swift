#if canImport(Glibc)
import Glibc
#endif
import Contracts
import Foundation
import Hummingbird
import Messaging
import Synchronization
import Telemetry

/// What every service exports from its first scrape on (issue 13 item 2): process figures, the NATS connection's
/// state, and — registered by the builder — the state of each durable it owns; help text for every name in
/// ``MetricName/all``. Refreshed right before each scrape (``TelemetryMetrics/onScrape(_:)``), so nothing runs
/// in between.
public enum ServiceMetrics {
    /// Help texts, process figures and the NATS connection's state.
    static func install(_ metrics: TelemetryMetrics, connection: NATSConnection) {
        metrics.declareHelp(MetricName.all)
        let process = ProcessFigures(metrics: metrics)
        metrics.onScrape { process.collect() }
        let nats = CounterDelta()
        metrics.onScrape {
            metrics.gauge(.natsConnected).record(connection.isConnected ? 1 : 0)
            // By what grew since the last scrape (0 creates the series at the first one).
            metrics.counter(.natsReconnectsTotal).increment(by: Int64(nats.advance(to: Double(connection.reconnectCount))))
        }
    }

    /// Counts a consume loop's dead letters (the MaxDeliveries loop's ones under the consumer they belong to).
    static func deadLetterCounter(_ metrics: TelemetryMetrics) -> @Sendable (String, String) -> Void {
        { stream, consumer in
            metrics.counter(.natsMessagesDeadLetteredTotal, [(.stream, stream), (.consumer, consumer)]).increment()
        }
    }

    /// How often at most a durable's state is asked of nats-server: scrapes in between show the last answer. For a
    /// filtered durable nats-server 2.9 counts its pending messages on each ask, which costs it CPU in proportion
    /// to the stream; a Prometheus scraping every second, or several scraping one replica, must not multiply that.
    static let consumerStateInterval: Duration = .seconds(5)

    /// Pending, ack-pending and redelivered messages of a durable this service owns (skipped while NATS is away,
    /// so a scrape never waits on a reconnect; asked at most every ``consumerStateInterval``).
    static func watchConsumer(_ metrics: TelemetryMetrics, jetStream: JetStream, stream: String, durable: String,
                              interval: Duration = consumerStateInterval) {
        let labels: [(MetricLabel, String)] = [(.stream, stream), (.consumer, durable)]
        // Its dead letters from the start, at zero, so that an alert on their increase has a series to look at.
        metrics.counter(.natsMessagesDeadLetteredTotal, labels).increment(by: 0)
        let lastAsked = Mutex<ContinuousClock.Instant?>(nil)
        metrics.onScrape {
            let now = ContinuousClock.now
            let due = lastAsked.withLock { last in
                guard last.map({ now - $0 >= interval }) ?? true else { return false }
                last = now
                return true
            }
            guard due, jetStream.connection.isConnected,
                  let state = try? await jetStream.consumerState(stream: stream, durable: durable) else { return }
            metrics.gauge(.jetStreamConsumerPendingMessages, labels).record(Double(state.pending))
            metrics.gauge(.jetStreamConsumerAckPendingMessages, labels).record(Double(state.ackPending))
            metrics.gauge(.jetStreamConsumerRedeliveredMessages, labels).record(Double(state.redelivered))
        }
    }
}

/// A counter that mirrors an absolute figure (CPU seconds, reconnects): each scrape adds what grew since.
final class CounterDelta: Sendable {
    private let last = Mutex<Double>(0)

    func advance(to value: Double) -> Double {
        last.withLock { last in
            defer { last = max(last, value) }
            return max(0, value - last)
        }
    }
}

/// `process_*` from /proc/self (Linux), like the Prometheus client libraries' process collector.
final class ProcessFigures: Sendable {
    let metrics: TelemetryMetrics
    let cpu = CounterDelta()
    let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
    let pageSize = Double(sysconf(Int32(_SC_PAGESIZE)))
    let startTime: Double

    init(metrics: TelemetryMetrics) {
        self.metrics = metrics
        startTime = Self.startTime(ticks: Double(sysconf(Int32(_SC_CLK_TCK))))
    }

    func collect() {
        if let fields = Self.statFields() {
            // Fields after the command: state is [0]; utime [11], stime [12], vsize [20], rss [21] (pages).
            let seconds = ((Double(fields[11]) ?? 0) + (Double(fields[12]) ?? 0)) / ticks
            let grown = cpu.advance(to: seconds)
            metrics.floatingCounter(.processCPUSecondsTotal).increment(by: grown)
            metrics.gauge(.processVirtualMemoryBytes).record(Double(fields[20]) ?? 0)
            metrics.gauge(.processResidentMemoryBytes).record((Double(fields[21]) ?? 0) * pageSize)
        }
        let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? 0
        metrics.gauge(.processOpenFDs).record(Double(fds))
        var limit = rlimit()
        if getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0 {
            metrics.gauge(.processMaxFDs).record(Double(limit.rlim_cur))
        }
        metrics.gauge(.processStartTimeSeconds).record(startTime)
    }

    /// The fields of /proc/self/stat after the `(command)` part.
    static func statFields() -> [Substring]? {
        guard let stat = try? String(contentsOfFile: "/proc/self/stat", encoding: .utf8),
              let end = stat.lastIndex(of: ")") else { return nil }
        let fields = stat[stat.index(after: end)...].split(separator: " ")
        return fields.count > 21 ? fields : nil
    }

    /// Boot time (/proc/stat `btime`) plus the process's start in clock ticks after boot.
    static func startTime(ticks: Double) -> Double {
        guard let fields = statFields(), let started = Double(fields[19]),
              let stat = try? String(contentsOfFile: "/proc/stat", encoding: .utf8),
              let line = stat.split(separator: "\n").first(where: { $0.hasPrefix("btime ") }),
              let boot = Double(line.dropFirst(6).trimmingCharacters(in: .whitespaces)) else {
            return Date().timeIntervalSince1970
        }
        return boot + started / ticks
    }
}

/// Records `http_request_duration_seconds{method, route, status}` for every request a listener answers. The
/// route is the request's path when a route served it, `unmatched` for a 404 (so unknown paths never become
/// labels).
struct HTTPMetricsResponder<Inner: HTTPResponder>: HTTPResponder {
    typealias Context = Inner.Context
    let inner: Inner
    let metrics: TelemetryMetrics

    func respond(to request: Request, context: Context) async throws -> Response {
        let started = ContinuousClock.now
        let method = request.method.rawValue
        let path = request.uri.path
        do {
            let response = try await inner.respond(to: request, context: context)
            record(method: method, path: path, status: response.status.code, since: started)
            return response
        } catch let error as any HTTPResponseError {
            record(method: method, path: path, status: error.status.code, since: started)
            throw error
        } catch {
            record(method: method, path: path, status: 500, since: started)
            throw error
        }
    }

    private func record(method: String, path: String, status: Int, since started: ContinuousClock.Instant) {
        let known = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
        let route = status == 404 || path.utf8.count > 128 ? "unmatched" : path
        metrics.timer(.httpRequestDurationSeconds, [
            (.method, known.contains(method) ? method : "other"), (.route, route), (.status, String(status)),
        ]).recordNanoseconds((ContinuousClock.now - started).nanosecondsValue)
    }
}
