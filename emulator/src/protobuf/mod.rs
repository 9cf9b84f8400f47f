//! `application/vnd.kubernetes.protobuf`, as kube-apiserver speaks it for the built-in
//! types: an object is the 4-byte magic `k8s\0` and a `runtime.Unknown` envelope
//! (apiVersion, kind, the message's bytes); a watch stream is a sequence of
//! `meta.v1.WatchEvent` messages, each preceded by its length (4 bytes, big-endian),
//! whose `object.raw` is an enveloped object.
//!
//! The emulator stores JSON. Each message is translated field by field with the table in
//! `schema.txt` (field numbers and types from the `k8s-pb` crate, JSON names from
//! `k8s-openapi`, written by `scripts/gen-protobuf-schema`), with kube-apiserver's JSON
//! forms for the types that have one: `Time` and `MicroTime` as RFC 3339 strings,
//! `Quantity` as a string, `IntOrString` as a number or a string, `Duration` as Go's
//! duration string, `RawExtension`, `FieldsV1` and `JSON` as embedded JSON, bytes as
//! base64.
//!
//! Go's protobuf code writes every non-pointer field, zero or not, and a pointer field
//! only when set, and the wire does not say which is which: a zero number, `false` or
//! an empty string is taken as absent (as Go's `omitempty` would write its JSON), except
//! for the pointer fields in [`KEEP_ZERO`], where zero means something (`replicas: 0`).

mod schema;

use std::fmt;

use base64::Engine;
use prost::encoding::{WireType, decode_key, decode_varint, encode_key, encode_varint};
use serde_json::{Map, Value, json};

use schema::{Field, Kind};
pub use schema::{Schema, schema};

/// The media type.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";
/// kube-apiserver's media type for protobuf watch streams.
pub const STREAM_MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf;stream=watch";
const MAGIC: &[u8] = b"k8s\x00";
/// Nesting deeper than this is refused (a body crafted to exhaust the stack).
const MAX_DEPTH: usize = 100;

/// Pointer fields whose zero value is a value (the rest of the zeros are Go's defaults).
pub const KEEP_ZERO: &[&str] = &[
    "activeDeadlineSeconds",
    "allocateLoadBalancerNodePorts",
    "allowPrivilegeEscalation",
    "automountServiceAccountToken",
    "backoffLimit",
    "backoffLimitPerIndex",
    "completions",
    "defaultMode",
    "deletionGracePeriodSeconds",
    "enableServiceLinks",
    "failedJobsHistoryLimit",
    "fsGroup",
    "gracePeriodSeconds",
    "hostUsers",
    "immutable",
    "leaseTransitions",
    "maxFailedIndexes",
    "optional",
    "orphanDependents",
    "parallelism",
    "privileged",
    "readOnlyRootFilesystem",
    "ready",
    "replicas",
    "revisionHistoryLimit",
    "runAsGroup",
    "runAsNonRoot",
    "runAsUser",
    "serving",
    "setHostnameAsFQDN",
    "shareProcessNamespace",
    "startingDeadlineSeconds",
    "storageClassName",
    "successfulJobsHistoryLimit",
    "suspend",
    "terminating",
    "terminationGracePeriodSeconds",
    "ttlSecondsAfterFinished",
];

/// What is wrong with a protobuf body, or why a value has no protobuf form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// Not protobuf as kube-apiserver reads it (truncated, wrong wire type, bad UTF-8).
    Malformed(String),
    /// A kind the protobuf serializer does not know (custom resources are JSON only).
    UnknownKind { api_version: String, kind: String },
    /// The envelope names an encoding other than none.
    Encoding(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Malformed(m) => write!(f, "error decoding protobuf body: {m}"),
            Error::UnknownKind { api_version, kind } => {
                write!(f, "no kind {kind:?} is registered for version {api_version:?} in protobuf")
            }
            Error::Encoding(e) => write!(f, "protobuf content encoding {e:?} is not supported"),
        }
    }
}

impl std::error::Error for Error {}

fn malformed(m: impl Into<String>) -> Error {
    Error::Malformed(m.into())
}

/// Whether `body` starts with the protobuf magic.
pub fn is_enveloped(body: &[u8]) -> bool {
    body.starts_with(MAGIC)
}

/// Decode an enveloped object into its JSON form (with `apiVersion` and `kind`).
pub fn decode_object(body: &[u8]) -> Result<Value, Error> {
    decode_object_at(body, 0)
}

fn decode_object_at(body: &[u8], depth: usize) -> Result<Value, Error> {
    let s = schema();
    let rest = body
        .strip_prefix(MAGIC)
        .ok_or_else(|| malformed("the body does not start with the protobuf magic \"k8s\\x00\""))?;
    let mut api_version = String::new();
    let mut kind = String::new();
    let mut raw: &[u8] = &[];
    let mut encoding = String::new();
    for (tag, value) in fields(rest)? {
        match (tag, value) {
            (1, Raw::Bytes(tm)) => {
                for (t, v) in fields(tm)? {
                    match (t, v) {
                        (1, Raw::Bytes(b)) => api_version = utf8(b, "typeMeta.apiVersion")?,
                        (2, Raw::Bytes(b)) => kind = utf8(b, "typeMeta.kind")?,
                        (1 | 2, _) => return Err(malformed("typeMeta: wrong wire type")),
                        _ => {}
                    }
                }
            }
            (2, Raw::Bytes(b)) => raw = b,
            (3, Raw::Bytes(b)) => encoding = utf8(b, "contentEncoding")?,
            (4, Raw::Bytes(_)) => {}
            (1..=4, _) => return Err(malformed("runtime.Unknown: wrong wire type")),
            _ => {}
        }
    }
    if !encoding.is_empty() {
        return Err(Error::Encoding(encoding));
    }
    if kind.is_empty() {
        return Err(malformed("the envelope names no kind"));
    }
    let message = s
        .message_for(&api_version, &kind)
        .ok_or_else(|| Error::UnknownKind { api_version: api_version.clone(), kind: kind.clone() })?;
    let mut v = decode_message(message, raw, depth + 1)?;
    if let Value::Object(o) = &mut v {
        o.insert("apiVersion".into(), json!(api_version));
        o.insert("kind".into(), json!(kind));
    }
    Ok(v)
}

/// Encode a JSON object (with `apiVersion` and `kind`) as an enveloped object.
pub fn encode_object(v: &Value) -> Result<Vec<u8>, Error> {
    let (api_version, kind, message) = message_of(v)?;
    let mut raw = Vec::new();
    encode_message(message, v, &mut raw)?;
    let mut type_meta = Vec::new();
    put_bytes(1, api_version.as_bytes(), &mut type_meta);
    put_bytes(2, kind.as_bytes(), &mut type_meta);
    let mut out = MAGIC.to_vec();
    put_bytes(1, &type_meta, &mut out);
    put_bytes(2, &raw, &mut out);
    put_bytes(3, b"", &mut out);
    put_bytes(4, b"", &mut out);
    Ok(out)
}

/// Whether `v` (with `apiVersion` and `kind`) has a protobuf form.
pub fn encodable(v: &Value) -> bool {
    message_of(v).is_ok()
}

/// `v`'s apiVersion, kind and the message they name.
fn message_of(v: &Value) -> Result<(&str, &str, &'static str), Error> {
    let api_version = v.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
    let kind = v.get("kind").and_then(Value::as_str).unwrap_or_default();
    let message = schema()
        .message_for(api_version, kind)
        .ok_or_else(|| Error::UnknownKind { api_version: api_version.into(), kind: kind.into() })?;
    Ok((api_version, kind, message))
}

/// One frame of a protobuf watch stream: the length, then a `WatchEvent` whose object is
/// the enveloped `object`.
pub fn encode_watch_frame(event_type: &str, object: &Value) -> Result<Vec<u8>, Error> {
    let inner = encode_object(object)?;
    let mut raw_ext = Vec::new();
    put_bytes(1, &inner, &mut raw_ext);
    let mut ev = Vec::new();
    put_bytes(1, event_type.as_bytes(), &mut ev);
    put_bytes(2, &raw_ext, &mut ev);
    let len = u32::try_from(ev.len()).map_err(|_| malformed("watch event larger than 4 GiB"))?;
    let mut out = len.to_be_bytes().to_vec();
    out.extend_from_slice(&ev);
    Ok(out)
}

// ---------------------------------------------------------------------------------
// The wire.

enum Raw<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32,
    Bytes(&'a [u8]),
}

/// The fields of a message, in wire order.
fn fields(mut buf: &[u8]) -> Result<Vec<(u32, Raw<'_>)>, Error> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let (tag, wt) = decode_key(&mut buf).map_err(|e| malformed(e.to_string()))?;
        let raw = match wt {
            WireType::Varint => Raw::Varint(decode_varint(&mut buf).map_err(|e| malformed(e.to_string()))?),
            WireType::SixtyFourBit => {
                let (b, rest) = buf.split_first_chunk::<8>().ok_or_else(|| malformed("truncated fixed64"))?;
                buf = rest;
                Raw::Fixed64(u64::from_le_bytes(*b))
            }
            WireType::ThirtyTwoBit => {
                let (_, rest) = buf.split_first_chunk::<4>().ok_or_else(|| malformed("truncated fixed32"))?;
                buf = rest;
                Raw::Fixed32
            }
            WireType::LengthDelimited => {
                let len = decode_varint(&mut buf).map_err(|e| malformed(e.to_string()))?;
                let len = usize::try_from(len).map_err(|_| malformed("length overflows"))?;
                if len > buf.len() {
                    return Err(malformed(format!("field {tag}: length {len} beyond the {} bytes left", buf.len())));
                }
                let (b, rest) = buf.split_at(len);
                buf = rest;
                Raw::Bytes(b)
            }
            WireType::StartGroup | WireType::EndGroup => {
                return Err(malformed(format!("field {tag}: groups are not used by the Kubernetes API")));
            }
        };
        out.push((tag, raw));
    }
    Ok(out)
}

fn utf8(b: &[u8], what: &str) -> Result<String, Error> {
    String::from_utf8(b.to_vec()).map_err(|_| malformed(format!("{what}: invalid UTF-8")))
}

fn put_bytes(tag: u32, b: &[u8], out: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(b.len() as u64, out);
    out.extend_from_slice(b);
}

fn put_varint(tag: u32, v: u64, out: &mut Vec<u8>) {
    encode_key(tag, WireType::Varint, out);
    encode_varint(v, out);
}

// ---------------------------------------------------------------------------------
// Decoding.

fn decode_message(name: &str, buf: &[u8], depth: usize) -> Result<Value, Error> {
    if depth > MAX_DEPTH {
        return Err(malformed(format!("nested more than {MAX_DEPTH} deep")));
    }
    if let Some(v) = decode_special(name, buf, depth)? {
        return Ok(v);
    }
    let mut out = decode_fields(name, buf, depth)?;
    out.retain(|k, v| !empty(k, v));
    Ok(Value::Object(out))
}

/// Whether a decoded field is Go's zero value and not worth writing.
fn empty(key: &str, v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty() && key != "metadata",
        Value::String(s) => s.is_empty() && !KEEP_ZERO.contains(&key),
        Value::Bool(b) => !b && !KEEP_ZERO.contains(&key),
        Value::Number(n) => n.as_f64() == Some(0.0) && !KEEP_ZERO.contains(&key),
    }
}

/// One occurrence of a field on the wire.
enum Decoded {
    One(Value),
    /// A packed run of repeated numbers.
    Packed(Vec<Value>),
    /// A map entry.
    Entry(String, Value),
}

fn decode_field(f: &Field, raw: Raw<'_>, depth: usize) -> Result<Decoded, Error> {
    let wrong = || malformed(format!("field {} ({}): wrong wire type", f.tag, f.json));
    let scalar = |raw: Raw<'_>| -> Result<Value, Error> {
        Ok(match (f.kind, raw) {
            (Kind::String, Raw::Bytes(b)) => json!(utf8(b, &f.json)?),
            (Kind::Bytes, Raw::Bytes(b)) => json!(base64::engine::general_purpose::STANDARD.encode(b)),
            (Kind::Bool, Raw::Varint(v)) => json!(v != 0),
            (Kind::Int32, Raw::Varint(v)) => json!(v as i64 as i32),
            (Kind::Int64, Raw::Varint(v)) => json!(v as i64),
            (Kind::Double, Raw::Fixed64(v)) => json!(f64::from_bits(v)),
            (Kind::Message, Raw::Bytes(b)) => decode_message(&f.message, b, depth + 1)?,
            _ => return Err(wrong()),
        })
    };
    match (f.kind, raw) {
        (Kind::MapString | Kind::MapBytes | Kind::MapMessage, Raw::Bytes(entry)) => {
            let mut key = String::new();
            let mut value = match f.kind {
                Kind::MapMessage => decode_message(&f.message, &[], depth + 1)?,
                _ => json!(""),
            };
            for (t, r) in fields(entry)? {
                match (t, r) {
                    (1, Raw::Bytes(b)) => key = utf8(b, &f.json)?,
                    (2, Raw::Bytes(b)) => {
                        value = match f.kind {
                            Kind::MapString => json!(utf8(b, &f.json)?),
                            Kind::MapBytes => json!(base64::engine::general_purpose::STANDARD.encode(b)),
                            _ => decode_message(&f.message, b, depth + 1)?,
                        }
                    }
                    (1 | 2, _) => return Err(wrong()),
                    _ => {}
                }
            }
            Ok(Decoded::Entry(key, value))
        }
        (Kind::MapString | Kind::MapBytes | Kind::MapMessage, _) => Err(wrong()),
        // Packed repeated numbers (Go writes them unpacked; both are valid protobuf).
        (Kind::Int32 | Kind::Int64 | Kind::Bool | Kind::Double, Raw::Bytes(mut b)) if f.repeated => {
            let mut items = Vec::new();
            while !b.is_empty() {
                let r = match f.kind {
                    Kind::Double => {
                        let (x, rest) =
                            b.split_first_chunk::<8>().ok_or_else(|| malformed("truncated packed double"))?;
                        b = rest;
                        Raw::Fixed64(u64::from_le_bytes(*x))
                    }
                    _ => Raw::Varint(decode_varint(&mut b).map_err(|e| malformed(e.to_string()))?),
                };
                items.push(scalar(r)?);
            }
            Ok(Decoded::Packed(items))
        }
        (_, raw) => Ok(Decoded::One(scalar(raw)?)),
    }
}

/// The messages whose JSON form is not an object of their fields.
fn decode_special(name: &str, buf: &[u8], depth: usize) -> Result<Option<Value>, Error> {
    let short = name.rsplit('.').next().unwrap_or(name);
    let module = name.strip_suffix(short).unwrap_or("");
    let v = match (module, short) {
        ("apimachinery.pkg.apis.meta.v1.", "Time" | "MicroTime") => {
            let f = decode_fields(name, buf, depth)?;
            let secs = f.get("seconds").and_then(Value::as_i64).unwrap_or(0);
            let nanos = f.get("nanos").and_then(Value::as_i64).unwrap_or(0);
            if secs == 0 && nanos == 0 {
                return Ok(Some(Value::Null));
            }
            let t = chrono::DateTime::from_timestamp(secs, u32::try_from(nanos).unwrap_or(0))
                .ok_or_else(|| malformed(format!("{short}: {secs} s is out of range")))?;
            json!(if short == "Time" {
                t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
            } else {
                t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
            })
        }
        ("apimachinery.pkg.apis.meta.v1.", "Duration") => {
            json!(go_duration(decode_fields(name, buf, depth)?.get("duration").and_then(Value::as_i64).unwrap_or(0)))
        }
        ("apimachinery.pkg.api.resource.", "Quantity") => {
            decode_fields(name, buf, depth)?.remove("string").unwrap_or_else(|| json!(""))
        }
        ("apimachinery.pkg.util.intstr.", "IntOrString") => {
            let mut f = decode_fields(name, buf, depth)?;
            match f.get("type").and_then(Value::as_i64) {
                Some(1) => f.remove("strVal").unwrap_or_else(|| json!("")),
                _ => f.remove("intVal").unwrap_or_else(|| json!(0)),
            }
        }
        ("apimachinery.pkg.runtime.", "RawExtension")
        | ("apimachinery.pkg.apis.meta.v1.", "FieldsV1")
        | ("apiextensions_apiserver.pkg.apis.apiextensions.v1.", "Json") => {
            let mut raw: &[u8] = &[];
            for (t, r) in fields(buf)? {
                match (t, r) {
                    (1, Raw::Bytes(b)) => raw = b,
                    (1, _) => return Err(malformed(format!("{short}: wrong wire type"))),
                    _ => {}
                }
            }
            if raw.is_empty() {
                Value::Null
            } else if is_enveloped(raw) {
                decode_object_at(raw, depth + 1)?
            } else {
                serde_json::from_slice(raw).map_err(|e| malformed(format!("{short}: embedded JSON: {e}")))?
            }
        }
        ("apiextensions_apiserver.pkg.apis.apiextensions.v1.", "JsonSchemaPropsOrBool") => {
            let props = decode_fields(name, buf, depth)?;
            match props.get("schema") {
                Some(s) => s.clone(),
                None => json!(props.get("allows").and_then(Value::as_bool).unwrap_or(false)),
            }
        }
        ("apiextensions_apiserver.pkg.apis.apiextensions.v1.", "JsonSchemaPropsOrArray") => {
            let props = decode_fields(name, buf, depth)?;
            match (props.get("schema"), props.get("jSonSchemas")) {
                (Some(s), _) => s.clone(),
                (None, Some(a)) => a.clone(),
                (None, None) => Value::Null,
            }
        }
        ("apiextensions_apiserver.pkg.apis.apiextensions.v1.", "JsonSchemaPropsOrStringArray") => {
            let props = decode_fields(name, buf, depth)?;
            match (props.get("schema"), props.get("property")) {
                (Some(s), _) => s.clone(),
                (None, Some(a)) => a.clone(),
                (None, None) => json!([]),
            }
        }
        _ => return Ok(None),
    };
    Ok(Some(v))
}

/// A message's fields, as an object (Go's zero values included).
fn decode_fields(name: &str, buf: &[u8], depth: usize) -> Result<Map<String, Value>, Error> {
    let msg = schema().message(name).ok_or_else(|| malformed(format!("no message {name}")))?;
    let mut out = Map::new();
    for (tag, raw) in fields(buf)? {
        let Some(f) = msg.field(tag) else { continue };
        match decode_field(f, raw, depth)? {
            Decoded::Entry(k, v) => {
                let m = out.entry(f.json.clone()).or_insert_with(|| Value::Object(Map::new()));
                if let Some(m) = m.as_object_mut() {
                    m.insert(k, v);
                }
            }
            Decoded::Packed(items) => {
                let a = out.entry(f.json.clone()).or_insert_with(|| Value::Array(Vec::new()));
                if let Some(a) = a.as_array_mut() {
                    a.extend(items);
                }
            }
            Decoded::One(v) if f.repeated => {
                let a = out.entry(f.json.clone()).or_insert_with(|| Value::Array(Vec::new()));
                if let Some(a) = a.as_array_mut() {
                    a.push(v);
                }
            }
            Decoded::One(v) => {
                out.insert(f.json.clone(), v);
            }
        }
    }
    Ok(out)
}

/// Go's `time.Duration.String()`.
fn go_duration(ns: i64) -> String {
    if ns == 0 {
        return "0s".into();
    }
    let sign = if ns < 0 { "-" } else { "" };
    let u = ns.unsigned_abs();
    let frac = |v: u64, unit: u64, suffix: &str| {
        let whole = v / unit;
        let rest = v % unit;
        if rest == 0 {
            format!("{whole}{suffix}")
        } else {
            let digits = unit.ilog10() as usize;
            let f = format!("{rest:0digits$}");
            format!("{whole}.{}{suffix}", f.trim_end_matches('0'))
        }
    };
    let body = if u < 1_000 {
        format!("{u}ns")
    } else if u < 1_000_000 {
        frac(u, 1_000, "µs")
    } else if u < 1_000_000_000 {
        frac(u, 1_000_000, "ms")
    } else {
        let secs = u / 1_000_000_000;
        let (h, m) = (secs / 3600, (secs % 3600) / 60);
        let s = frac(u % 60_000_000_000, 1_000_000_000, "s");
        match (h, m) {
            (0, 0) => s,
            (0, m) => format!("{m}m{s}"),
            (h, m) => format!("{h}h{m}m{s}"),
        }
    };
    format!("{sign}{body}")
}

/// Parse Go's duration string (`1h2m3.5s`, `300ms`).
fn parse_go_duration(s: &str) -> Option<i64> {
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let n = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).filter(|n| *n > 0)?;
        let value: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let u = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let unit = match &rest[..u] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += value * unit;
        rest = &rest[u..];
    }
    let ns = total.round() as i64;
    Some(if neg { -ns } else { ns })
}

// ---------------------------------------------------------------------------------
// Encoding.

fn encode_message(name: &str, v: &Value, out: &mut Vec<u8>) -> Result<(), Error> {
    let msg = schema().message(name).ok_or_else(|| malformed(format!("no message {name}")))?;
    let Some(o) = v.as_object() else {
        return Err(malformed(format!("{name}: expected an object, found {v}")));
    };
    for f in msg.fields() {
        let Some(x) = o.get(&f.json).filter(|x| !x.is_null()) else { continue };
        match (f.kind.is_map(), f.repeated) {
            (true, _) => {
                let Some(m) = x.as_object() else { return Err(mismatch(f, x)) };
                for (k, val) in m {
                    let mut entry = Vec::new();
                    put_bytes(1, k.as_bytes(), &mut entry);
                    match f.kind {
                        Kind::MapString => {
                            put_bytes(2, val.as_str().ok_or_else(|| mismatch(f, val))?.as_bytes(), &mut entry)
                        }
                        Kind::MapBytes => put_bytes(2, &base64_bytes(f, val)?, &mut entry),
                        _ => {
                            let mut b = Vec::new();
                            encode_value(&f.message, val, &mut b)?;
                            put_bytes(2, &b, &mut entry);
                        }
                    }
                    put_bytes(f.tag, &entry, out);
                }
            }
            (false, true) => {
                let Some(a) = x.as_array() else { return Err(mismatch(f, x)) };
                for item in a {
                    encode_scalar(f, item, out)?;
                }
            }
            (false, false) => encode_scalar(f, x, out)?,
        }
    }
    Ok(())
}

fn mismatch(f: &Field, x: &Value) -> Error {
    malformed(format!("field {}: {x} is not a {:?}", f.json, f.kind))
}

fn base64_bytes(f: &Field, x: &Value) -> Result<Vec<u8>, Error> {
    let s = x.as_str().ok_or_else(|| mismatch(f, x))?;
    base64::engine::general_purpose::STANDARD.decode(s).map_err(|_| mismatch(f, x))
}

fn encode_scalar(f: &Field, x: &Value, out: &mut Vec<u8>) -> Result<(), Error> {
    let int = || x.as_i64().or_else(|| x.as_f64().filter(|v| v.fract() == 0.0).map(|v| v as i64));
    match f.kind {
        Kind::String => put_bytes(f.tag, x.as_str().ok_or_else(|| mismatch(f, x))?.as_bytes(), out),
        Kind::Bytes => put_bytes(f.tag, &base64_bytes(f, x)?, out),
        Kind::Bool => put_varint(f.tag, u64::from(x.as_bool().ok_or_else(|| mismatch(f, x))?), out),
        Kind::Int32 | Kind::Int64 => put_varint(f.tag, int().ok_or_else(|| mismatch(f, x))? as u64, out),
        Kind::Double => {
            encode_key(f.tag, WireType::SixtyFourBit, out);
            out.extend_from_slice(&x.as_f64().ok_or_else(|| mismatch(f, x))?.to_bits().to_le_bytes());
        }
        Kind::Message => {
            let mut b = Vec::new();
            encode_value(&f.message, x, &mut b)?;
            put_bytes(f.tag, &b, out);
        }
        Kind::MapString | Kind::MapBytes | Kind::MapMessage => return Err(mismatch(f, x)),
    }
    Ok(())
}

/// A message's bytes from its JSON form (the special forms first).
fn encode_value(name: &str, x: &Value, out: &mut Vec<u8>) -> Result<(), Error> {
    let short = name.rsplit('.').next().unwrap_or(name);
    let module = name.strip_suffix(short).unwrap_or("");
    let bad = || malformed(format!("{short}: cannot encode {x}"));
    match (module, short) {
        ("apimachinery.pkg.apis.meta.v1.", "Time" | "MicroTime") => {
            let s = x.as_str().ok_or_else(bad)?;
            let t = chrono::DateTime::parse_from_rfc3339(s).map_err(|_| bad())?;
            put_varint(1, t.timestamp() as u64, out);
            if short == "MicroTime" {
                put_varint(2, u64::from(t.timestamp_subsec_nanos()), out);
            }
        }
        ("apimachinery.pkg.apis.meta.v1.", "Duration") => {
            let ns = parse_go_duration(x.as_str().ok_or_else(bad)?).ok_or_else(bad)?;
            put_varint(1, ns as u64, out);
        }
        ("apimachinery.pkg.api.resource.", "Quantity") => {
            let s = match x {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => return Err(bad()),
            };
            put_bytes(1, s.as_bytes(), out);
        }
        ("apimachinery.pkg.util.intstr.", "IntOrString") => match x {
            Value::Number(n) => {
                put_varint(1, 0, out);
                put_varint(2, n.as_i64().ok_or_else(bad)? as u64, out);
            }
            Value::String(s) => {
                put_varint(1, 1, out);
                put_bytes(3, s.as_bytes(), out);
            }
            _ => return Err(bad()),
        },
        ("apimachinery.pkg.runtime.", "RawExtension")
        | ("apimachinery.pkg.apis.meta.v1.", "FieldsV1")
        | ("apiextensions_apiserver.pkg.apis.apiextensions.v1.", "Json") => {
            put_bytes(1, &serde_json::to_vec(x).map_err(|_| bad())?, out);
        }
        ("apiextensions_apiserver.pkg.apis.apiextensions.v1.", "JsonSchemaPropsOrBool") => match x {
            Value::Bool(b) => put_varint(1, u64::from(*b), out),
            _ => {
                put_varint(1, 1, out);
                let mut b = Vec::new();
                encode_message("apiextensions_apiserver.pkg.apis.apiextensions.v1.JsonSchemaProps", x, &mut b)?;
                put_bytes(2, &b, out);
            }
        },
        ("apiextensions_apiserver.pkg.apis.apiextensions.v1.", "JsonSchemaPropsOrArray")
        | ("apiextensions_apiserver.pkg.apis.apiextensions.v1.", "JsonSchemaPropsOrStringArray") => match x {
            Value::Array(a) => {
                for item in a {
                    match item {
                        Value::String(s) if short.ends_with("StringArray") => put_bytes(2, s.as_bytes(), out),
                        _ => {
                            let mut b = Vec::new();
                            encode_message(
                                "apiextensions_apiserver.pkg.apis.apiextensions.v1.JsonSchemaProps",
                                item,
                                &mut b,
                            )?;
                            put_bytes(2, &b, out);
                        }
                    }
                }
            }
            _ => {
                let mut b = Vec::new();
                encode_message("apiextensions_apiserver.pkg.apis.apiextensions.v1.JsonSchemaProps", x, &mut b)?;
                put_bytes(1, &b, out);
            }
        },
        _ => encode_message(name, x, out)?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_round_trip() {
        for (ns, s) in [
            (0, "0s"),
            (1, "1ns"),
            (1_500, "1.5µs"),
            (300_000_000, "300ms"),
            (1_000_000_000, "1s"),
            (90_000_000_000, "1m30s"),
            (3_723_500_000_000, "1h2m3.5s"),
            (-2_000_000_000, "-2s"),
        ] {
            assert_eq!(go_duration(ns), s);
            assert_eq!(parse_go_duration(s), Some(ns), "{s}");
        }
        assert_eq!(parse_go_duration("5x"), None);
        assert_eq!(parse_go_duration(""), None);
    }

    #[test]
    fn truncated_and_wrong_bodies_are_errors_not_panics() {
        let good = encode_object(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}})).unwrap();
        for n in 0..good.len() {
            let _ = decode_object(&good[..n]);
        }
        assert!(matches!(decode_object(b"{}"), Err(Error::Malformed(_))));
        let cr = json!({"apiVersion": "ferrolb.io/v1beta1", "kind": "IPAddressPool"});
        assert!(matches!(encode_object(&cr), Err(Error::UnknownKind { .. })));
    }
}
