//! A spin lock for critical sections of a few instructions.

#[cfg(not(loom))]
use super::{AtomicBool, Ordering};
#[cfg(loom)]
use super::{Mutex, MutexGuard};

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
