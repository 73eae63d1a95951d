//! Checks on an untrusted ONNX model before anything is built from it.
//!
//! Every tensor stored in the model (initializers, `Constant` values, tensors in attributes and
//! sub-graphs) must have sane dimensions, a known element type and exactly the bytes its shape
//! needs; external data must be a relative path that stays inside the model's folder and a range
//! that lies inside that file; the total must fit the caller's memory budget. Checks run on the
//! parsed protobuf, whose size is bounded by the file's, before tract allocates any tensor.

use crate::error::{Error, Result};
use crate::tensor::MAX_RANK;
use std::path::{Component, Path};
use tract_onnx::pb;

/// Default budget for the tensors a model declares: 4 GiB.
pub const DEFAULT_MAX_BYTES: u64 = 4 << 30;

/// Deepest nesting of sub-graphs (`If`, `Loop`, `Scan` bodies) accepted.
const MAX_GRAPH_DEPTH: usize = 16;

/// Checks every tensor of `graph` and returns the bytes they declare in all.
pub(crate) fn check_model(
    graph: &pb::GraphProto,
    model_dir: Option<&Path>,
    max_bytes: u64,
) -> Result<u64> {
    let mut total = 0u64;
    check_graph(graph, model_dir, max_bytes, &mut total, 0)?;
    Ok(total)
}

fn check_graph(
    graph: &pb::GraphProto,
    dir: Option<&Path>,
    max: u64,
    total: &mut u64,
    depth: usize,
) -> Result<()> {
    if depth > MAX_GRAPH_DEPTH {
        return Err(Error::InvalidModel(format!(
            "sub-graphs nested deeper than {MAX_GRAPH_DEPTH} levels"
        )));
    }
    for t in &graph.initializer {
        add(total, check_tensor(t, &format!("initializer `{}`", t.name), dir)?, max)?;
    }
    if let Some(s) = graph.sparse_initializer.first() {
        let name = s.values.as_ref().map_or("", |v| v.name.as_str());
        return Err(Error::InvalidModel(format!(
            "sparse initializer `{name}`: sparse tensors are not supported"
        )));
    }
    for node in &graph.node {
        for a in &node.attribute {
            let what = |i: Option<usize>| match i {
                Some(i) => format!("node `{}` attribute `{}`[{i}]", node.name, a.name),
                None => format!("node `{}` attribute `{}`", node.name, a.name),
            };
            if let Some(t) = &a.t {
                add(total, check_tensor(t, &what(None), dir)?, max)?;
            }
            for (i, t) in a.tensors.iter().enumerate() {
                add(total, check_tensor(t, &what(Some(i)), dir)?, max)?;
            }
            if a.sparse_tensor.is_some() || !a.sparse_tensors.is_empty() {
                return Err(Error::InvalidModel(format!(
                    "{}: sparse tensors are not supported",
                    what(None)
                )));
            }
            for g in a.g.iter().chain(&a.graphs) {
                check_graph(g, dir, max, total, depth + 1)?;
            }
        }
    }
    Ok(())
}

fn add(total: &mut u64, bytes: u64, max: u64) -> Result<()> {
    *total = total.saturating_add(bytes);
    if *total > max {
        return Err(Error::InvalidModel(format!(
            "the model's tensors need more than the memory limit of {max} bytes"
        )));
    }
    Ok(())
}

/// Where a tensor's values are stored in the protobuf, by ONNX element type.
pub(super) enum Field {
    Float,
    Int32,
    Int64,
    Double,
    Uint64,
    String,
}

/// Bits per element and the typed field used when `raw_data` is empty.
pub(super) fn element(data_type: i32) -> Option<(u64, Field, u64)> {
    // (bits, field, values per element in that field)
    Some(match data_type {
        1 => (32, Field::Float, 1),                                     // float
        2..=5 | 9 | 10 | 16..=20 => (bits(data_type), Field::Int32, 1), // small ints, bool, f16, bf16, f8
        6 => (32, Field::Int32, 1),                                     // int32
        7 => (64, Field::Int64, 1),                                     // int64
        8 => (0, Field::String, 1),                                     // string
        11 => (64, Field::Double, 1),                                   // double
        12 | 13 => (bits(data_type), Field::Uint64, 1),                 // uint32, uint64
        14 => (64, Field::Float, 2),                                    // complex64
        15 => (128, Field::Double, 2),                                  // complex128
        21 | 22 => (4, Field::Int32, 1), // uint4, int4 (two per int32 value)
        _ => return None,
    })
}

fn bits(data_type: i32) -> u64 {
    match data_type {
        2 | 3 | 9 | 17..=20 => 8,
        4 | 5 | 10 | 16 => 16,
        12 => 32,
        _ => 64,
    }
}

/// Checks one stored tensor; returns the bytes its values take once decoded.
fn check_tensor(t: &pb::TensorProto, what: &str, dir: Option<&Path>) -> Result<u64> {
    let bad = |why: String| Error::InvalidModel(format!("{what}: {why}"));
    if t.dims.len() > MAX_RANK {
        return Err(bad(format!("rank {} exceeds the maximum of {MAX_RANK}", t.dims.len())));
    }
    let mut count: u64 = 1;
    for &d in &t.dims {
        let d = u64::try_from(d).map_err(|_| bad(format!("negative dimension {d}")))?;
        count = count.checked_mul(d).ok_or_else(|| bad(format!("shape {:?} overflows", t.dims)))?;
    }
    let (bits, field, per) =
        element(t.data_type).ok_or_else(|| bad(format!("unknown element type {}", t.data_type)))?;
    let bytes = count
        .checked_mul(bits)
        .map(|b| b.div_ceil(8))
        .ok_or_else(|| bad(format!("shape {:?} overflows", t.dims)))?;
    if t.segment.is_some() {
        return Err(bad("segmented tensors are not supported".into()));
    }
    let external = t.data_location == Some(pb::tensor_proto::DataLocation::External as i32);
    if external {
        check_external(t, bytes, dir).map_err(bad)?;
        return Ok(bytes);
    }
    if !t.raw_data.is_empty() {
        if matches!(field, Field::String) {
            return Err(bad("string tensors cannot use raw_data".into()));
        }
        if t.raw_data.len() as u64 != bytes {
            return Err(bad(format!(
                "shape {:?} needs {bytes} bytes of data, the file holds {}",
                t.dims,
                t.raw_data.len()
            )));
        }
        return Ok(bytes);
    }
    let present = match field {
        Field::Float => t.float_data.len(),
        Field::Int32 => t.int32_data.len(),
        Field::Int64 => t.int64_data.len(),
        Field::Double => t.double_data.len(),
        Field::Uint64 => t.uint64_data.len(),
        Field::String => t.string_data.len(),
    } as u64;
    let needed = if bits == 4 { count.div_ceil(2) } else { count.saturating_mul(per) };
    if present != needed {
        return Err(bad(format!(
            "shape {:?} needs {needed} stored values, the file holds {present}",
            t.dims
        )));
    }
    let strings: u64 = t.string_data.iter().map(|s| s.len() as u64).sum();
    Ok(bytes.saturating_add(strings))
}

fn check_external(
    t: &pb::TensorProto,
    bytes: u64,
    dir: Option<&Path>,
) -> std::result::Result<(), String> {
    let key = |k: &str| t.external_data.iter().find(|e| e.key == k).map(|e| e.value.as_str());
    let location = key("location").ok_or("external data without a location")?;
    let rel = Path::new(location);
    if location.is_empty() || rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(format!(
            "external data location {location:?} must be a plain relative path inside the model's folder"
        ));
    }
    let dir = dir.ok_or("external data needs the model's folder (load the model from a file)")?;
    let dir = dir.canonicalize().map_err(|e| format!("model folder {}: {e}", dir.display()))?;
    let path = dir.join(rel);
    let path =
        path.canonicalize().map_err(|e| format!("external data file {}: {e}", path.display()))?;
    if !path.starts_with(&dir) {
        return Err(format!(
            "external data {location:?} resolves to {}, outside the model's folder",
            path.display()
        ));
    }
    let parse = |k: &str| -> std::result::Result<Option<u64>, String> {
        key(k)
            .map(|v| {
                v.parse::<u64>().map_err(|_| format!("external data {k} {v:?} is not a number"))
            })
            .transpose()
    };
    let offset = parse("offset")?.unwrap_or(0);
    let size = std::fs::metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?.len();
    let length = parse("length")?.unwrap_or(size.saturating_sub(offset));
    if length != bytes {
        return Err(format!("external data holds {length} bytes, the shape needs {bytes}"));
    }
    if offset.checked_add(length).is_none_or(|end| end > size) {
        return Err(format!(
            "external data range {offset}..{} lies outside {} ({size} bytes)",
            offset.saturating_add(length),
            path.display()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(dims: &[i64], data_type: i32, raw: usize) -> pb::TensorProto {
        pb::TensorProto {
            name: "w".into(),
            dims: dims.to_vec(),
            data_type,
            raw_data: vec![0; raw],
            ..Default::default()
        }
    }

    fn graph(t: pb::TensorProto) -> pb::GraphProto {
        pb::GraphProto { initializer: vec![t], ..Default::default() }
    }

    #[test]
    fn sizes_must_match_the_bytes_present() {
        assert_eq!(check_model(&graph(tensor(&[2, 3], 1, 24)), None, 1 << 20).unwrap(), 24);
        let e = check_model(&graph(tensor(&[2, 3], 1, 20)), None, 1 << 20).unwrap_err();
        assert!(e.to_string().contains("needs 24 bytes"), "{e}");
        let mut typed = tensor(&[3], 7, 0);
        typed.int64_data = vec![1, 2];
        let e = check_model(&graph(typed), None, 1 << 20).unwrap_err();
        assert!(e.to_string().contains("needs 3 stored values"), "{e}");
    }

    #[test]
    fn absurd_shapes_and_types_are_refused() {
        let huge = tensor(&[i64::MAX, i64::MAX], 1, 0);
        assert!(check_model(&graph(huge), None, u64::MAX)
            .unwrap_err()
            .to_string()
            .contains("overflows"));
        let neg = tensor(&[-1], 1, 0);
        assert!(check_model(&graph(neg), None, 1 << 20).is_err());
        let deep = tensor(&[1; 9], 1, 4);
        assert!(check_model(&graph(deep), None, 1 << 20).unwrap_err().to_string().contains("rank"));
        let odd = tensor(&[1], 99, 4);
        assert!(check_model(&graph(odd), None, 1 << 20)
            .unwrap_err()
            .to_string()
            .contains("element type"));
    }

    #[test]
    fn the_memory_limit_is_enforced_before_allocation() {
        let e = check_model(&graph(tensor(&[1024], 1, 4096)), None, 4000).unwrap_err();
        assert!(e.to_string().contains("memory limit"), "{e}");
    }

    #[test]
    fn external_data_stays_in_the_model_folder() {
        let dir = std::env::temp_dir().join(format!("hydrant-ext-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("w.bin"), [0u8; 16]).unwrap();
        let ext = |location: &str, length: &str| {
            let mut t = tensor(&[4], 1, 0);
            t.data_location = Some(pb::tensor_proto::DataLocation::External as i32);
            t.external_data = [("location", location), ("length", length)]
                .iter()
                .map(|(k, v)| pb::StringStringEntryProto {
                    key: k.to_string(),
                    value: v.to_string(),
                })
                .collect();
            graph(t)
        };
        assert_eq!(check_model(&ext("w.bin", "16"), Some(&dir), 1 << 20).unwrap(), 16);
        for (loc, why) in
            [("../w.bin", "relative"), ("/etc/passwd", "relative"), ("nope.bin", "nope")]
        {
            let e = check_model(&ext(loc, "16"), Some(&dir), 1 << 20).unwrap_err().to_string();
            assert!(e.contains(why), "{loc}: {e}");
        }
        let e = check_model(&ext("w.bin", "8"), Some(&dir), 1 << 20).unwrap_err().to_string();
        assert!(e.contains("holds 8 bytes"), "{e}");
        assert!(check_model(&ext("w.bin", "16"), None, 1 << 20).is_err());
        #[cfg(unix)]
        {
            let outside = dir.with_extension("outside");
            std::fs::write(&outside, [0u8; 16]).unwrap();
            std::os::unix::fs::symlink(&outside, dir.join("escape.bin")).unwrap();
            let e = check_model(&ext("escape.bin", "16"), Some(&dir), 1 << 20).unwrap_err();
            assert!(e.to_string().contains("outside"), "{e}");
            std::fs::remove_file(&outside).unwrap();
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
