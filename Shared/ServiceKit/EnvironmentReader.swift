import Foundation
import Security

/// Reads typed, validated values from an environment dictionary (the process environment in `@main`, a literal
/// in tests). Every failure is a ``ConfigurationError`` naming the variable and what a valid value looks like —
/// never the value itself, which may be a secret.
public struct EnvironmentReader: Sendable {
    public let environment: [String: String]

    public init(_ environment: [String: String] = ProcessInfo.processInfo.environment) {
        self.environment = environment
    }

    /// The trimmed value, or `nil` if unset or blank.
    public func optional(_ name: String) -> String? {
        guard let raw = environment[name] else { return nil }
        let trimmed = raw.trimmingCharacters(in: .whitespaces)
        return trimmed.isEmpty ? nil : trimmed
    }

    /// The value, or `value` when unset; a variable that is set but blank is an error.
    public func nonEmpty(_ name: String, default value: String) throws(ConfigurationError) -> String {
        if let raw = environment[name], raw.trimmingCharacters(in: .whitespaces).isEmpty {
            throw ConfigurationError(code: .empty, variable: name, expectation: "a non-empty value")
        }
        return optional(name) ?? value
    }

    /// An integer in `range`, or `value` when unset.
    public func integer(_ name: String, default value: Int, range: ClosedRange<Int>) throws(ConfigurationError) -> Int {
        guard let raw = optional(name) else { return value }
        let expectation = "an integer in \(range.lowerBound)...\(range.upperBound)"
        guard let number = Int(raw) else {
            throw ConfigurationError(code: .invalidInteger, variable: name, expectation: expectation)
        }
        guard range.contains(number) else {
            throw ConfigurationError(code: .outOfRange, variable: name, expectation: expectation)
        }
        return number
    }

    /// A duration given in whole milliseconds (`…_MS` variables), in `range` milliseconds.
    public func milliseconds(_ name: String, default value: Duration, range: ClosedRange<Int>)
        throws(ConfigurationError) -> Duration
    {
        guard optional(name) != nil else { return value }
        return .milliseconds(try integer(name, default: 0, range: range))
    }

    /// A port in 0...65535 (0 picks a free one).
    public func port(_ name: String, default value: Int) throws(ConfigurationError) -> Int {
        let error = ConfigurationError(code: .invalidPort, variable: name, expectation: "a port in 0...65535")
        guard let raw = optional(name) else {
            guard (0...65535).contains(value) else { throw error }
            return value
        }
        guard let number = Int(raw), (0...65535).contains(number) else { throw error }
        return number
    }

    /// One of a fixed set of values (case-insensitive).
    public func choice<Value: RawRepresentable & CaseIterable>(
        _ name: String, default value: Value
    ) throws(ConfigurationError) -> Value where Value.RawValue == String {
        guard let raw = optional(name) else { return value }
        guard let chosen = Value(rawValue: raw.lowercased()) else {
            throw ConfigurationError(
                code: .invalidChoice, variable: name,
                expectation: Value.allCases.map(\.rawValue).joined(separator: "|"))
        }
        return chosen
    }

    /// Hex-encoded bytes (a secret: never echoed), at least `minimumBytes` long; `nil` when unset.
    public func hexSecret(_ name: String, minimumBytes: Int, expectation: String? = nil)
        throws(ConfigurationError) -> [UInt8]?
    {
        // Unset or empty means "none"; anything else must be valid: a blank or garbled secret is an error, not a
        // silent "unsigned" / "no pepper".
        guard let raw = environment[name], !raw.isEmpty else { return nil }
        guard let bytes = Hex.decode(raw.trimmingCharacters(in: .whitespaces)), bytes.count >= minimumBytes else {
            throw ConfigurationError(code: .invalidChoice, variable: name,
                                     expectation: expectation ?? "at least \(minimumBytes) bytes, hex-encoded")
        }
        return bytes
    }

    /// An `http://` or `https://` URL; `nil` when unset.
    public func httpURL(_ name: String) throws(ConfigurationError) -> String? {
        guard let url = optional(name) else { return nil }
        try Self.validateURL(url, variable: name, schemes: ["http", "https"], requireHost: true)
        return url
    }

    /// `SWITCHYARD_KEY_PEPPER`: the HMAC pepper of API key hashes (hex, ≥ 16 bytes); gateways and the tenant
    /// service must agree on it. `nil` (plain SHA-256) when unset.
    public func keyPepper() throws(ConfigurationError) -> [UInt8]? {
        try hexSecret(Self.keyPepperVariable, minimumBytes: 16)
    }

    public static let keyPepperVariable = "SWITCHYARD_KEY_PEPPER"

    func natsServers(_ name: String, default value: String) throws(ConfigurationError) -> [String] {
        let raw = optional(name) ?? value
        let servers = raw.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
        guard !servers.isEmpty, servers.allSatisfy({ !$0.isEmpty }) else {
            throw ConfigurationError(
                code: .invalidURL, variable: name, expectation: "comma-separated nats:// or tls:// URLs")
        }
        for server in servers {
            try Self.validateURL(server, variable: name, schemes: ["nats", "tls"], requireHost: true)
        }
        return servers
    }

    func databaseURL(_ name: String, default value: String) throws(ConfigurationError) -> String {
        let url = optional(name) ?? value
        // libpq accepts an empty host (Unix socket, or `?host=/path`), so a host is not required.
        try Self.validateURL(url, variable: name, schemes: ["postgres", "postgresql"], requireHost: false)
        return url
    }

    static func validateURL(
        _ url: String, variable: String, schemes: [String], requireHost: Bool
    ) throws(ConfigurationError) {
        let expectation = schemes.map { "\($0)://" }.joined(separator: " or ") + " URL"
        guard let separator = url.range(of: "://") else {
            throw ConfigurationError(code: .invalidURL, variable: variable, expectation: expectation)
        }
        let scheme = url[..<separator.lowerBound].lowercased()
        guard schemes.contains(scheme) else {
            throw ConfigurationError(code: .unsupportedScheme, variable: variable, expectation: expectation)
        }
        guard !url.contains(where: { $0.isWhitespace }), let components = URLComponents(string: url) else {
            throw ConfigurationError(code: .invalidURL, variable: variable, expectation: expectation)
        }
        if requireHost, (components.host ?? "").isEmpty {
            throw ConfigurationError(code: .invalidURL, variable: variable, expectation: expectation + " with a host")
        }
        if let port = components.port, !(1...65535).contains(port) {
            throw ConfigurationError(code: .invalidURL, variable: variable, expectation: expectation + " with a valid port")
        }
    }
}
