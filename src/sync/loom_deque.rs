//! A loom-visible stand-in for `crossbeam-deque` (loom cannot look inside crossbeam): the
//! same API on mutex-guarded queues. The models thus see every push, pop and steal of the
//! real scheduler, though not crossbeam's own lock-free paths; those are crossbeam's to verify.

use super::{Arc, Mutex};
use std::collections::VecDeque;

pub(crate) enum Steal<T> {
    Empty,
    Success(T),
    #[allow(dead_code)]
    Retry,
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
