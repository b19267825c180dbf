#!/usr/bin/env python3
"""Generate the Swift `Schemas` mapping for Switchyard's .proto files.

Reads a deliberately small proto3 subset (top-level messages; scalar, message,
repeated and map<..> fields; `//` comments) and writes:
  * <schemas-out>/<File>.pb.swift  public Swift value types + mapping to the protoc-c structs
                                   + `Codable` in the proto3 JSON mapping
  * <schemas-out>/SchemaCatalog.pb.swift  list of every message type
  * <schemas-out>/ProtoJSON.pb.swift      shared helpers of the JSON mapping
  * <tests-out>/Samples.pb.swift   deterministic sample builders used by SchemasTests

Anything outside the subset is rejected with an error, so the generator never
silently produces a wrong mapping. Output depends only on the input files
(sorted, no timestamps), so it is drift-checkable. Python 3 standard library only.

Conventions:
  * `bool has_x` next to a numeric scalar `x` becomes one Swift property `x: T?`
    (protoc-c 1.4.1 does not support proto3 `optional`).
  * Singular message fields are Swift optionals (unset = nil), as in proto3.
  * Map entries are encoded sorted by key, so encoding is deterministic.
  * JSON (proto3 JSON mapping): keys are the lowerCamelCase JSON names (`plan_id` -> `planId`);
    the .proto names are accepted when decoding too. Every field may be missing or `null`
    (-> default); unknown keys are rejected. Numbers are also accepted as decimal strings;
    64-bit integers are written as JSON numbers; non-finite doubles as "NaN"/"Infinity"/"-Infinity".
    Encoding writes every field, defaults included, except unset (nil) message fields.
    A merged `has_x` flag keeps its own JSON key (`hasX`), as it has on the wire.
"""
import argparse
import os
import re
import sys

SCALARS = {
    # proto type: (Swift type, Swift zero value, C-side Swift type if different)
    "string": ("String", '""'),
    "bool": ("Bool", "false"),
    "int32": ("Int32", "0"),
    "int64": ("Int64", "0"),
    "uint32": ("UInt32", "0"),
    "uint64": ("UInt64", "0"),
    "double": ("Double", "0"),
    "float": ("Float", "0"),
}
NUMERIC = {"int32", "int64", "uint32", "uint64", "double", "float"}
ACRONYMS = {"id": "ID", "json": "JSON", "url": "URL", "http": "HTTP", "api": "API"}
SWIFT_KEYWORDS = {
    "associatedtype", "class", "deinit", "enum", "extension", "fileprivate", "func", "import", "init",
    "inout", "internal", "let", "open", "operator", "private", "protocol", "public", "rethrows",
    "static", "struct", "subscript", "typealias", "var", "break", "case", "continue", "default",
    "defer", "do", "else", "fallthrough", "for", "guard", "if", "in", "repeat", "return", "switch",
    "where", "while", "as", "catch", "false", "is", "nil", "super", "self", "Self", "throw", "throws",
    "true", "try", "Type", "Protocol", "any", "some",
}
C_KEYWORDS = {
    "auto", "break", "case", "char", "const", "continue", "default", "do", "double", "else", "enum",
    "extern", "float", "for", "goto", "if", "int", "long", "register", "return", "short", "signed",
    "sizeof", "static", "struct", "switch", "typedef", "union", "unsigned", "void", "volatile", "while",
    "inline", "restrict", "bool", "_Bool",
}
RESERVED_SWIFT_PROPS = {"protoName", "description", "hashValue"}


class GenError(Exception):
    pass


class Field:
    def __init__(self, label, type_, name, number, comment, key_type=None, line=0):
        self.label = label          # "", "repeated", "map"
        self.type = type_           # value type for maps
        self.key_type = key_type
        self.name = name
        self.number = number
        self.comment = comment
        self.line = line
        self.presence_flag = None   # name of the has_ field merged into this one
        self.merged_into = None     # set on a has_ field that became presence

    @property
    def swift_name(self):
        parts = self.name.split("_")
        out = parts[0]
        for p in parts[1:]:
            out += ACRONYMS.get(p, p[:1].upper() + p[1:])
        return "`%s`" % out if out in SWIFT_KEYWORDS else out

    @property
    def plain_swift_name(self):
        return self.swift_name.strip("`")

    @property
    def json_name(self):
        """protoc's proto3 JSON name: drop each `_`, upper-case the letter after it (plan_id -> planId)."""
        out, upper = "", False
        for ch in self.name:
            if ch == "_":
                upper = True
            else:
                out += ch.upper() if upper else ch
                upper = False
        return out


class Message:
    def __init__(self, name, comment, file):
        self.name = name
        self.comment = comment
        self.file = file
        self.fields = []


def camel_to_lower(name):
    """protoc-c's lower-case naming of a CamelCase identifier: FooBar -> foo_bar."""
    out = ""
    for i, ch in enumerate(name):
        if ch.isupper():
            if i > 0:
                out += "_"
            out += ch.lower()
        else:
            out += ch
    return out


def field_camel(name):
    """protoc's map entry naming: feature_flags -> FeatureFlags."""
    return "".join(p[:1].upper() + p[1:] for p in name.split("_"))


FIELD_RE = re.compile(r"^(repeated\s+)?([A-Za-z_][\w.]*)\s+([a-z_][a-z0-9_]*)\s*=\s*(\d+)\s*;\s*(?://\s?(.*))?$")
MAP_RE = re.compile(r"^map\s*<\s*(\w+)\s*,\s*([A-Za-z_][\w.]*)\s*>\s+([a-z_][a-z0-9_]*)\s*=\s*(\d+)\s*;\s*(?://\s?(.*))?$")


def parse(path, package_holder):
    messages = []
    current = None
    pending = []
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    for lineno, raw in enumerate(lines, 1):
        line = raw.strip()
        where = "%s:%d" % (path, lineno)
        if not line:
            pending = []
            continue
        if line.startswith("//"):
            pending.append(line[2:].strip())
            continue
        if current is None:
            m = re.match(r'^syntax\s*=\s*"(\w+)"\s*;', line)
            if m:
                if m.group(1) != "proto3":
                    raise GenError("%s: only proto3 is supported" % where)
                pending = []
                continue
            m = re.match(r"^package\s+([\w.]+)\s*;", line)
            if m:
                if package_holder.get("package") not in (None, m.group(1)):
                    raise GenError("%s: all files must share one package" % where)
                package_holder["package"] = m.group(1)
                pending = []
                continue
            if re.match(r'^(import|option)\s', line):
                pending = []
                continue
            m = re.match(r"^message\s+([A-Z][A-Za-z0-9]*)\s*\{\s*$", line)
            if m:
                current = Message(m.group(1), pending, os.path.basename(path))
                pending = []
                continue
            raise GenError("%s: unsupported top-level statement: %s" % (where, line))
        else:
            if line == "}":
                messages.append(current)
                current = None
                pending = []
                continue
            if line.startswith("reserved"):
                continue
            m = MAP_RE.match(line)
            if m:
                ktype, vtype, name, num, comment = m.groups()
                if ktype != "string" or vtype not in SCALARS:
                    raise GenError("%s: only map<string, scalar> is supported" % where)
                current.fields.append(Field("map", vtype, name, int(num), comment or "", key_type=ktype, line=lineno))
                pending = []
                continue
            m = FIELD_RE.match(line)
            if m:
                rep, type_, name, num, comment = m.groups()
                if type_.startswith("optional") or type_ in ("oneof", "enum", "message", "bytes", "group"):
                    raise GenError("%s: unsupported field: %s" % (where, line))
                current.fields.append(Field("repeated" if rep else "", type_, name, int(num), comment or "", line=lineno))
                pending = []
                continue
            raise GenError("%s: unsupported statement in message %s: %s" % (where, current.name, line))
    if current is not None:
        raise GenError("%s: unterminated message %s" % (path, current.name))
    return messages


def resolve(messages, package):
    by_name = {}
    for m in messages:
        if m.name in by_name:
            raise GenError("duplicate message %s" % m.name)
        by_name[m.name] = m
    for m in messages:
        numbers, names = set(), set()
        for f in m.fields:
            if f.number in numbers or f.name in names:
                raise GenError("%s: duplicate field number or name %s=%d" % (m.name, f.name, f.number))
            if f.number < 1 or 19000 <= f.number <= 19999 or f.number > 536870911:
                raise GenError("%s.%s: invalid field number" % (m.name, f.name))
            if f.name in C_KEYWORDS or f.plain_swift_name in RESERVED_SWIFT_PROPS:
                raise GenError("%s.%s: field name is reserved in C or Swift" % (m.name, f.name))
            numbers.add(f.number)
            names.add(f.name)
            prefix = package + "."
            if f.type.startswith(prefix):
                f.type = f.type[len(prefix):]
            if f.type not in SCALARS and f.type not in by_name:
                raise GenError("%s.%s: unknown type %s" % (m.name, f.name, f.type))
        # JSON decoding accepts both names of a field, so none may stand for two fields.
        json_names = {}
        for f in m.fields:
            for n in {f.json_name, f.name}:
                if json_names.setdefault(n, f.name) != f.name:
                    raise GenError("%s: fields %s and %s share the JSON name %s" % (m.name, json_names[n], f.name, n))
        # has_x + numeric x -> x: T?
        fields = {f.name: f for f in m.fields}
        for f in m.fields:
            if f.name.startswith("has_") and f.type == "bool" and f.label == "":
                target = fields.get(f.name[4:])
                if target is not None and target.label == "" and target.type in NUMERIC:
                    target.presence_flag = f.name
                    f.merged_into = target.name
    return by_name


def doc(lines, indent):
    return "".join("%s/// %s\n" % (indent, l) if l else "%s///\n" % indent for l in lines)


def swift_type(f):
    if f.label == "map":
        return "[String: %s]" % SCALARS[f.type][0]
    base = SCALARS[f.type][0] if f.type in SCALARS else f.type
    if f.label == "repeated":
        return "[%s]" % base
    if f.type not in SCALARS or f.presence_flag:
        return base + "?"
    return base


def swift_default(f):
    if f.label == "map":
        return "[:]"
    if f.label == "repeated":
        return "[]"
    if f.type not in SCALARS or f.presence_flag:
        return "nil"
    return SCALARS[f.type][1]


class Names:
    def __init__(self, package):
        parts = package.split(".")
        self.c_prefix = "".join(p[:1].upper() + p[1:] + "__" for p in parts)
        self.fn_prefix = "".join(p.lower() + "__" for p in parts)
        self.package = package

    def c_type(self, msg, entry=None):
        t = self.c_prefix + msg
        if entry:
            t += "__" + field_camel(entry) + "Entry"
        return t

    def c_fn(self, msg, fn, entry=None):
        s = self.fn_prefix + camel_to_lower(msg)
        if entry:
            s += "__" + camel_to_lower(field_camel(entry) + "Entry")
        return s + "__" + fn


def to_c_scalar(expr, type_):
    if type_ == "string":
        return "arena.cString(%s)" % expr
    if type_ == "bool":
        return "(%s ? 1 : 0)" % expr
    return expr


def from_c_scalar(expr, type_):
    if type_ == "string":
        return "try _swiftString(%s, %s)" % (expr, "Self.protoName")
    if type_ == "bool":
        return "(%s != 0)" % expr
    return expr


def c_elem_type(f, names):
    if f.type == "string":
        return "UnsafeMutablePointer<CChar>?"
    if f.type == "bool":
        return "protobuf_c_boolean"
    if f.type in SCALARS:
        return SCALARS[f.type][0]
    return "UnsafeMutablePointer<%s>?" % names.c_type(f.type)


def gen_message(m, names):
    ctype = names.c_type(m.name)
    fields = [f for f in m.fields if not f.merged_into]
    o = []
    o.append(doc(m.comment, ""))
    o.append("public struct %s: ProtoMessage, Hashable {\n" % m.name)
    o.append('    public static let protoName = "%s.%s"\n\n' % (names.package, m.name))
    for f in fields:
        comment = f.comment
        if f.presence_flag:
            comment = (comment + " " if comment else "") + "(wire: `%s` + `%s`)" % (f.name, f.presence_flag)
        o.append("    /// `%s = %d`%s\n" % (f.name, f.number, (": " + comment) if comment else ""))
        o.append("    public var %s: %s = %s\n" % (f.swift_name, swift_type(f), swift_default(f)))
    o.append("\n")
    params = ",\n".join("        %s: %s = %s" % (f.swift_name, swift_type(f), swift_default(f)) for f in fields)
    o.append("    /// All fields at their proto3 defaults.\n    public init() {}\n\n")
    if fields:
        o.append("    public init(\n%s\n    ) {\n" % params)
        for f in fields:
            o.append("        self.%s = %s\n" % (f.plain_swift_name, f.swift_name))
        o.append("    }\n\n")
    o.append("    public init(protobuf bytes: some Collection<UInt8>) throws(SchemaError) {\n")
    o.append("        self = try _decodeMessage(Self.self, from: bytes)\n    }\n\n")
    o.append("    public func protobufBytes() -> [UInt8] {\n        _encodeMessage(self)\n    }\n}\n\n")

    # C mapping
    fn = lambda name: names.c_fn(m.name, name)
    o.append("extension %s: _CMessage {\n" % m.name)
    o.append("    typealias _CType = %s\n\n" % ctype)
    o.append("    static func _cInit(_ p: UnsafeMutablePointer<_CType>) { %s(p) }\n" % fn("init"))
    o.append("    static func _cUnpack(_ n: Int, _ d: UnsafePointer<UInt8>) -> UnsafeMutablePointer<_CType>? {\n")
    o.append("        %s(nil, n, d)\n    }\n" % fn("unpack"))
    o.append("    static func _cFree(_ p: UnsafeMutablePointer<_CType>) { %s(p, nil) }\n" % fn("free_unpacked"))
    o.append("    static func _cPackedSize(_ p: UnsafePointer<_CType>) -> Int { %s(p) }\n" % fn("get_packed_size"))
    o.append("    static func _cPack(_ p: UnsafePointer<_CType>, _ out: UnsafeMutablePointer<UInt8>) -> Int {\n")
    o.append("        %s(p, out)\n    }\n\n" % fn("pack"))

    # fill
    o.append("    func _cFill(_ c: UnsafeMutablePointer<_CType>, _ arena: inout _Arena) {\n")
    for f in fields:
        s, cn = "self." + f.plain_swift_name, f.name
        if f.label == "map":
            et = names.c_type(m.name, f.name)
            o.append("        if !%s.isEmpty {\n" % s)
            o.append("            let keys = %s.keys.sorted()\n" % s)
            o.append("            let arr = arena.allocateArray(UnsafeMutablePointer<%s>?.self, count: keys.count)\n" % et)
            o.append("            for (i, key) in keys.enumerated() {\n")
            o.append("                let e = arena.allocate(%s.self)\n" % et)
            o.append("                %s(e)\n" % names.c_fn(m.name, "init", entry=f.name))
            o.append("                e.pointee.key = arena.cString(key)\n")
            o.append("                e.pointee.value = %s\n" % to_c_scalar("%s[key]!" % s, f.type))
            o.append("                arr[i] = e\n            }\n")
            o.append("            c.pointee.n_%s = keys.count\n            c.pointee.%s = arr\n        }\n" % (cn, cn))
        elif f.label == "repeated":
            o.append("        if !%s.isEmpty {\n" % s)
            o.append("            let arr = arena.allocateArray(%s.self, count: %s.count)\n" % (c_elem_type(f, names), s))
            o.append("            for (i, v) in %s.enumerated() {\n" % s)
            if f.type in SCALARS:
                o.append("                arr[i] = %s\n" % to_c_scalar("v", f.type))
            else:
                o.append("                arr[i] = v._cMake(&arena)\n")
            o.append("            }\n")
            o.append("            c.pointee.n_%s = %s.count\n            c.pointee.%s = arr\n        }\n" % (cn, s, cn))
        elif f.type not in SCALARS:
            o.append("        if let v = %s { c.pointee.%s = v._cMake(&arena) }\n" % (s, cn))
        elif f.presence_flag:
            o.append("        if let v = %s {\n            c.pointee.%s = v\n            c.pointee.%s = 1\n        }\n"
                     % (s, cn, f.presence_flag))
        elif f.type == "string":
            o.append("        if !%s.isEmpty { c.pointee.%s = arena.cString(%s) }\n" % (s, cn, s))
        else:
            o.append("        c.pointee.%s = %s\n" % (cn, to_c_scalar(s, f.type)))
    if not fields:
        o.append("        _ = c\n        _ = arena\n")
    o.append("    }\n\n")

    # decode
    o.append("    init(_c p: UnsafePointer<_CType>) throws(SchemaError) {\n")
    if not fields:
        o.append("        _ = p\n")
    for f in fields:
        s, cn = "self." + f.plain_swift_name, f.name
        if f.label == "map":
            o.append("        var %s: %s = [:]\n" % (f.plain_swift_name + "_", swift_type(f)))
            o.append("        if let arr = p.pointee.%s {\n" % cn)
            o.append("            %s_.reserveCapacity(p.pointee.n_%s)\n" % (f.plain_swift_name, cn))
            o.append("            for i in 0..<p.pointee.n_%s {\n" % cn)
            o.append("                guard let e = arr[i] else { throw SchemaError(.malformed, messageType: Self.protoName) }\n")
            o.append("                %s_[try _swiftString(e.pointee.key, Self.protoName)] = %s\n"
                     % (f.plain_swift_name, from_c_scalar("e.pointee.value", f.type)))
            o.append("            }\n        }\n")
            o.append("        %s = %s_\n" % (s, f.plain_swift_name))
        elif f.label == "repeated":
            o.append("        var %s_: %s = []\n" % (f.plain_swift_name, swift_type(f)))
            o.append("        if let arr = p.pointee.%s {\n" % cn)
            o.append("            %s_.reserveCapacity(p.pointee.n_%s)\n" % (f.plain_swift_name, cn))
            o.append("            for i in 0..<p.pointee.n_%s {\n" % cn)
            if f.type in SCALARS and f.type != "string":
                o.append("                %s_.append(%s)\n" % (f.plain_swift_name, from_c_scalar("arr[i]", f.type)))
            elif f.type == "string":
                o.append("                %s_.append(try _swiftString(arr[i], Self.protoName))\n" % f.plain_swift_name)
            else:
                o.append("                guard let e = arr[i] else { throw SchemaError(.malformed, messageType: Self.protoName) }\n")
                o.append("                %s_.append(try %s(_c: e))\n" % (f.plain_swift_name, f.type))
            o.append("            }\n        }\n")
            o.append("        %s = %s_\n" % (s, f.plain_swift_name))
        elif f.type not in SCALARS:
            o.append("        if let q = p.pointee.%s { %s = try %s(_c: q) } else { %s = nil }\n" % (cn, s, f.type, s))
        elif f.presence_flag:
            o.append("        %s = p.pointee.%s != 0 ? p.pointee.%s : nil\n" % (s, f.presence_flag, cn))
        else:
            o.append("        %s = %s\n" % (s, from_c_scalar("p.pointee." + cn, f.type)))
    o.append("    }\n}\n")
    return "".join(o)


HEADER = "// Generated by scripts/gen-swift-schemas.py from %s. DO NOT EDIT.\n// Regenerate with `make proto` (scripts/gen-proto.sh).\n"

FLOATING = {"double", "float"}

PROTO_JSON_SUPPORT = '''
// Helpers of the proto3 JSON mapping that every generated `extension X: Codable` uses.

/// Any key of a JSON object, so a decoder can list them all and reject the unknown ones.
struct _ProtoJSONKey: CodingKey {
    let stringValue: String
    var intValue: Int? { nil }

    init(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
}

/// The `CodingKeys` of a generated message: one case per .proto field, raw value = JSON name.
protocol _ProtoJSONField: CodingKey, CaseIterable, Hashable {
    /// The .proto field name (`plan_id`), accepted when decoding besides the JSON name (`planId`).
    var protoFieldName: String { get }
}

/// `CodingKeys` of a message without fields.
enum _ProtoJSONNoFields: _ProtoJSONField {
    static var allCases: [Self] { [] }
    var stringValue: String { switch self {} }
    var intValue: Int? { nil }
    var protoFieldName: String { switch self {} }

    init?(stringValue: String) { nil }
    init?(intValue: Int) { nil }
}

/// Reads one JSON object by the proto3 JSON mapping:
///   * keys are the JSON names (`planId`) or the .proto names (`plan_id`), each field at most once;
///   * any other key throws `DecodingError.dataCorrupted` naming it (`unknown field "nmae" in switchyard.v1.Tenant`);
///   * a missing key and `null` both mean "not set": the proto3 default, or nil for a message field;
///   * a value of the wrong type throws the decoder's usual `DecodingError`.
/// The mapping expects the coder's default key strategies (no snake_case conversion).
struct _ProtoJSONObject<Field: _ProtoJSONField> {
    private let container: KeyedDecodingContainer<_ProtoJSONKey>
    private let keys: [Field: _ProtoJSONKey]

    init(_ decoder: any Decoder, messageName: String) throws {
        let container = try decoder.container(keyedBy: _ProtoJSONKey.self)
        var keys: [Field: _ProtoJSONKey] = [:]
        for key in container.allKeys {
            let name = key.stringValue
            guard let field = Field.allCases.first(where: { $0.stringValue == name || $0.protoFieldName == name }) else {
                throw DecodingError.dataCorruptedError(
                    forKey: key, in: container, debugDescription: "unknown field \\"\\(name)\\" in \\(messageName)")
            }
            guard keys.updateValue(key, forKey: field) == nil else {
                throw DecodingError.dataCorruptedError(
                    forKey: key, in: container,
                    debugDescription: "field \\"\\(field.stringValue)\\" given twice in \\(messageName)")
            }
        }
        self.container = container
        self.keys = keys
    }

    /// The field's value, or nil when the key is missing or `null`.
    func decode<T: Decodable>(_ type: T.Type, _ field: Field) throws -> T? {
        guard let key = keys[field] else { return nil }
        return try container.decodeIfPresent(type, forKey: key)
    }
}

/// A numeric field type of the JSON mapping.
protocol _ProtoJSONNumeric: Codable {
    /// Parses the string form of a number: decimal integers; for floating point also "NaN", "Infinity", "-Infinity".
    init?(_protoJSONString string: String)
    /// The string a value is written as when JSON has no number for it (non-finite floating point).
    var _protoJSONString: String? { get }
}

extension _ProtoJSONNumeric where Self: FixedWidthInteger {
    init?(_protoJSONString string: String) { self.init(string, radix: 10) }
    var _protoJSONString: String? { nil }
}

extension _ProtoJSONNumeric where Self: BinaryFloatingPoint & LosslessStringConvertible {
    init?(_protoJSONString string: String) {
        switch string {
        case "NaN": self = .nan
        case "Infinity": self = .infinity
        case "-Infinity": self = -.infinity
        default:
            // Plain decimal notation only (the String initializer would also take "inf", "nan" and hex).
            guard string.utf8.allSatisfy(Self._isDecimalByte), let value = Self(string), value.isFinite else { return nil }
            self = value
        }
    }

    var _protoJSONString: String? {
        if isNaN { return "NaN" }
        if isInfinite { return self < 0 ? "-Infinity" : "Infinity" }
        return nil
    }

    private static func _isDecimalByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."),
             UInt8(ascii: "e"), UInt8(ascii: "E"):
            true
        default:
            false
        }
    }
}

extension Int32: _ProtoJSONNumeric {}
extension Int64: _ProtoJSONNumeric {}
extension UInt32: _ProtoJSONNumeric {}
extension UInt64: _ProtoJSONNumeric {}
extension Double: _ProtoJSONNumeric {}
extension Float: _ProtoJSONNumeric {}

/// A number as the JSON mapping reads it (a JSON number or its decimal string, e.g. `"1700000000000000000"`)
/// and writes it (a JSON number; non-finite floating point as "NaN", "Infinity", "-Infinity").
struct _ProtoJSONNumber<Value: _ProtoJSONNumeric>: Codable {
    var value: Value

    init(_ value: Value) { self.value = value }

    init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let string = try? c.decode(String.self) {
            // The message does not echo the string: it is client input.
            guard let value = Value(_protoJSONString: string) else {
                throw DecodingError.dataCorruptedError(
                    in: c, debugDescription: "expected \\(Value.self) as a JSON number or a decimal string")
            }
            self.value = value
        } else {
            value = try c.decode(Value.self)
        }
    }

    func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        if let string = value._protoJSONString {
            try c.encode(string)
        } else {
            try c.encode(value)
        }
    }
}
'''


def json_elem_type(f):
    """Swift type one element of `f` is read as from JSON (numbers go through `_ProtoJSONNumber`)."""
    if f.type in NUMERIC:
        return "_ProtoJSONNumber<%s>" % SCALARS[f.type][0]
    return SCALARS[f.type][0] if f.type in SCALARS else f.type


def gen_json(m):
    """`extension X: Codable` in the proto3 JSON mapping (helpers in ProtoJSON.pb.swift)."""
    o = ["/// proto3 JSON mapping; see `_ProtoJSONObject` for the rules.\n", "extension %s: Codable {\n" % m.name]
    if not m.fields:
        o.append("    public init(from decoder: any Decoder) throws {\n")
        o.append("        _ = try _ProtoJSONObject<_ProtoJSONNoFields>(decoder, messageName: Self.protoName)\n")
        o.append("        self.init()\n    }\n\n")
        o.append("    public func encode(to encoder: any Encoder) throws {\n")
        o.append("        _ = encoder.container(keyedBy: _ProtoJSONNoFields.self)\n    }\n}\n")
        return "".join(o)

    # One key per .proto field: a merged `has_x` flag keeps its own JSON key, as on the wire.
    o.append("    enum CodingKeys: String, CodingKey, CaseIterable, _ProtoJSONField {\n")
    for f in m.fields:
        if f.plain_swift_name == f.json_name:
            o.append("        case %s\n" % f.swift_name)
        else:
            o.append('        case %s = "%s"\n' % (f.swift_name, f.json_name))
    differing = [f for f in m.fields if f.name != f.json_name]
    if not differing:
        o.append("\n        var protoFieldName: String { rawValue }\n")
    else:
        o.append("\n        var protoFieldName: String {\n            switch self {\n")
        for f in differing:
            o.append('            case .%s: "%s"\n' % (f.swift_name, f.name))
        if len(differing) < len(m.fields):
            o.append("            default: rawValue\n")
        o.append("            }\n        }\n")
    o.append("    }\n\n")

    fields = [f for f in m.fields if not f.merged_into]
    o.append("    public init(from decoder: any Decoder) throws {\n")
    o.append("        let json = try _ProtoJSONObject<CodingKeys>(decoder, messageName: Self.protoName)\n")
    for f in fields:
        s, key = "self." + f.plain_swift_name, "." + f.swift_name
        numeric = f.type in NUMERIC
        if f.label == "map":
            o.append("        %s = try json.decode([String: %s].self, %s)%s ?? [:]\n"
                     % (s, json_elem_type(f), key, "?.mapValues(\\.value)" if numeric else ""))
        elif f.label == "repeated":
            o.append("        %s = try json.decode([%s].self, %s)%s ?? []\n"
                     % (s, json_elem_type(f), key, "?.map(\\.value)" if numeric else ""))
        elif f.type not in SCALARS:
            o.append("        %s = try json.decode(%s.self, %s)\n" % (s, f.type, key))
        elif f.presence_flag:
            flag = [g for g in m.fields if g.name == f.presence_flag][0]
            v = f.plain_swift_name + "JSON"
            o.append("        // Set when `%s` says so; without that key, when `%s` is present and not null.\n"
                     % (flag.json_name, f.json_name))
            o.append("        let %s = try json.decode(%s.self, %s)?.value\n" % (v, json_elem_type(f), key))
            isSet = f.plain_swift_name + "IsSet"
            o.append("        let %s = try json.decode(Bool.self, .%s) ?? (%s != nil)\n" % (isSet, flag.swift_name, v))
            o.append("        %s = %s ? (%s ?? %s) : nil\n" % (s, isSet, v, SCALARS[f.type][1]))
        elif numeric:
            o.append("        %s = try json.decode(%s.self, %s)?.value ?? %s\n" % (s, json_elem_type(f), key, SCALARS[f.type][1]))
        else:
            o.append("        %s = try json.decode(%s.self, %s) ?? %s\n" % (s, json_elem_type(f), key, SCALARS[f.type][1]))
    o.append("    }\n\n")

    o.append("    public func encode(to encoder: any Encoder) throws {\n")
    o.append("        var c = encoder.container(keyedBy: CodingKeys.self)\n")
    for f in fields:
        s, key = "self." + f.plain_swift_name, "." + f.swift_name
        floating = f.type in FLOATING
        if f.label == "map":
            v = "%s.mapValues { _ProtoJSONNumber($0) }" % s if floating else s
            o.append("        try c.encode(%s, forKey: %s)\n" % (v, key))
        elif f.label == "repeated":
            v = "%s.map { _ProtoJSONNumber($0) }" % s if floating else s
            o.append("        try c.encode(%s, forKey: %s)\n" % (v, key))
        elif f.type not in SCALARS:
            o.append("        try c.encodeIfPresent(%s, forKey: %s)\n" % (s, key))
        elif f.presence_flag:
            flag = [g for g in m.fields if g.name == f.presence_flag][0]
            v = "%s ?? %s" % (s, SCALARS[f.type][1])
            o.append("        try c.encode(%s, forKey: %s)\n" % ("_ProtoJSONNumber(%s)" % v if floating else v, key))
            o.append("        try c.encode(%s != nil, forKey: .%s)\n" % (s, flag.swift_name))
        elif floating:
            o.append("        try c.encode(_ProtoJSONNumber(%s), forKey: %s)\n" % (s, key))
        else:
            o.append("        try c.encode(%s, forKey: %s)\n" % (s, key))
    o.append("    }\n}\n")
    return "".join(o)


def gen_sample(m):
    fields = [f for f in m.fields if not f.merged_into]
    o = ["extension %s: Sampleable {\n" % m.name,
         "    static func sample(_ g: inout SampleGen) -> %s {\n" % m.name,
         "        var m = %s()\n" % m.name]
    gens = {"string": "g.string()", "bool": "g.bool()", "int32": "g.int32()", "int64": "g.int64()",
            "uint32": "g.uint32()", "uint64": "g.uint64()", "double": "g.double()", "float": "g.float()"}
    for f in fields:
        n = "m." + f.plain_swift_name
        if f.label == "map":
            o.append("        for _ in 0..<g.count() { %s[g.string()] = %s }\n" % (n, gens[f.type]))
        elif f.label == "repeated":
            v = gens[f.type] if f.type in SCALARS else "%s.sample(&g)" % f.type
            o.append("        for _ in 0..<g.count() { %s.append(%s) }\n" % (n, v))
        elif f.type not in SCALARS:
            o.append("        if g.present() { %s = %s.sample(&g) }\n" % (n, f.type))
        elif f.presence_flag:
            o.append("        if g.present() { %s = %s }\n" % (n, gens[f.type]))
        else:
            o.append("        %s = %s\n" % (n, gens[f.type]))
    o.append("        return m\n    }\n}\n")
    return "".join(o)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--schemas-out", required=True)
    ap.add_argument("--tests-out", required=True)
    ap.add_argument("--proto-root", required=True)
    ap.add_argument("protos", nargs="+")
    a = ap.parse_args()
    pkg = {}
    per_file = []
    all_msgs = []
    for rel in sorted(a.protos):
        msgs = parse(os.path.join(a.proto_root, rel), pkg)
        per_file.append((rel, msgs))
        all_msgs.extend(msgs)
    resolve(all_msgs, pkg["package"])
    names = Names(pkg["package"])
    os.makedirs(a.schemas_out, exist_ok=True)
    os.makedirs(a.tests_out, exist_ok=True)
    for rel, msgs in per_file:
        base = os.path.splitext(os.path.basename(rel))[0]
        out = [HEADER % ("Proto/" + rel), "\ninternal import SwitchyardProtoC\ninternal import CProtobufC\n\n"]
        out.append("\n".join(gen_message(m, names) + "\n" + gen_json(m) for m in msgs))
        with open(os.path.join(a.schemas_out, field_camel(base) + ".pb.swift"), "w", encoding="utf-8", newline="\n") as f:
            f.write("".join(out))
    cat = [HEADER % "Proto/", "\n/// Every message type of the contract, for generic tooling (replay, schema docs, fuzzing).\n",
           "public enum SchemaCatalog {\n",
           "    /// All message types, in .proto file and declaration order.\n",
           "    public static let allMessageTypes: [any ProtoMessage.Type] = [\n"]
    cat += ["        %s.self,\n" % m.name for m in all_msgs]
    cat += ["    ]\n\n",
            "    /// The Swift type for a fully qualified protobuf name such as `switchyard.v1.ChatRequested`.\n",
            "    public static func messageType(named name: String) -> (any ProtoMessage.Type)? {\n",
            "        byName[name]\n    }\n\n",
            "    private static let byName: [String: any ProtoMessage.Type] = {\n",
            "        var d: [String: any ProtoMessage.Type] = [:]\n",
            "        for t in allMessageTypes { d[t.protoName] = t }\n",
            "        return d\n    }()\n}\n"]
    with open(os.path.join(a.schemas_out, "SchemaCatalog.pb.swift"), "w", encoding="utf-8", newline="\n") as f:
        f.write("".join(cat))
    with open(os.path.join(a.schemas_out, "ProtoJSON.pb.swift"), "w", encoding="utf-8", newline="\n") as f:
        f.write(HEADER % "Proto/" + PROTO_JSON_SUPPORT)
    s = [HEADER % "Proto/", "\nimport Schemas\n\n",
         "/// Every message type with a sample builder, in declaration order.\n",
         "let allSampleableTypes: [any Sampleable.Type] = [\n"]
    s += ["    %s.self,\n" % m.name for m in all_msgs]
    s.append("]\n\n")
    s.append("\n".join(gen_sample(m) for m in all_msgs))
    with open(os.path.join(a.tests_out, "Samples.pb.swift"), "w", encoding="utf-8", newline="\n") as f:
        f.write("".join(s))


if __name__ == "__main__":
    try:
        main()
    except GenError as e:
        print("gen-swift-schemas: error: %s" % e, file=sys.stderr)
        sys.exit(1)
