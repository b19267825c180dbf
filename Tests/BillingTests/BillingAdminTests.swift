import BillingCore
import Foundation
import Schemas
import Tenancy
import Testing
import TestKit

@Suite("Billing admin commands: prices and usage reports, over NATS and through the CLI", .serialized)
struct BillingAdminTests {
    static let november27: Int64 = 1_795_773_600 * 1_000_000_000

    func client(_ h: BillingHarness, token: String = BillingHarness.adminToken) -> AdminClient {
        AdminClient(connection: h.connection, token: token, actor: "test")
    }

    /// The admin failure `body` throws (nil when it succeeds or throws anything else).
    func failure(_ body: () async throws -> Void) async -> AdminFailure? {
        do {
            try await body()
            return nil
        } catch {
            return error as? AdminFailure
        }
    }

    @Test("price versions are validated, one currency, listed in order; usage is priced by the version in effect")
    func pricesAndUsage() async throws {
        try await BillingHarness.with { h in
            try await h.runBilling {
                let admin = client(h)
                let wrong = await failure { _ = try await client(h, token: "not-the-admin-token-at-all").call(
                    .priceList, ListPricesRequest(), as: ListPricesResponse.self) }
                #expect(wrong?.code == .unauthorized)

                let first: SetPriceResponse = try await admin.call(.priceSet, SetPriceRequest(price: Price(
                    provider: "openai", model: "gpt-test", effectiveFromUnixNanos: Self.november27 - 86_400_000_000_000,
                    inputMicrosPerMillion: 2_000_000, outputMicrosPerMillion: 8_000_000, currency: "USD")))
                #expect(first.price?.id ?? 0 > 0)
                #expect(first.price?.createdBy == "operator (test)")
                // From noon on the 27th, the model costs ten times as much.
                _ = try await admin.call(.priceSet, SetPriceRequest(price: Price(
                    provider: "openai", model: "gpt-test", effectiveFromUnixNanos: Self.november27 + 7_200_000_000_000,
                    inputMicrosPerMillion: 20_000_000, outputMicrosPerMillion: 80_000_000, currency: "USD")),
                    as: SetPriceResponse.self)
                let duplicate = await failure { _ = try await admin.call(.priceSet, SetPriceRequest(price: Price(
                    provider: "openai", model: "gpt-test", effectiveFromUnixNanos: Self.november27 + 7_200_000_000_000,
                    inputMicrosPerMillion: 1, outputMicrosPerMillion: 1, currency: "USD")), as: SetPriceResponse.self) }
                #expect(duplicate?.code == .conflict)
                let otherCurrency = await failure { _ = try await admin.call(.priceSet, SetPriceRequest(price: Price(
                    provider: "anthropic", model: "claude", inputMicrosPerMillion: 1, outputMicrosPerMillion: 1,
                    currency: "EUR")), as: SetPriceResponse.self) }
                #expect(otherCurrency?.code == .conflict)
                for bad in [Price(provider: "openai", model: "m; DROP TABLE", currency: "USD"),
                            Price(provider: "openai", model: "gpt", inputMicrosPerMillion: -1, currency: "USD"),
                            Price(provider: "openai", model: "gpt", currency: "dollars"),
                            Price(provider: "", model: "gpt", currency: "USD")] {
                    let refused = await failure { _ = try await admin.call(.priceSet, SetPriceRequest(price: bad),
                                                                          as: SetPriceResponse.self) }
                    #expect(refused?.code == .invalidArgument, "\(bad)")
                }
                let listed: ListPricesResponse = try await admin.call(.priceList, ListPricesRequest(provider: "openai"))
                #expect(listed.prices.map(\.inputMicrosPerMillion) == [2_000_000, 20_000_000])

                // 10:00 (old price) and 14:00 (new price) on the 27th, and a model without a price.
                try await h.publish([
                    BillingHarness.usage(tenant: "acme", at: Self.november27),
                    BillingHarness.usage(tenant: "acme", at: Self.november27 + 14_400_000_000_000),
                    BillingHarness.usage(tenant: "acme", model: "unlisted", at: Self.november27),
                ])
                try await BillingHarness.eventually { try await h.ledgerRows() == 3 }
                let byModel: UsageReportResponse = try await admin.call(.usage, UsageReportRequest(
                    tenantID: "acme", by: "model"))
                #expect(byModel.rows.map(\.key) == ["openai/gpt-test", "openai/unlisted"])
                // 600 µ$ before noon, 6,000 µ$ after; the unlisted model is flagged, not billed.
                #expect(byModel.rows.first?.costMicros == 6_600)
                #expect(byModel.rows.last?.unpricedRequests == 1)
                #expect(byModel.total?.requests == 3)
                #expect(byModel.total?.costMicros == 6_600)
                let days: UsageReportResponse = try await admin.call(.usage, UsageReportRequest(
                    tenantID: "acme", fromUnixNanos: Self.november27 + 3_600_000_000_000, by: "day"))
                #expect(days.rows.map(\.key) == ["2026-11-27"])
                #expect(days.total?.requests == 1)
                for (tenant, by) in [("Not A Tenant", "day"), ("acme", "customer-card")] {
                    let refused = await failure { _ = try await admin.call(.usage, UsageReportRequest(
                        tenantID: tenant, by: by), as: UsageReportResponse.self) }
                    #expect(refused?.code == .invalidArgument)
                }

                // The operator's path: the real CLI.
                let cli = try builtProduct("switchyard")
                let environment = ["SWITCHYARD_NATS_URL": h.nats.url, "SWITCHYARD_ADMIN_TOKEN": BillingHarness.adminToken,
                                   "SWITCHYARD_ACTOR": "ci"]
                let set = try await TestProcess.run(cli, ["price", "set", "--provider", "openai", "--model", "unlisted",
                                                          "--input-micros", "1000000", "--output-micros", "2000000",
                                                          "--from", "2026-12-01"],
                                                    environment: environment, check: false)
                #expect(set.status == 0, "\(set.output)")
                #expect(set.output.contains("openai/unlisted from 2026-12-01T00:00:00Z: 1.000000 in, 2.000000 out USD"))
                let list = try await TestProcess.run(cli, ["price", "list"], environment: environment, check: false)
                #expect(list.status == 0)
                #expect(list.output.split(separator: "\n").count == 4)  // header + three versions
                let csv = try await TestProcess.run(cli, ["usage", "--tenant", "acme", "--by", "model", "--csv"],
                                                    environment: environment, check: false)
                #expect(csv.status == 0)
                #expect(csv.output.contains("openai/gpt-test,2,200,100,0.006600,0,0"))
                #expect(csv.output.contains("total,3,300,150,0.006600,1,0"))
                let denied = try await TestProcess.run(cli, ["price", "list"],
                                                       environment: environment.merging(["SWITCHYARD_ADMIN_TOKEN": "wrong-token-wrong-token"]) { $1 },
                                                       check: false)
                #expect(denied.status != 0)
                #expect(denied.output.contains("unauthorized"))
            }
        }
    }

    @Test("a closed month's invoice is the same byte for byte, also after a recompute with unchanged prices; a price fix recompute re-prices, rebuilds totals and is audited")
    func invoicesAndRecompute() async throws {
        let october1: Int64 = 1_790_812_800 * 1_000_000_000  // 2026-10-01T00:00:00Z
        let day: Int64 = 86_400 * 1_000_000_000
        try await BillingHarness.with { h in
            try await h.runBilling {
                let admin = client(h)
                _ = try await admin.call(.priceSet, SetPriceRequest(price: Price(
                    provider: "openai", model: "gpt-test", effectiveFromUnixNanos: october1,
                    inputMicrosPerMillion: 2_000_000, outputMicrosPerMillion: 8_000_000, currency: "USD")),
                    as: SetPriceResponse.self)
                try await h.publish([
                    BillingHarness.usage(tenant: "acme", at: october1 + 9 * day),
                    BillingHarness.usage(tenant: "acme", at: october1 + 19 * day),
                    BillingHarness.usage(tenant: "acme", at: october1 + 20 * day),
                    BillingHarness.usage(tenant: "acme", model: "unlisted", at: october1 + 20 * day),
                ])
                try await BillingHarness.eventually { try await h.ledgerRows() == 4 }

                let first: InvoiceResponse = try await admin.call(.invoice, InvoiceRequest(tenantID: "acme", month: "2026-10"))
                let invoice = try #require(first.invoice)
                #expect(invoice.closed)
                #expect(invoice.lines.map(\.model) == ["gpt-test", "unlisted"])
                #expect(invoice.totalMicros == 1_800)
                #expect(invoice.unpricedRequests == 1)
                let again: InvoiceResponse = try await admin.call(.invoice, InvoiceRequest(tenantID: "acme", month: "2026-10"))
                #expect(again.protobufBytes() == first.protobufBytes())

                let unchanged: RecomputeResponse = try await admin.call(.recompute, RecomputeRequest(
                    tenantID: "acme", fromUnixNanos: october1, toUnixNanos: october1 + 31 * day))
                #expect(unchanged.lines == 4)
                #expect(unchanged.changedLines == 0)
                let afterNoop: InvoiceResponse = try await admin.call(.invoice, InvoiceRequest(tenantID: "acme", month: "2026-10"))
                #expect(afterNoop.protobufBytes() == first.protobufBytes())

                // The price fix: from October 15 the model cost ten times as much, and "unlisted" gets a price.
                _ = try await admin.call(.priceSet, SetPriceRequest(price: Price(
                    provider: "openai", model: "gpt-test", effectiveFromUnixNanos: october1 + 14 * day,
                    inputMicrosPerMillion: 20_000_000, outputMicrosPerMillion: 80_000_000, currency: "USD")),
                    as: SetPriceResponse.self)
                _ = try await admin.call(.priceSet, SetPriceRequest(price: Price(
                    provider: "openai", model: "unlisted", effectiveFromUnixNanos: october1,
                    inputMicrosPerMillion: 1_000_000, outputMicrosPerMillion: 1_000_000, currency: "USD")),
                    as: SetPriceResponse.self)
                let fixed: RecomputeResponse = try await admin.call(.recompute, RecomputeRequest(
                    tenantID: "acme", fromUnixNanos: october1, toUnixNanos: october1 + 31 * day))
                #expect(fixed.changedLines == 3)
                #expect(fixed.costBeforeMicros == 1_800)
                // 600 + 6,000 + 6,000 + (100 + 50) × $1/M = 12,750 µ$.
                #expect(fixed.costAfterMicros == 12_750)
                try await LedgerTests.expectTotalsMatchLedger(h)
                #expect(try await h.scalar("SELECT sum(cost_micros) FROM billing_month_totals WHERE tenant_id = 'acme'") == 12_750)
                let corrected: InvoiceResponse = try await admin.call(.invoice, InvoiceRequest(tenantID: "acme", month: "2026-10"))
                #expect(corrected.invoice?.totalMicros == 12_750)
                #expect(corrected.invoice?.lines.count == 3)  // gpt-test at two prices, unlisted now priced
                #expect(corrected.invoice?.unpricedRequests == 0)
                #expect(try await h.scalar("SELECT count(*) FROM billing_audit WHERE action = 'billing.recompute' AND actor = 'operator (test)'") == 2)

                // The operator's path: the same invoice through the CLI, twice, identical.
                let cli = try builtProduct("switchyard")
                let environment = ["SWITCHYARD_NATS_URL": h.nats.url, "SWITCHYARD_ADMIN_TOKEN": BillingHarness.adminToken]
                let one = try await TestProcess.run(cli, ["invoice", "--tenant", "acme", "--month", "2026-10", "--csv"],
                                                    environment: environment, check: false)
                let two = try await TestProcess.run(cli, ["invoice", "--tenant", "acme", "--month", "2026-10", "--csv"],
                                                    environment: environment, check: false)
                #expect(one.status == 0)
                #expect(one.output == two.output)
                #expect(one.output.contains("total,,,,,4,400,200,0.012750,USD"))
            }
        }
    }
}
