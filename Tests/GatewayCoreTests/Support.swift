import Tenancy
import Foundation
@testable import GatewayCore
import Schemas
import Testing

func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

/// Parses JSON bytes into a dictionary (fails the test when not an object).
func jsonObject(_ bytes: [UInt8], sourceLocation: SourceLocation = #_sourceLocation) -> [String: Any] {
    do {
        let value = try JSONSerialization.jsonObject(with: Data(bytes))
        guard let object = value as? [String: Any] else {
            Issue.record("not a JSON object", sourceLocation: sourceLocation)
            return [:]
        }
        return object
    } catch {
        Issue.record("invalid JSON: \(error)", sourceLocation: sourceLocation)
        return [:]
    }
}

/// Expects `result` to be a failure; returns the error.
func failure<T>(_ result: Result<T, GatewayError>, sourceLocation: SourceLocation = #_sourceLocation) -> GatewayError? {
    switch result {
    case .success:
        Issue.record("expected a failure", sourceLocation: sourceLocation)
        return nil
    case .failure(let error):
        return error
    }
}

func success<T>(_ result: Result<T, GatewayError>, sourceLocation: SourceLocation = #_sourceLocation) -> T? {
    switch result {
    case .success(let value):
        return value
    case .failure(let error):
        Issue.record("unexpected failure: \(error)", sourceLocation: sourceLocation)
        return nil
    }
}

/// The error's message, description and body must not contain any of `secrets`.
func expectNoEcho(_ error: GatewayError, _ secrets: [String], sourceLocation: SourceLocation = #_sourceLocation) {
    let rendered = String(decoding: error.body, as: UTF8.self)
    for secret in secrets {
        #expect(!error.message.contains(secret), "message echoes input", sourceLocation: sourceLocation)
        #expect(!error.description.contains(secret), "description echoes input", sourceLocation: sourceLocation)
        #expect(!rendered.contains(secret), "body echoes input", sourceLocation: sourceLocation)
    }
}
