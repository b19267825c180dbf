/// The latency histograms' bucket scheme: log-linear, in microseconds, like HdrHistogram with two significant
/// decimal digits. Values below 256 µs have a bucket each; above, every power of two is split into 128 equal
/// buckets, so a bucket is at most 1/128 (0.8 %) of its values wide. Buckets are plain integers, so histograms
/// merge by adding counts per bucket — minute rollups add up to any window exactly (docs/adr/0015).
public enum LatencyBuckets {
    static let subBucketBits = 7
    static let subBuckets: Int64 = 1 << 7

    /// The bucket of `micros` (negative values — clock skew between hosts — count as 0).
    public static func index(micros: Int64) -> Int {
        let value = max(0, micros)
        if value < 2 * subBuckets { return Int(value) }
        let magnitude = 63 - value.leadingZeroBitCount          // floor(log2 value) ≥ 8
        let shift = magnitude - subBucketBits                  // ≥ 1
        let mantissa = value >> Int64(shift)                   // in [128, 255]
        return Int(subBuckets) * (shift + 1) + Int(mantissa - subBuckets)
    }

    /// The values bucket `index` holds: `lower ... lower + width - 1`.
    public static func range(_ index: Int) -> (lower: Int64, width: Int64) {
        if index < 2 * Int(subBuckets) { return (Int64(index), 1) }
        let shift = index / Int(subBuckets) - 1
        let mantissa = Int64(index % Int(subBuckets)) + subBuckets
        return (mantissa << Int64(shift), Int64(1) << Int64(shift))
    }

    /// The value reported for a bucket: the middle of its range (at most half a bucket from any value in it).
    public static func representative(_ index: Int) -> Int64 {
        let (lower, width) = range(index)
        return lower + (width - 1) / 2
    }

    /// The `quantile` (0...1] of a histogram given as (bucket, count) pairs, by nearest rank: the value of the
    /// ⌈q·n⌉-th smallest sample's bucket. 0 for an empty histogram.
    public static func quantile(_ quantile: Double, of buckets: [(bucket: Int, count: Int64)]) -> Int64 {
        let total = buckets.reduce(Int64(0)) { $0 + $1.count }
        guard total > 0 else { return 0 }
        let rank = max(1, Int64((quantile * Double(total)).rounded(.up)))
        var seen: Int64 = 0
        for (bucket, count) in buckets.sorted(by: { $0.bucket < $1.bucket }) {
            seen += count
            if seen >= rank { return representative(bucket) }
        }
        return representative(buckets.map(\.bucket).max() ?? 0)
    }
}
