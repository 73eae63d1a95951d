//! Corrupted and crafted files: every one must end in a clean error (or, for a mutation that
//! leaves a valid model, a clean run), never a panic.

use hydrant::{LoadOptions, Model};
use hydrant_tests::{fixture, run_all, zero_inputs};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Deterministic xorshift positions, so a failure names a reproducible mutation.
struct Positions(u64);

impl Positions {
    fn next(&mut self, below: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % below as u64) as usize
    }
}

/// Loads `bytes` as a model and, when that succeeds, runs it on a batch of 2; returns whether it
/// loaded. Panics (the test's failure) only if hydrant panicked.
fn load_and_run(bytes: &[u8], what: &str) -> bool {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let options = LoadOptions::new().threads(1).max_bytes(64 << 20);
        let Ok(model) = Model::from_bytes(bytes, options) else { return false };
        let _ = run_all(&model, &zero_inputs(&model, 2, 1 << 20));
        let _ = model.summary();
        true
    }));
    outcome.unwrap_or_else(|_| panic!("hydrant panicked on {what}"))
}

#[test]
fn truncated_models_are_clean_errors() {
    let bytes = std::fs::read(fixture("single.onnx")).unwrap();
    let mut loaded = 0;
    for cut in (0..bytes.len()).step_by(61) {
        loaded += load_and_run(&bytes[..cut], &format!("single.onnx truncated at {cut}")) as usize;
    }
    assert_eq!(loaded, 0, "a truncated model must not load");
}

#[test]
fn bit_flips_never_panic() {
    for name in ["single.onnx", "digits.onnx"] {
        let original = std::fs::read(fixture(name)).unwrap();
        let mut at = Positions(0x9E37_79B9_7F4A_7C15);
        for trial in 0..400 {
            let mut bytes = original.clone();
            // Half the flips land in the first 4 KiB, where the graph structure is stored.
            let span = if trial % 2 == 0 { bytes.len().min(4096) } else { bytes.len() };
            let pos = at.next(span);
            let bit = at.next(8);
            bytes[pos] ^= 1 << bit;
            load_and_run(&bytes, &format!("{name} with bit {bit} of byte {pos} flipped"));
        }
    }
}

#[test]
fn crafted_models_are_refused_with_a_reason() {
    for (file, expected) in [
        ("hostile/huge_initializer.onnx", "overflows"),
        ("hostile/lying_shape.onnx", "needs"),
        ("hostile/traversal_external.onnx", "relative path"),
        ("hostile/absolute_external.onnx", "relative path"),
        ("hostile/cycle.onnx", "cycle"),
        ("hostile/dangling_input.onnx", "no node, input or initializer"),
        ("hostile/duplicate_output.onnx", "produced by both"),
        ("hostile/absurd_rank.onnx", "rank"),
        ("hostile/over_budget.onnx", "memory limit"),
        ("hostile/duplicate_initializer.onnx", "initializer `w` is listed twice"),
        ("hostile/duplicate_input.onnx", "graph input `x` is listed twice"),
        ("hostile/writes_its_input.onnx", "which is a graph input"),
    ] {
        let path = fixture(file);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
        let result = catch_unwind(|| {
            Model::load(&path, LoadOptions::new().threads(1).max_bytes(32 << 10)).map(drop)
        })
        .unwrap_or_else(|_| panic!("hydrant panicked on {file}"));
        let err = result.expect_err(file).to_string();
        assert!(err.contains(expected), "{file}: expected `{expected}` in: {err}");
        assert!(!load_and_run(&bytes, file) || file.contains("budget"), "{file} loaded from bytes");
    }
}

#[test]
fn hostile_npy_files_are_clean_errors() {
    let good = hydrant_tests::fixture("hydranet_input_b1.npy");
    let bytes = std::fs::read(good).unwrap();
    let mut at = Positions(42);
    for cut in (0..bytes.len()).step_by(97) {
        assert!(hydrant::npy::read_npy_bytes(&bytes[..cut]).is_err(), "truncated at {cut}");
    }
    for _ in 0..2000 {
        let mut b = bytes[..bytes.len().min(256)].to_vec();
        let pos = at.next(b.len());
        b[pos] ^= 1 << at.next(8);
        let r = catch_unwind(|| hydrant::npy::read_npy_bytes(&b).map(drop));
        assert!(r.is_ok(), "npy reader panicked with byte {pos} flipped");
    }
}
