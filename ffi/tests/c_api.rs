//! The C and C++ interface as an application sees it: libhydrant installed by
//! `scripts/install.sh` into a prefix, the examples and the C checks compiled against that prefix
//! (gcc and g++ through pkg-config, and CMake through `find_package(hydrant)`), run on the
//! fixtures and compared with onnxruntime's outputs; the C programs also run under valgrind.
//!
//! Needs gcc, g++, pkg-config, cmake and valgrind (`scripts/test.sh` installs the missing ones).

use hydrant_tests::{fixture, npy};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The cargo output folder holding libhydrant.so and libhydrant.a (`target/release`): the test
/// binary lives in its `deps/`, and cargo built the library's C crate types before running it.
fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent().and_then(Path::parent).expect("target/<profile>/deps").to_path_buf()
}

/// Work folder for this test binary, under the cargo output folder.
fn work() -> PathBuf {
    lib_dir().join("c-api-tests")
}

fn require(tool: &str) {
    let found = Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "`{tool}` is needed by the C interface tests: apt-get install {tool} (scripts/test.sh does)"
    );
}

/// Runs a command, failing the test with its output when it does not succeed.
fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The installed prefix (installed once per test binary).
fn prefix() -> &'static Path {
    static PREFIX: OnceLock<PathBuf> = OnceLock::new();
    PREFIX.get_or_init(|| {
        let prefix = work().join("prefix");
        let _ = std::fs::remove_dir_all(&prefix);
        let lib = lib_dir();
        run(Command::new("bash")
            .arg(repo().join("scripts/install.sh"))
            .arg(&prefix)
            .arg("--lib-dir")
            .arg(&lib));
        prefix
    })
}

/// `pkg-config ARGS` against the installed prefix, split into arguments.
fn pkg_config(args: &[&str]) -> Vec<String> {
    require("pkg-config");
    let out = run(Command::new("pkg-config")
        .args(args)
        .env("PKG_CONFIG_PATH", prefix().join("lib/pkgconfig")));
    String::from_utf8(out.stdout).unwrap().split_whitespace().map(String::from).collect()
}

/// Compiles and links `sources` into `work()/name` with `compiler` and strict warnings.
fn build(compiler: &str, std: &str, sources: &[PathBuf], name: &str, package: &str) -> PathBuf {
    require(compiler);
    let exe = work().join(name);
    std::fs::create_dir_all(work()).unwrap();
    let mut cmd = Command::new(compiler);
    cmd.arg(format!("-std={std}"))
        .args(["-Wall", "-Wextra", "-pedantic", "-Werror", "-O1", "-g"])
        .args(sources)
        .arg("-o")
        .arg(&exe)
        .args(pkg_config(&["--cflags", "--libs", package]))
        .args(["-lm", "-pthread"]);
    if package == "hydrant" {
        cmd.arg(format!("-Wl,-rpath,{}", prefix().join("lib").display()));
    }
    run(&mut cmd);
    exe
}

fn example(path: &str) -> PathBuf {
    repo().join("examples").join(path)
}

/// The `HEAD row R: class C (score S)` lines a classify example printed.
fn top_classes(stdout: &[u8], head: &str) -> Vec<(usize, f32)> {
    let text = String::from_utf8_lossy(stdout);
    text.lines()
        .filter_map(|l| l.strip_prefix(&format!("{head} row ")))
        .enumerate()
        .map(|(i, rest)| {
            let (row, rest) = rest.split_once(": class ").expect("row line");
            assert_eq!(row.parse::<usize>().unwrap(), i, "rows in order");
            let (class, score) = rest.split_once(" (score ").expect("score");
            (class.parse().unwrap(), score.trim_end_matches(')').parse().unwrap())
        })
        .collect()
}

/// Argmax and maximum of each row of a 2-D f32 reference fixture.
fn reference_top(name: &str) -> Vec<(usize, f32)> {
    let t = npy(name);
    let cols = t.shape()[1];
    t.as_slice::<f32>()
        .expect("f32 fixture")
        .chunks(cols)
        .map(|row| {
            let best = (0..cols).fold(0, |b, c| if row[c] > row[b] { c } else { b });
            (best, row[best])
        })
        .collect()
}

/// Asserts a classify run printed onnxruntime's top classes and scores for `reference`.
fn assert_matches(out: &Output, head: &str, reference: &str) {
    let got = top_classes(&out.stdout, head);
    let want = reference_top(reference);
    assert_eq!(got.len(), want.len(), "rows printed:\n{}", String::from_utf8_lossy(&out.stdout));
    for (row, ((gc, gs), (wc, ws))) in got.iter().zip(&want).enumerate() {
        assert_eq!(gc, wc, "{reference} row {row}: class");
        assert!((gs - ws).abs() <= 1e-4 * ws.abs().max(1.0), "{reference} row {row}: {gs} vs {ws}");
    }
}

#[test]
fn header_is_strict_c11_and_cpp17() {
    let dir = work().join("strict");
    std::fs::create_dir_all(&dir).unwrap();
    let c = dir.join("strict.c");
    std::fs::write(
        &c,
        "#include <hydrant.h>\n\
         int main(void) { return hydrant_abi_version() == HYDRANT_ABI_VERSION ? 0 : 1; }\n",
    )
    .unwrap();
    run(&mut Command::new(build("gcc", "c11", &[c], "strict_c", "hydrant")));
    let signatures = repo().join("ffi/tests/c/signatures.c");
    let out = run(&mut Command::new(build("gcc", "c11", &[signatures], "signatures", "hydrant")));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("16 signatures, HYDRANT_OK = 0"));
    let cpp = dir.join("strict.cpp");
    std::fs::write(
        &cpp,
        "#include <hydrant.hpp>\n\
         int main() { return hydrant::version().empty() ? 1 : 0; }\n",
    )
    .unwrap();
    run(&mut Command::new(build("g++", "c++17", &[cpp], "strict_cpp", "hydrant")));
}

#[test]
fn c_example_prints_onnxruntime_top_classes() {
    let hydranet = fixture("hydranet.onnx");
    for (package, name) in [("hydrant", "classify_shared"), ("hydrant-static", "classify_static")] {
        let exe = build("gcc", "c11", &[example("c/classify.c")], name, package);
        let out = run(Command::new(&exe).arg(&hydranet).arg(fixture("hydranet_input_b3.npy")));
        assert_matches(&out, "cls", "hydranet_b3_cls.npy");
        let out = run(Command::new(&exe)
            .arg(fixture("digits.onnx"))
            .arg(fixture("digits_ref_input.npy"))
            .arg("digit"));
        assert_matches(&out, "digit", "digits_ref_digit.npy");
    }
    // The static build needs no libhydrant.so at run time, and keeps a non-executable stack.
    let ldd = run(Command::new("ldd").arg(work().join("classify_static")));
    assert!(!String::from_utf8_lossy(&ldd.stdout).contains("libhydrant"), "static link");
    let segments = run(Command::new("readelf").arg("-lW").arg(work().join("classify_static")));
    let segments = String::from_utf8_lossy(&segments.stdout).into_owned();
    let stack = segments.lines().find(|l| l.contains("GNU_STACK")).expect("GNU_STACK segment");
    assert!(!stack.contains("RWE"), "executable stack: {stack}");

    // A raw input file: the model's input type and shape, batch 1.
    let input = npy("hydranet_input_b1.npy");
    let raw: Vec<u8> =
        input.as_slice::<f32>().unwrap().iter().flat_map(|x| x.to_ne_bytes()).collect();
    let raw_path = work().join("hydranet_input_b1.raw");
    std::fs::write(&raw_path, &raw).unwrap();
    let exe = work().join("classify_shared");
    let out = run(Command::new(&exe).arg(&hydranet).arg(&raw_path).arg("cls"));
    assert_matches(&out, "cls", "hydranet_b1_cls.npy");
    std::fs::write(&raw_path, &raw[1..]).unwrap();
    let short = Command::new(&exe).arg(&hydranet).arg(&raw_path).output().unwrap();
    assert_eq!(short.status.code(), Some(1), "a short raw file is an error");
    let mut bad = Command::new(&exe);
    let bad =
        bad.arg(&hydranet).arg(fixture("hydranet_input_b1.npy")).arg("nope").output().unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown head `nope`"));
}

#[test]
fn cpp_example_prints_onnxruntime_top_classes() {
    let exe = build("g++", "c++17", &[example("cpp/classify.cpp")], "classify_cpp", "hydrant");
    let out = run(Command::new(&exe)
        .arg(fixture("hydranet.onnx"))
        .arg(fixture("hydranet_input_b3.npy"))
        .arg("cls"));
    assert_matches(&out, "cls", "hydranet_b3_cls.npy");
    let text = String::from_utf8_lossy(&out.stdout);
    for line in ["output cls [3, 10]", "output box [3, 4]", "output seg [3, 3, 32, 32]"] {
        assert!(text.lines().any(|l| l == line), "missing `{line}` in:\n{text}");
    }
    let bad = Command::new(&exe).arg(fixture("no_such.onnx")).arg("x.npy").output().unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("(status 1)"), "IO status in message");
}

#[test]
fn cmake_example_builds_from_the_installed_package() {
    require("cmake");
    let build_dir = work().join("cmake-build");
    let _ = std::fs::remove_dir_all(&build_dir);
    run(Command::new("cmake")
        .arg("-S")
        .arg(example("cmake"))
        .arg("-B")
        .arg(&build_dir)
        .arg(format!("-DCMAKE_PREFIX_PATH={}", prefix().display()))
        .arg("-DCMAKE_BUILD_TYPE=Release"));
    run(Command::new("cmake").arg("--build").arg(&build_dir));
    let out = run(Command::new(build_dir.join("classify_cpp"))
        .arg(fixture("digits.onnx"))
        .arg(fixture("digits_ref_input.npy"))
        .arg("parity"));
    assert_matches(&out, "parity", "digits_ref_parity.npy");
}

#[test]
fn c_checks_pass_natively_and_under_valgrind() {
    require("valgrind");
    let exe =
        build("gcc", "c11", &[repo().join("ffi/tests/c/check_api.c")], "check_api", "hydrant");
    let fixtures = fixture("");
    let out = run(Command::new(&exe).arg(&fixtures).current_dir(work()));
    assert!(String::from_utf8_lossy(&out.stdout).contains(" 0 failed"));

    let valgrind = |args: &[&std::ffi::OsStr]| {
        let out = run(Command::new("valgrind")
            .args(["--leak-check=full", "--error-exitcode=1"])
            .arg(format!("--suppressions={}", repo().join("ffi/tests/valgrind.supp").display()))
            .args(args)
            .env("HYDRANT_THREADS", "1")
            .current_dir(work()));
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(log.contains("ERROR SUMMARY: 0 errors"), "valgrind:\n{log}");
        out
    };
    let classify = work().join("classify_valgrind");
    run(Command::new("gcc")
        .args(["-std=c11", "-O1", "-g"])
        .arg(example("c/classify.c"))
        .arg("-o")
        .arg(&classify)
        .args(pkg_config(&["--cflags", "--libs", "hydrant"]))
        .arg(format!("-Wl,-rpath,{}", prefix().join("lib").display())));
    let out = valgrind(&[
        classify.as_os_str(),
        fixture("hydranet.onnx").as_os_str(),
        fixture("hydranet_input_b1.npy").as_os_str(),
    ]);
    assert_matches(&out, "cls", "hydranet_b1_cls.npy");
    // check_api also loads models with the default thread count (a rayon pool per model).
    let out = valgrind(&[exe.as_os_str(), fixtures.as_os_str()]);
    assert!(String::from_utf8_lossy(&out.stdout).contains(" 0 failed"));
}

#[test]
fn one_model_runs_from_eight_threads() {
    let exe = build("gcc", "c11", &[repo().join("ffi/tests/c/threads.c")], "threads", "hydrant");
    // Model threads 1 (all parallelism from the callers) and 0 (one per core: each call also
    // spreads its work over the model's pool, shared by the callers).
    for model_threads in ["1", "0"] {
        let out = run(Command::new(&exe).arg(fixture("")).args(["8", "25", model_threads]));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("8 threads x 25 runs: 200 passed, 0 failed"), "{text}");
    }
}

/// The `LABEL: ... accuracy A` value a finetune example printed on the line starting `label`.
fn printed_accuracy(stdout: &[u8], label: &str) -> f64 {
    let text = String::from_utf8_lossy(stdout);
    let line = text.lines().find(|l| l.starts_with(label)).unwrap_or_else(|| panic!("{text}"));
    line.rsplit(' ').next().and_then(|a| a.parse().ok()).unwrap_or_else(|| panic!("{line}"))
}

/// Runs a finetune example and checks what it printed: the head learned the new rule, and the
/// head saved and loaded beside the ONNX file gives the same accuracy as the swapped one.
fn check_finetune(out: &Output) {
    let before = printed_accuracy(&out.stdout, "before:");
    let after = printed_accuracy(&out.stdout, "after:");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(before < 0.8 && after > 0.9, "prime accuracy {before} -> {after}:\n{text}");
    assert_eq!(after, printed_accuracy(&out.stdout, "reloaded:"), "{text}");
    assert_eq!(text.lines().filter(|l| l.starts_with("epoch ")).count(), 8, "{text}");
}

fn finetune_args<'a>(cmd: &'a mut Command, out: &str) -> &'a mut Command {
    cmd.arg(fixture("digits.onnx"))
        .arg(fixture("digits_images.npy"))
        .arg(fixture("digits_labels.npy"))
        .arg(work().join(out))
}

#[test]
fn c_finetune_example_learns_a_new_rule_natively_and_under_valgrind() {
    require("valgrind");
    let exe = build("gcc", "c11", &[example("c/finetune.c")], "finetune", "hydrant");
    check_finetune(&run(finetune_args(&mut Command::new(&exe), "prime_c.safetensors")));
    let out = run(finetune_args(
        Command::new("valgrind")
            .args(["--leak-check=full", "--error-exitcode=1"])
            .arg(format!("--suppressions={}", repo().join("ffi/tests/valgrind.supp").display()))
            .arg(&exe),
        "prime_valgrind.safetensors",
    ));
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(log.contains("ERROR SUMMARY: 0 errors"), "valgrind:\n{log}");
    assert!(
        log.contains("All heap blocks were freed") || log.contains("definitely lost: 0"),
        "{log}"
    );
    check_finetune(&out);
}

#[test]
fn heads_swap_while_eight_threads_run_the_model() {
    let exe = build(
        "gcc",
        "c11",
        &[repo().join("ffi/tests/c/swap_threads.c")],
        "swap_threads",
        "hydrant",
    );
    let dir = work().join("swaps");
    std::fs::create_dir_all(&dir).unwrap();
    let out = run(Command::new(&exe).arg(fixture("")).arg(&dir).args(["8", "17"]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("8 readers, 102 swaps, ") && text.contains(" 0 mismatches"), "{text}");
}

#[test]
fn cpp_finetune_example_trains_through_the_wrapper() {
    let exe = build("g++", "c++17", &[example("cpp/finetune.cpp")], "finetune_cpp", "hydrant");
    let out = run(finetune_args(&mut Command::new(&exe), "digit_cpp.safetensors"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(text.lines().filter(|l| l.starts_with("epoch ")).count(), 3, "{text}");
    assert!(printed_accuracy(&out.stdout, "accuracy") > 0.9, "{text}");
    assert!(work().join("digit_cpp.safetensors").is_file());
}
