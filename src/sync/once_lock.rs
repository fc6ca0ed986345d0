//! A loom-visible stand-in for `std::sync::OnceLock` (loom has none): a pointer published
//! once with a compare-and-swap, so that the models see the race between setting and reading.

use super::{AtomicPtr, Ordering};

pub(crate) struct OnceLock<T> {
    value: AtomicPtr<T>,
}

impl<T> OnceLock<T> {
    pub(crate) fn new() -> OnceLock<T> {
        OnceLock {
            value: AtomicPtr::new(std::ptr::null_mut()),
        }
    }

    pub(crate) fn get(&self) -> Option<&T> {
        let p = self.value.load(Ordering::Acquire);
        // SAFETY: a non-null pointer was published by `set` from `Box::into_raw` and is only
        // freed by `drop`, which `&self` rules out while the reference lives.
        unsafe { p.as_ref() }
    }

    /// Sets the value unless it is set; hands it back if it was.
    pub(crate) fn set(&self, value: T) -> Result<(), T> {
        let p = Box::into_raw(Box::new(value));
        match self.value.compare_exchange(
            std::ptr::null_mut(),
            p,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => Ok(()),
            // SAFETY: `p` came from `Box::into_raw` above and was never published.
            Err(_) => Err(*unsafe { Box::from_raw(p) }),
        }
    }

    pub(crate) fn get_or_init(&self, init: impl FnOnce() -> T) -> &T {
        if let Some(v) = self.get() {
            return v;
        }
        let _ = self.set(init());
        self.get().expect("set above or by a racer")
    }
}

impl<T> Drop for OnceLock<T> {
    fn drop(&mut self) {
        let p = self.value.with_mut(|p| *p);
        if !p.is_null() {
            // SAFETY: published by `set` from `Box::into_raw`; `&mut self` means no reader.
            drop(unsafe { Box::from_raw(p) });
        }
    }
}

// SAFETY: it owns a `T` behind a pointer, exactly as `std::sync::OnceLock<T>` does.
unsafe impl<T: Send + Sync> Sync for OnceLock<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Send for OnceLock<T> {}
