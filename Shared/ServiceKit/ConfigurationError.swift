/// A configuration variable is missing its required shape. The description names the variable and the
/// problem, never the value (values may hold passwords, e.g. inside URLs).
public struct ConfigurationError: Error, Hashable, Sendable, CustomStringConvertible {
    /// Opaque, comparable error code.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        fileprivate enum Base: String, Hashable, Sendable {
            case invalidPort = "invalid port"
            case invalidURL = "invalid URL"
            case unsupportedScheme = "unsupported URL scheme"
            case invalidInteger = "not an integer"
            case outOfRange = "out of range"
            case invalidChoice = "not one of the allowed values"
            case empty = "empty value"
        }

        fileprivate let base: Base

        /// A port outside 0...65535 or not a number.
        public static let invalidPort = Code(base: .invalidPort)
        /// A URL that does not parse or has no host.
        public static let invalidURL = Code(base: .invalidURL)
        /// A URL with a scheme the variable does not accept.
        public static let unsupportedScheme = Code(base: .unsupportedScheme)
        /// A number that does not parse.
        public static let invalidInteger = Code(base: .invalidInteger)
        /// A number outside its allowed range (e.g. a pool size below 1).
        public static let outOfRange = Code(base: .outOfRange)
        /// A value outside a fixed set (log level, log format).
        public static let invalidChoice = Code(base: .invalidChoice)
        /// A value that must not be empty.
        public static let empty = Code(base: .empty)

        public var description: String { base.rawValue }
    }

    /// What went wrong.
    public let code: Code
    /// The environment variable, e.g. `SWITCHYARD_HTTP_PORT`.
    public let variable: String
    /// What a valid value looks like (never the offending value itself).
    public let expectation: String

    public init(code: Code, variable: String, expectation: String) {
        self.code = code
        self.variable = variable
        self.expectation = expectation
    }

    public var description: String {
        "\(variable): \(code) (expected \(expectation))"
    }
}
