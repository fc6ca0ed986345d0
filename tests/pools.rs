//! Pools of actors and their routing: `send_keyed` keeps each key on one member (so a key's
//! messages stay in order), `LeastLoaded` passes over a busy member while another is free, and
//! `RoundRobin` deals messages to the members in turn.
//!
//! Members report through a channel. Every wait is bounded ([`WAIT`]).

mod support;

use kendynet::{Actor, Context, Pool, PoolRouting, System};
use std::collections::HashMap;
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::{self, JoinHandle};
use std::time::Duration;
use support::{WAIT, recv, shutdown_gracefully};

/// A pool member: checks per-key order, records which keys it saw.
struct Member {
    index: usize,
    next: HashMap<u64, u64>,
    violations: u64,
    done: Sender<(usize, u32)>,
}

enum MemberMsg {
    Keyed(u64, u64),
    /// Work item `n`, blocking on the receiver first if there is one.
    Work(u32, Option<Receiver<()>>),
    Report(Sender<(usize, HashMap<u64, u64>, u64)>),
}

impl Actor for Member {
    type Msg = MemberMsg;
    fn handle(&mut self, msg: MemberMsg, _: &mut Context<Self>) {
        match msg {
            MemberMsg::Keyed(key, seq) => {
                let next = self.next.entry(key).or_insert(0);
                if *next != seq {
                    self.violations += 1;
                }
                *next = seq + 1;
            }
            MemberMsg::Work(n, block) => {
                if let Some(release) = block {
                    let _ = self.done.send((self.index, u32::MAX));
                    release.recv_timeout(WAIT).expect("the test to release");
                }
                let _ = self.done.send((self.index, n));
            }
            MemberMsg::Report(reply) => {
                let _ = reply.send((self.index, self.next.clone(), self.violations));
            }
        }
    }
}

/// A pool of `size` [`Member`]s routed by `routing`, and the channel on which the members
/// report work done (`Work`).
fn member_pool(
    system: &System,
    size: usize,
    routing: PoolRouting,
) -> (Pool<Member>, Receiver<(usize, u32)>) {
    let (tx, rx) = mpsc::channel();
    let pool = Pool::spawn(system, size, routing, |index| Member {
        index,
        next: HashMap::new(),
        violations: 0,
        done: tx.clone(),
    });
    (pool, rx)
}

/// `send_keyed` sends every message of a key to one member, so per-key order holds,
/// with many keys and several sending threads.
#[test]
fn pool_send_keyed_keeps_order_per_key() {
    const KEYS: u64 = 200;
    const PER_KEY: u64 = 50;
    const THREADS: u64 = 4;
    let system = System::builder().workers(3).build().unwrap();
    let (pool, _done) = member_pool(&system, 4, PoolRouting::LeastLoaded);
    let senders: Vec<JoinHandle<()>> = (0..THREADS)
        .map(|t| {
            let pool = pool.clone();
            thread::spawn(move || {
                for seq in 0..PER_KEY {
                    for key in (t..KEYS).step_by(THREADS as usize) {
                        pool.send_keyed(key * 0x1_0001, MemberMsg::Keyed(key, seq))
                            .unwrap();
                    }
                }
            })
        })
        .collect();
    for s in senders {
        s.join().expect("sender panicked");
    }
    let (tx, rx) = mpsc::channel();
    for m in pool.members() {
        m.send(MemberMsg::Report(tx.clone())).unwrap();
    }
    let mut owner_of: HashMap<u64, usize> = HashMap::new();
    let mut used = 0;
    for _ in 0..pool.len() {
        let (index, next, violations) = recv(&rx, "the members' reports");
        assert_eq!(
            violations, 0,
            "member {index}: a key's messages out of order"
        );
        used += usize::from(!next.is_empty());
        for (key, count) in next {
            assert_eq!(count, PER_KEY, "key {key}: messages lost at member {index}");
            if let Some(other) = owner_of.insert(key, index) {
                panic!("key {key} reached members {other} and {index}");
            }
        }
    }
    assert_eq!(owner_of.len(), KEYS as usize, "every key reached a member");
    assert!(used > 1, "all keys landed on one member");
    shutdown_gracefully(system);
}

/// With one member busy, `LeastLoaded` keeps the others working.
#[test]
fn pool_least_loaded_uses_other_members_while_one_is_busy() {
    const ITEMS: u32 = 20;
    let system = System::builder().workers(3).build().unwrap();
    let (pool, done) = member_pool(&system, 3, PoolRouting::LeastLoaded);
    let (release_tx, release_rx) = mpsc::channel();
    pool.send(MemberMsg::Work(0, Some(release_rx))).unwrap();
    let (busy, marker) = recv(&done, "a member to block");
    assert_eq!(marker, u32::MAX);
    for n in 1..=ITEMS {
        pool.send(MemberMsg::Work(n, None)).unwrap();
    }
    // While `busy` is blocked, others complete work.
    let (worker, n) = recv(&done, "another member to complete work");
    assert_ne!(
        worker, busy,
        "only the blocked member could have completed {n}"
    );
    release_tx.send(()).unwrap();
    let mut by_member: HashMap<usize, u32> = HashMap::from([(worker, 1)]);
    for _ in 1..=ITEMS {
        let (m, _) = recv(&done, "all work to complete");
        *by_member.entry(m).or_default() += 1;
    }
    assert!(by_member.len() > 1, "{by_member:?}");
    assert_eq!(by_member.values().sum::<u32>(), ITEMS + 1);
    shutdown_gracefully(system);
}

/// Pool, `LeastLoaded`: "a free instance (one whose mailbox is empty)". A member that is busy
/// in a long handler has an empty mailbox too, so it is picked while others are idle, and the
/// message waits behind the long handler. Pool of two, member 0 blocked: every other message
/// lands behind it although member 1 is idle.
#[test]
fn pool_least_loaded_does_not_queue_behind_a_busy_member_while_another_is_idle() {
    let system = System::builder().workers(3).build().unwrap();
    let (pool, done) = member_pool(&system, 2, PoolRouting::LeastLoaded);
    let (release_tx, release_rx) = mpsc::channel();
    pool.send(MemberMsg::Work(0, Some(release_rx))).unwrap();
    let (busy, _) = recv(&done, "a member to block");
    // One at a time, each sent only when the previous one is done: the idle member is always
    // free, so each should complete while the busy one is still blocked.
    for n in 1..=4 {
        pool.send(MemberMsg::Work(n, None)).unwrap();
        match done.recv_timeout(Duration::from_secs(2)) {
            Ok((m, got)) => {
                assert_eq!(got, n);
                assert_ne!(m, busy);
            }
            Err(_) => {
                release_tx.send(()).unwrap();
                panic!(
                    "message {n} was queued behind the busy member {busy} while the other was idle"
                );
            }
        }
    }
    release_tx.send(()).unwrap();
    shutdown_gracefully(system);
}

/// `RoundRobin` deals messages to the members in turn.
#[test]
fn pool_round_robin_deals_evenly() {
    let system = System::builder().workers(2).build().unwrap();
    let (pool, done) = member_pool(&system, 4, PoolRouting::RoundRobin);
    for n in 0..400 {
        pool.send(MemberMsg::Work(n, None)).unwrap();
    }
    let mut by_member: HashMap<usize, Vec<u32>> = HashMap::new();
    for _ in 0..400 {
        let (m, n) = recv(&done, "the work to complete");
        by_member.entry(m).or_default().push(n);
    }
    assert_eq!(by_member.len(), 4);
    for (m, ns) in &by_member {
        assert_eq!(ns.len(), 100, "member {m}");
        assert!(
            ns.windows(2).all(|w| w[0] < w[1]),
            "member {m} out of order"
        );
    }
    shutdown_gracefully(system);
}
