//! The threads hydrant's own ops split their jobs over.
//!
//! A model runs dozens of ops of 50–500 µs each. A pool whose idle threads sleep at once pays
//! a wake-up per op and thread (a futex and, on virtual machines, an inter-processor interrupt:
//! tens of µs), and the caller ends up doing most of the work alone. Here idle threads spin
//! (yielding the core to any other runnable thread) for [`SPIN`] after their last job before
//! sleeping, so the next op of the same run finds them awake; the calling thread takes jobs too, so a thread that is late costs nothing but its
//! share.
//!
//! One job set runs at a time: a second caller arriving while one runs computes its jobs
//! alone. A panicking job does not kill its thread: the panic is carried to the caller once
//! every job of the set has finished.

use std::any::Any;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A panic's payload.
type Panic = Box<dyn Any + Send>;

/// How long an idle thread spins before it sleeps.
pub const SPIN: Duration = Duration::from_micros(300);

/// A job set as the threads see it: the closure with its lifetime erased (see
/// [`SpinPool::for_each`] for why that is sound) and the number of jobs.
#[derive(Clone, Copy)]
struct JobSet {
    f: *const (dyn Fn(usize) + Sync),
    jobs: usize,
}

// SAFETY: the closure is `Sync`, and `for_each` keeps it alive until no thread can reach it.
unsafe impl Send for JobSet {}

#[derive(Default)]
struct State {
    /// The running job set, if any.
    current: Option<JobSet>,
    /// Published job sets so far: a thread compares it with the last one it joined.
    epoch: usize,
    /// Threads inside the current set (they hold its closure).
    inside: usize,
    /// Threads asleep on `wake`.
    sleeping: usize,
    /// The first panic of the current set on a pool thread.
    panic: Option<Panic>,
    stop: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    /// `State::epoch`, readable without the lock (spinning threads poll it).
    epoch: AtomicUsize,
    /// Next job index to take.
    next: AtomicUsize,
    /// Jobs of the current set not finished yet.
    pending: AtomicUsize,
}

/// A pool of `threads - 1` spinning threads plus the caller of [`SpinPool::for_each`].
pub struct SpinPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for SpinPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SpinPool({} threads)", self.threads())
    }
}

impl SpinPool {
    /// A pool computing on `threads` threads in all (the caller included): `threads - 1` are
    /// started here. `None` when a thread cannot be started.
    pub fn new(threads: usize) -> Option<SpinPool> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            epoch: AtomicUsize::new(0),
            next: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
        });
        let mut pool = SpinPool { shared, workers: vec![] };
        for i in 1..threads.max(1) {
            let shared = pool.shared.clone();
            let name = format!("hydrant-ops-{i}");
            pool.workers.push(std::thread::Builder::new().name(name).spawn(|| work(shared)).ok()?);
        }
        Some(pool)
    }

    /// Threads that compute a job set, the caller included.
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Calls `f(i)` for every `i < jobs`, on the pool's threads and the caller's; returns when
    /// all calls have returned (and re-raises the first panic of one).
    pub fn for_each(&self, jobs: usize, f: &(dyn Fn(usize) + Sync)) {
        if jobs <= 1 || self.workers.is_empty() {
            return (0..jobs).for_each(f);
        }
        let sh = &*self.shared;
        {
            let mut st = lock(&sh.state);
            if st.current.is_some() || st.stop {
                drop(st);
                return (0..jobs).for_each(f);
            }
            // SAFETY (of the erased lifetime): the threads reach `f` only through
            // `State::current` while counted in `State::inside`; below, `current` is cleared
            // and `inside` awaited to be zero before this function returns, so no thread holds
            // `f` after the borrow ends.
            let f: *const (dyn Fn(usize) + Sync + '_) = f;
            let erased: *const (dyn Fn(usize) + Sync) = unsafe { std::mem::transmute(f) };
            sh.next.store(0, Ordering::Relaxed);
            sh.pending.store(jobs, Ordering::Relaxed);
            st.current = Some(JobSet { f: erased, jobs });
            st.epoch += 1;
            sh.epoch.store(st.epoch, Ordering::Release);
            if st.sleeping > 0 {
                sh.wake.notify_all();
            }
        }
        let mine = take_jobs(sh, jobs, f);
        // Wait for the jobs other threads took, then for them to leave the set.
        while sh.pending.load(Ordering::Acquire) > 0 {
            std::hint::spin_loop();
        }
        let panic = {
            let mut st = lock(&sh.state);
            st.current = None;
            while st.inside > 0 {
                drop(st);
                std::hint::spin_loop();
                st = lock(&sh.state);
            }
            st.panic.take()
        };
        if let Some(p) = mine.or(panic) {
            resume_unwind(p);
        }
    }
}

impl Drop for SpinPool {
    fn drop(&mut self) {
        lock(&self.shared.state).stop = true;
        self.shared.wake.notify_all();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// The state, also when a thread panicked while holding the lock (the state stays
/// consistent: every update is a single assignment).
fn lock(m: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Takes job indices until none is left; each finished one counts down `pending`. A job that
/// panics counts as finished too (the caller must not wait for it forever), and the others
/// still run; the first panic is returned.
fn take_jobs(sh: &Shared, jobs: usize, f: &(dyn Fn(usize) + Sync)) -> Option<Panic> {
    let mut first = None;
    loop {
        let i = sh.next.fetch_add(1, Ordering::Relaxed);
        if i >= jobs {
            return first;
        }
        let done = catch_unwind(AssertUnwindSafe(|| f(i)));
        sh.pending.fetch_sub(1, Ordering::Release);
        if let Err(p) = done {
            first.get_or_insert(p);
        }
    }
}

/// A pool thread: wait for a new job set (spinning, then asleep), join it, repeat.
fn work(sh: Arc<Shared>) {
    let mut seen = 0;
    loop {
        let spin_until = Instant::now() + SPIN;
        // Yielding while spinning leaves the core to any other runnable thread (tract's own
        // threads run the ops between ours).
        while sh.epoch.load(Ordering::Acquire) == seen && Instant::now() < spin_until {
            std::thread::yield_now();
        }
        let set = {
            let mut st = lock(&sh.state);
            while st.epoch == seen && !st.stop {
                st.sleeping += 1;
                st = sh.wake.wait(st).unwrap_or_else(|e| e.into_inner());
                st.sleeping -= 1;
            }
            if st.stop {
                return;
            }
            seen = st.epoch;
            match st.current {
                Some(set) => {
                    st.inside += 1;
                    set
                }
                // Already finished by the others.
                None => continue,
            }
        };
        // SAFETY: counted in `inside`, so `for_each` keeps the closure alive (see there).
        let f = unsafe { &*set.f };
        let panic = take_jobs(&sh, set.jobs, f);
        let mut st = lock(&sh.state);
        if let Some(p) = panic {
            st.panic.get_or_insert(p);
        }
        st.inside -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn every_job_runs_once_over_many_sets() {
        let pool = SpinPool::new(3).unwrap();
        for jobs in [0, 1, 2, 3, 7, 64, 1000] {
            for _ in 0..50 {
                let hits: Vec<AtomicU64> = (0..jobs).map(|_| AtomicU64::new(0)).collect();
                pool.for_each(jobs, &|i| {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                });
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1), "{jobs} jobs");
            }
        }
    }

    #[test]
    fn sleeping_threads_wake_for_the_next_set() {
        let pool = SpinPool::new(2).unwrap();
        std::thread::sleep(SPIN * 4);
        let threads = Mutex::new(std::collections::HashSet::new());
        // Jobs long enough for the woken thread to take some.
        pool.for_each(64, &|_| {
            std::thread::sleep(Duration::from_millis(1));
            lock_set(&threads).insert(std::thread::current().id());
        });
        assert_eq!(lock_set(&threads).len(), 2, "the sleeping thread took no job");
    }

    fn lock_set<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap()
    }

    #[test]
    fn concurrent_callers_each_get_all_their_jobs_done() {
        let pool = SpinPool::new(2).unwrap();
        let total = AtomicU64::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..200 {
                        pool.for_each(16, &|i| {
                            total.fetch_add(i as u64, Ordering::Relaxed);
                        });
                    }
                });
            }
        });
        assert_eq!(total.load(Ordering::Relaxed), 4 * 200 * (0..16).sum::<u64>());
    }

    #[test]
    fn a_panicking_job_reaches_the_caller_and_the_pool_goes_on() {
        let pool = SpinPool::new(2).unwrap();
        let caught = catch_unwind(AssertUnwindSafe(|| {
            pool.for_each(32, &|i| {
                if i == 17 {
                    panic!("job 17");
                }
            })
        }));
        assert!(caught.is_err());
        let count = AtomicU64::new(0);
        pool.for_each(32, &|_| {
            count.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(count.load(Ordering::Relaxed), 32);
    }
}
