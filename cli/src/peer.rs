//! Peer benchmark scripts (`bench/*.py`): run one with Python and read the JSON line it prints last.

use hydrant::Error;
use serde_json::Value;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// The Python to run peers with: `python` when given, else `.venv/bin/python` when it exists,
/// else `python3` from `PATH`.
pub fn python(python: Option<&Path>) -> PathBuf {
    python.map(Path::to_path_buf).unwrap_or_else(|| {
        let venv = PathBuf::from(".venv/bin/python");
        if venv.exists() {
            venv
        } else {
            PathBuf::from("python3")
        }
    })
}

/// Runs `bench/<script>` with `args` and parses the last line of its standard output as JSON.
pub fn run<I, S>(python_path: Option<&Path>, script: &str, args: I) -> hydrant::Result<Value>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let python = python(python_path);
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../bench").join(script);
    let out = std::process::Command::new(&python)
        .arg(&path)
        .args(args)
        .output()
        .map_err(|e| Error::Io { path: python.clone(), source: e })?;
    if !out.status.success() {
        return Err(Error::InvalidArgument(format!(
            "{} failed: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("")
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or("");
    serde_json::from_str(line)
        .map_err(|e| Error::InvalidArgument(format!("{script} output `{line}`: {e}")))
}
