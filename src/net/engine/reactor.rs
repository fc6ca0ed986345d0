//! The reactor at the core of an [`Engine`]: one epoll instance and its wake-up eventfd, the
//! table of registrations, timers, closures posted to the engine, and the pass that drives
//! them. It knows no kind of socket: everything that waits on a descriptor registers as a
//! [`Source`] (as in mio), and the reactor calls the handlers of its kind by [`Key`].
//!
//! Who owns what, and which thread runs what:
//! - An engine and every source in it belong to the one thread that runs it (the engine is
//!   not `Send`). Other threads reach it only through an [`EngineHandle`] (`wake`, `post`).
//! - The table owns each source, boxed, from [`Engine::register`] until
//!   [`Engine::deregister`] hands it back (or the engine is dropped, which closes every
//!   descriptor). A source never leaves the table while it is registered: handlers and user
//!   callbacks find it there by key at any time.
//! - Handlers are plain functions of `(&mut Engine, Key, ..)`. A handler borrows its state
//!   with [`Engine::source_mut`] only between calls out; before it runs a user callback it
//!   lets go, so the callback can use the engine freely (even on the same source), and it
//!   looks the state up again afterwards, finding `None` if the callback deregistered it.
//! - Keys carry a generation: an event, timer or flush request for a key whose source has
//!   gone, even if its slot has been reused since, is dropped, never delivered to another.
//!
//! One pass ([`Engine::run_once`]): wait for readiness (never blocking while posted work or
//! flush requests wait) and call `ready` per event, in the order epoll reported them; call
//! `timer` for each due timer, earliest first, and run due one-shot callbacks; run the
//! closures posted from other threads, then those posted from this one; finally call `flush`
//! for every source that asked with [`Engine::request_flush`].
//!
//! Epoll is level-triggered: readiness is a hint, events can be spurious, and every handler
//! tolerates `WouldBlock` by waiting again. A source that stops before `EAGAIN` is told again
//! on the next wait.

use crate::net::sys::{Epoll, Event, EventFd, Events, Interest};
use crate::sync::{Arc, Mutex, SleepFlag};
use slab::Slab;
use std::any::Any;
use std::collections::BinaryHeap;
use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::{Duration, Instant};

/// The epoll token of the engine's own wake-up eventfd.
const WAKER_TOKEN: u64 = u64::MAX;
/// How many events one wait collects at most.
const EVENTS_PER_WAIT: usize = 1024;

/// Identifies a registration in an engine: slab index plus a generation, so that a stale id
/// whose slot has been reused is recognised and refused.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    pub(crate) index: u32,
    pub(crate) generation: u32,
}

impl Key {
    fn token(self) -> u64 {
        ((self.generation as u64) << 32) | self.index as u64
    }
    fn from_token(token: u64) -> Key {
        Key {
            index: token as u32,
            generation: (token >> 32) as u32,
        }
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}v{}", self.index, self.generation)
    }
}

/// Something the reactor polls: a descriptor, and what to do when it is ready, when its
/// timer fires and when the pass ends. The handlers are plain functions of the engine and the
/// key (not methods): each looks its state up with [`Engine::source_mut`] as often as it
/// needs (see the module docs). The reactor keeps one static table of them per kind.
pub(crate) trait Source: Any {
    /// The descriptor to poll; the same one, and open, for as long as it is registered.
    fn fd(&self) -> BorrowedFd<'_>;
    /// The descriptor is ready for what the source's interest asked (or hung up, or failed).
    fn ready(engine: &mut Engine, key: Key, event: Event);
    /// A timer armed for the key with [`Engine::add_timer`] has fired.
    fn timer(engine: &mut Engine, key: Key) {
        let _ = (engine, key);
    }
    /// The pass is ending and the source asked for it with [`Engine::request_flush`].
    fn flush(engine: &mut Engine, key: Key) {
        let _ = (engine, key);
    }
}

/// The handlers of one kind of source, as the table keeps them: a static per kind.
struct Handlers {
    ready: fn(&mut Engine, Key, Event),
    timer: fn(&mut Engine, Key),
    flush: fn(&mut Engine, Key),
    /// The source's descriptor (`None` never happens: a slot's handlers are those of the
    /// type of its source).
    fd: for<'a> fn(&'a dyn Any) -> Option<BorrowedFd<'a>>,
}

struct HandlersOf<S>(PhantomData<S>);

impl<S: Source> HandlersOf<S> {
    const HANDLERS: Handlers = Handlers {
        ready: S::ready,
        timer: S::timer,
        flush: S::flush,
        fd: |source| source.downcast_ref::<S>().map(S::fd),
    };
}

type Posted = Box<dyn FnOnce(&mut Engine) + Send>;
type LocalPosted = Box<dyn FnOnce(&mut Engine)>;

/// The state an engine shares with other threads.
struct Shared {
    eventfd: EventFd,
    /// Whether the engine's thread is (about to be) blocked in `epoll_wait`, and whether a
    /// wake-up is pending for it. A wake that arrives while the engine is awake (between two
    /// waits) is kept until its next wait, which then does not block (fix: layer-1 tests,
    /// `wake_before_run_once_is_not_lost`).
    sleeping: SleepFlag,
    posted: Mutex<Vec<Posted>>,
}

impl Shared {
    fn wake(&self) -> io::Result<()> {
        if self.sleeping.wake() {
            self.eventfd.notify()?;
        }
        Ok(())
    }

    /// Wakes the engine if it is asleep; returns whether it was.
    fn wake_if_sleeping(&self) -> io::Result<bool> {
        if self.sleeping.claim_wake() {
            self.eventfd.notify()?;
            return Ok(true);
        }
        Ok(false)
    }
}

/// A thread-safe handle to an engine: wake it, or run a closure on its thread.
#[derive(Clone)]
pub struct EngineHandle {
    shared: Arc<Shared>,
}

impl EngineHandle {
    /// Interrupts the engine's current or next blocking wait (one eventfd write, and only when
    /// the engine is asleep).
    ///
    /// # Errors
    /// The OS error of writing the eventfd.
    pub fn wake(&self) -> io::Result<()> {
        // Either the engine is asleep and the eventfd is written, or its next wait finds the
        // pending wake-up and does not block (see `SleepFlag`).
        self.shared.wake()
    }

    /// Runs `f` on the engine's thread during its next pass, and wakes it.
    ///
    /// # Errors
    /// The OS error of writing the eventfd (the closure stays queued).
    pub fn post(&self, f: impl FnOnce(&mut Engine) + Send + 'static) -> io::Result<()> {
        self.shared.posted.lock().unwrap().push(Box::new(f));
        // The engine raises its flag and then checks `posted` under the same lock, so either
        // it finds the closure or the claim below finds it asleep (no lost wake-up).
        self.shared.wake_if_sleeping().map(drop)
    }
}

impl EngineHandle {
    /// Wakes the engine only if it is asleep (or about to be); returns whether it was. The
    /// scheduler uses it to wake one idle worker, not all of them.
    pub(crate) fn wake_if_sleeping(&self) -> bool {
        self.shared.wake_if_sleeping().unwrap_or(false)
    }
}

impl fmt::Debug for EngineHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EngineHandle")
    }
}

/// One registration in the table.
struct Slot {
    generation: u32,
    /// What epoll reports for it; [`Interest::NONE`]: not in epoll at all.
    interest: Interest,
    /// The handlers of its kind, so that dispatching an event reads only this slot.
    handlers: &'static Handlers,
    /// The source, boxed as `dyn Any`: a typed lookup ([`Engine::source_mut`]) is then one
    /// type check, where a `dyn Source` needed a second virtual call to reach its `Any`.
    source: Box<dyn Any>,
}

/// A timer wakes either a registration (by key) or a callback in `Engine::callbacks`.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Timer {
    deadline: Instant,
    seq: u64,
    key_index: u32,
    key_generation: u32,
}

/// `key_generation` of a timer that runs a callback (registrations never have generation 0).
const CALLBACK_TIMER: u32 = 0;

/// The single-threaded completion engine (layer 1): an epoll instance with everything
/// registered with it, driven by the thread that owns it through [`Engine::run`] or
/// [`Engine::run_once`]. Callbacks run on that thread and receive `&mut Engine`, so they can
/// issue further requests, bind accepted sockets or close sockets directly.
///
/// # Example
///
/// An echo server on the completion API:
///
/// ```no_run
/// use kendynet::net::{Completion, Engine, IoKind, IoRequest, Submitted};
/// use std::time::Duration;
///
/// fn on_finish(engine: &mut Engine, c: Completion) {
///     match (c.kind, c.result) {
///         (IoKind::Recv, Ok(n)) => {
///             let data = c.request.received(n);
///             let _ = engine.post_send(c.socket, IoRequest::send_buffer(data));
///             let _ = engine.post_recv(c.socket, c.request);
///         }
///         (IoKind::Send, Ok(_)) => {}
///         (_, Err(_)) => engine.close(c.socket),
///     }
/// }
///
/// let mut engine = Engine::new()?;
/// engine.listen("127.0.0.1:8010".parse().unwrap(), |engine, socket| {
///     let id = engine.bind(socket, on_finish, |_, _, _| {}).expect("bind");
///     let _ = engine.post_recv(id, IoRequest::recv_buffer(4096));
/// })?;
/// loop {
///     engine.run(Duration::from_millis(100))?;
/// }
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Engine {
    poll: Epoll,
    events: Events,
    shared: Arc<Shared>,
    slots: Slab<Slot>,
    next_gen: u32,
    timers: BinaryHeap<std::cmp::Reverse<Timer>>,
    timer_seq: u64,
    now: Instant,
    local_posted: Vec<LocalPosted>,
    posted_batch: Vec<Posted>,
    /// Callbacks of one-shot timers ([`Engine::post_after`]).
    callbacks: Slab<LocalPosted>,
    /// Sources to flush at the end of the pass ([`Engine::request_flush`]).
    flush_requests: Vec<Key>,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("registrations", &self.slots.len())
            .finish()
    }
}

impl Engine {
    /// Creates an engine: an epoll instance and its wake-up eventfd.
    ///
    /// # Errors
    /// The OS error of `epoll_create1` or `eventfd` (for example, out of descriptors).
    pub fn new() -> io::Result<Engine> {
        let poll = Epoll::new()?;
        let eventfd = EventFd::new()?;
        poll.add_waker(&eventfd, WAKER_TOKEN)?;
        Ok(Engine {
            poll,
            events: Events::with_capacity(EVENTS_PER_WAIT),
            shared: Arc::new(Shared {
                eventfd,
                sleeping: SleepFlag::new(),
                posted: Mutex::new(Vec::new()),
            }),
            slots: Slab::new(),
            next_gen: 1,
            timers: BinaryHeap::new(),
            timer_seq: 0,
            now: Instant::now(),
            local_posted: Vec::new(),
            posted_batch: Vec::new(),
            callbacks: Slab::new(),
            flush_requests: Vec::new(),
        })
    }

    /// Sets how many readiness events one wait collects at most (default 1024). The actor
    /// runtime uses small batches, so that replies to the first sockets of a batch leave
    /// before the last sockets are read.
    pub(crate) fn set_events_per_wait(&mut self, n: usize) {
        self.events = Events::with_capacity(n);
    }

    /// A thread-safe handle for waking this engine or posting work to it.
    pub fn handle(&self) -> EngineHandle {
        EngineHandle {
            shared: self.shared.clone(),
        }
    }

    /// The time of the current pass (read once after each wait, so handlers need not).
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Number of listeners, connects in progress, sockets and connections registered.
    pub fn registrations(&self) -> usize {
        self.slots.len()
    }

    /// Runs `f` on this thread at the end of the current pass (or the next one): the C
    /// original's posted request. Use it to defer work out of a callback.
    pub fn post(&mut self, f: impl FnOnce(&mut Engine) + 'static) {
        self.local_posted.push(Box::new(f));
    }

    /// Processes events for `duration`: waits, dispatches, and repeats until it has passed.
    ///
    /// # Errors
    /// The OS error of `epoll_wait` (not `EINTR`, which is retried).
    pub fn run(&mut self, duration: Duration) -> io::Result<()> {
        let end = Instant::now() + duration;
        loop {
            let now = Instant::now();
            if now >= end {
                return Ok(());
            }
            self.run_once(Some(end - now))?;
        }
    }

    /// One pass: waits at most `timeout` (`None`: until something happens) for events,
    /// then runs their callbacks, due timers and posted work. Returns how many events and
    /// timers were dispatched.
    ///
    /// # Errors
    /// The OS error of `epoll_wait` (not `EINTR`, which is retried).
    pub fn run_once(&mut self, timeout: Option<Duration>) -> io::Result<usize> {
        let timeout = self.bounded_timeout(timeout);
        let mut dispatched = self.wait_and_dispatch(timeout)?;
        dispatched += self.run_timers();
        self.run_posted();
        self.flush_dirty();
        Ok(dispatched)
    }

    /// Shortens a wait so that it ends at the next timer and does not block at all while
    /// posted work or flush requests are waiting.
    pub(crate) fn bounded_timeout(&mut self, timeout: Option<Duration>) -> Option<Duration> {
        if !self.local_posted.is_empty() || !self.flush_requests.is_empty() {
            return Some(Duration::ZERO);
        }
        // Timers are not cancelled; one whose registration has gone (a connector's timeout
        // after it connected, say) is dropped here, so that it does not end an idle wait for
        // nothing.
        while let Some(std::cmp::Reverse(t)) = self.timers.peek() {
            let stale = t.key_generation != CALLBACK_TIMER
                && self
                    .slot(Key {
                        index: t.key_index,
                        generation: t.key_generation,
                    })
                    .is_none();
            if !stale {
                break;
            }
            self.timers.pop();
        }
        match self.timers.peek() {
            Some(std::cmp::Reverse(t)) => {
                let until = t.deadline.saturating_duration_since(Instant::now());
                Some(timeout.map_or(until, |d| d.min(until)))
            }
            None => timeout,
        }
    }

    /// Waits (announcing sleep to wakers when the wait may block) and dispatches I/O events.
    pub(crate) fn wait_and_dispatch(&mut self, timeout: Option<Duration>) -> io::Result<usize> {
        self.wait_and_dispatch_with(timeout, &|| false)
    }

    /// As [`Engine::wait_and_dispatch`]; `has_work` is asked after the engine has announced
    /// that it is going to sleep, so work that another thread queued before it could see the
    /// announcement is found here (the queuing thread wakes the engine otherwise).
    pub(crate) fn wait_and_dispatch_with(
        &mut self,
        timeout: Option<Duration>,
        has_work: &dyn Fn() -> bool,
    ) -> io::Result<usize> {
        let may_block = timeout != Some(Duration::ZERO);
        // Announce the sleep, then look once more: at a pending wake-up, at closures posted
        // meanwhile, and at the caller's work.
        if may_block
            && (!self.shared.sleeping.announce()
                || !self.shared.posted.lock().unwrap().is_empty()
                || has_work())
        {
            self.shared.sleeping.retract();
            return self.wait_and_dispatch_with(Some(Duration::ZERO), has_work);
        }
        let res = self.poll.wait(&mut self.events, timeout);
        if may_block {
            self.shared.sleeping.retract();
        }
        res?;
        self.now = Instant::now();
        let n = self.events.len();
        for i in 0..n {
            let ev = self.events.get(i);
            if ev.token == WAKER_TOKEN {
                self.shared.eventfd.drain()?;
                continue;
            }
            let key = Key::from_token(ev.token);
            // A stale event (its source deregistered earlier in this batch) is dropped.
            if let Some(slot) = self.slot(key) {
                (slot.handlers.ready)(self, key, ev);
            }
        }
        Ok(n)
    }

    /// Runs the closures posted from this thread and from other threads.
    pub(crate) fn run_posted(&mut self) {
        std::mem::swap(
            &mut self.posted_batch,
            &mut *self.shared.posted.lock().unwrap(),
        );
        for f in std::mem::take(&mut self.posted_batch) {
            f(self);
        }
        // Closures may post more; each runs once, in order, the new ones on the next pass.
        for f in std::mem::take(&mut self.local_posted) {
            f(self);
        }
    }

    /// Fires the timers that are due, earliest first; returns how many fired.
    pub(crate) fn run_timers(&mut self) -> usize {
        let mut fired = 0;
        let now = Instant::now();
        while let Some(std::cmp::Reverse(t)) = self.timers.peek() {
            if t.deadline > now {
                break;
            }
            let std::cmp::Reverse(t) = self.timers.pop().expect("peeked");
            fired += 1;
            self.now = now;
            if t.key_generation == CALLBACK_TIMER {
                if let Some(f) = self.callbacks.try_remove(t.key_index as usize) {
                    f(self);
                }
                continue;
            }
            let key = Key {
                index: t.key_index,
                generation: t.key_generation,
            };
            if let Some(slot) = self.slot(key) {
                (slot.handlers.timer)(self, key);
            }
        }
        fired
    }

    /// Arms a wake-up for `key` at `deadline`: its source's `timer` handler runs then, if it
    /// is still registered. Timers are not cancelled: the source checks, when called, whether
    /// its deadline has really passed, and re-arms if not.
    pub(crate) fn add_timer(&mut self, key: Key, deadline: Instant) {
        self.timer_seq += 1;
        self.timers.push(std::cmp::Reverse(Timer {
            deadline,
            seq: self.timer_seq,
            key_index: key.index,
            key_generation: key.generation,
        }));
    }

    /// Runs `f` on this thread once `delay` has passed (a one-shot timer).
    pub fn post_after(&mut self, delay: Duration, f: impl FnOnce(&mut Engine) + 'static) {
        let index = self.callbacks.insert(Box::new(f)) as u32;
        self.timer_seq += 1;
        self.timers.push(std::cmp::Reverse(Timer {
            deadline: Instant::now() + delay,
            seq: self.timer_seq,
            key_index: index,
            key_generation: CALLBACK_TIMER,
        }));
    }

    /// Asks for the source's `flush` handler to run at the end of this pass (or, outside a
    /// pass, of the next one; the next wait does not block meanwhile). The reactor does not
    /// deduplicate: a source asks once until it is flushed (it keeps its own flag).
    pub(crate) fn request_flush(&mut self, key: Key) {
        self.flush_requests.push(key);
    }

    /// Runs the `flush` handler of every source that asked since the last time; those
    /// deregistered meanwhile are skipped.
    pub(crate) fn flush_dirty(&mut self) {
        while let Some(key) = self.flush_requests.pop() {
            if let Some(slot) = self.slot(key) {
                (slot.handlers.flush)(self, key);
            }
        }
    }

    #[inline]
    fn slot(&self, key: Key) -> Option<&Slot> {
        self.slots
            .get(key.index as usize)
            .filter(|s| s.generation == key.generation)
    }

    #[inline]
    fn slot_mut(&mut self, key: Key) -> Option<&mut Slot> {
        self.slots
            .get_mut(key.index as usize)
            .filter(|s| s.generation == key.generation)
    }

    /// Adds `source` to the table under a new key, and to epoll for `interest` (not at all
    /// for [`Interest::NONE`]).
    ///
    /// # Errors
    /// The OS error of registering with epoll; the source is dropped then (which closes its
    /// descriptor).
    pub(crate) fn register<S: Source>(&mut self, source: S, interest: Interest) -> io::Result<Key> {
        let generation = self.next_gen;
        self.next_gen = self.next_gen.wrapping_add(1).max(1);
        let vacant = self.slots.vacant_entry();
        let key = Key {
            index: vacant.key() as u32,
            generation,
        };
        if interest != Interest::NONE {
            self.poll
                .add(source.fd().as_raw_fd(), interest, key.token())?;
        }
        vacant.insert(Slot {
            generation,
            interest,
            handlers: &HandlersOf::<S>::HANDLERS,
            source: Box::new(source),
        });
        Ok(key)
    }

    /// Takes a source out of epoll and out of the table and hands it back (downcast it
    /// with `Box::downcast`; its descriptor closes when it is dropped); `None` if `key` is
    /// stale. Events, timers and flush requests still pending for the key are dropped.
    pub(crate) fn deregister(&mut self, key: Key) -> Option<Box<dyn Any>> {
        self.slot(key)?;
        let slot = self.slots.remove(key.index as usize);
        if slot.interest != Interest::NONE
            && let Some(fd) = (slot.handlers.fd)(&*slot.source)
        {
            let _ = self.poll.delete(fd.as_raw_fd());
        }
        Some(slot.source)
    }

    /// The registered source of `key`, if it is live and a `T`.
    #[inline]
    pub(crate) fn source_mut<T: Source>(&mut self, key: Key) -> Option<&mut T> {
        self.slot_mut(key)?.source.downcast_mut()
    }

    /// Changes what epoll reports for `key` (nothing if unchanged or stale). A source that
    /// wants nothing is taken out of epoll altogether, and put back when it wants something
    /// again: epoll reports `EPOLLHUP`/`EPOLLERR` whatever the interest, so a registered idle
    /// source whose peer had closed or reset made every wait return at once, a busy loop
    /// (fix: layer-1 tests, `idle_bound_socket_does_not_spin_after_peer_closes`).
    #[inline]
    pub(crate) fn set_interest(&mut self, key: Key, interest: Interest) {
        if self.slot(key).is_some_and(|slot| slot.interest != interest) {
            self.change_interest(key, interest);
        }
    }

    fn change_interest(&mut self, key: Key, interest: Interest) {
        let Some(slot) = self
            .slots
            .get_mut(key.index as usize)
            .filter(|s| s.generation == key.generation)
        else {
            return;
        };
        let Some(fd) = (slot.handlers.fd)(&*slot.source) else {
            return;
        };
        let fd = fd.as_raw_fd();
        let res = if interest == Interest::NONE {
            self.poll.delete(fd)
        } else if slot.interest == Interest::NONE {
            self.poll.add(fd, interest, key.token())
        } else {
            self.poll.modify(fd, interest, key.token())
        };
        // The descriptor is the source's and open while registered, so adding or modifying
        // fails only for want of kernel memory; epoll then keeps what it had, and so does
        // the slot, so that the next change tries again. A failed delete leaves nothing
        // registered either way.
        if res.is_ok() || interest == Interest::NONE {
            slot.interest = interest;
        }
    }
}

#[cfg(test)]
mod tests {
    //! The reactor with a kind of source of its own (one end of a Unix socket pair), to pin
    //! the registration contract independently of layers 1 and 2.

    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    struct Probe {
        stream: UnixStream,
        calls: Vec<&'static str>,
    }

    impl Source for Probe {
        fn fd(&self) -> BorrowedFd<'_> {
            self.stream.as_fd()
        }
        fn ready(engine: &mut Engine, key: Key, event: Event) {
            let p = engine.source_mut::<Probe>(key).expect("live");
            assert!(event.readable());
            let _ = p.stream.read(&mut [0; 16]);
            p.calls.push("ready");
        }
        fn timer(engine: &mut Engine, key: Key) {
            engine
                .source_mut::<Probe>(key)
                .expect("live")
                .calls
                .push("timer");
        }
        fn flush(engine: &mut Engine, key: Key) {
            engine
                .source_mut::<Probe>(key)
                .expect("live")
                .calls
                .push("flush");
        }
    }

    fn calls(engine: &mut Engine, key: Key) -> Vec<&'static str> {
        std::mem::take(&mut engine.source_mut::<Probe>(key).expect("live").calls)
    }

    #[test]
    fn a_source_gets_its_events_timers_and_flushes_by_key() {
        let mut engine = Engine::new().unwrap();
        let (ours, mut peer) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let probe = Probe {
            stream: ours,
            calls: Vec::new(),
        };
        let key = engine.register(probe, Interest::READ).unwrap();
        assert_eq!(engine.registrations(), 1);

        peer.write_all(b"x").unwrap();
        engine.run_once(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(calls(&mut engine, key), ["ready"]);

        engine.add_timer(key, Instant::now());
        engine.request_flush(key);
        engine.run_once(Some(Duration::ZERO)).unwrap();
        assert_eq!(calls(&mut engine, key), ["timer", "flush"]);

        // Wanting nothing takes it out of epoll: pending input is not reported.
        engine.set_interest(key, Interest::NONE);
        peer.write_all(b"y").unwrap();
        engine.run_once(Some(Duration::from_millis(20))).unwrap();
        assert!(calls(&mut engine, key).is_empty());
        engine.set_interest(key, Interest::READ);
        engine.run_once(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(calls(&mut engine, key), ["ready"]);

        // A wrong type is refused; a deregistered key is stale for every use.
        struct Other;
        impl Source for Other {
            fn fd(&self) -> BorrowedFd<'_> {
                unreachable!()
            }
            fn ready(_: &mut Engine, _: Key, _: Event) {}
        }
        assert!(engine.source_mut::<Other>(key).is_none());
        engine.add_timer(key, Instant::now());
        engine.request_flush(key);
        let probe = engine.deregister(key).unwrap().downcast::<Probe>().unwrap();
        assert!(probe.calls.is_empty());
        assert_eq!(engine.registrations(), 0);
        assert!(engine.source_mut::<Probe>(key).is_none());
        assert!(engine.deregister(key).is_none());
        engine.run_once(Some(Duration::ZERO)).unwrap();
    }
}
