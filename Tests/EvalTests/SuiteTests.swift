@testable import EvalCore
import Foundation
import Schemas
import Testing

/// The demo restaurant's suite (examples/eval/), read from the repository.
func demoSuiteSource() throws -> String {
    let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("examples/eval/restaurant-host.yaml")
    return try String(contentsOf: url, encoding: .utf8)
}

@Suite("Golden suites: parsing and validation")
struct SuiteParserTests {
    @Test("the demo restaurant's suite: 24 cases in English and German, weights and expectations as written")
    func demoSuite() throws {
        let suite = try SuiteParser.parse(try demoSuiteSource())
        #expect(suite.name == "restaurant-basics")
        #expect(suite.agent == "restaurant-host")
        #expect(suite.cases.count == 24)
        #expect(suite.cases.count >= 20)
        let languages = Set(suite.cases.flatMap(\.expectations).filter { $0.kind == "language" }.map(\.value))
        #expect(languages == ["de", "en"])
        let reservation = try #require(suite.cases.first { $0.id == "reservation-en" })
        #expect(reservation.weight == 2)
        #expect(reservation.messages == [ChatMessage(role: "user", content: "How can I reserve a table for four?", name: "")])
        #expect(reservation.expectations.map(\.kind) == ["contains", "not_contains", "handoff"])
        #expect(reservation.line > 0)
        let hours = try #require(suite.cases.first)
        #expect(hours.weight == 1)
        #expect(hours.expectations.allSatisfy { $0.weight == 1 })
    }

    @Test("JSON is read too, with messages instead of input")
    func jsonSuite() throws {
        let suite = try SuiteParser.parse("""
            {"name": "tiny", "cases": [
              {"id": "one", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
               "expect": [{"contains": "hello", "weight": 3}, {"keywords": ["a", "b"]}]}
            ]}
            """)
        #expect(suite.cases.count == 1)
        #expect(suite.cases[0].messages.map(\.role) == ["system", "user"])
        #expect(suite.cases[0].expectations[0].weight == 3)
        #expect(suite.cases[0].expectations[1].values == ["a", "b"])
    }

    @Test("every problem is reported with its line, and nothing is returned")
    func problemsWithLines() {
        let source = """
            name: broken
            colour: blue
            cases:
              - id: ok-case
                input: Hello
                expect:
                  - contains: hi
              - id: bad-kind
                input: Hello
                expect:
                  - contans: hi
              - id: bad-regex
                input: Hello
                expect:
                  - regex: "(unclosed"
              - id: ok-case
                input: Hello
                expect:
                  - contains: hi
              - id: bad-handoff
                input: Hello
                expect:
                  - handoff: maybe
              - id: no-expect
                input: Hello
              - id: Bad Id
                input: Hello
                weight: -1
                expect:
                  - language: fr
            """
        do {
            _ = try SuiteParser.parse(source)
            Issue.record("a broken suite was accepted")
        } catch {
            let byLine = Dictionary(grouping: error.problems, by: \.line).mapValues { $0.map(\.message) }
            #expect(byLine[2]?.first?.contains("unknown key 'colour'") == true, "\(error.problems)")
            #expect(byLine[11]?.first?.contains("unknown expectation 'contans'") == true, "\(error.problems)")
            #expect(byLine[15]?.first?.contains("not a valid regular expression") == true, "\(error.problems)")
            #expect(byLine[16]?.first?.contains("used twice (first on line 4)") == true, "\(error.problems)")
            #expect(byLine[23]?.first?.contains("handoff must be true or false") == true, "\(error.problems)")
            #expect(byLine[24]?.first?.contains("missing `expect`") == true, "\(error.problems)")
            #expect(byLine[26]?.first?.contains("case id must match") == true, "\(error.problems)")
            #expect(byLine[28]?.first?.contains("weight must be a number above 0") == true, "\(error.problems)")
            #expect(byLine[30]?.first?.contains("language must be one of de, en") == true, "\(error.problems)")
            #expect(error.problems.count == 9, "\(error.problems)")
            #expect(error.description.contains("line 11: "))
        }
    }

    @Test("not YAML, a NUL byte, an empty list, a list instead of a mapping: clear errors with lines")
    func malformedFiles() {
        let cases: [(String, Int, String)] = [
            ("name: x\ncases: [\n", 3, "not valid YAML or JSON"),
            ("name: x\n\0cases: []", 2, "NUL byte"),
            ("name: x\ncases: []\n", 2, "non-empty list"),
            ("- a\n- b\n", 1, "must be a mapping"),
            ("name: x\ncases:\n  - id: a\n    input: hi\n    messages: [{role: user, content: hi}]\n    expect: [{exact: hi}]\n",
             3, "not both"),
        ]
        for (source, line, fragment) in cases {
            do {
                _ = try SuiteParser.parse(source)
                Issue.record("accepted: \(source)")
            } catch {
                #expect(error.problems.first?.line == line, "\(source): \(error.problems)")
                #expect(error.problems.first?.message.contains(fragment) == true, "\(source): \(error.problems)")
            }
        }
    }
}

@Suite("Golden suites: scorers")
struct ScorerTests {
    static func expectation(_ kind: String, _ value: String = "", values: [String] = [], weight: Double = 1)
        -> EvalExpectation
    {
        EvalExpectation(kind: kind, value: value, values: values, weight: weight)
    }

    @Test("each expectation kind passes and fails where it should")
    func kinds() {
        let answer = ObservedAnswer(content: "We are open Tuesday to Sunday from 12:00 to 22:00.", handedOff: false,
                                    latencyMilliseconds: 120)
        let passing = [
            Self.expectation("contains", "sunday"), Self.expectation("not_contains", "Monday"),
            Self.expectation("regex", "\\b22:00\\b"), Self.expectation("exact", " We are open Tuesday to Sunday from 12:00 to 22:00.\n"),
            Self.expectation("keywords", values: ["open", "TUESDAY"]), Self.expectation("handoff", "false"),
            Self.expectation("language", "en"), Self.expectation("max_latency_ms", "120"),
        ]
        for expectation in passing { #expect(Scorer.check(expectation, answer) == nil, "\(expectation.kind)") }
        let failing = [
            Self.expectation("contains", "Monday"), Self.expectation("not_contains", "sunday"),
            Self.expectation("regex", "^Closed"), Self.expectation("exact", "We are open."),
            Self.expectation("keywords", values: ["open", "pizza"]), Self.expectation("handoff", "true"),
            Self.expectation("language", "de"), Self.expectation("max_latency_ms", "119"),
        ]
        for expectation in failing { #expect(Scorer.check(expectation, answer) != nil, "\(expectation.kind)") }
    }

    @Test("a case scores the weighted share of its expectations; a suite the weighted mean of its cases")
    func weights() {
        var evalCase = EvalCase()
        evalCase.id = "c"
        evalCase.expectations = [Self.expectation("contains", "12:00", weight: 3), Self.expectation("contains", "pizza")]
        let score = Scorer.score(evalCase, ObservedAnswer(content: "From 12:00.", handedOff: false, latencyMilliseconds: 1))
        #expect(score.score == 0.75)
        #expect(score.failed == ["contains: does not contain \"pizza\""])
        let total = Scorer.aggregate([CaseScore(caseID: "a", score: 1, weight: 3, failed: []),
                                      CaseScore(caseID: "b", score: 0, weight: 1, failed: ["x"])])
        #expect(total == 0.75)
        #expect(Scorer.aggregate([]) == 0)
    }

    @Test("German or English by their common words; neither when it can't tell")
    func languages() {
        #expect(LanguageGuess.guess("Wir haben Dienstag bis Sonntag von 12 bis 22 Uhr geöffnet.") == "de")
        #expect(LanguageGuess.guess("We are open from noon until ten, and the kitchen closes at 21:30.") == "en")
        #expect(LanguageGuess.guess("12:00 – 22:00") == nil)
    }
}
