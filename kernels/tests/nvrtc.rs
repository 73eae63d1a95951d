//! Every kernel compiles with NVRTC 13.0 for sm_90 and sm_75, without a GPU: errors and
//! warnings both fail, and every listed entry point must be in the PTX.
//!
//! Needs libnvrtc and the CUDA headers, from the PyPI wheels `nvidia-cuda-nvrtc==13.0.*` and
//! `nvidia-cuda-runtime==13.0.*` (`scripts/cuda_wheels.sh`, run by `scripts/test.sh`, installs them under `target/cuda-wheels/`).
//! `HYDRANT_NVRTC_LIB` (folder of `libnvrtc.so.13`) and `HYDRANT_CUDA_INCLUDE` (folder of
//! `cuda_fp16.h`) override those places. Without them the test fails, saying how to install
//! them, unless `HYDRANT_SKIP_NVRTC=1`.

use cudarc::nvrtc::result;
use hydrant_kernels::MODULES;
use std::ffi::CString;
use std::path::{Path, PathBuf};

const ARCHS: [&str; 2] = ["compute_90", "compute_75"];

fn wheels() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/cuda-wheels")
}

fn folder(var: &str, default: PathBuf, needs: &str) -> Result<PathBuf, String> {
    let dir = std::env::var_os(var).map(PathBuf::from).unwrap_or(default);
    if dir.join(needs).is_file() {
        Ok(dir)
    } else {
        Err(format!(
            "{needs} not found in {} ({var}). Install the NVRTC 13.0 wheels:\n  \
             python3 -m pip install --no-deps --target target/cuda-wheels/nvrtc 'nvidia-cuda-nvrtc==13.0.*'\n  \
             python3 -m pip install --no-deps --target target/cuda-wheels/runtime 'nvidia-cuda-runtime==13.0.*'\n\
             (bash scripts/cuda_wheels.sh; scripts/test.sh does), or set {var}, or HYDRANT_SKIP_NVRTC=1 to skip this test.",
            dir.display()
        ))
    }
}

/// Loads libnvrtc (and its builtins) by path, so that cudarc's load by name finds it.
fn load_nvrtc(lib: &Path) -> Vec<libloading::Library> {
    ["libnvrtc-builtins.so.13.0", "libnvrtc.so.13"]
        .iter()
        .map(|name| {
            let path = lib.join(name);
            // SAFETY: loading NVIDIA's NVRTC library; its initialisers have no preconditions.
            unsafe { libloading::Library::new(&path) }
                .unwrap_or_else(|e| panic!("loading {}: {e}", path.display()))
        })
        .collect()
}

/// Compiles `src` for `arch`: the PTX, or the log.
fn compile(src: &str, name: &str, arch: &str, include: &Path) -> Result<(String, String), String> {
    let src = CString::new(src).map_err(|e| e.to_string())?;
    let name = CString::new(format!("{name}.cu")).map_err(|e| e.to_string())?;
    let prog = result::create_program(&src, Some(&name)).map_err(|e| format!("{e:?}"))?;
    let opts = [
        format!("--gpu-architecture={arch}"),
        format!("--include-path={}", include.display()),
        "--std=c++17".to_string(),
    ];
    // SAFETY: `prog` is a live program; the options are NUL-free strings.
    let status = unsafe { result::compile_program(prog, &opts) };
    // SAFETY: as above; the log exists after compilation, successful or not.
    let log = unsafe { result::get_program_log(prog) }.map_err(|e| format!("{e:?}"))?;
    let log: String = log.iter().take_while(|&&c| c != 0).map(|&c| c as u8 as char).collect();
    let out = match status {
        Ok(()) => {
            // SAFETY: the program compiled.
            let ptx = unsafe { result::get_ptx(prog) }.map_err(|e| format!("{e:?}"))?;
            Ok((ptx.iter().take_while(|&&c| c != 0).map(|&c| c as u8 as char).collect(), log))
        }
        Err(e) => Err(format!("{e:?}\n{log}")),
    };
    // SAFETY: destroyed once, after its last use.
    unsafe { result::destroy_program(prog) }.map_err(|e| format!("{e:?}"))?;
    out
}

#[test]
fn every_kernel_compiles_for_sm90_and_sm75_without_warnings() {
    if std::env::var("HYDRANT_SKIP_NVRTC").is_ok_and(|v| v == "1") {
        eprintln!("HYDRANT_SKIP_NVRTC=1: NVRTC compile check skipped");
        return;
    }
    let lib = folder("HYDRANT_NVRTC_LIB", wheels().join("nvrtc/nvidia/cu13/lib"), "libnvrtc.so.13");
    let include =
        folder("HYDRANT_CUDA_INCLUDE", wheels().join("runtime/nvidia/cu13/include"), "cuda_fp16.h");
    let (lib, include) = match (lib, include) {
        (Ok(l), Ok(i)) => (l, i),
        (l, i) => {
            panic!("{}", [l.err(), i.err()].into_iter().flatten().collect::<Vec<_>>().join("\n"))
        }
    };
    let _libs = load_nvrtc(&lib);
    let (mut major, mut minor) = (0, 0);
    // SAFETY: two valid out-pointers; libnvrtc is loaded.
    unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) }
        .result()
        .expect("nvrtcVersion");
    assert_eq!((major, minor), (13, 0), "NVRTC must be 13.0 (a 13.0 driver cannot load newer PTX)");
    // The log check below must see warnings: a source with one yields a non-empty log.
    let (_, log) = compile("#warning \"probe\"\n", "probe", ARCHS[0], &include).expect("probe");
    assert!(log.contains("probe"), "NVRTC log of a warning not captured: {log:?}");
    let mut failures = Vec::new();
    let mut compiled = 0;
    for module in MODULES {
        for arch in ARCHS {
            match compile(&module.source(), module.name, arch, &include) {
                Ok((ptx, log)) => {
                    if !log.trim().is_empty() {
                        failures.push(format!("{} {arch}: warnings:\n{log}", module.name));
                    }
                    for entry in module.entry_points() {
                        if !ptx.contains(&format!(".entry {entry}(")) {
                            failures
                                .push(format!("{} {arch}: no entry point {entry}", module.name));
                        }
                    }
                    let entries = ptx.matches(".entry ").count();
                    if entries != module.entry_points().len() {
                        failures.push(format!(
                            "{} {arch}: {entries} entry points in the PTX, {} listed",
                            module.name,
                            module.entry_points().len()
                        ));
                    }
                    println!(
                        "{} {arch}: ok, {} entry points, {} bytes of PTX",
                        module.name,
                        module.entry_points().len(),
                        ptx.len()
                    );
                    compiled += 1;
                }
                Err(log) => failures.push(format!("{} {arch}: failed:\n{log}", module.name)),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert_eq!(compiled, MODULES.len() * ARCHS.len());
}
