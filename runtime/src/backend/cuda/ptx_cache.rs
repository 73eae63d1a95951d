//! The on-disk cache of compiled PTX, on when `HYDRANT_PTX_CACHE` names a folder: each kernel
//! module's PTX is stored as `<dir>/<module>-<arch>-<hash>.ptx`, the hash taken over the
//! module's source, the architecture, the NVRTC version and the compile options. The file's
//! first line (a PTX comment) repeats the key and a checksum of the rest; a file whose line does
//! not match (torn, edited, or written for another key) is ignored and rewritten. Files are
//! written atomically ([`write_atomic`]), so processes sharing the folder never see half a file.

use crate::error::{Error, Result};
use crate::fsutil::write_atomic;
use std::path::{Path, PathBuf};

/// The environment variable naming the cache folder.
pub const ENV: &str = "HYDRANT_PTX_CACHE";

/// The cache folder from the environment (unset or empty: no cache).
pub fn dir_from_env() -> Option<PathBuf> {
    std::env::var_os(ENV).filter(|d| !d.is_empty()).map(PathBuf::from)
}

/// FNV-1a (64 bits) over length-prefixed parts: the same value in every build and platform.
fn fnv(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for p in parts {
        eat(&(p.len() as u64).to_le_bytes());
        eat(p);
    }
    h
}

/// What a cached PTX file was compiled from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    /// The module's name (`conv`, `gemm`…).
    pub module: String,
    /// The target architecture (`compute_90`).
    pub arch: String,
    /// The hash over source, architecture, NVRTC version and options.
    pub hash: u64,
}

impl Key {
    /// The key of `module` compiled from `source` for `arch` by NVRTC `nvrtc` (major, minor)
    /// with `options`.
    pub fn new(
        module: &str,
        source: &str,
        arch: &str,
        nvrtc: (i32, i32),
        options: &[String],
    ) -> Key {
        let version = format!("{}.{}", nvrtc.0, nvrtc.1);
        let opts = options.join("\n");
        let hash = fnv(&[source.as_bytes(), arch.as_bytes(), version.as_bytes(), opts.as_bytes()]);
        Key { module: module.to_string(), arch: arch.to_string(), hash }
    }

    /// `<module>-<arch>-<hash>.ptx`.
    pub fn file_name(&self) -> String {
        format!("{}-{}-{:016x}.ptx", self.module, self.arch, self.hash)
    }

    fn header(&self, body: &str) -> String {
        format!(
            "// hydrant ptx cache: key {:016x}, body {:016x}, {} bytes\n",
            self.hash,
            fnv(&[body.as_bytes()]),
            body.len()
        )
    }
}

/// The cached PTX for `key` in `dir`, or `None` when there is no file or it does not check out.
pub fn read(dir: &Path, key: &Key) -> Option<String> {
    let text = std::fs::read_to_string(dir.join(key.file_name())).ok()?;
    let (first, body) = text.split_once('\n')?;
    (key.header(body).trim_end() == first).then(|| body.to_string())
}

/// Stores `ptx` for `key` in `dir` (made when missing), replacing any file there.
pub fn write(dir: &Path, key: &Key, ptx: &str) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let text = format!("{}{ptx}", key.header(ptx));
    write_atomic(&dir.join(key.file_name()), text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(source: &str) -> Key {
        Key::new("conv", source, "compute_90", (13, 0), &["--std=c++17".into()])
    }

    #[test]
    fn the_key_changes_with_source_arch_nvrtc_and_options() {
        let base = key("__global__ void k() {}");
        assert_eq!(base, key("__global__ void k() {}"));
        let others = [
            key("__global__ void k() { }"),
            Key::new(
                "conv",
                "__global__ void k() {}",
                "compute_75",
                (13, 0),
                &["--std=c++17".into()],
            ),
            Key::new(
                "conv",
                "__global__ void k() {}",
                "compute_90",
                (13, 1),
                &["--std=c++17".into()],
            ),
            Key::new(
                "conv",
                "__global__ void k() {}",
                "compute_90",
                (13, 0),
                &["--std=c++20".into()],
            ),
        ];
        for k in &others {
            assert_ne!(k.hash, base.hash, "{k:?}");
        }
        // Length prefixes keep the parts apart: moving a byte between them changes the hash.
        assert_ne!(fnv(&[b"ab", b"c"]), fnv(&[b"a", b"bc"]));
        assert_eq!(base.file_name(), format!("conv-compute_90-{:016x}.ptx", base.hash));
        assert_eq!(base.file_name().len(), "conv-compute_90-.ptx".len() + 16);
    }

    #[test]
    fn stored_ptx_reads_back_and_a_missing_file_reads_as_none() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b");
        let k = key("src");
        assert_eq!(read(&nested, &k), None);
        let ptx = ".version 8.0\n.target sm_90\n// body\n";
        write(&nested, &k, ptx).unwrap();
        assert_eq!(read(&nested, &k).as_deref(), Some(ptx));
        let on_disk = std::fs::read_to_string(nested.join(k.file_name())).unwrap();
        assert!(on_disk.starts_with("// hydrant ptx cache: key "), "{on_disk}");
        assert!(on_disk.ends_with(ptx));
        // Nothing but the file itself is left in the folder (the temporary file was renamed).
        assert_eq!(std::fs::read_dir(&nested).unwrap().count(), 1);
    }

    #[test]
    fn corrupt_truncated_or_foreign_files_are_ignored_and_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let k = key("src");
        let path = dir.path().join(k.file_name());
        let ptx = ".version 8.0\n.target sm_90\n.entry k() { ret; }\n";
        write(dir.path(), &k, ptx).unwrap();
        let good = std::fs::read_to_string(&path).unwrap();
        let foreign = key("other source");
        let bad = [
            good.replace("ret;", "ret:"),            // body edited
            good[..good.len() - 5].to_string(),      // truncated
            format!("{}{ptx}", foreign.header(ptx)), // written for another key
            ptx.to_string(),                         // no header
            String::new(),                           // empty
            "\u{0}\u{1}garbage".to_string(),
        ];
        for (i, text) in bad.iter().enumerate() {
            std::fs::write(&path, text).unwrap();
            assert_eq!(read(dir.path(), &k), None, "case {i}");
            write(dir.path(), &k, ptx).unwrap();
            assert_eq!(read(dir.path(), &k).as_deref(), Some(ptx), "case {i} rewritten");
        }
        std::fs::write(&path, [0xffu8, 0xfe, 0x00]).unwrap();
        assert_eq!(read(dir.path(), &k), None, "not UTF-8");
    }

    #[test]
    fn a_cache_folder_that_cannot_be_made_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain-file");
        std::fs::write(&file, b"x").unwrap();
        let e = write(&file.join("sub"), &key("s"), "ptx").unwrap_err();
        assert!(e.to_string().contains("plain-file"), "{e}");
    }
}
