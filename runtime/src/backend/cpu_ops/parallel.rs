//! Running independent jobs on the model's threads: its [`SpinPool`] where one is current
//! ([`with_pool`]), else tract's executor.

use super::spin_pool::SpinPool;
use rayon::prelude::*;
use std::cell::RefCell;
use std::sync::Arc;
use tract_linalg::multithread::{current_tract_executor, Executor};

thread_local! {
    static POOL: RefCell<Option<Arc<SpinPool>>> = const { RefCell::new(None) };
}

/// Runs `f` with `pool` as this thread's pool for [`for_each`] (`None`: tract's executor).
pub fn with_pool<R>(pool: Option<&Arc<SpinPool>>, f: impl FnOnce() -> R) -> R {
    let previous = POOL.with(|p| p.replace(pool.cloned()));
    // Restored also when `f` unwinds.
    struct Restore(Option<Arc<SpinPool>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            POOL.with(|p| *p.borrow_mut() = previous);
        }
    }
    let _restore = Restore(previous);
    f()
}

fn current_pool() -> Option<Arc<SpinPool>> {
    POOL.with(|p| p.borrow().clone())
}

/// Threads the current pool or executor offers.
pub fn threads() -> usize {
    if let Some(pool) = current_pool() {
        return pool.threads();
    }
    match current_tract_executor() {
        Executor::MultiThread(pool) => pool.current_num_threads(),
        Executor::RayonGlobal => rayon::current_num_threads(),
        Executor::SingleThread => 1,
    }
}

/// Into how many parts each block's output-channel panels are split, so that `blocks` blocks
/// of work give every thread at least two jobs (1 with one thread or enough blocks; at most
/// `panels`).
pub fn channel_split(blocks: usize, panels: usize) -> usize {
    let threads = threads();
    if threads == 1 || blocks >= 2 * threads {
        1
    } else {
        (2 * threads).div_ceil(blocks.max(1)).min(panels)
    }
}

/// Calls `f(i)` for every `i < jobs`, spread over the current executor's threads.
pub fn for_each(jobs: usize, f: impl Fn(usize) + Sync + Send) {
    if jobs <= 1 {
        (0..jobs).for_each(f);
        return;
    }
    if let Some(pool) = current_pool() {
        return pool.for_each(jobs, &f);
    }
    match current_tract_executor() {
        Executor::MultiThread(pool) if pool.current_num_threads() > 1 => {
            pool.install(|| (0..jobs).into_par_iter().for_each(f))
        }
        Executor::RayonGlobal => (0..jobs).into_par_iter().for_each(f),
        _ => (0..jobs).for_each(f),
    }
}

/// A raw view of an output buffer that several jobs write at disjoint positions.
#[derive(Clone, Copy)]
pub struct SharedOut {
    ptr: *mut f32,
    len: usize,
}

// SAFETY: jobs given a `SharedOut` write disjoint index sets (each caller documents its split),
// and the buffer outlives the jobs (`for_each` returns after all of them).
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// Wraps `buf`; the borrow must outlive every job using the view.
    pub fn new(buf: &mut [f32]) -> SharedOut {
        SharedOut { ptr: buf.as_mut_ptr(), len: buf.len() }
    }

    /// A pointer to the `len` values from `start`, for kernels that write them with vector
    /// stores; panics if they reach past the buffer. Writing through it is subject to the
    /// rule of [`SharedOut::slice`].
    pub fn span(&self, start: usize, len: usize) -> *mut f32 {
        assert!(start + len <= self.len, "output range {start}+{len} beyond {}", self.len);
        self.ptr.wrapping_add(start)
    }

    /// The `len` values from `start`, as a slice.
    ///
    /// # Safety
    /// No other job may access any of these positions while the slice lives.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn slice(&self, start: usize, len: usize) -> &mut [f32] {
        assert!(start + len <= self.len, "output range {start}+{len} beyond {}", self.len);
        std::slice::from_raw_parts_mut(self.ptr.add(start), len)
    }
}
