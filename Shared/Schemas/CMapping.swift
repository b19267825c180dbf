internal import CProtobufC

/// Internal bridge between a generated Swift value and its protoc-c struct.
/// Implemented by the generated code only; C types never appear in the public API.
protocol _CMessage: ProtoMessage {
    associatedtype _CType
    static func _cInit(_ p: UnsafeMutablePointer<_CType>)
    static func _cUnpack(_ n: Int, _ d: UnsafePointer<UInt8>) -> UnsafeMutablePointer<_CType>?
    static func _cFree(_ p: UnsafeMutablePointer<_CType>)
    static func _cPackedSize(_ p: UnsafePointer<_CType>) -> Int
    static func _cPack(_ p: UnsafePointer<_CType>, _ out: UnsafeMutablePointer<UInt8>) -> Int
    /// Writes this value into an initialised C struct; all memory comes from `arena`.
    func _cFill(_ c: UnsafeMutablePointer<_CType>, _ arena: inout _Arena)
    /// Copies an unpacked C struct into a Swift value (validating strings).
    init(_c p: UnsafePointer<_CType>) throws(SchemaError)
}

extension _CMessage {
    /// Allocates, initialises and fills a C struct for this value in `arena`.
    @inline(__always)
    func _cMake(_ arena: inout _Arena) -> UnsafeMutablePointer<_CType> {
        let p = arena.allocate(_CType.self)
        Self._cInit(p)
        _cFill(p, &arena)
        return p
    }
}

func _encodeMessage<M: _CMessage>(_ message: M) -> [UInt8] {
    var arena = _Arena()
    let c = message._cMake(&arena)
    let size = M._cPackedSize(c)
    if size == 0 { return [] }
    return [UInt8](unsafeUninitializedCapacity: size) { buffer, count in
        count = M._cPack(c, buffer.baseAddress!)
        precondition(count == size, "protobuf-c packed a different size than it measured")
    }
}

func _decodeMessage<M: _CMessage>(_: M.Type, from bytes: some Collection<UInt8>) throws(SchemaError) -> M {
    let count = bytes.count
    guard count <= SchemaLimits.maxPayloadBytes else {
        throw SchemaError(.tooLarge, messageType: M.protoName)
    }
    let unpacked: UnsafeMutablePointer<M._CType>?
    if count == 0 {
        // protobuf-c reads nothing for len 0, but wants a non-NULL pointer.
        var zero: UInt8 = 0
        unpacked = withUnsafePointer(to: &zero) { M._cUnpack(0, $0) }
    } else if let p = bytes.withContiguousStorageIfAvailable({ M._cUnpack($0.count, $0.baseAddress!) }) {
        unpacked = p
    } else {
        unpacked = Array(bytes).withUnsafeBufferPointer { M._cUnpack($0.count, $0.baseAddress!) }
    }
    guard let unpacked else {
        throw SchemaError(.malformed, messageType: M.protoName)
    }
    defer { M._cFree(unpacked) }
    do {
        return try M(_c: unpacked)
    } catch {
        // Report the message the caller asked for, not the nested one that failed.
        throw SchemaError(error.code, messageType: M.protoName)
    }
}

/// A NUL-terminated C string from protobuf-c as a validated Swift `String`.
/// protobuf-c does not check UTF-8; invalid bytes become a typed error, never a crash or replacement.
@inline(__always)
func _swiftString(_ p: UnsafePointer<CChar>?, _ messageType: String) throws(SchemaError) -> String {
    guard let p, p.pointee != 0 else { return "" }
    guard let s = String(validatingCString: p) else {
        throw SchemaError(.invalidUTF8, messageType: messageType)
    }
    return s
}

/// A bump allocator for the C structs and strings of one `pack` call; everything is freed at once.
///
/// Chunks form a singly linked list (the first word of each chunk points to the previous one), so the
/// common case (one small message) costs one allocation and one deallocation.
struct _Arena: ~Copyable {
    private static let chunkSize = 4096
    private static let headerSize = 16
    private var chunk: UnsafeMutableRawPointer?
    private var used = 0
    private var capacity = 0

    init() {}

    deinit {
        var c = chunk
        while let current = c {
            c = current.load(as: UnsafeMutableRawPointer?.self)
            current.deallocate()
        }
    }

    mutating func allocateBytes(_ size: Int, alignment: Int) -> UnsafeMutableRawPointer {
        var offset = (used + alignment - 1) & ~(alignment - 1)
        if chunk == nil || offset + size > capacity {
            let total = Swift.max(Self.chunkSize, size + Self.headerSize)
            let fresh = UnsafeMutableRawPointer.allocate(byteCount: total, alignment: 16)
            fresh.storeBytes(of: chunk, as: UnsafeMutableRawPointer?.self)
            chunk = fresh
            capacity = total
            offset = Self.headerSize
        }
        used = offset + size
        return chunk! + offset
    }

    mutating func allocate<T>(_: T.Type) -> UnsafeMutablePointer<T> {
        allocateBytes(MemoryLayout<T>.stride, alignment: MemoryLayout<T>.alignment)
            .bindMemory(to: T.self, capacity: 1)
    }

    mutating func allocateArray<T>(_: T.Type, count: Int) -> UnsafeMutablePointer<T> {
        allocateBytes(MemoryLayout<T>.stride * count, alignment: MemoryLayout<T>.alignment)
            .bindMemory(to: T.self, capacity: count)
    }

    /// Copies `s` as a NUL-terminated UTF-8 C string. (An embedded NUL truncates the string on the wire.)
    mutating func cString(_ s: String) -> UnsafeMutablePointer<CChar> {
        if let p = s.utf8.withContiguousStorageIfAvailable({ copyCString($0) }) {
            return p
        }
        var copy = s
        return copy.withUTF8 { copyCString($0) }
    }

    private mutating func copyCString(_ utf8: UnsafeBufferPointer<UInt8>) -> UnsafeMutablePointer<CChar> {
        let raw = allocateBytes(utf8.count + 1, alignment: 1)
        if let base = utf8.baseAddress, utf8.count > 0 {
            raw.copyMemory(from: base, byteCount: utf8.count)
        }
        raw.storeBytes(of: 0, toByteOffset: utf8.count, as: UInt8.self)
        return raw.bindMemory(to: CChar.self, capacity: utf8.count + 1)
    }
}
