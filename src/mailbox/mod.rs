//! The actor mailbox: a multi-producer, single-consumer queue with its scheduling state.
//!
//! Two lanes share one lock: the user lane (bounded or not, per actor) and the system lane
//! (stop requests, watch notifications), which the consumer always empties first, so that user
//! traffic can neither delay nor crowd out a stop.
//!
//! The scheduling state ([`SchedState`]) makes sure an actor with queued messages is scheduled
//! exactly once and is never run on two threads at once:
//!
//! ```text
//!   IDLE --send--> SCHEDULED --worker picks it--> RUNNING --queue empty--> IDLE
//!                                                  |   ^
//!                                             send |   | worker sees NOTIFIED, keeps going
//!                                                  v   |
//!                                                NOTIFIED
//! ```
//!
//! A sender that moves the state from `IDLE` to `SCHEDULED` owns the duty of queuing the actor
//! for a worker; every other sender only leaves its message. The worker leaves `RUNNING` for
//! `IDLE` with a compare-and-swap that fails if a message arrived meanwhile (`NOTIFIED`), in
//! which case it keeps running instead, so no message is left behind in an idle mailbox.

use crate::sync::{AtomicBool, AtomicU8, Ordering, SpinLock};
use std::collections::VecDeque;

const IDLE: u8 = 0;
const SCHEDULED: u8 = 1;
const RUNNING: u8 = 2;
const NOTIFIED: u8 = 3;

/// The scheduling state of one actor. See the module docs.
pub struct SchedState {
    state: AtomicU8,
}

impl SchedState {
    pub fn new() -> SchedState {
        SchedState {
            state: AtomicU8::new(IDLE),
        }
    }

    /// After queuing a message: returns true if the caller must now schedule the actor.
    pub fn notify(&self) -> bool {
        let mut cur = self.state.load(Ordering::Acquire);
        loop {
            let next = match cur {
                IDLE => SCHEDULED,
                RUNNING => NOTIFIED,
                _ => return false,
            };
            match self
                .state
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return cur == IDLE,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Whether the actor is neither scheduled nor running.
    pub fn is_idle(&self) -> bool {
        self.state.load(Ordering::Acquire) == IDLE
    }

    /// Whether a worker is running the actor now.
    pub fn is_running(&self) -> bool {
        matches!(self.state.load(Ordering::Acquire), RUNNING | NOTIFIED)
    }

    /// A worker starts a turn of a scheduled actor.
    pub fn start_run(&self) {
        debug_assert_eq!(
            self.state.load(Ordering::Acquire),
            SCHEDULED,
            "ran unscheduled"
        );
        // A plain store: while SCHEDULED nobody else writes the state (`notify` leaves it
        // alone), and the task reached this thread through a queue that already orders it.
        self.state.store(RUNNING, Ordering::Release);
    }

    /// The turn ended with the mailbox seen empty: go idle, unless a message arrived since it
    /// was seen empty. Returns true if the actor is idle now, false if it must keep running.
    pub fn try_idle(&self) -> bool {
        match self
            .state
            .compare_exchange(RUNNING, IDLE, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => true,
            Err(NOTIFIED) => {
                self.state.store(RUNNING, Ordering::Release);
                false
            }
            Err(other) => unreachable!("actor in state {other} while running"),
        }
    }

    /// The turn ended with messages left (budget spent): the caller re-queues the actor.
    pub fn reschedule(&self) {
        self.state.store(SCHEDULED, Ordering::Release);
    }
}

/// The two lanes behind the mailbox lock.
struct Lanes<M, S> {
    user: VecDeque<M>,
    system: VecDeque<S>,
    /// No message of either lane is taken any more.
    closed: bool,
    /// No user message is taken any more (the actor drains what is queued, then stops);
    /// the system lane stays open.
    draining: bool,
    /// The most user messages it held when a batch was taken (for the metrics).
    high_water: usize,
}

/// Why a push was refused; the message is handed back.
#[derive(Debug)]
pub enum PushError<M> {
    Full(M),
    Closed(M),
}

/// The queue part of a mailbox: user lane `M`, system lane `S`.
pub struct Mailbox<M, S> {
    lanes: SpinLock<Lanes<M, S>>,
    /// Whether the system lane has messages: read between two user messages, so that a
    /// control message overtakes the rest of a batch.
    system_waiting: AtomicBool,
    /// The most user messages it holds; 0 means no limit.
    capacity: usize,
}

impl<M, S> Mailbox<M, S> {
    pub fn new(capacity: usize) -> Mailbox<M, S> {
        Mailbox {
            lanes: SpinLock::new(Lanes {
                user: VecDeque::new(),
                system: VecDeque::new(),
                closed: false,
                draining: false,
                high_water: 0,
            }),
            system_waiting: AtomicBool::new(false),
            capacity,
        }
    }

    /// Queues a user message, respecting the capacity unless `force` (network events, whose
    /// back-pressure is the socket's own limits).
    #[inline]
    pub fn push(&self, msg: M, force: bool) -> Result<(), PushError<M>> {
        self.push_map(msg, |m| m, force)
    }

    /// Queues `convert(value)`; the conversion runs only once the message is accepted, so a
    /// refused value is handed back unconverted.
    #[inline]
    pub fn push_map<T>(
        &self,
        value: T,
        convert: impl FnOnce(T) -> M,
        force: bool,
    ) -> Result<(), PushError<T>> {
        let mut lanes = self.lanes.lock();
        if lanes.closed || lanes.draining {
            return Err(PushError::Closed(value));
        }
        if !force && self.capacity != 0 && lanes.user.len() >= self.capacity {
            return Err(PushError::Full(value));
        }
        lanes.user.push_back(convert(value));
        Ok(())
    }

    /// Queues several user messages under one lock (network events of one read batch),
    /// ignoring the capacity. Returns how many user messages wait now, or `None` (and
    /// `values` untouched) if the mailbox is closed.
    pub fn push_batch_map<T>(
        &self,
        values: &mut Vec<T>,
        convert: impl Fn(T) -> M,
    ) -> Option<usize> {
        let mut lanes = self.lanes.lock();
        if lanes.closed || lanes.draining {
            return None;
        }
        lanes.user.extend(values.drain(..).map(convert));
        Some(lanes.user.len())
    }

    /// Puts `values` in front of the user messages queued, in their order, whatever the
    /// capacity and even while draining (they were queued before, or must be seen first).
    /// Hands them back if the mailbox is closed.
    pub fn push_front_batch_map<T>(
        &self,
        values: impl DoubleEndedIterator<Item = T>,
        convert: impl Fn(T) -> M,
    ) -> bool {
        let mut lanes = self.lanes.lock();
        if lanes.closed {
            return false;
        }
        for v in values.rev() {
            lanes.user.push_front(convert(v));
        }
        true
    }

    /// Refuses further user messages; what is queued stays, for the consumer to drain.
    /// Returns false if the mailbox was closed or draining already.
    pub fn start_draining(&self) -> bool {
        let mut lanes = self.lanes.lock();
        let first = !lanes.closed && !lanes.draining;
        lanes.draining = true;
        first
    }

    /// Whether user messages are refused (draining or closed).
    pub fn refuses_users(&self) -> bool {
        let lanes = self.lanes.lock();
        lanes.closed || lanes.draining
    }

    /// Queues a system message. Refused (handed back) once the mailbox is closed.
    pub fn push_system(&self, msg: S) -> Result<(), S> {
        let mut lanes = self.lanes.lock();
        if lanes.closed {
            return Err(msg);
        }
        lanes.system.push_back(msg);
        self.system_waiting.store(true, Ordering::Release);
        Ok(())
    }

    /// Whether a system message waits (a cheap look, without the lock).
    pub fn system_waiting(&self) -> bool {
        self.system_waiting.load(Ordering::Acquire)
    }

    /// Whether a system message waits.
    pub fn has_system(&self) -> bool {
        !self.lanes.lock().system.is_empty()
    }

    /// Takes the next system message.
    pub fn pop_system(&self) -> Option<S> {
        let mut lanes = self.lanes.lock();
        let msg = lanes.system.pop_front();
        if lanes.system.is_empty() {
            self.system_waiting.store(false, Ordering::Release);
        }
        msg
    }

    /// Moves up to `max` user messages into `batch` (which the caller has emptied) under one
    /// lock; when they all fit, the two queues are swapped, which copies nothing. Returns
    /// whether a system message is waiting, and whether the user lane was emptied.
    pub fn take_batch(&self, batch: &mut VecDeque<M>, max: usize) -> (bool, bool) {
        let mut lanes = self.lanes.lock();
        let depth = lanes.user.len();
        // Under the lock the consumer holds anyway: a compare in a line it has loaded.
        if depth > lanes.high_water {
            lanes.high_water = depth;
        }
        let drained = depth <= max;
        if drained {
            std::mem::swap(&mut lanes.user, batch);
        } else {
            batch.extend(lanes.user.drain(..max));
        }
        (!lanes.system.is_empty(), drained)
    }

    /// Moves the user messages that `pick` accepts (converted) to the end of `taken`, in
    /// order, under one lock; `pick` hands back the others, which stay in their places.
    pub fn take_where<T>(&self, pick: &mut impl FnMut(M) -> Result<T, M>, taken: &mut Vec<T>) {
        let mut lanes = self.lanes.lock();
        let all = std::mem::take(&mut lanes.user);
        for msg in all {
            match pick(msg) {
                Ok(t) => taken.push(t),
                Err(msg) => lanes.user.push_back(msg),
            }
        }
    }

    /// The most user messages it held when its consumer took a batch.
    pub fn high_water(&self) -> usize {
        self.lanes.lock().high_water
    }

    /// The number of user messages waiting.
    pub fn len(&self) -> usize {
        self.lanes.lock().user.len()
    }

    /// Whether user messages are refused and none is left: a draining actor is done.
    pub fn drained(&self) -> bool {
        let lanes = self.lanes.lock();
        lanes.draining && lanes.user.is_empty()
    }

    /// Refuses all further messages and hands back what was still queued (to be dropped by
    /// the caller outside the lock).
    pub fn close(&self) -> (VecDeque<M>, VecDeque<S>) {
        let mut lanes = self.lanes.lock();
        lanes.closed = true;
        (
            std::mem::take(&mut lanes.user),
            std::mem::take(&mut lanes.system),
        )
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn schedules_once_until_idle() {
        let s = SchedState::new();
        assert!(s.notify());
        assert!(!s.notify());
        s.start_run();
        assert!(!s.notify(), "a running actor is not scheduled again");
        assert!(!s.try_idle(), "a message arrived while running: keep going");
        assert!(s.try_idle());
        assert!(s.notify());
    }

    #[test]
    fn bounded_mailbox_hands_back_the_message() {
        let m: Mailbox<u32, ()> = Mailbox::new(2);
        assert!(m.push(1, false).is_ok());
        assert!(m.push(2, false).is_ok());
        assert!(matches!(m.push(3, false), Err(PushError::Full(3))));
        assert!(m.push(4, true).is_ok(), "forced pushes ignore the capacity");
        let mut batch = VecDeque::new();
        assert_eq!(m.take_batch(&mut batch, 2), (false, false));
        assert_eq!(batch, [1, 2]);
        assert_eq!(m.high_water(), 3, "three waited when the batch was taken");
        batch.clear();
        assert_eq!(m.take_batch(&mut batch, 10), (false, true));
        assert_eq!(batch, [4]);
        let _ = m.close();
        assert!(matches!(m.push(5, true), Err(PushError::Closed(5))));
    }

    #[test]
    fn draining_keeps_what_is_queued_and_refuses_the_rest() {
        let m: Mailbox<u32, u8> = Mailbox::new(0);
        m.push(1, false).unwrap();
        m.push(2, false).unwrap();
        assert!(m.start_draining());
        assert!(!m.start_draining(), "only the first call starts it");
        assert!(matches!(m.push(3, true), Err(PushError::Closed(3))));
        assert!(m.push_system(9).is_ok(), "the system lane stays open");
        assert!(!m.drained());
        assert!(m.push_front_batch_map([7u32, 8].into_iter(), |v| v));
        let mut batch = VecDeque::new();
        assert_eq!(m.take_batch(&mut batch, 10), (true, true));
        assert_eq!(batch, [7, 8, 1, 2]);
        assert!(m.drained());
    }
}
