//! Crash safety of [`HeadSet::save`]: a child process (this test binary, re-run in saver mode)
//! saves two versions of a 4 MiB head file in turn over one path, and is killed with SIGKILL at
//! random moments spanning several saves. After every kill the file must load and equal one of
//! the two versions exactly; temporary files left by interrupted saves must not stop later saves.

use hydrant::train::head::Init;
use hydrant::{HeadSet, HeadSpec, LayerSpec};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Environment variable that puts the binary in saver mode, naming the file to save to.
const SAVER_ENV: &str = "HYDRANT_CRASH_SAVER_PATH";
/// Kill trials.
const TRIALS: usize = 120;

/// Version `v` (0 or 1) of the heads: one 1024 → 1024 linear head, 4 MiB of weights.
fn version(v: u64) -> HeadSet {
    let layers = vec![LayerSpec::Linear { in_features: 1024, out_features: 1024, bias: true }];
    let spec = HeadSpec::new("big", "features", layers, None);
    HeadSet::new(vec![hydrant::Head::init(spec, Init::PyTorch, 7 + v).unwrap()])
}

/// Saver mode: announces itself, then saves version 1, 0, 1, … until killed.
#[test]
fn saver_child() {
    let Ok(path) = std::env::var(SAVER_ENV) else { return };
    let sets = [version(0), version(1)];
    println!("ready");
    for i in 1.. {
        sets[i % 2].save(&path).unwrap();
    }
}

/// Same heads, and every tensor the same bits.
fn bit_equal(a: &HeadSet, b: &HeadSet) -> bool {
    let bits = |s: &HeadSet| -> Vec<(String, Vec<usize>, Vec<u32>)> {
        s.heads
            .iter()
            .flat_map(|h| h.tensors().iter().map(move |(n, t)| (h.name(), n, t)))
            .map(|(h, n, t)| {
                let v = t.to_f32();
                let v = v.as_slice::<f32>().unwrap().iter().map(|x| x.to_bits()).collect();
                (format!("{h}.{n}"), t.shape().to_vec(), v)
            })
            .collect()
    };
    a.heads.iter().map(|h| h.spec()).eq(b.heads.iter().map(|h| h.spec())) && bits(a) == bits(b)
}

fn temporaries(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().contains(".tmp-"))
        .count()
}

#[cfg(unix)]
#[test]
fn a_save_killed_at_any_moment_leaves_the_old_or_the_new_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("heads.safetensors");
    let versions = [version(0), version(1)];
    // How long one save takes here: the kills are spread over about three of them.
    let t = Instant::now();
    versions[0].save(&path).unwrap();
    let save = t.elapsed().max(Duration::from_millis(1));
    let exe = std::env::current_exe().unwrap();
    let mut rng = 0x853C_49E6_748F_EA9Bu64;
    let (mut mid_save, mut seen) = (0, [0usize; 2]);
    for trial in 0..TRIALS {
        let before = temporaries(dir.path());
        let mut child = Command::new(&exe)
            .args(["--exact", "saver_child", "--nocapture", "--test-threads=1"])
            .env(SAVER_ENV, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        while !line.contains("ready") {
            line.clear();
            assert!(out.read_line(&mut line).unwrap() > 0, "saver exited early");
        }
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let delay = save.mul_f64(3.0 * (rng % 1000) as f64 / 1000.0);
        std::thread::sleep(delay);
        // SAFETY: kill(2) on the pid of a child this test spawned and has not reaped.
        let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
        assert_eq!(rc, 0, "kill failed");
        child.wait().unwrap();
        if temporaries(dir.path()) > before {
            mid_save += 1;
        }
        let loaded = HeadSet::load(&path)
            .unwrap_or_else(|e| panic!("trial {trial}: the file does not load after a kill: {e}"));
        let which = versions
            .iter()
            .position(|v| bit_equal(v, &loaded))
            .unwrap_or_else(|| panic!("trial {trial}: the file is neither version"));
        seen[which] += 1;
    }
    // Stale temporaries do not break later saves nor the file.
    let stale = temporaries(dir.path());
    versions[1].save(&path).unwrap();
    assert!(bit_equal(&HeadSet::load(&path).unwrap(), &versions[1]));
    assert_eq!(temporaries(dir.path()), stale, "a save must remove its own temporary only");
    eprintln!(
        "{TRIALS} kills over saves of {save:?}: {mid_save} left a temporary (killed mid-save), \
         file was version 0 {} times, version 1 {} times",
        seen[0], seen[1]
    );
    assert!(mid_save > 0, "no kill landed inside a save; the delays do not span the save");
    assert!(seen[0] > 0 && seen[1] > 0, "kills landed on one version only: {seen:?}");
}
