//! The committed corpus of hostile files (tests/fixtures/hostile/, written by
//! scripts/make_hostile.py) and deterministic truncations and bit flips of valid head files and
//! arrays: every one ends in a clean error naming the problem (or, for a harmless bit flip, a
//! clean load), none panics, and none allocates more than the loader's limit — measured by a
//! counting global allocator around each load.

use hydrant::{HeadSet, LoadOptions, Model, SafetensorsLimits};
use hydrant_tests::{fixture, run_all, zero_inputs};
use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Counts live heap bytes and their peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Serialises the measured sections (tests of this binary run on parallel threads).
static MEASURE: Mutex<()> = Mutex::new(());

/// The file-size limit of every head file and the bound on allocation during every load.
const LIMIT: u64 = 4 << 20;
/// The tensor budget models load under (the hostile ONNX files' 64 KiB of weights exceed it).
const MODEL_BUDGET: u64 = 48 << 10;
/// Allowed on top of `LIMIT`: the loader's own structures (graphs, names, error messages).
const SLACK: usize = 4 << 20;

/// Runs `f`, returning its result and the most heap bytes it held above what was live before.
fn measured<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let _guard = MEASURE.lock().unwrap_or_else(|e| e.into_inner());
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let out = f();
    let peak = PEAK.load(Ordering::Relaxed).saturating_sub(base);
    (out, peak)
}

fn limits() -> SafetensorsLimits {
    SafetensorsLimits { max_file_bytes: LIMIT, ..SafetensorsLimits::default() }
}

fn options() -> LoadOptions {
    LoadOptions::new().threads(1).max_bytes(MODEL_BUDGET)
}

/// Loads `bytes` the way a file named `name` is loaded (by extension); for a head file holding a
/// trunk, builds the whole model too. Returns the error message, if any.
fn load_bytes(name: &str, bytes: &[u8]) -> Option<String> {
    let r: hydrant::Result<()> = if name.ends_with(".npy") {
        hydrant::npy::read_npy_bytes(bytes).map(drop)
    } else if name.ends_with(".safetensors") {
        HeadSet::from_bytes_with(bytes, &limits()).and_then(|set| match set.trunk {
            Some(_) => Model::from_head_set(&set, options()).map(drop),
            None => Ok(()),
        })
    } else {
        Model::from_bytes(bytes, options()).and_then(|m| run_once(&m))
    };
    r.err().map(|e| e.to_string())
}

/// Runs a model that loaded once, on zeros of its declared input shapes (symbolic dimensions
/// 1): a graph that asks for a huge tensor only once its input shapes are known must fail here.
fn run_once(model: &Model) -> hydrant::Result<()> {
    run_all(model, &zero_inputs(model, 1, 1 << 20))
}

/// Loads the file at `path` from disk (so that external data resolves beside it).
fn load_path(path: &Path) -> Option<String> {
    let name = path.to_string_lossy();
    let r: hydrant::Result<()> = if name.ends_with(".npy") {
        hydrant::read_npy(path).map(drop)
    } else if name.ends_with(".safetensors") {
        HeadSet::load_with(path, &limits()).and_then(|set| match set.trunk {
            Some(_) => Model::from_head_set(&set, options()).map(drop),
            None => Ok(()),
        })
    } else {
        Model::load(path, options()).and_then(|m| run_once(&m))
    };
    r.err().map(|e| e.to_string())
}

/// Runs `load` under `catch_unwind` and the allocation counter; fails the test on a panic or on
/// a peak above the limit.
fn guarded(what: &str, load: impl FnOnce() -> Option<String>) -> Option<String> {
    let (outcome, peak) = measured(|| catch_unwind(AssertUnwindSafe(load)));
    let err = outcome.unwrap_or_else(|_| panic!("hydrant panicked on {what}"));
    assert!(
        peak <= LIMIT as usize + SLACK,
        "{what}: {peak} bytes allocated, over the limit of {LIMIT} (+{SLACK} slack)"
    );
    err
}

fn expected() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(fixture("hostile/expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn every_committed_hostile_file_is_a_clean_bounded_error() {
    let expected = expected();
    let dir = fixture("hostile");
    let (mut tried, mut wrong) = (0, Vec::new());
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name == "expected.json" {
            continue;
        }
        let why = expected
            .get(&name)
            .unwrap_or_else(|| panic!("{name} has no expected reason in expected.json"));
        match guarded(&name, || load_path(&path)) {
            None => wrong.push(format!("{name} loaded; it must be refused")),
            Some(err) if !err.contains(why.as_str()) => {
                wrong.push(format!("{name}: expected `{why}` in: {err}"))
            }
            Some(_) => {}
        }
        let bytes = std::fs::read(&path).unwrap();
        let from_bytes = guarded(&name, || load_bytes(&name, &bytes));
        assert!(from_bytes.is_some(), "{name} loaded from bytes");
        tried += 1;
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    for name in expected.keys() {
        assert!(dir.join(name).exists(), "expected.json lists {name}, which is missing");
    }
    assert!(tried >= 50, "only {tried} hostile files");
    eprintln!("{tried} hostile files refused");
}

/// Deterministic xorshift positions.
struct Positions(u64);

impl Positions {
    fn next(&mut self, below: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % below as u64) as usize
    }
}

/// Valid files the sweeps corrupt.
const SWEPT: [&str; 4] = [
    "train/whole.safetensors",
    "train/weighting_init.safetensors",
    "train/parity_seg_init.safetensors",
    "hydranet_input_b1.npy",
];

#[test]
fn truncations_are_clean_bounded_errors() {
    let mut tried = 0;
    for file in SWEPT {
        let bytes = std::fs::read(fixture(file)).unwrap();
        if let Some(e) = load_bytes(file, &bytes) {
            panic!("{file} must load intact: {e}");
        }
        let step = (bytes.len() / 300).max(1);
        for cut in (0..bytes.len()).step_by(step).chain([bytes.len() - 1]) {
            let what = format!("{file} truncated at {cut}");
            let err = guarded(&what, || load_bytes(file, &bytes[..cut]));
            let err = err.unwrap_or_else(|| panic!("{what} loaded"));
            assert!(!err.is_empty(), "{what}");
            tried += 1;
        }
    }
    eprintln!("{tried} truncations refused");
}

#[test]
fn bit_flips_never_panic_nor_exceed_the_limit() {
    let mut at = Positions(0x2545_F491_4F6C_DD1D);
    let (mut tried, mut refused) = (0, 0);
    for file in SWEPT {
        let original = std::fs::read(fixture(file)).unwrap();
        let header = 8 + u64::from_le_bytes(original[..8].try_into().unwrap()) as usize;
        for trial in 0..300 {
            let mut bytes = original.clone();
            // Most flips land in the header (length, JSON), where the structure is.
            let span = if trial % 4 == 3 { bytes.len() } else { header.min(bytes.len()) };
            let pos = at.next(span);
            let bit = at.next(8);
            bytes[pos] ^= 1 << bit;
            let what = format!("{file} with bit {bit} of byte {pos} flipped");
            refused += guarded(&what, || load_bytes(file, &bytes)).is_some() as usize;
            tried += 1;
        }
    }
    assert!(refused > tried / 2, "only {refused} of {tried} flips refused");
    eprintln!("{tried} bit flips, {refused} refused");
}

#[test]
fn external_data_through_a_symlink_leaving_the_folder_is_refused() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.bin"), [0u8; 16]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The model names `w.bin` beside it, a link to a file outside its folder.
    let model = fixture("hostile/traversal_external.onnx");
    let mut bytes = std::fs::read(model).unwrap();
    let from = b"../../../../etc/passwd";
    let at = bytes.windows(from.len()).position(|w| w == from).unwrap();
    // Same length, so the protobuf's length prefixes stay valid.
    bytes.splice(at..at + from.len(), *b"link_to_outside_file.b");
    let path = dir.path().join("model.onnx");
    std::fs::write(&path, &bytes).unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(
        outside.path().join("secret.bin"),
        dir.path().join("link_to_outside_file.b"),
    )
    .unwrap();
    let err = guarded("symlinked external data", || load_path(&path)).expect("refused");
    assert!(err.contains("outside the model's folder") || cfg!(not(unix)), "{err}");
}

#[test]
fn non_finite_optimizer_state_is_refused() {
    use hydrant::train::{Head, Init, OptimizerSpec};
    use hydrant::{HeadSpec, Labels, LayerSpec, Tensor, TrainOptions, Trainer};
    let layers = vec![LayerSpec::Linear { in_features: 3, out_features: 2, bias: true }];
    let spec = HeadSpec::new("h", "x", layers, hydrant::TaskSpec::from_loss_name("mse", 2).ok());
    let options = TrainOptions {
        optimizer: OptimizerSpec::adamw(0.0),
        validation_fraction: 0.0,
        threads: 1,
        ..TrainOptions::default()
    };
    let mut trainer =
        Trainer::new(vec![Head::init(spec, Init::PyTorch, 1).unwrap()], options).unwrap();
    let x = Tensor::new(&[4, 3], (0..12).map(|i| i as f32 / 7.0).collect()).unwrap();
    let y = Tensor::new(&[4, 2], (0..8).map(|i| i as f32 / 5.0).collect()).unwrap();
    trainer.add_features(&[("x", &x)], &[("h", Labels::new(y))]).unwrap();
    trainer.fit(Some(1), |_| std::ops::ControlFlow::Continue(())).unwrap();
    let mut bytes = trainer.head_set(true).unwrap().to_bytes().unwrap();
    assert!(HeadSet::from_bytes(&bytes).unwrap().optimizer.is_some());
    // Poison the first value of the first moment of the weight.
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let name = "hydrant.optimizer.h.0.weight.first";
    let at = 8 + n + header[name]["data_offsets"][0].as_u64().unwrap() as usize;
    bytes[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    let err = HeadSet::from_bytes(&bytes).unwrap_err().to_string();
    assert!(err.contains("`h.0.weight.first` has a non-finite value at element 0"), "{err}");
}

#[test]
fn heads_reading_what_the_trunk_lacks_or_misfit_it_are_refused_when_attached() {
    use hydrant::train::{Head, Init};
    use hydrant::HeadSpec;
    let model = Model::load(fixture("digits.onnx"), LoadOptions::new().threads(1)).unwrap();
    let before = model.head_names();
    let linear = |input: &str, width: usize| {
        let layers = vec![
            hydrant::LayerSpec::Flatten,
            hydrant::LayerSpec::Linear { in_features: width, out_features: 2, bias: true },
        ];
        Head::init(HeadSpec::new("extra", input, layers, None), Init::PyTorch, 0).unwrap()
    };
    let ghost = HeadSet::new(vec![linear("ghost_tensor", 64)]);
    let err = model.set_heads(&ghost).unwrap_err().to_string();
    assert!(err.contains("ghost_tensor"), "{err}");
    let misfit = linear("/trunk/trunk.8/Relu_output_0", 63);
    let err = model.add_head(&misfit).unwrap_err().to_string();
    assert!(err.contains("does not fit"), "{err}");
    // All or nothing: a set with one good and one bad head changes nothing.
    let good = linear("/trunk/trunk.8/Relu_output_0", 64).renamed("good");
    let err = model.set_heads(&HeadSet::new(vec![good, misfit])).unwrap_err().to_string();
    assert!(err.contains("does not fit"), "{err}");
    assert_eq!(model.head_names(), before);
}
