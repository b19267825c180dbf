#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension EventMeta {
    /// Schema version stamped on events produced by this build.
    public static let currentSchemaVersion: UInt32 = 1

    /// A fresh `EventMeta`: random event id, occurred-at now (unix nanos), current schema version.
    public static func make(
        tenantID: String,
        producer: String,
        requestID: String = "",
        traceID: String = "",
        occurredAtUnixNanos: Int64 = EventClock.nowUnixNanos()
    ) -> EventMeta {
        EventMeta(
            eventID: EventID.random(),
            tenantID: tenantID,
            occurredAtUnixNanos: occurredAtUnixNanos,
            producer: producer,
            schemaVersion: currentSchemaVersion,
            requestID: requestID,
            traceID: traceID
        )
    }
}

/// Event ids: 128 random bits as 32 lowercase hex characters (valid in NATS subjects and `Nats-Msg-Id`).
public enum EventID {
    public static func random() -> String {
        var rng = SystemRandomNumberGenerator()
        return random(using: &rng)
    }

    public static func random(using rng: inout some RandomNumberGenerator) -> String {
        let hi = rng.next() as UInt64
        let lo = rng.next() as UInt64
        return hex64(hi) + hex64(lo)
    }

    private static func hex64(_ v: UInt64) -> String {
        let digits: StaticString = "0123456789abcdef"
        return String(unsafeUninitializedCapacity: 16) { buf in
            digits.withUTF8Buffer { d in
                for i in 0..<16 {
                    buf[i] = d[Int((v >> UInt64((15 - i) * 4)) & 0xf)]
                }
            }
            return 16
        }
    }
}

/// Wall-clock time for event stamps.
public enum EventClock {
    /// Current wall-clock time in nanoseconds since the Unix epoch.
    public static func nowUnixNanos() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
    }
}
