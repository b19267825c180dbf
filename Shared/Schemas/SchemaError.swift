/// A payload could not be decoded.
///
/// The `description` names the message type and the failure kind, never payload bytes or field contents.
/// Decoding errors are never retriable: the same bytes will fail again (dead-letter them).
public struct SchemaError: Error, Sendable, Hashable, CustomStringConvertible {
    /// Opaque failure kind; compare against the static members.
    public struct Code: Sendable, Hashable, CustomStringConvertible {
        fileprivate enum Base: Sendable, Hashable {
            case malformed, tooLarge, invalidUTF8
        }

        fileprivate let base: Base

        /// Not valid protobuf wire data for this message (truncated, wrong wire type, bad length, ...).
        public static let malformed = Code(base: .malformed)
        /// Larger than ``SchemaLimits/maxPayloadBytes``.
        public static let tooLarge = Code(base: .tooLarge)
        /// A string field is not valid UTF-8.
        public static let invalidUTF8 = Code(base: .invalidUTF8)

        public var description: String {
            switch base {
            case .malformed: "malformed"
            case .tooLarge: "tooLarge"
            case .invalidUTF8: "invalidUTF8"
            }
        }
    }

    public let code: Code
    /// Fully qualified protobuf name of the message being decoded.
    public let messageType: String

    public init(_ code: Code, messageType: String) {
        self.code = code
        self.messageType = messageType
    }

    /// Always `false`: a payload that fails to decode fails again on redelivery.
    public var isRetriable: Bool { false }

    public var description: String {
        "SchemaError(\(code), type: \(messageType))"
    }
}
