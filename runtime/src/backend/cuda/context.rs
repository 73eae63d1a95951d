//! One CUDA device as the executor uses it: context, stream, cuBLAS handle, limits, and the
//! kernel modules, compiled by NVRTC for the device's compute capability on first use and
//! cached for the life of the process ([`GpuContext::shared`]).

use super::geometry::Limits;
use super::ptx_cache;
use crate::error::{Error, Result};
use cudarc::cublas::CudaBlas;
use cudarc::driver::sys::CUdevice_attribute as Attr;
use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaStream};
use cudarc::nvrtc::{result as nvrtc, Ptx};
use std::collections::HashMap;
use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// A CUDA device ready to run hydrant's kernels.
pub struct GpuContext {
    /// The device ordinal.
    pub ordinal: usize,
    /// `compute_XY` of the device.
    pub arch: String,
    /// Grid and block limits of the device.
    pub limits: Limits,
    pub(crate) stream: Arc<CudaStream>,
    pub(crate) blas: CudaBlas,
    ctx: Arc<CudaContext>,
    include: PathBuf,
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
    /// Held by a model while it runs a segment or moves tensors (one cuBLAS handle, one stream).
    turn: Mutex<()>,
}

impl std::fmt::Debug for GpuContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuContext")
            .field("ordinal", &self.ordinal)
            .field("arch", &self.arch)
            .finish()
    }
}

pub(crate) fn err(ordinal: usize, message: impl std::fmt::Display) -> Error {
    Error::Backend { segment: format!("cuda:{ordinal}"), message: message.to_string() }
}

/// The folder holding `cuda_fp16.h`: `HYDRANT_CUDA_INCLUDE`, else `$CUDA_HOME/include`,
/// `$CUDA_PATH/include`, `/usr/local/cuda/include`.
fn include_dir() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(d) = std::env::var_os("HYDRANT_CUDA_INCLUDE") {
        candidates.push(d.into());
    }
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Some(d) = std::env::var_os(var) {
            candidates.push(Path::new(&d).join("include"));
        }
    }
    candidates.push("/usr/local/cuda/include".into());
    candidates.into_iter().find(|d| d.join("cuda_fp16.h").is_file())
}

/// The NVRTC version (major, minor), `(0, 0)` when NVRTC does not say.
fn nvrtc_version() -> (i32, i32) {
    let (mut major, mut minor) = (0, 0);
    // SAFETY: NVRTC was found loadable before any context exists; the pointers are live.
    let status = unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
    if status == cudarc::nvrtc::sys::nvrtcResult::NVRTC_SUCCESS {
        (major, minor)
    } else {
        (0, 0)
    }
}

static CONTEXTS: OnceLock<Mutex<HashMap<usize, Arc<GpuContext>>>> = OnceLock::new();

impl GpuContext {
    /// The process's context for device `ordinal`, made on first use.
    pub fn shared(ordinal: usize) -> Result<Arc<GpuContext>> {
        let map = CONTEXTS.get_or_init(|| Mutex::new(HashMap::new()));
        let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = map.get(&ordinal) {
            return Ok(c.clone());
        }
        let c = Arc::new(GpuContext::new(ordinal)?);
        map.insert(ordinal, c.clone());
        Ok(c)
    }

    fn new(ordinal: usize) -> Result<GpuContext> {
        // SAFETY: these only try to dlopen the libraries; cudarc panics on first use without them.
        let present = unsafe {
            [
                ("the CUDA driver (libcuda)", cudarc::driver::sys::is_culib_present()),
                ("NVRTC (libnvrtc)", cudarc::nvrtc::sys::is_culib_present()),
                ("cuBLAS (libcublas)", cudarc::cublas::sys::is_culib_present()),
            ]
        };
        if let Some((what, _)) = present.iter().find(|(_, ok)| !ok) {
            return Err(err(ordinal, format!("{what} could not be loaded; is CUDA 13 installed?")));
        }
        let include = include_dir().ok_or_else(|| {
            err(
                ordinal,
                "cuda_fp16.h not found: set HYDRANT_CUDA_INCLUDE to the CUDA include folder",
            )
        })?;
        let ctx = CudaContext::new(ordinal).map_err(|e| err(ordinal, e))?;
        let (major, minor) = ctx.compute_capability().map_err(|e| err(ordinal, e))?;
        if major < 7 || (major == 7 && minor < 5) {
            return Err(err(
                ordinal,
                format!("compute capability {major}.{minor}: 7.5 or later needed"),
            ));
        }
        let attr = |a: Attr| -> Result<u32> {
            Ok(ctx.attribute(a).map_err(|e| err(ordinal, e))?.max(1) as u32)
        };
        let limits = Limits {
            max_grid_x: attr(Attr::CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X)?,
            max_grid_yz: attr(Attr::CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y)?
                .min(attr(Attr::CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z)?),
            max_threads: attr(Attr::CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK)?,
            sm_count: attr(Attr::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?,
        };
        let stream = ctx.default_stream();
        let blas = CudaBlas::new(stream.clone()).map_err(|e| err(ordinal, e))?;
        Ok(GpuContext {
            ordinal,
            arch: format!("compute_{major}{minor}"),
            limits,
            stream,
            blas,
            ctx,
            include,
            modules: Mutex::new(HashMap::new()),
            turn: Mutex::new(()),
        })
    }

    /// Kernel `entry` (a name listed by `hydrant_kernels`), compiling its module on first use.
    pub fn function(&self, entry: &str) -> Result<CudaFunction> {
        let module = hydrant_kernels::module_of(entry)
            .ok_or_else(|| err(self.ordinal, format!("no kernel named `{entry}`")))?;
        let loaded = {
            let mut modules = self.modules.lock().unwrap_or_else(|e| e.into_inner());
            match modules.get(module.name) {
                Some(m) => m.clone(),
                None => {
                    let ptx = self.compile(module)?;
                    let m = self
                        .ctx
                        .load_module(Ptx::from_src(ptx))
                        .map_err(|e| err(self.ordinal, e))?;
                    modules.insert(module.name, m.clone());
                    m
                }
            }
        };
        loaded.load_function(entry).map_err(|e| err(self.ordinal, format!("{entry}: {e}")))
    }

    /// PTX of `module` for this device, or NVRTC's log as the error; from the on-disk cache
    /// when `HYDRANT_PTX_CACHE` names a folder holding it ([`ptx_cache`]), stored there after
    /// compiling otherwise (a folder that cannot be written only costs the compile).
    fn compile(&self, module: &hydrant_kernels::Module) -> Result<String> {
        let source = module.source();
        let opts = [
            format!("--gpu-architecture={}", self.arch),
            format!("--include-path={}", self.include.display()),
            "--std=c++17".to_string(),
        ];
        let cache = ptx_cache::dir_from_env().map(|dir| {
            let key = ptx_cache::Key::new(module.name, &source, &self.arch, nvrtc_version(), &opts);
            (dir, key)
        });
        if let Some(ptx) = cache.as_ref().and_then(|(dir, key)| ptx_cache::read(dir, key)) {
            return Ok(ptx);
        }
        let ptx = self.nvrtc(module.name, &source, &opts)?;
        if let Some((dir, key)) = &cache {
            let _ = ptx_cache::write(dir, key, &ptx);
        }
        Ok(ptx)
    }

    /// Compiles `source` (module `name`) with NVRTC.
    fn nvrtc(&self, name: &str, source: &str, opts: &[String]) -> Result<String> {
        let e = |m: String| err(self.ordinal, format!("compiling {name}.cu: {m}"));
        let src = CString::new(source).map_err(|x| e(x.to_string()))?;
        let file = CString::new(format!("{name}.cu")).map_err(|x| e(x.to_string()))?;
        let prog = nvrtc::create_program(&src, Some(&file)).map_err(|x| e(format!("{x:?}")))?;
        // SAFETY: `prog` is live until destroyed below; the options hold no NUL.
        let status = unsafe { nvrtc::compile_program(prog, opts) };
        let text = |v: Vec<std::ffi::c_char>| -> String {
            v.iter().take_while(|&&c| c != 0).map(|&c| c as u8 as char).collect()
        };
        let out = match status {
            // SAFETY: the program compiled.
            Ok(()) => unsafe { nvrtc::get_ptx(prog) }.map(text).map_err(|x| e(format!("{x:?}"))),
            // SAFETY: the log exists after a failed compilation.
            Err(_) => Err(e(unsafe { nvrtc::get_program_log(prog) }.map(text).unwrap_or_default())),
        };
        // SAFETY: destroyed once, after its last use.
        let _ = unsafe { nvrtc::destroy_program(prog) };
        out
    }

    /// Milliseconds of GPU time that `work` enqueues, measured with CUDA events on the stream.
    pub fn time_ms(&self, work: impl FnOnce() -> Result<()>) -> Result<f32> {
        let flags = Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT);
        let start = self.ctx.new_event(flags).map_err(|e| err(self.ordinal, e))?;
        let end = self.ctx.new_event(flags).map_err(|e| err(self.ordinal, e))?;
        start.record(&self.stream).map_err(|e| err(self.ordinal, e))?;
        work()?;
        end.record(&self.stream).map_err(|e| err(self.ordinal, e))?;
        end.synchronize().map_err(|e| err(self.ordinal, e))?;
        start.elapsed_ms(&end).map_err(|e| err(self.ordinal, e))
    }

    /// The device for the caller alone until the guard drops: models running on several threads
    /// take turns per segment, as the cuBLAS handle must not be used by two threads at once.
    pub fn turn(&self) -> std::sync::MutexGuard<'_, ()> {
        self.turn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for every launch so far.
    pub fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().map_err(|e| err(self.ordinal, e))
    }
}
