import Dispatch

/// Runs blocking C calls (nats.c fetch, connect, KV watch) on a dedicated serial queue instead of Swift's
/// cooperative thread pool, which must never be blocked.
final class BlockingLane: Sendable {
    private let queue: DispatchQueue

    init(label: String) {
        queue = DispatchQueue(label: "switchyard.messaging.\(label)")
    }

    func run<T: Sendable, E: Error>(_ work: @escaping @Sendable () throws(E) -> T) async throws(E) -> T {
        let result: Result<T, E> = await withCheckedContinuation { continuation in
            queue.async {
                do throws(E) {
                    continuation.resume(returning: .success(try work()))
                } catch {
                    continuation.resume(returning: .failure(error))
                }
            }
        }
        return try result.get()
    }
}

/// Owns C strings handed to nats.c option structs for exactly as long as the call that reads them.
final class CStringArena {
    private var pointers: [UnsafeMutablePointer<CChar>] = []
    private var arrays: [UnsafeMutableRawPointer] = []

    func string(_ value: String?) -> UnsafePointer<CChar>? {
        guard let value else { return nil }
        let pointer = strdup(value)!
        pointers.append(pointer)
        return UnsafePointer(pointer)
    }

    func stringArray(_ values: [String]) -> UnsafeMutablePointer<UnsafePointer<CChar>?> {
        let array = UnsafeMutablePointer<UnsafePointer<CChar>?>.allocate(capacity: max(values.count, 1))
        for (index, value) in values.enumerated() { array[index] = string(value) }
        arrays.append(UnsafeMutableRawPointer(array))
        return array
    }

    func int64Array(_ values: [Int64]) -> UnsafeMutablePointer<Int64> {
        let array = UnsafeMutablePointer<Int64>.allocate(capacity: max(values.count, 1))
        for (index, value) in values.enumerated() { array[index] = value }
        arrays.append(UnsafeMutableRawPointer(array))
        return array
    }

    deinit {
        for pointer in pointers { free(pointer) }
        for array in arrays { array.deallocate() }
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
