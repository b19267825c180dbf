import ServiceKit
import Testing

@Suite("EnvironmentReader")
struct EnvironmentReaderTests {
    @Test func typedGettersValidateAndNeverEchoTheValue() throws {
        let reader = EnvironmentReader(["N": "42", "BAD": "4x2", "BIG": "5000", "MS": "1500", "PORT": "70000",
                                        "URL": "https://api.example.com/v1", "FTP": "ftp://x", "BLANK": "  "])
        #expect(try reader.integer("N", default: 1, range: 0...100) == 42)
        #expect(try reader.integer("UNSET", default: 7, range: 0...100) == 7)
        #expect(try reader.milliseconds("MS", default: .seconds(9), range: 1...10_000) == .milliseconds(1500))
        #expect(try reader.httpURL("URL") == "https://api.example.com/v1")
        #expect(reader.optional("BLANK") == nil)
        #expect(throws: ConfigurationError(code: .invalidInteger, variable: "BAD", expectation: "an integer in 0...100")) {
            try reader.integer("BAD", default: 1, range: 0...100)
        }
        #expect(throws: ConfigurationError.self) { try reader.integer("BIG", default: 1, range: 0...100) }
        #expect(throws: ConfigurationError.self) { try reader.port("PORT", default: 1) }
        #expect(throws: ConfigurationError.self) { try reader.httpURL("FTP") }
        do {
            _ = try reader.integer("BAD", default: 1, range: 0...100)
        } catch {
            #expect(!error.description.contains("4x2"), "errors name the variable, never the value")
        }
    }

    @Test func secretsAreStrictOnceSet() throws {
        let key = String(repeating: "ab", count: 16)
        #expect(try EnvironmentReader([:]).keyPepper() == nil)
        #expect(try EnvironmentReader(["SWITCHYARD_KEY_PEPPER": ""]).keyPepper() == nil)
        #expect(try EnvironmentReader(["SWITCHYARD_KEY_PEPPER": key]).keyPepper()?.count == 16)
        for garbled in ["  ", "zz", "abcd", String(key.dropLast())] {
            #expect(throws: ConfigurationError.self, "\(garbled.count) characters") {
                try EnvironmentReader(["SWITCHYARD_KEY_PEPPER": garbled]).keyPepper()
            }
        }
    }
}

@Suite("Stale work on the event log")
struct StaleWorkTests {
    @Test func onlyWorkPastItsDeadlineByMoreThanTheDuplicateWindowIsStale() {
        let deadline: Int64 = 1_000_000_000_000
        let window = Duration.seconds(120)
        #expect(!StaleWork.isStale(deadlineUnixNanos: deadline, nowUnixNanos: deadline - 1, window: window))
        #expect(!StaleWork.isStale(deadlineUnixNanos: deadline, nowUnixNanos: deadline + 119_000_000_000, window: window))
        #expect(StaleWork.isStale(deadlineUnixNanos: deadline, nowUnixNanos: deadline + 121_000_000_000, window: window))
        #expect(!StaleWork.isStale(deadlineUnixNanos: 0, nowUnixNanos: deadline, window: window), "no deadline")
    }
}
