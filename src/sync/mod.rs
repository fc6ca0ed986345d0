//! The one switch between real and model-checked concurrency.
//!
//! Every other module takes its atomics, locks, cells, threads, thread-locals, work-stealing
//! deques and the concurrent name map from here, and nowhere else (CI greps for strays).
//! Normally they are `std`, `crossbeam-deque` and `dashmap`; under `--cfg loom` they are
//! loom's types and small loom-visible stand-ins with the same API (loom cannot look inside
//! crossbeam or dashmap), so the models in `loom_tests/` explore the crate's own logic.
//!
//! The primitives the crate builds on the switch live in files of their own: [`SpinLock`],
//! [`SleepFlag`] (the no-lost-wake-up protocol of a thread that sleeps in `epoll_wait`),
//! [`IdleWorkers`] (how many workers of a pool sleep) and [`NameMap`].

mod idle_workers;
#[cfg(loom)]
mod loom_deque;
mod name_map;
#[cfg(loom)]
mod once_lock;
mod sleep_flag;
mod spin_lock;

pub(crate) use idle_workers::IdleWorkers;
pub(crate) use name_map::NameMap;
pub(crate) use sleep_flag::SleepFlag;
pub(crate) use spin_lock::{SpinGuard, SpinLock};

/// Reference counting stays `std`'s in both modes: tasks and addresses are trait objects made
/// by unsizing an `Arc`, which loom's `Arc` cannot do, and counting is not what the models
/// check.
pub(crate) use std::sync::{Arc, Weak};

#[cfg(not(loom))]
pub(crate) use std::sync::{
    Condvar, Mutex, MutexGuard, OnceLock,
    atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering, fence},
    mpsc,
};

#[cfg(loom)]
pub(crate) use loom::sync::{
    Condvar, Mutex, MutexGuard,
    atomic::{AtomicBool, AtomicPtr, AtomicU8, AtomicU64, AtomicUsize, Ordering, fence},
    mpsc,
};
#[cfg(loom)]
pub(crate) use once_lock::OnceLock;

/// Atomics that loom does not model, in both modes: for marks that only reports read (the
/// watchdog's view of each worker's turn), which no correctness argument rests on. Modelling
/// them would only multiply the interleavings of every model.
pub(crate) mod unmodelled {
    pub(crate) use std::sync::atomic::AtomicU64;
}

/// Threads: `std::thread`, or loom's model threads.
pub(crate) mod thread {
    #[cfg(not(loom))]
    pub(crate) use std::thread::{Builder, JoinHandle, available_parallelism};

    #[cfg(loom)]
    pub(crate) use loom::thread::{Builder, JoinHandle, yield_now};

    /// Whether this thread is unwinding (the test kit prints the failing seed then).
    #[cfg(all(feature = "testkit", not(loom)))]
    pub(crate) use std::thread::panicking;

    /// Under loom the models choose their own thread counts.
    #[cfg(loom)]
    pub(crate) fn available_parallelism() -> std::io::Result<std::num::NonZeroUsize> {
        Ok(std::num::NonZeroUsize::MIN)
    }

    /// Sleeps a while: a real sleep, or under loom a yield (the model has no clock; a loop
    /// that sleeps until a condition holds becomes a loop that lets the others run).
    pub(crate) fn pause(d: std::time::Duration) {
        #[cfg(not(loom))]
        std::thread::sleep(d);
        #[cfg(loom)]
        {
            let _ = d;
            loom::thread::yield_now();
        }
    }
}

/// `thread_local!`: std's, or loom's (loom's threads are not OS threads). Takes one
/// `static` with a `const { … }` initialiser.
#[cfg(not(loom))]
pub(crate) use std::thread_local;

#[cfg(loom)]
macro_rules! loom_thread_local {
    ($(#[$attr:meta])* $vis:vis static $name:ident: $t:ty = const { $init:expr };) => {
        loom::thread_local! {
            $(#[$attr])* $vis static $name: $t = $init;
        }
    };
}

#[cfg(loom)]
pub(crate) use loom_thread_local as thread_local;

/// A process-wide value made on first use, as `&'static T`: a `static` `OnceLock`, or under
/// loom a loom `lazy_static` (made anew for each execution of a model).
#[cfg(not(loom))]
macro_rules! lazy_global {
    ($t:ty, $init:expr) => {{
        static CELL: std::sync::OnceLock<$t> = std::sync::OnceLock::new();
        CELL.get_or_init(|| $init)
    }};
}

#[cfg(loom)]
macro_rules! lazy_global {
    ($t:ty, $init:expr) => {{
        loom::lazy_static! {
            static ref CELL: $t = $init;
        }
        &*CELL
    }};
}

pub(crate) use lazy_global;

/// An `UnsafeCell` with loom's closure-based access API, so that loom can check every access.
#[cfg(not(loom))]
#[derive(Debug)]
pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(loom))]
impl<T> UnsafeCell<T> {
    pub(crate) const fn new(value: T) -> UnsafeCell<T> {
        UnsafeCell(std::cell::UnsafeCell::new(value))
    }

    /// Calls `f` with a mutable pointer to the value; the caller guarantees exclusivity.
    #[inline]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

#[cfg(loom)]
pub(crate) use loom::cell::UnsafeCell;

/// Work-stealing deques: `crossbeam-deque`, or a mutex-based stand-in under loom.
pub(crate) mod deque {
    #[cfg(not(loom))]
    pub(crate) use crossbeam_deque::{Injector, Steal, Stealer, Worker};

    #[cfg(loom)]
    pub(crate) use super::loom_deque::{Injector, Steal, Stealer, Worker};
}

/// Capacities that shrink under loom so that the models reach the edges (a full chunk, a
/// second chunk) within a few operations, as tokio does. The logic is the same in both modes.
pub(crate) mod capacity {
    /// Socket slots per lazily allocated chunk of a socket table.
    pub(crate) const SOCKET_CHUNK: usize = if cfg!(loom) { 2 } else { 1024 };
    /// Chunks per socket table.
    pub(crate) const SOCKET_CHUNKS: usize = if cfg!(loom) { 2 } else { 1024 };
    /// Socket tables (systems alive at once) per process.
    pub(crate) const SOCKET_TABLES: usize = if cfg!(loom) { 4 } else { 4096 };
}
