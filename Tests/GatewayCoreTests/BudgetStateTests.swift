import Schemas
import Tenancy
import Testing

/// The budget rules on a `BudgetState` (docs/adr/0014), without a network: admission, holds, events, periods.
@Suite("Budget admission and settlement")
struct BudgetStateTests {
    // 2026-11-29 12:00:00 UTC.
    static let noon: Int64 = 1_795_953_600 * 1_000_000_000
    static let lease = Duration.seconds(600)
    let limits = BudgetLimits(dailyMicros: 1000, monthlyMicros: 0)

    func state(spent: Int64, estimate: Int64) -> BudgetState {
        var state = BudgetState()
        state.settle(periods: BudgetPeriods(unixNanos: Self.noon), daySpent: spent, monthSpent: spent, settled: [],
                     observedMaxCost: estimate, exact: true, nowUnixNanos: Self.noon)
        return state
    }

    @Test func periods() {
        let periods = BudgetPeriods(unixNanos: Self.noon)
        #expect(periods.day == "2026-11-29")
        #expect(periods.month == "2026-11")
        #expect(periods.secondsToNextDay == 12 * 3600)
        #expect(periods.secondsToNextMonth == 36 * 3600)
    }

    @Test("periods follow the tenant's time zone")
    func periodsInATimeZone() {
        // 2026-11-29 12:00 UTC is 30 November 01:00 in Auckland (UTC+13).
        let auckland = BudgetPeriods(unixNanos: Self.noon, timeZone: "Pacific/Auckland")
        #expect(auckland.day == "2026-11-30" && auckland.month == "2026-11")
        #expect(auckland.secondsToNextDay == 23 * 3600)
        #expect(auckland.secondsToNextMonth == 23 * 3600)
        #expect(BudgetPeriods(unixNanos: Self.noon, timeZone: "No/Such_Zone") == BudgetPeriods(unixNanos: Self.noon))
        // A UTC-settled state read in Auckland: yesterday's (UTC) figure is not today's there.
        var state = state(spent: 1000, estimate: 100)
        guard case .admitted = state.admit(requestID: "a", limits: limits, nowUnixNanos: Self.noon, lease: Self.lease,
                                           timeZone: "Pacific/Auckland") else {
            Issue.record("a new local day admits")
            return
        }
    }

    @Test("holds count against the budget until it is full; then refusals, with one exceeded event")
    func holdsFillTheBudget() {
        var state = state(spent: 500, estimate: 100)
        var admitted = 0
        var notices: [BudgetNotice] = []
        for index in 0..<20 {
            switch state.admit(requestID: "r\(index)", limits: limits, nowUnixNanos: Self.noon, lease: Self.lease) {
            case .admitted(let held, let sent):
                #expect(held == 100)
                admitted += 1
                notices += sent
            case .refused(let period, let limit, let committed, let estimate, let retryAfter, let sent):
                #expect(period == "daily" && limit == 1000 && committed == 1000 && estimate == 100)
                #expect(retryAfter == 12 * 3600)
                notices += sent
            case .probing:
                Issue.record("not probing: the estimate is known")
            }
        }
        #expect(admitted == 5)
        #expect(state.holds.count == 5)
        #expect(notices.map(\.kind) == [.warning, .exceeded], "each event once per period")
        #expect(notices.first?.committedMicros == 800)
    }

    @Test("settlement replaces holds with the ledger's figure and never lowers it on a racing reader")
    func settlement() {
        var state = state(spent: 0, estimate: 100)
        for index in 0..<3 {
            _ = state.admit(requestID: "r\(index)", limits: limits, nowUnixNanos: Self.noon, lease: Self.lease)
        }
        let periods = BudgetPeriods(unixNanos: Self.noon)
        state.settle(periods: periods, daySpent: 240, monthSpent: 240, settled: ["r0", "r1"], observedMaxCost: 120,
                     exact: false, nowUnixNanos: Self.noon)
        #expect(state.holds.map(\.requestID) == ["r2"])
        #expect(state.daySpentMicros == 240)
        #expect(state.requestEstimateMicros == 120)
        // An older read (before a later commit) doesn't take the figure back down...
        state.settle(periods: periods, daySpent: 100, monthSpent: 100, settled: [], observedMaxCost: nil, exact: false,
                     nowUnixNanos: Self.noon)
        #expect(state.daySpentMicros == 240)
        // ...a recompute does.
        state.settle(periods: periods, daySpent: 100, monthSpent: 100, settled: [], observedMaxCost: nil, exact: true,
                     nowUnixNanos: Self.noon)
        #expect(state.daySpentMicros == 100)
        // The estimate decays towards cheaper requests rather than dropping at once.
        state.settle(periods: periods, daySpent: 100, monthSpent: 100, settled: [], observedMaxCost: 20, exact: false,
                     nowUnixNanos: Self.noon)
        #expect(state.requestEstimateMicros == 108)
    }

    @Test("a new day lifts the daily block; the monthly budget still counts")
    func newPeriod() {
        var state = state(spent: 1000, estimate: 100)
        let both = BudgetLimits(dailyMicros: 1000, monthlyMicros: 1500)
        guard case .refused = state.admit(requestID: "a", limits: both, nowUnixNanos: Self.noon, lease: Self.lease) else {
            Issue.record("a spent daily budget refuses")
            return
        }
        let tomorrow = Self.noon + 86_400 * 1_000_000_000
        guard case .admitted = state.admit(requestID: "b", limits: both, nowUnixNanos: tomorrow, lease: Self.lease) else {
            Issue.record("the next day admits")
            return
        }
        // 1000 spent this month + 5 × 100 holds reach the monthly 1500.
        for index in 0..<4 { _ = state.admit(requestID: "c\(index)", limits: both, nowUnixNanos: tomorrow, lease: Self.lease) }
        guard case .refused(let period, _, _, _, _, _) = state.admit(requestID: "d", limits: both, nowUnixNanos: tomorrow,
                                                                      lease: Self.lease) else {
            Issue.record("the monthly budget refuses")
            return
        }
        #expect(period == "monthly")
    }

    @Test("expired holds stop counting; a released hold frees its share")
    func expiryAndRelease() {
        var state = state(spent: 900, estimate: 100)
        guard case .admitted = state.admit(requestID: "a", limits: limits, nowUnixNanos: Self.noon, lease: .seconds(60))
        else { Issue.record("admitted"); return }
        guard case .refused = state.admit(requestID: "b", limits: limits, nowUnixNanos: Self.noon, lease: .seconds(60))
        else { Issue.record("full"); return }
        let released = state.release(requestID: "a")
        let releasedAgain = state.release(requestID: "a")
        #expect(released && !releasedAgain)
        guard case .admitted = state.admit(requestID: "c", limits: limits, nowUnixNanos: Self.noon, lease: .seconds(60))
        else { Issue.record("released share reused"); return }
        let later = Self.noon + 61 * 1_000_000_000
        guard case .admitted = state.admit(requestID: "d", limits: limits, nowUnixNanos: later, lease: .seconds(60))
        else { Issue.record("expired hold no longer counts"); return }
        #expect(state.holds.map(\.requestID) == ["d"])
    }

    @Test("with no request priced yet, the first request of a budgeted account runs alone")
    func probing() {
        var state = state(spent: 0, estimate: 0)
        guard case .admitted(let held, _) = state.admit(requestID: "a", limits: limits, nowUnixNanos: Self.noon,
                                                        lease: Self.lease) else { Issue.record("first admitted"); return }
        #expect(held == 0)
        #expect(state.admit(requestID: "b", limits: limits, nowUnixNanos: Self.noon, lease: Self.lease) == .probing)
    }

    @Test func noticeEventIDsAreStable() {
        let notice = BudgetNotice(kind: .exceeded, period: "daily", periodStart: "2026-11-29", limitMicros: 1,
                                  committedMicros: 1)
        #expect(notice.eventID(tenant: "a") == notice.eventID(tenant: "a"))
        #expect(notice.eventID(tenant: "a") != notice.eventID(tenant: "b"))
        #expect(notice.eventID(tenant: "a").count == 32)
        let event = try? BudgetExceeded(protobuf: notice.payload(tenant: "a", producer: "api-gateway"))
        #expect(event?.meta?.eventID == notice.eventID(tenant: "a"))
        #expect(event?.periodStart == "2026-11-29")
    }
}
