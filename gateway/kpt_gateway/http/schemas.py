"""JSON Schemas of the contract's messages, derived from the proto descriptors (never written by hand).

The HTTP API speaks the proto3 JSON mapping (google.protobuf.json_format, proto field names), so
these schemas describe exactly what kpt.contract.to_dict writes and from_dict accepts: enums by
name, 64-bit integers as decimal strings (integers accepted too), timestamps as RFC 3339 strings.
"""

from __future__ import annotations

from google.protobuf.descriptor import Descriptor, FieldDescriptor

F = FieldDescriptor
INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
_INT = {F.TYPE_INT32: INT32, F.TYPE_SINT32: INT32, F.TYPE_SFIXED32: INT32,
        F.TYPE_UINT32: (0, 2**32 - 1), F.TYPE_FIXED32: (0, 2**32 - 1)}
_INT64 = {F.TYPE_INT64: INT64, F.TYPE_SINT64: INT64, F.TYPE_SFIXED64: INT64,
          F.TYPE_UINT64: (0, 2**64 - 1), F.TYPE_FIXED64: (0, 2**64 - 1)}
WELL_KNOWN = {"google.protobuf.Timestamp": {"type": "string", "format": "date-time"}}


def ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _scalar(field: FieldDescriptor, out: dict[str, dict]) -> dict:
    t = field.type
    if t == F.TYPE_STRING:
        return {"type": "string"}
    if t == F.TYPE_BOOL:
        return {"type": "boolean"}
    if t == F.TYPE_BYTES:
        return {"type": "string", "format": "byte"}
    if t in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
        return {"anyOf": [{"type": "number"}, {"type": "string", "enum": ["NaN", "Infinity", "-Infinity"]}]}
    if t in _INT:
        lo, hi = _INT[t]
        return {"type": "integer", "minimum": lo, "maximum": hi}
    if t in _INT64:
        lo, hi = _INT64[t]
        return {"anyOf": [{"type": "integer", "minimum": lo, "maximum": hi},
                          {"type": "string", "pattern": "^-?[0-9]{1,19}$" if lo else "^[0-9]{1,20}$"}]}
    if t == F.TYPE_ENUM:
        return {"type": "string", "enum": [v.name for v in field.enum_type.values]}
    if t == F.TYPE_MESSAGE:
        return _message(field.message_type, out)
    raise ValueError(f"field {field.full_name}: proto type {t} has no JSON Schema here")


def _message(desc: Descriptor, out: dict[str, dict]) -> dict:
    if desc.full_name in WELL_KNOWN:
        return dict(WELL_KNOWN[desc.full_name])
    if desc.full_name not in out:
        out[desc.full_name] = {}  # placeholder first: messages may refer to each other
        props = {}
        for field in desc.fields:
            if field.message_type is not None and field.message_type.GetOptions().map_entry:
                value = field.message_type.fields_by_name["value"]
                props[field.name] = {"type": "object", "additionalProperties": _scalar(value, out)}
            elif field.is_repeated:
                props[field.name] = {"type": "array", "items": _scalar(field, out)}
            else:
                props[field.name] = _scalar(field, out)
        schema: dict = {"type": "object", "properties": props, "additionalProperties": False}
        if desc.oneofs:
            schema["description"] = "; ".join(
                f"at most one of {', '.join(f.name for f in o.fields)}" for o in desc.oneofs)
        out[desc.full_name] = schema
    return ref(desc.full_name)


def components(*messages) -> dict[str, dict]:
    """Schemas of `messages` (proto classes) and of every message they contain, by full name."""
    out: dict[str, dict] = {}
    for m in messages:
        _message(m.DESCRIPTOR, out)
    return out
