//! The membership store behind process groups ([`super::group`]): a copy-on-write list of
//! members generic over the key and the member (actor groups keep `Recipient`s; socket groups
//! can keep socket handles), and each system's table of groups by name and of the groups each
//! actor is in. It knows no actor type.

use super::{ActorId, StopReason};
use crate::sync::{Arc, Mutex, Weak};
use std::any::Any;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::Hash;

/// A membership change, as the store reports it to its watchers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Change<K> {
    Joined(K),
    Left(K, LeaveReason),
}

/// Something told of every membership change, under the store's lock (so in order). Returns
/// false to be dropped (it has gone away).
pub(crate) type ChangeWatcher<K> = Box<dyn FnMut(&Change<K>) -> bool + Send>;

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
    /// It was taken out ([`Group::leave`](super::Group::leave),
    /// [`Context::leave`](super::Context::leave)).
    Left,
    /// It stopped, for this reason.
    Stopped(StopReason),
}

/// A group, whatever its message type: what a stopping member leaves.
pub(crate) trait GroupOf: Send + Sync {
    fn member_stopped(&self, id: ActorId, reason: &StopReason);
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

    /// The live group under `name` if its type is `G`, else a new one from `make` (if the
    /// name is free).
    ///
    /// # Errors
    /// The type name the holder was made with, if a live group of another type holds it.
    pub(crate) fn get_or_make<G: Any + Send + Sync>(
        &self,
        name: &str,
        type_name: &'static str,
        make: impl FnOnce() -> Arc<G>,
    ) -> Result<Arc<G>, &'static str> {
        let mut st = self.state.lock().unwrap();
        let found = st
            .by_name
            .get(name)
            .and_then(|(weak, ty)| Some((weak.upgrade()?, *ty)));
        if let Some((any, existing)) = found {
            drop(st);
            // A handle that loses the type check may be the group's last: it is dropped
            // after the lock (the group's drop takes it).
            return any.downcast::<G>().map_err(|_| existing);
        }
        let group = make();
        let weak = Arc::downgrade(&(group.clone() as Arc<dyn Any + Send + Sync>));
        st.by_name.insert(name.to_owned(), (weak, type_name));
        Ok(group)
    }

    /// Records that `id` is in `group`; true if the actor has no membership watcher yet.
    pub(crate) fn add_membership(&self, id: ActorId, group: Arc<dyn GroupOf>) -> bool {
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

    pub(crate) fn remove_membership(&self, id: ActorId, group: &dyn GroupOf) {
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

    /// The actor `id` stopped: its groups, to leave (dropped by the caller, outside the
    /// lock).
    pub(crate) fn take_memberships(&self, id: ActorId) -> Vec<Arc<dyn GroupOf>> {
        let taken = self.state.lock().unwrap().memberships.remove(&id);
        taken.unwrap_or_default()
    }

    /// A group is gone: frees its name (unless a newer group holds it).
    pub(crate) fn forget_name(&self, name: &str) {
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
