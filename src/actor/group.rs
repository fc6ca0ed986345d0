//! Process groups: named sets of actors (rooms, topics, shards) that a message can be sent to
//! at once.
//!
//! A [`Group<M>`] is found by name in its system ([`SystemHandle::group`]); any actor whose
//! message type converts from `M` can join it, so actors of different types share a group.
//!
//! - **Membership** is kept in a copy-on-write list ([`Membership`]): a send takes a snapshot
//!   (one reference count under a short lock) and delivers outside the lock, so joins and
//!   leaves never wait for a broadcast and a broadcast never waits for them. A join or leave
//!   copies the list only while a send still walks the old one.
//! - **A send** reaches every member that had joined when it began, exactly once; a member
//!   that leaves while a send is under way may still get that message, one that joins meanwhile
//!   does not.
//! - **Leaving is automatic** when a member stops: each actor that joins a group gets one
//!   watcher for all its groups (however often it joins and leaves), which takes it out of
//!   each when it stops. A group holds its members' addresses, not their state: a stopped
//!   member's state is dropped by its own last turn, as for any actor.
//! - **Watching**: [`Group::watch`] subscribes a [`Recipient<GroupEvent>`]; it first gets a
//!   `Joined` for each current member, then every change, in the order the changes happened.
//! - **Lifetime**: a group lives while a [`Group`] handle or a member exists; after that the
//!   name is free, and may be used again with another message type.

use super::cell::{ActorCell, Addr, Recipient, Watcher};
use super::system::SystemHandle;
use super::{Actor, ActorId, Context, StopReason};
use crate::error::TrySendError;
use crate::sync::{Arc, Mutex, Weak};
use std::any::Any;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::hash::Hash;

/// A membership change, as the store reports it to its watchers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Change<K> {
    Joined(K),
    Left(K, LeaveReason),
}

/// Something told of every membership change, under the store's lock (so in order). Returns
/// false to be dropped (it has gone away).
type ChangeWatcher<K> = Box<dyn FnMut(&Change<K>) -> bool + Send>;

/// A set of members keyed by `K`, kept as a copy-on-write list: readers take a snapshot of
/// the whole list at once, writers copy it only while a snapshot is still held. Generic over
/// the member, so that groups of actors and groups of sockets share it.
pub(crate) struct Membership<K, R> {
    state: Mutex<MembershipState<K, R>>,
}

struct MembershipState<K, R> {
    list: Arc<Vec<(K, R)>>,
    /// Where each key sits in `list`.
    index: HashMap<K, usize>,
    watchers: Vec<ChangeWatcher<K>>,
}

impl<K: Copy + Eq + Hash, R: Clone> Membership<K, R> {
    pub(crate) fn new() -> Membership<K, R> {
        Membership {
            state: Mutex::new(MembershipState {
                list: Arc::new(Vec::new()),
                index: HashMap::new(),
                watchers: Vec::new(),
            }),
        }
    }

    /// Adds `member` under `key`; false (and no change) if the key is a member already.
    pub(crate) fn insert(&self, key: K, member: R) -> bool {
        let mut st = self.state.lock().unwrap();
        let st = &mut *st;
        let Entry::Vacant(slot) = st.index.entry(key) else {
            return false;
        };
        let list = Arc::make_mut(&mut st.list);
        slot.insert(list.len());
        list.push((key, member));
        tell(&mut st.watchers, &Change::Joined(key));
        true
    }

    /// Takes `key` out; its member, or `None` if it was not a member. The member is handed
    /// back to be dropped outside the lock.
    pub(crate) fn remove(&self, key: K, why: LeaveReason) -> Option<R> {
        let mut st = self.state.lock().unwrap();
        let st = &mut *st;
        let at = st.index.remove(&key)?;
        let list = Arc::make_mut(&mut st.list);
        let (_, member) = list.swap_remove(at);
        if let Some((moved, _)) = list.get(at) {
            st.index.insert(*moved, at);
        }
        tell(&mut st.watchers, &Change::Left(key, why));
        Some(member)
    }

    /// The members at this instant; later changes do not affect it.
    pub(crate) fn snapshot(&self) -> Arc<Vec<(K, R)>> {
        self.state.lock().unwrap().list.clone()
    }

    pub(crate) fn contains(&self, key: K) -> bool {
        self.state.lock().unwrap().index.contains_key(&key)
    }

    pub(crate) fn len(&self) -> usize {
        self.state.lock().unwrap().index.len()
    }

    /// Adds a watcher: it is told `Joined` for each current member at once, then every
    /// change.
    pub(crate) fn watch(&self, mut watcher: ChangeWatcher<K>) {
        let mut st = self.state.lock().unwrap();
        for (key, _) in st.list.iter() {
            if !watcher(&Change::Joined(*key)) {
                return;
            }
        }
        st.watchers.push(watcher);
    }
}

fn tell<K>(watchers: &mut Vec<ChangeWatcher<K>>, change: &Change<K>) {
    watchers.retain_mut(|w| w(change));
}

/// Why a member left a group.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LeaveReason {
    /// It was taken out ([`Group::leave`], [`Context::leave`]).
    Left,
    /// It stopped, for this reason.
    Stopped(StopReason),
}

/// A change in a group's membership, for its watchers ([`Group::watch`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum GroupEvent {
    /// `id` joined the group `group` (or was a member when the watch began).
    Joined {
        /// The group's name.
        group: Arc<str>,
        /// The member.
        id: ActorId,
    },
    /// `id` left the group `group`.
    Left {
        /// The group's name.
        group: Arc<str>,
        /// The member.
        id: ActorId,
        /// Why.
        reason: LeaveReason,
    },
}

/// A group lookup refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum GroupError {
    /// The name is in use by a group of another message type.
    TypeMismatch {
        /// The group's name.
        name: String,
        /// The message type of the group that holds the name.
        existing: &'static str,
        /// The message type asked for.
        requested: &'static str,
    },
}

impl fmt::Display for GroupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GroupError::TypeMismatch {
                name,
                existing,
                requested,
            } => write!(f, "the group {name:?} carries {existing}, not {requested}"),
        }
    }
}

impl std::error::Error for GroupError {}

/// What a [`Group::send`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GroupSendReport {
    /// Members the message was queued for.
    pub delivered: usize,
    /// Members whose mailbox was full (they did not get it).
    pub full: usize,
    /// Members that had stopped (they are leaving the group).
    pub stopped: usize,
}

/// The groups of one system, and which groups each member actor is in.
pub(crate) struct Groups {
    state: Mutex<GroupsState>,
}

struct GroupsState {
    /// Each live group by name, with its message type's name.
    by_name: HashMap<String, (Weak<dyn Any + Send + Sync>, &'static str)>,
    /// For each actor that has joined a group while alive: its groups. The entry (and the
    /// one watcher that clears it) lasts until the actor stops, so that joining and leaving
    /// again adds no watcher.
    memberships: HashMap<ActorId, Vec<Arc<dyn GroupOf>>>,
}

impl Groups {
    pub(crate) fn new() -> Arc<Groups> {
        Arc::new(Groups {
            state: Mutex::new(GroupsState {
                by_name: HashMap::new(),
                memberships: HashMap::new(),
            }),
        })
    }

    /// The group `name` of message type `M`, made if there is none.
    fn get<M: Send + 'static>(self: &Arc<Groups>, name: &str) -> Result<Group<M>, GroupError> {
        let requested = std::any::type_name::<M>();
        let mut st = self.state.lock().unwrap();
        let found = st
            .by_name
            .get(name)
            .and_then(|(weak, ty)| Some((weak.upgrade()?, *ty)));
        if let Some((any, existing)) = found {
            let typed = any.downcast::<GroupCore<M>>();
            drop(st);
            // A handle that lost the type check may be the group's last: dropped after the
            // lock (the group's drop takes it).
            return typed
                .map(|core| Group { core })
                .map_err(|_| GroupError::TypeMismatch {
                    name: name.to_owned(),
                    existing,
                    requested,
                });
        }
        let core = Arc::new(GroupCore {
            name: name.into(),
            members: Membership::new(),
            groups: self.clone(),
        });
        let weak = Arc::downgrade(&(core.clone() as Arc<dyn Any + Send + Sync>));
        st.by_name.insert(name.to_owned(), (weak, requested));
        Ok(Group { core })
    }

    /// Records that `id` is in `group`; true if the actor has no membership watcher yet.
    fn add_membership(&self, id: ActorId, group: Arc<dyn GroupOf>) -> bool {
        let mut st = self.state.lock().unwrap();
        match st.memberships.entry(id) {
            Entry::Occupied(mut e) => {
                e.get_mut().push(group);
                false
            }
            Entry::Vacant(e) => {
                e.insert(vec![group]);
                true
            }
        }
    }

    fn remove_membership(&self, id: ActorId, group: &dyn GroupOf) {
        let removed: Vec<Arc<dyn GroupOf>> = {
            let mut st = self.state.lock().unwrap();
            let Some(list) = st.memberships.get_mut(&id) else {
                return;
            };
            let at = list.iter().position(|g| same_group(&**g, group));
            at.map(|i| list.swap_remove(i)).into_iter().collect()
        };
        // A group's last reference may be here: dropped outside the lock its drop takes.
        drop(removed);
    }

    fn forget_name(&self, name: &str) {
        let mut st = self.state.lock().unwrap();
        if let Some((weak, _)) = st.by_name.get(name)
            && weak.strong_count() == 0
        {
            st.by_name.remove(name);
        }
    }
}

fn same_group(a: &dyn GroupOf, b: &dyn GroupOf) -> bool {
    std::ptr::eq(
        a as *const dyn GroupOf as *const (),
        b as *const dyn GroupOf as *const (),
    )
}

/// A group, whatever its message type: what a stopping member leaves.
trait GroupOf: Send + Sync {
    fn member_stopped(&self, id: ActorId, reason: &StopReason);
}

/// Takes a stopped actor out of all its groups.
struct MemberWatch {
    groups: Arc<Groups>,
}

impl Watcher for MemberWatch {
    fn notify_stopped(self: Arc<Self>, id: ActorId, reason: StopReason) {
        let groups = self.groups.state.lock().unwrap().memberships.remove(&id);
        for g in groups.into_iter().flatten() {
            g.member_stopped(id, &reason);
        }
    }
}

struct GroupCore<M: Send + 'static> {
    name: Arc<str>,
    members: Membership<ActorId, Recipient<M>>,
    groups: Arc<Groups>,
}

impl<M: Send + 'static> GroupOf for GroupCore<M> {
    fn member_stopped(&self, id: ActorId, reason: &StopReason) {
        drop(
            self.members
                .remove(id, LeaveReason::Stopped(reason.clone())),
        );
    }
}

impl<M: Send + 'static> Drop for GroupCore<M> {
    fn drop(&mut self) {
        self.groups.forget_name(&self.name);
    }
}

/// A named group of actors that take messages of type `M`; cheap to clone. See the
/// [module docs](self) for the guarantees.
///
/// # Example
///
/// ```
/// use kendynet::{Actor, Context, System};
/// use std::sync::mpsc;
///
/// struct Player(mpsc::Sender<String>);
/// impl Actor for Player {
///     type Msg = String;
///     fn handle(&mut self, line: String, _ctx: &mut Context<Self>) {
///         self.0.send(line).unwrap();
///     }
/// }
///
/// let system = System::builder().workers(2).build()?;
/// let room = system.group::<String>("room:1").unwrap();
/// let (tx, rx) = mpsc::channel();
/// let alice = system.spawn(Player(tx.clone()));
/// let bob = system.spawn(Player(tx));
/// room.join(&alice);
/// room.join(&bob);
/// assert_eq!(room.len(), 2);
/// assert_eq!(room.send("hello".to_owned()).delivered, 2);
/// for _ in 0..2 {
///     let line = rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap();
///     assert_eq!(line, "hello");
/// }
/// room.leave(bob.id());
/// assert_eq!(room.members(), vec![alice.id()]);
/// system.shutdown(std::time::Duration::from_secs(5));
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Group<M: Send + 'static> {
    core: Arc<GroupCore<M>>,
}

impl<M: Send + 'static> Clone for Group<M> {
    fn clone(&self) -> Group<M> {
        Group {
            core: self.core.clone(),
        }
    }
}

impl<M: Send + 'static> fmt::Debug for Group<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Group")
            .field("name", &self.core.name)
            .field("members", &self.core.members.len())
            .finish()
    }
}

impl<M: Send + 'static> Group<M> {
    /// The group's name.
    pub fn name(&self) -> &str {
        &self.core.name
    }

    /// Adds `addr`'s actor; it leaves by itself when it stops. Returns false if it was a
    /// member already. An actor that has stopped is taken out again at once (its watchers
    /// see it join and leave).
    pub fn join<A: Actor>(&self, addr: &Addr<A>) -> bool
    where
        A::Msg: From<M>,
    {
        self.join_cell(&addr.cell)
    }

    fn join_cell<A: Actor>(&self, cell: &Arc<ActorCell<A>>) -> bool
    where
        A::Msg: From<M>,
    {
        let id = cell.id;
        if !self.core.members.insert(id, Recipient::actor(cell.clone())) {
            return false;
        }
        let groups = &self.core.groups;
        // Recorded after the insert: if the actor stops in between, its watcher (this one or
        // the one already in place) still finds this group.
        if groups.add_membership(id, self.core.clone()) {
            cell.add_watcher(Arc::new(MemberWatch {
                groups: groups.clone(),
            }));
        }
        true
    }

    /// Takes `id` out; false if it was not a member.
    pub fn leave(&self, id: ActorId) -> bool {
        let Some(member) = self.core.members.remove(id, LeaveReason::Left) else {
            return false;
        };
        drop(member);
        self.core.groups.remove_membership(id, &*self.core);
        true
    }

    /// The members' ids, in no particular order.
    pub fn members(&self) -> Vec<ActorId> {
        self.core
            .members
            .snapshot()
            .iter()
            .map(|(id, _)| *id)
            .collect()
    }

    /// Whether `id` is a member.
    pub fn contains(&self, id: ActorId) -> bool {
        self.core.members.contains(id)
    }

    /// How many members it has.
    pub fn len(&self) -> usize {
        self.core.members.len()
    }

    /// Whether it has no members.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sends `msg` to every member that had joined when the send began, once each. Never
    /// blocks; a member whose mailbox is full does not get it, and the report counts it.
    pub fn send(&self, msg: M) -> GroupSendReport
    where
        M: Clone,
    {
        let members = self.core.members.snapshot();
        let mut report = GroupSendReport::default();
        let Some(((_, last), rest)) = members.split_last() else {
            return report;
        };
        let mut count = |r: Result<(), TrySendError<M>>| match r {
            Ok(()) => report.delivered += 1,
            Err(TrySendError::Full(_)) => report.full += 1,
            Err(TrySendError::Closed(_)) => report.stopped += 1,
        };
        for (_, member) in rest {
            count(member.send(msg.clone()));
        }
        count(last.send(msg));
        report
    }

    /// Subscribes `watcher` to the membership: it gets a [`GroupEvent::Joined`] for each
    /// current member at once, then each join and leave, in order. Events are queued past
    /// its mailbox capacity (none is lost); it is dropped from the group's watchers when it
    /// stops.
    pub fn watch(&self, watcher: impl Into<Recipient<GroupEvent>>) {
        let watcher: Recipient<GroupEvent> = watcher.into();
        let group = self.core.name.clone();
        self.core.members.watch(Box::new(move |change| {
            let event = match change {
                Change::Joined(id) => GroupEvent::Joined {
                    group: group.clone(),
                    id: *id,
                },
                Change::Left(id, reason) => GroupEvent::Left {
                    group: group.clone(),
                    id: *id,
                    reason: reason.clone(),
                },
            };
            watcher.force(event).is_ok()
        }));
    }
}

impl SystemHandle {
    /// The group `name` of this system, for messages of type `M` (made empty if there is
    /// none).
    ///
    /// # Errors
    /// [`GroupError::TypeMismatch`] if a live group of another message type holds the name.
    pub fn group<M: Send + 'static>(&self, name: &str) -> Result<Group<M>, GroupError> {
        self.inner.groups.get(name)
    }
}

impl<A: Actor> Context<'_, A> {
    /// Joins `group` (see [`Group::join`]); this actor leaves it when it stops.
    pub fn join<M: Send + 'static>(&self, group: &Group<M>) -> bool
    where
        A::Msg: From<M>,
    {
        group.join_cell(self.cell)
    }

    /// Leaves `group`; false if this actor was not a member.
    pub fn leave<M: Send + 'static>(&self, group: &Group<M>) -> bool {
        group.leave(self.cell.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn membership_keeps_its_index_through_swap_removes() {
        let m: Membership<u32, &'static str> = Membership::new();
        for (k, v) in [(1, "a"), (2, "b"), (3, "c"), (4, "d")] {
            assert!(m.insert(k, v));
        }
        assert!(!m.insert(2, "again"));
        assert_eq!(m.remove(1, LeaveReason::Left), Some("a"));
        assert_eq!(m.remove(1, LeaveReason::Left), None);
        // 4 moved into 1's place; its index must follow.
        assert_eq!(m.remove(4, LeaveReason::Left), Some("d"));
        assert_eq!(m.remove(3, LeaveReason::Left), Some("c"));
        let keys: Vec<u32> = m.snapshot().iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, [2]);
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn a_snapshot_is_not_changed_by_later_writes() {
        let m: Membership<u32, u32> = Membership::new();
        m.insert(1, 10);
        let before = m.snapshot();
        m.insert(2, 20);
        m.remove(1, LeaveReason::Left);
        assert_eq!(*before, vec![(1, 10)]);
        assert_eq!(*m.snapshot(), vec![(2, 20)]);
    }

    #[test]
    fn watchers_hear_the_members_then_every_change_in_order() {
        let m: Membership<u32, ()> = Membership::new();
        m.insert(1, ());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        m.watch(Box::new(move |c| {
            s.lock().unwrap().push(c.clone());
            true
        }));
        m.insert(2, ());
        m.remove(1, LeaveReason::Left);
        assert_eq!(
            *seen.lock().unwrap(),
            [
                Change::Joined(1),
                Change::Joined(2),
                Change::Left(1, LeaveReason::Left)
            ]
        );
    }
}
