@testable import OrchestratorCore
import Schemas
import Testing

@Suite("TokenEstimator")
struct TokenEstimatorTests {
    @Test(arguments: [("", 0), ("a", 1), ("abc", 1), ("abcd", 1), ("abcde", 2), ("abcdefgh", 2), ("abcdefghi", 3),
                      ("äöü", 1), ("Grüße!", 2)])
    func estimatesQuarterOfScalarsRoundedUp(text: String, tokens: Int) {
        #expect(TokenEstimator.estimate(text) == tokens)
    }

    @Test func nonEmptyTextIsAtLeastOneToken() {
        for text in [" ", "x", "\n", "🙂"] { #expect(TokenEstimator.estimate(text) >= 1) }
    }

    @Test func messagesAddOverheadEach() {
        #expect(TokenEstimator.estimate(messages: []) == 0)
        #expect(TokenEstimator.estimate(messages: [Fixtures.user("abcd")]) == 5)
        #expect(TokenEstimator.estimate(messages: [
            ChatMessage(role: "system", content: "abcdefgh"),
            ChatMessage(role: "user", content: "", name: "bob"),
        ]) == (4 + 2) + (4 + 0 + 1))
    }

    @Test func reportedUsageWins() {
        let report = TokenEstimator.usage(
            reported: ProviderUsage(promptTokens: 10, completionTokens: 5), prompt: [Fixtures.user("x")], completion: "y")
        #expect(report == UsageReport(promptTokens: 10, completionTokens: 5, totalTokens: 15, estimated: false))
    }

    @Test func missingUsageIsEstimatedAndFlagged() {
        let report = TokenEstimator.usage(reported: nil, prompt: [Fixtures.user("abcdefgh")], completion: "abcde")
        #expect(report == UsageReport(promptTokens: 6, completionTokens: 2, totalTokens: 8, estimated: true))
        #expect(report.schema == Usage(promptTokens: 6, completionTokens: 2, totalTokens: 8))
    }

    @Test func schemaClampsToUInt32() {
        let report = UsageReport(promptTokens: -1, completionTokens: Int(UInt32.max) + 5, totalTokens: 3, estimated: true)
        #expect(report.schema == Usage(promptTokens: 0, completionTokens: UInt32.max, totalTokens: 3))
    }
}
