import ArgumentParser
import Foundation
import Schemas
import Tenancy

/// `2026-11-01` or `2026-11-01T12:00:00Z` → unix nanoseconds (UTC).
func parseTime(_ text: String, option: String) throws -> Int64 {
    let formatter = ISO8601DateFormatter()
    formatter.formatOptions = [.withInternetDateTime]
    if let date = formatter.date(from: text) { return Int64(date.timeIntervalSince1970 * 1e9) }
    formatter.formatOptions = [.withFullDate]
    if let date = formatter.date(from: text) { return Int64(date.timeIntervalSince1970 * 1e9) }
    throw ValidationError("\(option) must be a date (2026-11-01) or a UTC time (2026-11-01T12:00:00Z)")
}

/// Micro-units as a decimal amount: 1234567 → "1.234567".
func money(_ micros: Int64) -> String {
    let sign = micros < 0 ? "-" : ""
    let value = micros.magnitude
    let fraction = String(value % 1_000_000)
    return "\(sign)\(value / 1_000_000).\(String(repeating: "0", count: 6 - fraction.count))\(fraction)"
}

struct PriceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "price",
        abstract: "Set and list what providers' models cost (billing prices usage with the price in effect).",
        subcommands: [SetPrice.self, ListPrices.self])

    struct SetPrice: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "set",
            abstract: "Add a price version for a provider's model.",
            discussion: """
                Prices are per million tokens in micro-units of the currency (2.50 USD per million = 2500000). \
                A version applies to usage from --from on (default: now) until a later version; usage already \
                in the ledger keeps the price it was billed with.
                """)

        @OptionGroup(title: "Connection and output options") var options: AdminOptions
        @Option(help: "Provider, as in the agents' manifests (openai, anthropic, local…).") var provider: String
        @Option(help: "Model, as the provider names it (gpt-4o-mini…).") var model: String
        @Option(name: .customLong("input-micros"), help: "Price of a million prompt tokens, in micro-units.")
        var inputMicros: Int64
        @Option(name: .customLong("output-micros"), help: "Price of a million completion tokens, in micro-units.")
        var outputMicros: Int64
        @Option(help: "ISO 4217 currency (default USD; every price must use the same one).") var currency = "USD"
        @Option(help: "When it takes effect: a date (2026-12-01, UTC) or a UTC time; default now.") var from: String?

        func run() async throws {
            let effective = try from.map { try parseTime($0, option: "--from") } ?? 0
            try await options.withSession { session in
                let response: SetPriceResponse = try await session.call(.priceSet, SetPriceRequest(price: Price(
                    provider: provider, model: model, effectiveFromUnixNanos: effective,
                    inputMicrosPerMillion: inputMicros, outputMicrosPerMillion: outputMicros, currency: currency)))
                try session.output(json: response) {
                    guard let price = response.price else { return }
                    print("price \(price.id): \(price.provider)/\(price.model) from \(Output.time(price.effectiveFromUnixNanos)): "
                          + "\(money(price.inputMicrosPerMillion)) in, \(money(price.outputMicrosPerMillion)) out "
                          + "\(price.currency) per million tokens")
                }
            }
        }
    }

    struct ListPrices: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "list", abstract: "List price versions.")

        @OptionGroup(title: "Connection and output options") var options: AdminOptions
        @Option(help: "Only this provider.") var provider: String?
        @Option(help: "Only this model.") var model: String?

        func run() async throws {
            try await options.withSession { session in
                let response: ListPricesResponse = try await session.call(
                    .priceList, ListPricesRequest(provider: provider ?? "", model: model ?? ""))
                try session.output(json: response) {
                    var table = TextTable("ID", "PROVIDER", "MODEL", "FROM", "INPUT/M", "OUTPUT/M", "CURRENCY", "BY")
                    for price in response.prices {
                        table.add(String(price.id), price.provider, price.model, Output.time(price.effectiveFromUnixNanos),
                                  money(price.inputMicrosPerMillion), money(price.outputMicrosPerMillion), price.currency,
                                  cell(price.createdBy))
                    }
                    table.print(ifEmpty: "no prices (every usage line is billed as unpriced until one is set)")
                }
            }
        }
    }
}

struct UsageCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "usage",
        abstract: "A tenant's usage and cost from the billing ledger.",
        discussion: "Groups by day (UTC), agent, model or conversation; --csv prints the same rows for spreadsheets.")

    enum Grouping: String, ExpressibleByArgument, CaseIterable { case day, agent, model, conversation }

    @OptionGroup(title: "Connection and output options") var options: AdminOptions
    @OptionGroup var tenant: TenantOption
    @Option(help: "From (inclusive): a date (UTC) or a UTC time; default the beginning.") var from: String?
    @Option(help: "To (exclusive): a date (UTC) or a UTC time; default now.") var to: String?
    @Option(help: "Group by day, agent, model or conversation.") var by: Grouping = .day
    @Flag(help: "Print CSV (a header, one line per group, then the total).") var csv = false

    func validate() throws {
        if csv && options.json { throw ValidationError("choose one of --json and --csv") }
    }

    func run() async throws {
        let fromNanos = try from.map { try parseTime($0, option: "--from") } ?? 0
        let toNanos = try to.map { try parseTime($0, option: "--to") } ?? 0
        try await options.withSession { session in
            let response: UsageReportResponse = try await session.call(.usage, UsageReportRequest(
                tenantID: tenant.tenant, fromUnixNanos: fromNanos, toUnixNanos: toNanos, by: by.rawValue))
            let rows = response.rows + [response.total ?? UsageRow(key: "total")]
            if csv {
                print("\(by.rawValue),requests,prompt_tokens,completion_tokens,cost,unpriced_requests,estimated_requests")
                for row in rows {
                    let key = row.key.contains(",") || row.key.contains("\"")
                        ? "\"" + row.key.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : row.key
                    print("\(key),\(row.requests),\(row.promptTokens),\(row.completionTokens),\(money(row.costMicros)),"
                          + "\(row.unpricedRequests),\(row.estimatedRequests)")
                }
                return
            }
            try session.output(json: response) {
                var table = TextTable(by.rawValue.uppercased(), "REQUESTS", "PROMPT", "COMPLETION", "COST", "UNPRICED")
                for row in rows {
                    table.add(cell(row.key), String(row.requests), String(row.promptTokens), String(row.completionTokens),
                              money(row.costMicros), String(row.unpricedRequests))
                }
                table.print(ifEmpty: "no usage")
            }
        }
    }
}

struct InvoiceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "invoice",
        abstract: "A tenant's invoice for a month (UTC): a line per model and price, with totals.",
        discussion: "A closed month's invoice is final: produced again, it is the same byte for byte.")

    @OptionGroup(title: "Connection and output options") var options: AdminOptions
    @OptionGroup var tenant: TenantOption
    @Option(help: ArgumentHelp("The month.", valueName: "YYYY-MM")) var month: String
    @Flag(help: "Print CSV (a header, one line per model and price, then the total).") var csv = false

    func validate() throws {
        if csv && options.json { throw ValidationError("choose one of --json and --csv") }
    }

    func run() async throws {
        try await options.withSession { session in
            let response: InvoiceResponse = try await session.call(
                .invoice, InvoiceRequest(tenantID: tenant.tenant, month: month))
            let invoice = response.invoice ?? Invoice()
            if csv {
                print("provider,model,price_id,input_per_million,output_per_million,requests,prompt_tokens,completion_tokens,amount,currency")
                for line in invoice.lines {
                    print("\(line.provider),\(line.model),\(line.priceID),\(money(line.inputMicrosPerMillion)),"
                          + "\(money(line.outputMicrosPerMillion)),\(line.requests),\(line.promptTokens),"
                          + "\(line.completionTokens),\(money(line.amountMicros)),\(invoice.currency)")
                }
                print("total,,,,,\(invoice.requests),\(invoice.promptTokens),\(invoice.completionTokens),"
                      + "\(money(invoice.totalMicros)),\(invoice.currency)")
                return
            }
            try session.output(json: response) {
                print("invoice \(invoice.tenantID) \(invoice.month) (\(invoice.closed ? "closed" : "open, still changing")), "
                      + "\(invoice.currency)")
                var table = TextTable("PROVIDER", "MODEL", "INPUT/M", "OUTPUT/M", "REQUESTS", "PROMPT", "COMPLETION", "AMOUNT")
                for line in invoice.lines {
                    table.add(line.provider, cell(line.model), line.priceID == 0 ? "unpriced" : money(line.inputMicrosPerMillion),
                              line.priceID == 0 ? "unpriced" : money(line.outputMicrosPerMillion), String(line.requests),
                              String(line.promptTokens), String(line.completionTokens), money(line.amountMicros))
                }
                table.add("total", "", "", "", String(invoice.requests), String(invoice.promptTokens),
                          String(invoice.completionTokens), money(invoice.totalMicros))
                table.print(ifEmpty: "no usage")
            }
        }
    }
}

struct BillingCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "billing",
        abstract: "Billing maintenance.",
        subcommands: [Recompute.self])

    struct Recompute: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "recompute",
            abstract: "Re-price a tenant's usage in a time range with the prices now in the table (audited).",
            discussion: """
                After a price fix: every ledger line in [--from, --to) gets the price version in effect at its \
                time, the day and month totals it touches are rebuilt from the ledger, and stored invoices of those \
                months are replaced on their next request. The change is recorded in the billing audit log.
                """)

        @OptionGroup(title: "Connection and output options") var options: AdminOptions
        @OptionGroup var tenant: TenantOption
        @Option(help: "From (inclusive): a date (UTC) or a UTC time.") var from: String
        @Option(help: "To (exclusive): a date (UTC) or a UTC time.") var to: String

        func run() async throws {
            let fromNanos = try parseTime(from, option: "--from")
            let toNanos = try parseTime(to, option: "--to")
            try await options.withSession { session in
                let response: RecomputeResponse = try await session.call(.recompute, RecomputeRequest(
                    tenantID: tenant.tenant, fromUnixNanos: fromNanos, toUnixNanos: toNanos))
                try session.output(json: response) {
                    print("recomputed \(response.lines) lines of \(tenant.tenant): \(response.changedLines) changed, "
                          + "cost \(money(response.costBeforeMicros)) → \(money(response.costAfterMicros))")
                }
            }
        }
    }
}
