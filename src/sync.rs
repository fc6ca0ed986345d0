//! The one switch between real and model-checked concurrency.
//!
//! Every other module takes its atomics, locks, cells, work-stealing deques and the
//! concurrent name map from here. Normally they are `std`, `crossbeam-deque` and `dashmap`;
//! under `--cfg loom` they are loom's types and small loom-visible stand-ins with the same API
//! (loom cannot look inside crossbeam or dashmap), so the models in `loom_tests/` explore the
//! crate's own logic.

/// Reference counting stays `std`'s in both modes: tasks and addresses are trait objects made
/// by unsizing an `Arc`, which loom's `Arc` cannot do, and counting is not what the models
/// check.
pub(crate) use std::sync::Arc;

#[cfg(not(loom))]
pub(crate) use std::sync::{
    Mutex,
    atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering, fence},
};

#[cfg(loom)]
pub(crate) use loom::sync::{
    Mutex, MutexGuard,
    atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering, fence},
};

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

#[cfg(loom)]
mod loom_deque {
    use super::{Arc, Mutex};
    use std::collections::VecDeque;

    pub(crate) enum Steal<T> {
        Empty,
        Success(T),
        #[allow(dead_code)]
        Retry,
    }

    impl<T> Steal<T> {
        pub(crate) fn success(self) -> Option<T> {
            match self {
                Steal::Success(t) => Some(t),
                _ => None,
            }
        }
        pub(crate) fn is_retry(&self) -> bool {
            matches!(self, Steal::Retry)
        }
    }

    pub(crate) struct Worker<T> {
        q: Arc<Mutex<VecDeque<T>>>,
    }
    pub(crate) struct Stealer<T> {
        q: Arc<Mutex<VecDeque<T>>>,
    }
    pub(crate) struct Injector<T> {
        q: Mutex<VecDeque<T>>,
    }

    impl<T> Worker<T> {
        pub(crate) fn new_fifo() -> Worker<T> {
            Worker {
                q: Arc::new(Mutex::new(VecDeque::new())),
            }
        }
        pub(crate) fn push(&self, t: T) {
            self.q.lock().unwrap().push_back(t);
        }
        pub(crate) fn pop(&self) -> Option<T> {
            self.q.lock().unwrap().pop_front()
        }
        pub(crate) fn stealer(&self) -> Stealer<T> {
            Stealer { q: self.q.clone() }
        }
        pub(crate) fn is_empty(&self) -> bool {
            self.q.lock().unwrap().is_empty()
        }
    }

    impl<T> Stealer<T> {
        pub(crate) fn steal(&self) -> Steal<T> {
            match self.q.lock().unwrap().pop_front() {
                Some(t) => Steal::Success(t),
                None => Steal::Empty,
            }
        }
        pub(crate) fn steal_batch_and_pop(&self, _dest: &Worker<T>) -> Steal<T> {
            self.steal()
        }
        pub(crate) fn is_empty(&self) -> bool {
            self.q.lock().unwrap().is_empty()
        }
    }

    impl<T> Injector<T> {
        pub(crate) fn steal_batch_and_pop(&self, _dest: &Worker<T>) -> Steal<T> {
            self.steal()
        }
        pub(crate) fn new() -> Injector<T> {
            Injector {
                q: Mutex::new(VecDeque::new()),
            }
        }
        pub(crate) fn push(&self, t: T) {
            self.q.lock().unwrap().push_back(t);
        }
        pub(crate) fn steal(&self) -> Steal<T> {
            match self.q.lock().unwrap().pop_front() {
                Some(t) => Steal::Success(t),
                None => Steal::Empty,
            }
        }
        pub(crate) fn is_empty(&self) -> bool {
            self.q.lock().unwrap().is_empty()
        }
    }
}

/// A concurrent map from names to values: `dashmap`, or a mutex-guarded `HashMap` under loom.
pub struct NameMap<V> {
    #[cfg(not(loom))]
    map: dashmap::DashMap<String, V>,
    #[cfg(loom)]
    map: Mutex<std::collections::HashMap<String, V>>,
}

impl<V: Clone> NameMap<V> {
    pub fn new() -> NameMap<V> {
        NameMap {
            #[cfg(not(loom))]
            map: dashmap::DashMap::new(),
            #[cfg(loom)]
            map: Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// Inserts `value` under `name` unless the name is taken; hands the value back if it is.
    pub fn try_insert(&self, name: &str, value: V) -> Result<(), V> {
        #[cfg(not(loom))]
        {
            match self.map.entry(name.to_owned()) {
                dashmap::Entry::Occupied(_) => Err(value),
                dashmap::Entry::Vacant(slot) => {
                    slot.insert(value);
                    Ok(())
                }
            }
        }
        #[cfg(loom)]
        {
            let mut map = self.map.lock().unwrap();
            if map.contains_key(name) {
                return Err(value);
            }
            map.insert(name.to_owned(), value);
            Ok(())
        }
    }

    pub fn get(&self, name: &str) -> Option<V> {
        #[cfg(not(loom))]
        {
            self.map.get(name).map(|v| v.value().clone())
        }
        #[cfg(loom)]
        {
            self.map.lock().unwrap().get(name).cloned()
        }
    }

    /// Removes `name` only if `pred` holds for its value (so a stopping actor frees its own
    /// name and never a newer holder's).
    pub fn remove_if(&self, name: &str, pred: impl FnOnce(&V) -> bool) -> bool {
        #[cfg(not(loom))]
        {
            self.map.remove_if(name, |_, v| pred(v)).is_some()
        }
        #[cfg(loom)]
        {
            let mut map = self.map.lock().unwrap();
            if map.get(name).is_some_and(pred) {
                map.remove(name);
                true
            } else {
                false
            }
        }
    }

    pub fn len(&self) -> usize {
        #[cfg(not(loom))]
        {
            self.map.len()
        }
        #[cfg(loom)]
        {
            self.map.lock().unwrap().len()
        }
    }
}

/// The sleeping flag of a thread that blocks in `epoll_wait` (a worker, or any engine), and
/// the protocol around it that makes wake-ups impossible to lose:
///
/// - the sleeper calls [`SleepFlag::announce`] (flag up, then a `SeqCst` fence), then looks
///   for work once more, and only blocks if it finds none;
/// - a producer makes its work visible, then calls [`SleepFlag::claim_wake`] (a `SeqCst` fence,
///   then clears the flag) and signals the sleeper only if the flag was up.
///
/// Either the sleeper's last look sees the work, or the producer sees the flag. The models in
/// `loom_tests/` check this with a stand-in for the eventfd.
pub struct SleepFlag {
    sleeping: AtomicBool,
}

impl SleepFlag {
    pub fn new() -> SleepFlag {
        SleepFlag {
            sleeping: AtomicBool::new(false),
        }
    }

    /// About to block: raise the flag; look for work after this returns.
    pub fn announce(&self) {
        self.sleeping.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
    }

    /// Not blocking after all, or woke up: lower the flag.
    pub fn retract(&self) {
        self.sleeping.store(false, Ordering::SeqCst);
    }

    /// After making work visible: true if the sleeper must be signalled (the flag was up;
    /// exactly one producer gets true per announcement).
    pub fn claim_wake(&self) -> bool {
        fence(Ordering::SeqCst);
        self.sleeping.swap(false, Ordering::SeqCst)
    }
}

/// The pool-wide half of parking: how many workers sleep. A producer that made work visible
/// asks [`IdleWorkers::should_wake`] and, if so, wakes one sleeper by claiming its
/// [`SleepFlag`]; a woken worker that takes a task and sees more wakes the next one (see the
/// scheduler), so tasks left behind by a worker that then blocks in a handler are not
/// stranded. Checked in `loom_tests/`.
///
/// (Suppressing further wake-ups while a woken worker has not yet looked for work saves
/// wake-ups in bursts, but the loom model found it can strand a task while every other worker
/// sleeps; it is not done.)
pub struct IdleWorkers {
    sleepers: AtomicUsize,
}

impl IdleWorkers {
    pub fn new() -> IdleWorkers {
        IdleWorkers {
            sleepers: AtomicUsize::new(0),
        }
    }

    /// A worker is about to sleep (called before it raises its own [`SleepFlag`]).
    pub fn going_to_sleep(&self) {
        self.sleepers.fetch_add(1, Ordering::SeqCst);
    }

    /// A worker's wait has returned.
    pub fn woke_up(&self) {
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
    }

    /// After making work visible: true if some worker may be asleep, so the caller should
    /// wake one (by claiming its [`SleepFlag`]).
    pub fn should_wake(&self) -> bool {
        fence(Ordering::SeqCst);
        self.sleepers.load(Ordering::SeqCst) != 0
    }
}

/// A small spin lock for critical sections of a few instructions (a mailbox push): locking is
/// one atomic swap and unlocking a plain release store, where `std`'s mutex pays a second
/// atomic read-modify-write on unlock. A waiter spins briefly, then yields its time slice, so
/// a preempted holder does not make it burn a core. Under loom it is loom's mutex.
pub(crate) struct SpinLock<T> {
    #[cfg(not(loom))]
    locked: AtomicBool,
    #[cfg(not(loom))]
    value: std::cell::UnsafeCell<T>,
    #[cfg(loom)]
    inner: Mutex<T>,
}

// SAFETY: the lock hands out at most one guard at a time, so `T` is only reached from one
// thread at a time; `T: Send` lets it move between threads.
#[cfg(not(loom))]
unsafe impl<T: Send> Sync for SpinLock<T> {}
#[cfg(not(loom))]
unsafe impl<T: Send> Send for SpinLock<T> {}

/// The guard of a [`SpinLock`].
#[cfg(not(loom))]
pub(crate) struct SpinGuard<'a, T> {
    lock: &'a SpinLock<T>,
}

#[cfg(loom)]
pub(crate) type SpinGuard<'a, T> = MutexGuard<'a, T>;

impl<T> SpinLock<T> {
    pub(crate) fn new(value: T) -> SpinLock<T> {
        SpinLock {
            #[cfg(not(loom))]
            locked: AtomicBool::new(false),
            #[cfg(not(loom))]
            value: std::cell::UnsafeCell::new(value),
            #[cfg(loom)]
            inner: Mutex::new(value),
        }
    }

    #[inline]
    pub(crate) fn lock(&self) -> SpinGuard<'_, T> {
        #[cfg(not(loom))]
        {
            let mut spins = 0u32;
            while self.locked.swap(true, Ordering::Acquire) {
                while self.locked.load(Ordering::Relaxed) {
                    spins += 1;
                    if spins < 64 {
                        std::hint::spin_loop();
                    } else {
                        std::thread::yield_now();
                    }
                }
            }
            SpinGuard { lock: self }
        }
        #[cfg(loom)]
        {
            self.inner.lock().unwrap()
        }
    }
}

#[cfg(not(loom))]
impl<T> std::ops::Deref for SpinGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: this guard is the only one alive for the lock (see `lock`).
        unsafe { &*self.lock.value.get() }
    }
}

#[cfg(not(loom))]
impl<T> std::ops::DerefMut for SpinGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: this guard is the only one alive for the lock (see `lock`).
        unsafe { &mut *self.lock.value.get() }
    }
}

#[cfg(not(loom))]
impl<T> Drop for SpinGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.locked.store(false, Ordering::Release);
    }
}
