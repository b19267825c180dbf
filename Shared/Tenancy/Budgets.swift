import Contracts
import Foundation
import Messaging
import Schemas
import Security

/// Budget enforcement shared by the gateways (admission) and billing (settlement), over one KV entry per
/// tenant in the `budgets` bucket (docs/adr/0014).
///
/// The entry (`BudgetState`) holds the tenant's settled spend of the current day and month (in the tenant's time
/// zone, UTC unless it has one), as billing read
/// it from the ledger, and one hold per request a gateway admitted that billing has not settled yet. A gateway
/// admits a request only if settled spend + holds + the tenant's request estimate fit the budget, and adds its
/// hold in the same compare-and-set; billing replaces the spend figures and drops the holds of the requests it
/// recorded. So requests in flight on every replica count against the budget, and the overspend is bounded by
/// how far actual costs exceed the estimate, not by the number of concurrent requests.
public enum Budgets {
    public static let bucket = KVBucketSpec(name: BucketNames.budgets, history: 1)
    /// The warning event fires when committed spend reaches this share of a budget.
    public static let warningPercent: Int64 = 80

    public static func key(tenant: String) -> String { tenant }
}

/// The current budget periods in the tenant's time zone (UTC unless it has one): day `2026-11-29`, month
/// `2026-11`.
public struct BudgetPeriods: Sendable, Equatable {
    public var day: String
    public var month: String
    /// Seconds until the next day / month starts.
    public var secondsToNextDay: Int
    public var secondsToNextMonth: Int

    /// - Parameter timeZone: an IANA name (`Tenant.time_zone`); empty or unknown = UTC.
    public init(unixNanos: Int64, timeZone: String = "") {
        let seconds = unixNanos / 1_000_000_000
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: timeZone.isEmpty ? "UTC" : timeZone) ?? TimeZone(identifier: "UTC")!
        let date = Date(timeIntervalSince1970: TimeInterval(seconds))
        let parts = calendar.dateComponents([.year, .month, .day], from: date)
        let (year, month, day) = (parts.year!, parts.month!, parts.day!)
        self.day = String(format: "%04d-%02d-%02d", year, month, day)
        self.month = String(format: "%04d-%02d", year, month)
        let dayStart = calendar.date(from: DateComponents(year: year, month: month, day: day))!
        let monthStart = calendar.date(from: DateComponents(year: year, month: month, day: 1))!
        let nextDay = calendar.date(byAdding: .day, value: 1, to: dayStart)!
        let nextMonth = calendar.date(byAdding: .month, value: 1, to: monthStart)!
        secondsToNextDay = max(1, Int(nextDay.timeIntervalSince1970) - Int(seconds))
        secondsToNextMonth = max(1, Int(nextMonth.timeIntervalSince1970) - Int(seconds))
    }
}

/// A tenant's budgets from its plan; 0 = unlimited.
public struct BudgetLimits: Sendable, Equatable {
    public var dailyMicros: Int64
    public var monthlyMicros: Int64

    public init(dailyMicros: Int64, monthlyMicros: Int64) {
        self.dailyMicros = max(0, dailyMicros)
        self.monthlyMicros = max(0, monthlyMicros)
    }

    public init(plan: Plan) { self.init(dailyMicros: plan.dailyBudgetMicros, monthlyMicros: plan.monthlyBudgetMicros) }

    public var isLimited: Bool { dailyMicros > 0 || monthlyMicros > 0 }
}

/// A budget event to publish once the state change that decided it has been written.
public struct BudgetNotice: Sendable, Equatable {
    public enum Kind: Sendable, Equatable { case warning, exceeded }
    public var kind: Kind
    /// `daily` | `monthly`.
    public var period: String
    public var periodStart: String
    public var limitMicros: Int64
    /// Settled spend plus holds (plus the request's estimate, for a warning at admission).
    public var committedMicros: Int64

    public init(kind: Kind, period: String, periodStart: String, limitMicros: Int64, committedMicros: Int64) {
        self.kind = kind
        self.period = period
        self.periodStart = periodStart
        self.limitMicros = limitMicros
        self.committedMicros = committedMicros
    }
}

/// What admission decided.
public enum BudgetDecision: Sendable, Equatable {
    /// Admitted; a hold of `heldMicros` was added.
    case admitted(heldMicros: Int64, notices: [BudgetNotice])
    /// Refused: the request would exceed this period's budget.
    case refused(period: String, limitMicros: Int64, committedMicros: Int64, estimateMicros: Int64,
                 retryAfterSeconds: Int, notices: [BudgetNotice])
    /// The tenant's request cost is not known yet (no settled request) and one request is already in flight:
    /// the first request of a budgeted account runs alone until billing has priced it.
    case probing
}

extension BudgetState {
    /// Admission of one request: decides and, if admitted, adds its hold and marks the periods whose events are
    /// due. Pure; the caller writes the result back with a compare-and-set.
    public mutating func admit(requestID: String, limits: BudgetLimits, nowUnixNanos now: Int64,
                               lease: Duration, timeZone: String = "") -> BudgetDecision {
        let periods = BudgetPeriods(unixNanos: now, timeZone: timeZone)
        holds.removeAll { $0.expiresAtUnixNanos <= now }
        let held = holds.reduce(Int64(0)) { $0 &+ $1.micros }
        let estimate = max(0, requestEstimateMicros)
        if estimate == 0 && !holds.isEmpty { return .probing }
        let checks: [(name: String, start: String, limit: Int64, spent: Int64, resetSeconds: Int)] = [
            ("daily", periods.day, limits.dailyMicros, day == periods.day ? daySpentMicros : 0, periods.secondsToNextDay),
            ("monthly", periods.month, limits.monthlyMicros, month == periods.month ? monthSpentMicros : 0,
             periods.secondsToNextMonth),
        ]
        for check in checks where check.limit > 0 {
            let committed = check.spent &+ held
            if committed &+ estimate > check.limit {
                var notices: [BudgetNotice] = []
                if markSent(.exceeded, period: check.name, start: check.start) {
                    notices.append(BudgetNotice(kind: .exceeded, period: check.name, periodStart: check.start,
                                                limitMicros: check.limit, committedMicros: committed))
                }
                return .refused(period: check.name, limitMicros: check.limit, committedMicros: committed,
                                estimateMicros: estimate, retryAfterSeconds: check.resetSeconds, notices: notices)
            }
        }
        holds.append(BudgetHold(requestID: requestID, micros: estimate,
                                expiresAtUnixNanos: now &+ lease.nanosecondsValue))
        var notices: [BudgetNotice] = []
        for check in checks where check.limit > 0 {
            let committed = check.spent &+ held &+ estimate
            if committed * 100 >= check.limit * Budgets.warningPercent,
               markSent(.warning, period: check.name, start: check.start)
            {
                notices.append(BudgetNotice(kind: .warning, period: check.name, periodStart: check.start,
                                            limitMicros: check.limit, committedMicros: committed))
            }
        }
        return .admitted(heldMicros: estimate, notices: notices)
    }

    /// Drops the hold of a request that ended without reaching billing (it was never published).
    public mutating func release(requestID: String) -> Bool {
        let before = holds.count
        holds.removeAll { $0.requestID == requestID }
        return holds.count != before
    }

    /// Settlement by billing: the spend figures of `periods` as read from the ledger after a commit (never
    /// lowered by a reader that raced a later commit, unless `exact`), the holds of `settled` requests and
    /// expired holds dropped, and the request estimate moved to `observedMaxCost` (the costliest request just
    /// recorded), decaying slowly so one expensive request doesn't block a small budget for long.
    public mutating func settle(periods: BudgetPeriods, daySpent: Int64, monthSpent: Int64, settled: Set<String>,
                                observedMaxCost: Int64?, exact: Bool, nowUnixNanos now: Int64) {
        if day == periods.day && !exact { daySpentMicros = max(daySpentMicros, daySpent) } else { daySpentMicros = daySpent }
        if month == periods.month && !exact {
            monthSpentMicros = max(monthSpentMicros, monthSpent)
        } else {
            monthSpentMicros = monthSpent
        }
        day = periods.day
        month = periods.month
        holds.removeAll { settled.contains($0.requestID) || $0.expiresAtUnixNanos <= now }
        if let observed = observedMaxCost, observed > 0 {
            requestEstimateMicros = max(observed, requestEstimateMicros - requestEstimateMicros / 10)
        }
        settledAtUnixNanos = now
    }

    /// Records that the event of `kind` for this period is being sent; false if it already was.
    private mutating func markSent(_ kind: BudgetNotice.Kind, period: String, start: String) -> Bool {
        switch (kind, period) {
        case (.warning, "daily"):
            if warnedDay == start { return false }
            warnedDay = start
        case (.warning, _):
            if warnedMonth == start { return false }
            warnedMonth = start
        case (.exceeded, "daily"):
            if exceededDay == start { return false }
            exceededDay = start
        case (.exceeded, _):
            if exceededMonth == start { return false }
            exceededMonth = start
        }
        return true
    }
}

/// Compare-and-set access to the `budgets` bucket.
public struct BudgetBook: Sendable {
    public let bucket: KeyValueBucket

    public init(bucket: KeyValueBucket) { self.bucket = bucket }

    /// Bound on compare-and-set rounds for one change; each lost round means another writer's change landed.
    public static let maxAttempts = 64

    public enum Failure: Error, Sendable, Equatable {
        /// The entry exists but is not a valid `BudgetState`.
        case malformed
        /// Other writers won `maxAttempts` rounds in a row.
        case contended
    }

    /// Reads the tenant's state, lets `change` modify it (nil = no entry yet), and writes it back if `change`
    /// asks to, retrying from a fresh read whenever another writer got in between. A malformed entry is passed
    /// as nil when `replaceMalformed`, else the call fails with ``Failure/malformed``.
    public func modify<Result: Sendable>(
        tenant: String, replaceMalformed: Bool = false,
        _ change: (inout BudgetState?) -> (write: Bool, result: Result)
    ) async throws -> Result {
        let key = Budgets.key(tenant: tenant)
        for _ in 0..<Self.maxAttempts {
            let entry = try await bucket.get(key)
            var state: BudgetState?
            if let entry, entry.operation == .put {
                do {
                    state = try BudgetState(protobuf: entry.value)
                } catch {
                    if !replaceMalformed { throw Failure.malformed }
                }
            }
            let (shouldWrite, result) = change(&state)
            guard shouldWrite, let state else { return result }
            if try await write(key, state.protobufBytes(), after: entry?.revision) { return result }
        }
        throw Failure.contended
    }

    /// Compare-and-set (create when `revision` is nil); false when another writer got there first.
    private func write(_ key: String, _ value: [UInt8], after revision: UInt64?) async throws -> Bool {
        do {
            if let revision {
                try await bucket.update(key, value, expectedRevision: revision)
            } else {
                try await bucket.create(key, value)
            }
            return true
        } catch {
            if error.code == .wrongLastRevision || error.code == .keyExists { return false }
            throw error
        }
    }

    /// The tenant's state, or nil when it has none (or a malformed one).
    public func state(tenant: String) async throws -> BudgetState? {
        guard let entry = try await bucket.get(Budgets.key(tenant: tenant)), entry.operation == .put else { return nil }
        return try? BudgetState(protobuf: entry.value)
    }
}

extension BudgetNotice {
    /// The event kind this notice is published as.
    public var eventKind: EventKind { kind == .warning ? .budgetWarning : .budgetExceeded }

    /// A deterministic event id (tenant, kind, period, period start), so the stream's de-duplication drops a
    /// second publish of the same notice, whichever replica sends it.
    public func eventID(tenant: String) -> String {
        let digest = SHA256.hash("budget|\(eventKind.rawValue)|\(tenant)|\(period)|\(periodStart)")
        return Hex.encode(digest.prefix(16))
    }

    /// The event's protobuf payload.
    public func payload(tenant: String, producer: String, nowUnixNanos now: Int64 = EventClock.nowUnixNanos())
        -> [UInt8]
    {
        var meta = EventMeta.make(tenantID: tenant, producer: producer, occurredAtUnixNanos: now)
        meta.eventID = eventID(tenant: tenant)
        switch kind {
        case .warning:
            return BudgetWarning(meta: meta, period: period, limitMicros: limitMicros, committedMicros: committedMicros,
                                 periodStart: periodStart, thresholdPercent: UInt32(Budgets.warningPercent))
                .protobufBytes()
        case .exceeded:
            return BudgetExceeded(meta: meta, period: period, limitMicros: limitMicros, spentMicros: committedMicros,
                                  periodStart: periodStart).protobufBytes()
        }
    }
}
