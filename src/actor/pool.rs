//! Pools: N instances of one actor type behind one address, the C original's thread-pool
//! use of a `msgdisp` (several threads draining one dispatcher).
//!
//! Each instance is an ordinary actor with its own mailbox, so instances run in parallel on
//! the workers while each still handles one message at a time. [`Pool::send`] hands a
//! message to a free instance (idle, with an empty mailbox; looking from a rotating start),
//! or to the least loaded one when all are busy. [`Pool::send_keyed`] sends every message with
//! the same key to the same instance, so per-key order holds (key by
//! [`SockIdent::to_u64`](crate::SockIdent::to_u64) to keep each socket's packets in order).

use super::cell::Route;
use super::system::SystemInner;
use super::{Actor, ActorId, Addr, Recipient, SystemHandle};
use crate::error::TrySendError;
use crate::sync::{Arc, AtomicU64, AtomicUsize, Ordering};
use std::fmt;

/// How [`Pool::send`] picks an instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PoolRouting {
    /// A free instance (idle, nothing queued), else the least loaded one (the default).
    #[default]
    LeastLoaded,
    /// Each instance in turn.
    RoundRobin,
}

/// N instances of `A` behind one cloneable handle.
///
/// # Example
///
/// ```
/// use kendynet::{Actor, Context, Pool, PoolRouting, System};
/// use std::sync::mpsc;
///
/// struct Square(mpsc::Sender<u64>);
/// impl Actor for Square {
///     type Msg = u64;
///     fn handle(&mut self, n: u64, _: &mut Context<Self>) {
///         self.0.send(n * n).unwrap();
///     }
/// }
///
/// let system = System::builder().workers(2).build()?;
/// let (tx, rx) = mpsc::channel();
/// let pool = Pool::spawn(&system, 4, PoolRouting::LeastLoaded, |_| Square(tx.clone()));
/// for n in 0..100 {
///     pool.send(n).unwrap();
/// }
/// let sum: u64 = (0..100).map(|_| rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap()).sum();
/// assert_eq!(sum, (0..100u64).map(|n| n * n).sum());
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Pool<A: Actor> {
    members: Arc<[Addr<A>]>,
    /// Per instance, how many messages it had started at the last look.
    seen: Arc<[AtomicU64]>,
    next: Arc<AtomicUsize>,
    routing: PoolRouting,
}

impl<A: Actor> Clone for Pool<A> {
    fn clone(&self) -> Pool<A> {
        Pool {
            members: self.members.clone(),
            seen: self.seen.clone(),
            next: self.next.clone(),
            routing: self.routing,
        }
    }
}

impl<A: Actor> fmt::Debug for Pool<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("size", &self.members.len())
            .field("routing", &self.routing)
            .finish()
    }
}

impl<A: Actor> Pool<A> {
    /// Spawns `size` instances (at least one), the `i`-th made by `make(i)`.
    pub fn spawn(
        system: &SystemHandle,
        size: usize,
        routing: PoolRouting,
        mut make: impl FnMut(usize) -> A,
    ) -> Pool<A> {
        let members: Vec<Addr<A>> = (0..size.max(1)).map(|i| system.spawn(make(i))).collect();
        Pool {
            seen: members.iter().map(|_| AtomicU64::new(0)).collect(),
            members: members.into(),
            next: Arc::new(AtomicUsize::new(0)),
            routing,
        }
    }

    /// Sends to one instance, chosen by the pool's routing.
    ///
    /// # Errors
    /// As [`Addr::send`] on the chosen instance; the message is handed back.
    pub fn send(&self, msg: A::Msg) -> Result<(), TrySendError<A::Msg>> {
        let n = self.members.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let pick = match self.routing {
            PoolRouting::RoundRobin => start,
            PoolRouting::LeastLoaded => {
                // Lowest load wins; between equally loaded busy instances, one that started a
                // message since the last look (it is moving) beats one that did not (it may be
                // stuck in a long handler).
                let mut best = ((usize::MAX, true), start);
                for k in 0..n {
                    let i = (start + k) % n;
                    let cell = &self.members[i].cell;
                    let load = cell.load();
                    let started = cell.started_msgs();
                    let stalled = self.seen[i].swap(started, Ordering::Relaxed) == started;
                    // Every instance is looked at (no early exit), so `seen` stays current.
                    let stalled = stalled && load > 0;
                    if (load, stalled) < best.0 {
                        best = ((load, stalled), i);
                    }
                }
                best.1
            }
        };
        self.members[pick].send(msg)
    }

    /// Sends to the instance that owns `key`: the same key always reaches the same instance,
    /// so messages with one key are handled in order.
    ///
    /// # Errors
    /// As [`Addr::send`]; the message is handed back.
    pub fn send_keyed(&self, key: u64, msg: A::Msg) -> Result<(), TrySendError<A::Msg>> {
        self.member_for(key).send(msg)
    }

    /// A recipient that routes each message to the instance its [`RouteKey`] picks (as
    /// [`Pool::send_keyed`] does).
    pub(crate) fn keyed_router<M: RouteKey>(&self) -> Recipient<M>
    where
        A::Msg: From<M>,
    {
        Recipient::routed(Arc::new(self.clone()))
    }

    fn member_for(&self, key: u64) -> &Addr<A> {
        // Mix the key so that sequential keys spread evenly.
        let mixed = key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
        &self.members[(mixed % self.members.len() as u64) as usize]
    }

    /// The instances.
    pub fn members(&self) -> &[Addr<A>] {
        &self.members
    }

    /// How many instances.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Always false: a pool has at least one instance.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Stops every instance.
    pub fn stop(&self) {
        for m in self.members.iter() {
            m.stop();
        }
    }
}

/// Messages that a pool routes by key: equal keys reach the same instance, in order.
pub(crate) trait RouteKey: Send + 'static {
    fn route_key(&self) -> u64;
}

impl<A: Actor, M: RouteKey> Route<M> for Pool<A>
where
    A::Msg: From<M>,
{
    fn route(&self, ev: M, force: bool) -> Result<(), TrySendError<M>> {
        let key = ev.route_key();
        let member: Recipient<M> = self.member_for(key).recipient();
        if force {
            member.force(ev)
        } else {
            member.send(ev)
        }
    }

    fn id(&self) -> ActorId {
        self.members[0].id()
    }

    fn alive(&self) -> bool {
        self.members.iter().any(Addr::is_alive)
    }

    fn queued(&self) -> usize {
        self.members.iter().map(Addr::mailbox_len).sum()
    }

    fn system(&self) -> &Arc<SystemInner> {
        &self.members[0].cell.system
    }
}
