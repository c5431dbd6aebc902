//! A team of threads for the many small parallel loops of a forward pass.
//!
//! Decoding one token of a small model runs a few hundred matmuls of tens of microseconds each.
//! Handing each to a general thread pool (inject, wake a sleeping worker, block the caller on a
//! latch) costs about as much as the work. Here the calling thread publishes the loop and takes
//! part in it; helpers that have been busy recently are still spinning and pick tasks up within
//! a fraction of a microsecond; tasks are claimed one at a time from a shared counter, so a helper
//! that is late (descheduled on a loaded machine) delays nothing: the caller does its tasks. Idle
//! helpers spin briefly, then sleep until the next loop.
//!
//! The team has `rayon::current_num_threads() − 1` helpers (the `--threads` setting). A loop
//! started while the team is busy (from another thread, or from inside a task) runs on its
//! caller alone.

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long an idle helper spins before it sleeps: longer than the gaps between the loops of a
/// forward pass, short enough not to burn a core between requests.
const SPIN: Duration = Duration::from_micros(200);

/// Spins of a caller waiting for a helper's last tasks before it starts yielding.
const YIELD_AFTER: u32 = 1 << 14;

/// Runs `f(0)`, …, `f(n − 1)` on the team (the caller included), in no particular order, and
/// returns when all have finished. A panic in any task is resumed here.
pub fn for_each(n: usize, f: impl Fn(usize) + Sync) {
    let team = team();
    if n <= 1 || team.helpers == 0 {
        return (0..n).for_each(f);
    }
    let Ok(_guard) = team.busy.try_lock() else {
        return (0..n).for_each(f);
    };
    for start in (0..n).step_by(MAX_TASKS) {
        let len = MAX_TASKS.min(n - start);
        team.run(len, &|i| f(start + i));
    }
}

/// Runs `f(i, chunk)` for the consecutive `chunk`-element pieces of `data` (the last may be
/// shorter), as [`for_each`] does.
pub fn for_each_chunk_mut<T: Send>(
    data: &mut [T],
    chunk: usize,
    f: impl Fn(usize, &mut [T]) + Sync,
) {
    assert!(chunk > 0);
    let len = data.len();
    let base = SendPtr(data.as_mut_ptr());
    for_each(len.div_ceil(chunk), |i| {
        let start = i * chunk;
        let n = chunk.min(len - start);
        // SAFETY: the pieces are disjoint and inside `data`, which the caller borrows mutably
        // for the whole loop.
        let piece = unsafe { std::slice::from_raw_parts_mut(base.get().add(start), n) };
        f(i, piece)
    });
}

/// [`for_each_chunk_mut`] over two slices in step: task i gets piece i of each (pieces of
/// `chunk_a` and `chunk_b` elements; both slices must have the same number of pieces).
pub fn for_each_chunk_pair_mut<A: Send, B: Send>(
    a: &mut [A],
    chunk_a: usize,
    b: &mut [B],
    chunk_b: usize,
    f: impl Fn(usize, &mut [A], &mut [B]) + Sync,
) {
    assert!(chunk_a > 0 && chunk_b > 0);
    let n = a.len().div_ceil(chunk_a);
    assert_eq!(n, b.len().div_ceil(chunk_b), "pieces of both slices");
    let (la, lb) = (a.len(), b.len());
    let (pa, pb) = (SendPtr(a.as_mut_ptr()), SendPtr(b.as_mut_ptr()));
    for_each(n, |i| {
        let (sa, sb) = (i * chunk_a, i * chunk_b);
        // SAFETY: as in `for_each_chunk_mut`, for each slice.
        let (x, y) = unsafe {
            (
                std::slice::from_raw_parts_mut(pa.get().add(sa), chunk_a.min(la - sa)),
                std::slice::from_raw_parts_mut(pb.get().add(sb), chunk_b.min(lb - sb)),
            )
        };
        f(i, x, y)
    });
}

struct SendPtr<T>(*mut T);
impl<T> Clone for SendPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SendPtr<T> {}
// SAFETY: used only to hand out disjoint pieces of a slice that is Send.
unsafe impl<T: Send> Send for SendPtr<T> {}
unsafe impl<T: Send> Sync for SendPtr<T> {}
impl<T> SendPtr<T> {
    fn get(self) -> *mut T {
        self.0
    }
}

/// Threads that run loops, the caller included.
pub fn threads() -> usize {
    team().helpers + 1
}

/// Tasks of one published loop (16 bits of the state word).
const MAX_TASKS: usize = 0xFFFF;

struct Team {
    helpers: usize,
    /// Held by the thread whose loop is running.
    busy: Mutex<()>,
    shared: &'static Shared,
}

/// What the helpers see. `state` packs a loop sequence number (bits 32-63), the loop's task
/// count (16-31) and its next unclaimed task (0-15): a task is claimed by one compare-exchange of
/// the whole word, which succeeds only while that loop has tasks left. The caller stores the
/// loop's closure before it publishes the word and waits until every claimed task is done
/// before it returns, so a claimed task always finds its own loop's closure alive in `f`.
struct Shared {
    state: AtomicU64,
    /// Points to the caller's `&dyn Fn` for the running loop.
    f: AtomicPtr<TaskRef>,
    done: AtomicUsize,
    panicked: AtomicBool,
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
}

type TaskRef = &'static (dyn Fn(usize) + Sync);

fn team() -> &'static Team {
    static TEAM: OnceLock<Team> = OnceLock::new();
    TEAM.get_or_init(|| {
        let shared: &'static Shared = Box::leak(Box::new(Shared {
            state: AtomicU64::new(0),
            f: AtomicPtr::new(std::ptr::null_mut()),
            done: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            sleepers: AtomicUsize::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
        }));
        let helpers = rayon::current_num_threads().saturating_sub(1);
        for i in 0..helpers {
            std::thread::Builder::new()
                .name(format!("kernels-team-{i}"))
                .spawn(move || helper(shared))
                .expect("spawning a team thread");
        }
        Team {
            helpers,
            busy: Mutex::new(()),
            shared,
        }
    })
}

impl Team {
    fn run(&self, n: usize, f: &(dyn Fn(usize) + Sync)) {
        let s = self.shared;
        debug_assert!((2..=MAX_TASKS).contains(&n));
        // SAFETY (lifetime extension): `f` is only called for tasks of this loop, all of which
        // finish before this function returns.
        let mut task: TaskRef = unsafe { std::mem::transmute(f) };
        s.f.store(&mut task, Ordering::Relaxed);
        s.done.store(0, Ordering::Relaxed);
        s.panicked.store(false, Ordering::Relaxed);
        let epoch = (s.state.load(Ordering::Relaxed) >> 32).wrapping_add(1) & 0xFFFF_FFFF;
        s.state
            .store(epoch << 32 | (n as u64) << 16, Ordering::SeqCst);
        if s.sleepers.load(Ordering::SeqCst) > 0 {
            let _l = s.lock.lock().unwrap();
            s.wake.notify_all();
        }
        let mine = work(s);
        s.done.fetch_add(mine, Ordering::AcqRel);
        // Only tasks a helper has claimed are left: wait for them, yielding the core once the
        // wait is long (the helper was descheduled on a loaded machine).
        let mut spins = 0u32;
        while s.done.load(Ordering::Acquire) < n {
            spins += 1;
            if spins > YIELD_AFTER {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        if s.panicked.load(Ordering::Relaxed) {
            resume_unwind(Box::new("a task of a parallel loop panicked"));
        }
    }
}

/// Claims and runs tasks of the running loop until none are left; returns how many it ran.
fn work(s: &Shared) -> usize {
    let mut ran = 0;
    let mut cur = s.state.load(Ordering::Acquire);
    loop {
        let (n, next) = ((cur >> 16) & 0xFFFF, cur & 0xFFFF);
        if next >= n {
            return ran;
        }
        match s
            .state
            .compare_exchange_weak(cur, cur + 1, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => {
                // SAFETY: the claim succeeded, so the loop that stored `f` is still running
                // and waits for this task (see `Shared`).
                let f = unsafe { *s.f.load(Ordering::Acquire) };
                if catch_unwind(AssertUnwindSafe(|| f(next as usize))).is_err() {
                    s.panicked.store(true, Ordering::Relaxed);
                }
                ran += 1;
                cur = s.state.load(Ordering::Acquire);
            }
            Err(now) => cur = now,
        }
    }
}

fn helper(s: &'static Shared) {
    let mut seen = 0u64;
    loop {
        // Wait for a new loop: spin, then sleep.
        let start = Instant::now();
        let mut cur = s.state.load(Ordering::Acquire);
        let mut spins = 0u32;
        while cur >> 32 == seen {
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(64) && start.elapsed() > SPIN {
                let mut l = s.lock.lock().unwrap();
                s.sleepers.fetch_add(1, Ordering::SeqCst);
                while s.state.load(Ordering::SeqCst) >> 32 == seen {
                    l = s.wake.wait(l).unwrap();
                }
                s.sleepers.fetch_sub(1, Ordering::SeqCst);
            }
            std::hint::spin_loop();
            cur = s.state.load(Ordering::Acquire);
        }
        seen = cur >> 32;
        let ran = work(s);
        s.done.fetch_add(ran, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_every_task_once_including_nested_and_concurrent_loops() {
        for n in [0, 1, 2, 7, 100, 1000] {
            let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
            for_each(n, |i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
                // A loop inside a task runs on its caller alone.
                let inner = AtomicUsize::new(0);
                for_each(3, |_| {
                    inner.fetch_add(1, Ordering::Relaxed);
                });
                assert_eq!(inner.load(Ordering::Relaxed), 3);
            });
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1), "n={n}");
        }
        let total = AtomicUsize::new(0);
        std::thread::scope(|sc| {
            for _ in 0..4 {
                sc.spawn(|| {
                    for _ in 0..50 {
                        for_each(10, |_| {
                            total.fetch_add(1, Ordering::Relaxed);
                        });
                    }
                });
            }
        });
        assert_eq!(total.load(Ordering::Relaxed), 4 * 50 * 10);
    }

    #[test]
    fn a_panicking_task_panics_the_caller_and_the_team_recovers() {
        let r = catch_unwind(|| for_each(50, |i| assert!(i != 17)));
        assert!(r.is_err());
        let count = AtomicUsize::new(0);
        for_each(50, |_| {
            count.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(count.load(Ordering::Relaxed), 50);
    }
}
