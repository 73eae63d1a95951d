//! Reading and writing NumPy `.npy` files (format versions 1.0–3.0, C order, little-endian).
//!
//! The reader treats its input as untrusted: the header length is capped, the shape is checked
//! with overflow-safe arithmetic against the bytes actually present, and nothing is allocated
//! before those checks pass.

use crate::error::{Error, Result};
use crate::tensor::{element_count, DType, Tensor, TensorData, MAX_RANK};
use half::{bf16, f16};
use std::path::{Path, PathBuf};

const MAGIC: &[u8] = b"\x93NUMPY";
/// Longest header accepted; NumPy itself writes a few hundred bytes.
const MAX_HEADER: usize = 1 << 16;

/// Reads a `.npy` file into a [`Tensor`].
pub fn read_npy(path: impl AsRef<Path>) -> Result<Tensor> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse_npy(&bytes).map_err(|reason| Error::Npy { path: path.to_path_buf(), reason })
}

/// Parses `.npy` bytes held in memory.
pub fn read_npy_bytes(bytes: &[u8]) -> Result<Tensor> {
    parse_npy(bytes).map_err(|reason| Error::Npy { path: PathBuf::new(), reason })
}

/// Writes a tensor as a version 1.0 `.npy` file (C order, little-endian).
pub fn write_npy(path: impl AsRef<Path>, tensor: &Tensor) -> Result<()> {
    let path = path.as_ref();
    std::fs::write(path, npy_bytes(tensor)).map_err(|e| Error::io(path, e))
}

/// Serialises a tensor to `.npy` bytes.
pub fn npy_bytes(tensor: &Tensor) -> Vec<u8> {
    let descr = match tensor.dtype() {
        DType::F32 => "<f4",
        DType::F64 => "<f8",
        DType::F16 => "<f2",
        // NumPy has no bf16; store it as its raw 16 bits.
        DType::BF16 => "<u2",
        DType::U8 => "|u1",
        DType::I8 => "|i1",
        DType::I32 => "<i4",
        DType::I64 => "<i8",
        DType::Bool => "|b1",
    };
    let shape = match tensor.shape() {
        [d] => format!("({d},)"),
        s => format!("({})", s.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    // Pad so that the data starts on a 64-byte boundary, header ends with '\n'.
    let unpadded = MAGIC.len() + 2 + 2 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + tensor.len() * tensor.dtype().size());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    match tensor.data() {
        TensorData::F32(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        TensorData::F64(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        TensorData::F16(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        TensorData::BF16(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        TensorData::U8(v) => out.extend_from_slice(v),
        TensorData::I8(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        TensorData::I32(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        TensorData::I64(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        TensorData::Bool(v) => v.iter().for_each(|&x| out.push(x as u8)),
    }
    out
}

fn parse_npy(bytes: &[u8]) -> std::result::Result<Tensor, String> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err("missing the \\x93NUMPY magic".into());
    }
    let major = bytes[6];
    let (header_len, start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            let b = bytes.get(8..12).ok_or("truncated header length")?;
            (u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize, 12)
        }
        v => return Err(format!("unsupported format version {v}")),
    };
    if header_len > MAX_HEADER {
        return Err(format!("header of {header_len} bytes exceeds the {MAX_HEADER}-byte limit"));
    }
    let end = start + header_len;
    let header = bytes.get(start..end).ok_or("truncated header")?;
    let header = std::str::from_utf8(header).map_err(|_| "header is not UTF-8")?;
    let descr = dict_value(header, "descr").ok_or("header has no 'descr'")?;
    let descr = descr.trim_matches(|c| c == '\'' || c == '"');
    let fortran = dict_value(header, "fortran_order").ok_or("header has no 'fortran_order'")?;
    if fortran.trim() != "False" {
        return Err("Fortran-order arrays are not supported (save with C order)".into());
    }
    let shape = parse_shape(dict_value(header, "shape").ok_or("header has no 'shape'")?)?;
    let n = element_count(&shape).map_err(|e| e.to_string())?;
    let (dtype, big_endian) = parse_descr(descr)?;
    if big_endian {
        return Err(format!("big-endian dtype '{descr}' is not supported"));
    }
    let nbytes = n.checked_mul(dtype.size()).ok_or("data size overflows")?;
    let body = &bytes[end..];
    if body.len() != nbytes {
        return Err(format!(
            "shape {shape:?} of {dtype} needs {nbytes} data bytes, file has {}",
            body.len()
        ));
    }
    let data = decode(dtype, body)?;
    Tensor::from_data(&shape, data).map_err(|e| e.to_string())
}

fn decode(dtype: DType, body: &[u8]) -> std::result::Result<TensorData, String> {
    fn le<const N: usize, T>(body: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
        body.chunks_exact(N).map(|c| f(c.try_into().expect("chunk of N bytes"))).collect()
    }
    Ok(match dtype {
        DType::F32 => TensorData::F32(le(body, f32::from_le_bytes)),
        DType::F64 => TensorData::F64(le(body, f64::from_le_bytes)),
        DType::F16 => TensorData::F16(le(body, f16::from_le_bytes)),
        DType::BF16 => TensorData::BF16(le(body, bf16::from_le_bytes)),
        DType::U8 => TensorData::U8(body.to_vec()),
        DType::I8 => TensorData::I8(le(body, i8::from_le_bytes)),
        DType::I32 => TensorData::I32(le(body, i32::from_le_bytes)),
        DType::I64 => TensorData::I64(le(body, i64::from_le_bytes)),
        DType::Bool => TensorData::Bool(
            body.iter()
                .map(|&b| match b {
                    0 => Ok(false),
                    1 => Ok(true),
                    _ => Err(format!("bool element with byte value {b}")),
                })
                .collect::<std::result::Result<_, _>>()?,
        ),
    })
}

fn parse_descr(descr: &str) -> std::result::Result<(DType, bool), String> {
    // The byte-order mark is one character; a multi-byte one must not split a character.
    let (order, code) = descr.split_at(descr.chars().next().map_or(0, char::len_utf8));
    let big = order == ">";
    if !matches!(order, "<" | ">" | "|" | "=") {
        return Err(format!("unsupported dtype '{descr}'"));
    }
    let dtype = match code {
        "f4" => DType::F32,
        "f8" => DType::F64,
        "f2" => DType::F16,
        "u1" => DType::U8,
        "i1" => DType::I8,
        "i4" => DType::I32,
        "i8" => DType::I64,
        "b1" => DType::Bool,
        _ => return Err(format!("unsupported dtype '{descr}'")),
    };
    Ok((dtype, big && dtype.size() > 1))
}

/// Returns the raw text of `key`'s value in a Python dict literal (no nesting beyond one tuple).
fn dict_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let pos = header.find(&format!("'{key}'")).or_else(|| header.find(&format!("\"{key}\"")))?;
    let rest = &header[pos + key.len() + 2..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    let end = if rest.starts_with('(') { rest.find(')')? + 1 } else { rest.find([',', '}'])? };
    Some(rest[..end].trim())
}

fn parse_shape(s: &str) -> std::result::Result<Vec<usize>, String> {
    let inner = s
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| format!("shape '{s}' is not a tuple"))?;
    let dims: Vec<usize> = inner
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| d.parse::<usize>().map_err(|_| format!("bad dimension '{d}' in shape {s}")))
        .collect::<std::result::Result<_, _>>()?;
    if dims.len() > MAX_RANK {
        return Err(format!("rank {} exceeds the maximum of {MAX_RANK}", dims.len()));
    }
    Ok(dims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_multi_byte_byte_order_mark_is_an_error_not_a_panic() {
        for descr in ["\u{6be}f4", "\u{1F600}", "\u{e9}"] {
            let e = parse_descr(descr).unwrap_err();
            assert!(e.contains("unsupported dtype"), "{descr}: {e}");
        }
    }

    #[test]
    fn round_trips_every_dtype() {
        let tensors = [
            Tensor::new(&[2, 3], vec![1.5f32, -2.0, 0.0, 3.25, 4.0, 5.0]).unwrap(),
            Tensor::new(&[3], vec![1i64, -7, 1 << 40]).unwrap(),
            Tensor::new(&[2, 2], vec![0u8, 255, 7, 9]).unwrap(),
            Tensor::new(&[], vec![2.5f64]).unwrap(),
            Tensor::new(&[2], vec![f16::from_f32(0.5), f16::from_f32(-1.0)]).unwrap(),
            Tensor::new(&[2], vec![true, false]).unwrap(),
            Tensor::new(&[0, 4], Vec::<f32>::new()).unwrap(),
        ];
        for t in tensors {
            let bytes = npy_bytes(&t);
            assert_eq!((bytes.len() - t.len() * t.dtype().size()) % 64, 0);
            assert_eq!(read_npy_bytes(&bytes).unwrap(), t);
        }
    }

    #[test]
    fn rejects_truncated_and_lying_files() {
        let t = Tensor::new(&[4, 4], vec![1f32; 16]).unwrap();
        let bytes = npy_bytes(&t);
        for cut in [0, 5, 9, 20, bytes.len() - 1] {
            assert!(read_npy_bytes(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        // Header edits done on bytes: the magic `\x93NUMPY` is not UTF-8.
        let edit = |from: &str, to: &str| -> Vec<u8> {
            let at = bytes.windows(from.len()).position(|w| w == from.as_bytes()).unwrap();
            let mut out = bytes[..at].to_vec();
            out.extend_from_slice(to.as_bytes());
            out.extend_from_slice(&bytes[at + from.len()..]);
            out
        };
        let err = read_npy_bytes(&edit("(4, 4)", "(4, 5)")).unwrap_err().to_string();
        assert!(err.contains("needs 80 data bytes"), "{err}");
        assert!(read_npy_bytes(&edit("(4, 4)", "(99999999999, 99999999999999)")).is_err());
        let err = read_npy_bytes(&edit("False", "True ")).unwrap_err().to_string();
        assert!(err.contains("Fortran"), "{err}");
    }
}
