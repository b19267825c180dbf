import ArgumentParser
import Schemas
import Tenancy

/// A knowledge file: a list of KnowledgeEntry objects, or an object whose only key is `entries` (the shape of
/// `kb list --json`).
struct KnowledgeFile: Decodable {
    var entries: [KnowledgeEntry]

    private struct Key: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init?(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    init(from decoder: any Decoder) throws {
        guard let object = try? decoder.container(keyedBy: Key.self) else {
            entries = try decoder.singleValueContainer().decode([KnowledgeEntry].self)
            return
        }
        for key in object.allKeys where key.stringValue != "entries" {
            throw DecodingError.dataCorruptedError(
                forKey: key, in: object,
                debugDescription: "unknown key \"\(key.stringValue)\" (the file holds a list of entries or an object "
                    + "with an `entries` list)")
        }
        guard let key = Key(stringValue: "entries"), object.contains(key) else {
            throw DecodingError.dataCorrupted(DecodingError.Context(
                codingPath: [], debugDescription: "no `entries` list (the file holds a list of entries or an object "
                    + "with an `entries` list)"))
        }
        entries = try object.decode([KnowledgeEntry].self, forKey: key)
    }
}

struct KnowledgeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kb",
        abstract: "A tenant's knowledge base.",
        subcommands: [Import.self, List.self, Delete.self])

    struct Import: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Add or replace knowledge entries from a JSON or YAML file.",
            discussion: """
                The file holds a list of KnowledgeEntry objects (id, title, content, language, tags; proto3 JSON \
                names), or an object with an `entries` list — the shape `kb list --json` prints. Unknown keys are \
                errors. Entries are upserted one by one by id; the import stops at the first one the tenant service \
                rejects. examples/demo-restaurant/knowledge.yaml is an example.
                """)

        @OptionGroup(title: "Connection and output options") var options: AdminOptions
        @OptionGroup var tenant: TenantOption
        @Argument(help: ArgumentHelp("A .json, .yaml or .yml file holding the entries.", valueName: "file"))
        var file: String

        func run() async throws {
            // The file is read and checked before anything connects.
            let entries = try InputFile.load(file).decode(KnowledgeFile.self).entries
            guard !entries.isEmpty else { throw CLIFailure("\(file): no entries to import") }
            try await options.withSession { session in
                var stored: [KnowledgeEntry] = []
                for (index, entry) in entries.enumerated() {
                    do {
                        let response: KnowledgeUpsertResponse = try await session.call(
                            .knowledgeUpsert, KnowledgeUpsertRequest(tenantID: tenant.tenant, entry: entry))
                        stored.append(response.entry ?? entry)
                    } catch {
                        let name = entry.id.isEmpty ? "#\(index + 1) (no id)" : "\"\(entry.id)\" (#\(index + 1))"
                        throw CLIFailure("entry \(name): \(error); \(stored.count) of \(entries.count) entries "
                            + "were imported before it")
                    }
                }
                try session.output(json: KnowledgeListResponse(entries: stored)) {
                    print("imported \(stored.count) knowledge entries into tenant \(tenant.tenant)")
                }
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List or search knowledge entries.")

        @OptionGroup(title: "Connection and output options") var options: AdminOptions
        @OptionGroup var tenant: TenantOption
        @Option(help: "Only entries matching this search text.") var query: String = ""
        @Option(help: "At most this many entries (default: the service's, 100; at most 1000).") var limit: UInt32?

        func validate() throws {
            if let limit, limit == 0 || limit > 1000 { throw ValidationError("--limit must be between 1 and 1000") }
        }

        func run() async throws {
            try await options.withSession { session in
                let response: KnowledgeListResponse = try await session.call(
                    .knowledgeList, KnowledgeListRequest(tenantID: tenant.tenant, query: query, limit: limit ?? 0))
                try session.output(json: response) {
                    var table = TextTable("ID", "LANG", "TITLE", "TAGS", "UPDATED")
                    for entry in response.entries {
                        table.add(entry.id, Output.text(entry.language), cell(entry.title),
                                  cell(entry.tags.joined(separator: ","), max: 40), Output.time(entry.updatedAtUnixNanos))
                    }
                    table.print(ifEmpty: query.isEmpty ? "no knowledge entries" : "no matching knowledge entries")
                }
            }
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete a knowledge entry.")

        @OptionGroup(title: "Connection and output options") var options: AdminOptions
        @OptionGroup var tenant: TenantOption
        @Argument(help: ArgumentHelp("The entry's id.", valueName: "entry-id")) var entryID: String

        func run() async throws {
            try await options.withSession { session in
                let response: KnowledgeDeleteResponse = try await session.call(
                    .knowledgeDelete, KnowledgeDeleteRequest(tenantID: tenant.tenant, entryID: entryID))
                try session.output(json: response) {
                    print("deleted knowledge entry \(entryID) of tenant \(tenant.tenant)")
                }
            }
        }
    }
}
