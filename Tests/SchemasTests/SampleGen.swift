import Schemas

/// A message type that can build deterministic pseudo-random sample values (see Generated/Samples.pb.swift).
protocol Sampleable: ProtoMessage {
    static func sample(_ g: inout SampleGen) -> Self
}

/// SplitMix64: small, seeded, reproducible.
struct SeededRNG: RandomNumberGenerator {
    private var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Source of sample field values. `dense` makes every optional/repeated/map field non-empty.
struct SampleGen {
    var rng: SeededRNG
    var dense: Bool

    init(seed: UInt64, dense: Bool = false) {
        rng = SeededRNG(seed: seed)
        self.dense = dense
    }

    static let fixedStrings = [
        "", "a", "user", "héllo wörld", "日本語のテキスト", "🦀🚀👩‍👩‍👧", "Ünïcödé ẞ", "with\nnewline\t\"quotes\" \\ and {json}",
        "sy_live_0123456789abcdef", "tenant-a", String(repeating: "x", count: 300), "مرحبا", "\u{7F}\u{80}\u{FFFF}",
    ]

    mutating func count() -> Int {
        dense ? Int.random(in: 1...3, using: &rng) : Int.random(in: 0...3, using: &rng)
    }

    mutating func present() -> Bool { dense || Bool.random(using: &rng) }

    mutating func bool() -> Bool { dense || Bool.random(using: &rng) }

    mutating func string() -> String {
        switch Int.random(in: 0..<4, using: &rng) {
        case 0, 1:
            let s = Self.fixedStrings.randomElement(using: &rng)!
            return dense && s.isEmpty ? "non-empty" : s
        case 2:
            // Random ASCII (no NUL: C strings end there).
            let n = Int.random(in: dense ? 1...24 : 0...24, using: &rng)
            return String(decoding: (0..<n).map { _ in UInt8.random(in: 1...127, using: &rng) }, as: UTF8.self)
        default:
            // Random Unicode scalars from all planes, excluding NUL and surrogates.
            let n = Int.random(in: 1...12, using: &rng)
            var s = ""
            for _ in 0..<n {
                var v: UInt32
                repeat { v = UInt32.random(in: 1...0x10FFFF, using: &rng) } while (0xD800...0xDFFF).contains(v)
                s.unicodeScalars.append(Unicode.Scalar(v)!)
            }
            return s
        }
    }

    mutating func int32() -> Int32 {
        switch Int.random(in: 0..<4, using: &rng) {
        case 0: return [Int32.min, Int32.max, -1, 1].randomElement(using: &rng)!
        default: return Int32.random(in: Int32.min...Int32.max, using: &rng) | (dense ? 1 : 0)
        }
    }

    mutating func int64() -> Int64 {
        switch Int.random(in: 0..<4, using: &rng) {
        case 0: return [Int64.min, Int64.max, -1, 1_700_000_000_000_000_000].randomElement(using: &rng)!
        default: return Int64.random(in: Int64.min...Int64.max, using: &rng) | (dense ? 1 : 0)
        }
    }

    mutating func uint32() -> UInt32 {
        Bool.random(using: &rng) ? UInt32.max : UInt32.random(in: (dense ? 1 : 0)...UInt32.max, using: &rng)
    }

    mutating func uint64() -> UInt64 {
        Bool.random(using: &rng) ? UInt64.max : UInt64.random(in: (dense ? 1 : 0)...UInt64.max, using: &rng)
    }

    mutating func double() -> Double {
        switch Int.random(in: 0..<5, using: &rng) {
        case 0: return [0.7, -1.5, 1e300, -1e-300, .infinity, -.infinity, .leastNonzeroMagnitude].randomElement(using: &rng)!
        default: return Double.random(in: -1e6...1e6, using: &rng) + (dense ? 1e7 : 0)
        }
    }

    mutating func float() -> Float {
        Float.random(in: -1e6...1e6, using: &rng) + (dense ? 1e7 : 0)
    }
}
