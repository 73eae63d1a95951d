//! Checks on an untrusted safetensors header, run on the raw bytes before anything in the file
//! is trusted or allocated from.
//!
//! The 8-byte header length is bounded by a limit and by the file; the header must be a JSON
//! object whose entries are listed once each; every tensor entry must have a known dtype, a
//! rank and shape whose byte count neither overflows nor disagrees with its offsets, and
//! offsets inside the data; sorted by offset, the tensors must tile the data exactly (no
//! overlap, no gap, nothing after the last). Every error names the tensor or field at fault.

use crate::error::{Error, Result};
use crate::tensor::MAX_RANK;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::Value;

/// Default bound on the JSON header of a head file (16 MiB; hydrant writes a few KiB).
pub const DEFAULT_MAX_HEADER_BYTES: u64 = 16 << 20;
/// Default bound on the number of tensors in a head file.
pub const DEFAULT_MAX_TENSORS: usize = 1 << 16;

/// Key of the free-form string map in a safetensors header.
const METADATA: &str = "__metadata__";

/// Bounds applied to an untrusted safetensors file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SafetensorsLimits {
    /// Most bytes the whole file may have.
    pub max_file_bytes: u64,
    /// Most bytes the JSON header may have.
    pub max_header_bytes: u64,
    /// Most tensors the header may list.
    pub max_tensors: usize,
}

impl Default for SafetensorsLimits {
    fn default() -> SafetensorsLimits {
        SafetensorsLimits {
            max_file_bytes: crate::heads::DEFAULT_MAX_FILE_BYTES,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_tensors: DEFAULT_MAX_TENSORS,
        }
    }
}

/// One tensor as the header describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<u64>,
    pub begin: u64,
    pub end: u64,
}

fn bad(why: String) -> Error {
    Error::InvalidModel(why)
}

/// Checks `bytes` as a safetensors file under `limits`; returns the tensors it lists, sorted by
/// offset.
pub(crate) fn check(bytes: &[u8], limits: &SafetensorsLimits) -> Result<Vec<Entry>> {
    let len = bytes.len() as u64;
    if len > limits.max_file_bytes {
        return Err(bad(format!(
            "the file's {len} bytes exceed the limit of {}",
            limits.max_file_bytes
        )));
    }
    let Some(prefix) = bytes.get(..8) else {
        return Err(bad(format!(
            "{len} bytes is too short for a safetensors file (an 8-byte header length comes first)"
        )));
    };
    let n = u64::from_le_bytes(prefix.try_into().map_err(|_| bad("header length".into()))?);
    if n > limits.max_header_bytes {
        return Err(bad(format!(
            "header length {n} exceeds the limit of {} bytes",
            limits.max_header_bytes
        )));
    }
    if n > len - 8 {
        return Err(bad(format!(
            "header length {n} runs past the end of the file ({} bytes after the length)",
            len - 8
        )));
    }
    let header = &bytes[8..8 + n as usize];
    let header = std::str::from_utf8(header).map_err(|e| {
        bad(format!("the header is not UTF-8 (byte {} of the header)", e.valid_up_to()))
    })?;
    if !header.starts_with('{') {
        return Err(bad("the header is not a JSON object".into()));
    }
    let mut de = serde_json::Deserializer::from_str(header);
    let listed = de
        .deserialize_map(EntriesVisitor { max: limits.max_tensors.saturating_add(1) })
        .and_then(|v| de.end().map(|()| v))
        .map_err(|e| bad(format!("the header is not valid JSON: {e}")))?;
    let data_len = len - 8 - n;
    let mut entries = Vec::with_capacity(listed.len());
    let mut seen_metadata = false;
    for (i, (name, value)) in listed.into_iter().enumerate() {
        if listed_before(&entries, &name) || (name == METADATA && seen_metadata) {
            return Err(bad(format!("`{name}` is listed twice in the header")));
        }
        if name == METADATA {
            seen_metadata = true;
            check_metadata(&value)?;
            continue;
        }
        if entries.len() >= limits.max_tensors {
            return Err(bad(format!(
                "the header lists more than {} tensors (entry {i})",
                limits.max_tensors
            )));
        }
        entries.push(entry(name, &value, data_len)?);
    }
    tile(&mut entries, data_len)?;
    Ok(entries)
}

fn listed_before(entries: &[Entry], name: &str) -> bool {
    entries.iter().any(|e| e.name == name)
}

fn check_metadata(value: &Value) -> Result<()> {
    let Value::Object(map) = value else {
        return Err(bad(format!("`{METADATA}` must be an object of strings")));
    };
    if let Some((k, _)) = map.iter().find(|(_, v)| !v.is_string()) {
        return Err(bad(format!("`{METADATA}` entry `{k}` is not a string")));
    }
    Ok(())
}

/// Bits per element of a safetensors dtype name, or `None` for a name safetensors does not know.
fn dtype_bits(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" | "F8_E8M0" => 8,
        "F4" => 4,
        "F6_E2M3" | "F6_E3M2" => 6,
        "I16" | "U16" | "F16" | "BF16" => 16,
        "I32" | "U32" | "F32" => 32,
        "I64" | "U64" | "F64" | "C64" => 64,
        _ => return None,
    })
}

fn entry(name: String, value: &Value, data_len: u64) -> Result<Entry> {
    let what = |why: String| bad(format!("tensor `{name}`: {why}"));
    let Value::Object(map) = value else {
        return Err(what("the header entry is not an object".into()));
    };
    if let Some(k) = map.keys().find(|k| !["dtype", "shape", "data_offsets"].contains(&k.as_str()))
    {
        return Err(what(format!("unknown field `{k}`")));
    }
    let dtype = map
        .get("dtype")
        .and_then(Value::as_str)
        .ok_or_else(|| what("no `dtype` string".into()))?
        .to_string();
    let bits = dtype_bits(&dtype).ok_or_else(|| what(format!("unknown dtype `{dtype}`")))?;
    let shape: Vec<u64> = match map.get("shape") {
        Some(Value::Array(dims)) => dims
            .iter()
            .map(|d| d.as_u64().ok_or_else(|| what(format!("dimension {d} is not a count"))))
            .collect::<Result<_>>()?,
        _ => return Err(what("no `shape` list".into())),
    };
    if shape.len() > MAX_RANK {
        return Err(what(format!("rank {} exceeds the maximum of {MAX_RANK}", shape.len())));
    }
    let offsets: Vec<u64> = match map.get("data_offsets") {
        Some(Value::Array(o)) if o.len() == 2 => o.iter().filter_map(Value::as_u64).collect(),
        _ => vec![],
    };
    let [begin, end] = offsets[..] else {
        return Err(what("`data_offsets` must be two byte offsets [begin, end]".into()));
    };
    let count = shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .filter(|&c| usize::try_from(c).is_ok())
        .ok_or_else(|| what(format!("shape {shape:?} has more elements than addressable")))?;
    let nbits = count
        .checked_mul(bits)
        .ok_or_else(|| what(format!("shape {shape:?} of {dtype} overflows")))?;
    if nbits % 8 != 0 {
        return Err(what(format!("shape {shape:?} of {dtype} is not a whole number of bytes")));
    }
    let needed = nbits / 8;
    if end < begin {
        return Err(what(format!("data_offsets [{begin}, {end}] end before they begin")));
    }
    if end > data_len {
        return Err(what(format!(
            "data_offsets [{begin}, {end}] lie outside the data ({data_len} bytes)"
        )));
    }
    if end - begin != needed {
        return Err(what(format!(
            "shape {shape:?} of {dtype} needs {needed} bytes, data_offsets [{begin}, {end}] hold {}",
            end - begin
        )));
    }
    Ok(Entry { name, dtype, shape, begin, end })
}

/// Sorts `entries` by offset and checks that they cover `0..data_len` exactly.
fn tile(entries: &mut [Entry], data_len: u64) -> Result<()> {
    entries.sort_by_key(|e| (e.begin, e.end));
    let mut at = 0u64;
    let mut last: Option<&Entry> = None;
    for e in entries.iter() {
        if e.begin < at {
            let prev = last.map_or(String::new(), |p| p.name.clone());
            return Err(bad(format!(
                "tensors `{prev}` and `{}` overlap (bytes {}..{at})",
                e.name, e.begin
            )));
        }
        if e.begin > at {
            let after =
                last.map_or("the start of the data".to_string(), |p| format!("`{}`", p.name));
            return Err(bad(format!(
                "bytes {at}..{} between {after} and `{}` belong to no tensor",
                e.begin, e.name
            )));
        }
        at = e.end;
        last = Some(e);
    }
    if at != data_len {
        return Err(bad(format!(
            "bytes {at}..{data_len} after the last tensor belong to no tensor"
        )));
    }
    Ok(())
}

/// Reads a JSON object as its entries in file order, keeping repeated keys (so that they can be
/// refused) and stopping after `max` entries.
struct EntriesVisitor {
    max: usize,
}

impl<'de> Visitor<'de> for EntriesVisitor {
    type Value = Vec<(String, Value)>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some((k, v)) = map.next_entry::<String, Value>()? {
            out.push((k, v));
            if out.len() > self.max {
                return Err(serde::de::Error::custom(format!(
                    "more than {} entries",
                    self.max - 1
                )));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file with `header` (JSON) and `data` bytes.
    fn file(header: &str, data: usize) -> Vec<u8> {
        let mut b = (header.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(header.as_bytes());
        b.extend(std::iter::repeat_n(0u8, data));
        b
    }

    fn err(bytes: &[u8]) -> String {
        check(bytes, &SafetensorsLimits::default()).unwrap_err().to_string()
    }

    #[test]
    fn a_well_formed_file_passes_in_offset_order() {
        let h = r#"{"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]},"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"__metadata__":{"k":"v"}}"#;
        let e = check(&file(h, 12), &SafetensorsLimits::default()).unwrap();
        assert_eq!(e.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    }

    #[test]
    fn header_lengths_are_bounded() {
        assert!(err(b"\x01\x02").contains("too short"));
        let mut b = file("{}", 0);
        b[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(err(&b).contains("exceeds the limit"), "{}", err(&b));
        b[..8].copy_from_slice(&100u64.to_le_bytes());
        assert!(err(&b).contains("runs past the end"), "{}", err(&b));
        let small = SafetensorsLimits { max_header_bytes: 1, ..SafetensorsLimits::default() };
        assert!(check(&file("{}", 0), &small).is_err());
        let tiny_file = SafetensorsLimits { max_file_bytes: 9, ..SafetensorsLimits::default() };
        assert!(check(&file("{}", 0), &tiny_file).unwrap_err().to_string().contains("limit"));
    }

    #[test]
    fn offsets_must_tile_the_data() {
        let t = |name: &str, b: u64, e: u64| {
            format!(r#""{name}":{{"dtype":"U8","shape":[{}],"data_offsets":[{b},{e}]}}"#, e - b)
        };
        let overlap = format!("{{{},{}}}", t("a", 0, 4), t("b", 2, 6));
        assert!(
            err(&file(&overlap, 6)).contains("`a` and `b` overlap"),
            "{}",
            err(&file(&overlap, 6))
        );
        let gap = format!("{{{},{}}}", t("a", 0, 4), t("b", 5, 6));
        assert!(err(&file(&gap, 6)).contains("bytes 4..5"), "{}", err(&file(&gap, 6)));
        let tail = format!("{{{}}}", t("a", 0, 4));
        assert!(err(&file(&tail, 6)).contains("after the last tensor"));
        let outside = format!("{{{}}}", t("a", 0, 40));
        assert!(err(&file(&outside, 6)).contains("lie outside the data"));
        let twice = format!("{{{},{}}}", t("a", 0, 4), t("a", 0, 4));
        assert!(err(&file(&twice, 4)).contains("listed twice"));
        let backwards = r#"{"a":{"dtype":"U8","shape":[0],"data_offsets":[4,0]}}"#;
        assert!(err(&file(backwards, 4)).contains("end before"));
    }

    #[test]
    fn shapes_and_dtypes_must_agree_with_the_bytes() {
        let one = |dtype: &str, shape: &str, end: u64| {
            let h = format!(
                r#"{{"w":{{"dtype":"{dtype}","shape":{shape},"data_offsets":[0,{end}]}}}}"#
            );
            err(&file(&h, end as usize))
        };
        assert!(one("F32", "[3]", 8).contains("needs 12 bytes"), "{}", one("F32", "[3]", 8));
        assert!(one("Q7", "[1]", 1).contains("unknown dtype `Q7`"));
        let huge = one("F32", "[4294967296,4294967296,16]", 0);
        assert!(huge.contains("tensor `w`") && huge.contains("addressable"), "{huge}");
        assert!(one("F32", "[1,1,1,1,1,1,1,1,1]", 4).contains("rank 9"));
        assert!(one("F32", "[-1]", 4).contains("not a count"));
        assert!(one("F4", "[3]", 2).contains("whole number of bytes"));
    }

    #[test]
    fn malformed_entries_are_named() {
        let cases = [
            (r#"[1,2]"#, "not a JSON object"),
            (r#"{"w":3}"#, "tensor `w`: the header entry is not an object"),
            (r#"{"w":{"dtype":"F32","shape":[],"data_offsets":[0,4],"x":1}}"#, "unknown field `x`"),
            (r#"{"w":{"shape":[],"data_offsets":[0,4]}}"#, "no `dtype`"),
            (r#"{"w":{"dtype":"F32","data_offsets":[0,4]}}"#, "no `shape`"),
            (r#"{"w":{"dtype":"F32","shape":[]}}"#, "data_offsets"),
            (r#"{"__metadata__":{"k":1}}"#, "entry `k` is not a string"),
            (r#"{"__metadata__":[]}"#, "must be an object"),
            (r#"{} trailing"#, "not valid JSON"),
        ];
        for (h, why) in cases {
            let e = err(&file(h, 4));
            assert!(e.contains(why), "{h}: expected `{why}` in: {e}");
        }
        let limits = SafetensorsLimits { max_tensors: 1, ..SafetensorsLimits::default() };
        let two = r#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"b":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}"#;
        assert!(check(&file(two, 2), &limits).unwrap_err().to_string().contains("more than 1"));
    }
}
