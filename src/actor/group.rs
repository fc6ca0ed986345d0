//! Process groups: named sets of actors (rooms, topics, shards) that a message can be sent to
//! at once. The guarantees are on [`Group`]; the membership list and the system's table of
//! groups live in `membership.rs`, which knows no actor type.

use super::cell::{ActorCell, Addr, Recipient, Watcher};
use super::membership::{Change, GroupOf, Groups, Membership};
use super::system::SystemHandle;
use super::{Actor, ActorId, Context, StopReason};
use crate::error::TrySendError;
use crate::sync::Arc;
use std::fmt;

pub use super::membership::LeaveReason;

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

/// Takes a stopped actor out of all its groups.
struct MemberWatch {
    groups: Arc<Groups>,
}

impl Watcher for MemberWatch {
    fn notify_stopped(self: Arc<Self>, id: ActorId, reason: StopReason) {
        for g in self.groups.take_memberships(id) {
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

/// A named group of actors that take messages of type `M`, found by name in its system
/// ([`SystemHandle::group`]); cheap to clone. Any actor whose message type converts from `M`
/// can join, so actors of different types share a group.
///
/// - **A send** reaches every member that had joined when it began, exactly once. It takes a
///   snapshot of the member list (a reference count under a short lock) and delivers outside
///   the lock: joins and leaves never wait for a broadcast, nor a broadcast for them. A member
///   that leaves while a send is under way may still get that message; one that joins
///   meanwhile does not.
/// - **Leaving is automatic** when a member stops, with [`LeaveReason::Stopped`]. The group
///   holds its members' addresses, not their state (a stopped actor's state goes with its last
///   turn, as always), and an actor that joins and leaves many groups gets one watcher for all
///   of them.
/// - **Watching**: [`Group::watch`] subscribes a [`Recipient<GroupEvent>`]: it first gets a
///   `Joined` for each current member, then every change, in the order the changes happened.
/// - **Lifetime**: a group lives while a `Group` handle or a member exists; after that its
///   name is free again, also for another message type.
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
        let groups = &self.inner.groups;
        let requested = std::any::type_name::<M>();
        let made = groups.get_or_make(name, requested, || {
            Arc::new(GroupCore {
                name: name.into(),
                members: Membership::new(),
                groups: groups.clone(),
            })
        });
        made.map(|core| Group { core })
            .map_err(|existing| GroupError::TypeMismatch {
                name: name.to_owned(),
                existing,
                requested,
            })
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
