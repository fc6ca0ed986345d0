//! `SystemHandle::metrics`: each counter moves when, and only when, its event happens.

mod support;

use kendynet::{
    Actor, Context, Metrics, NetEvent, RestartPolicy, SpawnOptions, System, TrySendError, WPacket,
};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::Duration;
use support::wire::{client, expect_eof, expect_frame, write_frame};
use support::{any_port, eventually, recv, shutdown_gracefully};

/// Adds what it is sent; `0` panics; `u64::MAX` blocks until told to go on.
struct Adder {
    sum: u64,
    gate: Option<Receiver<()>>,
}

impl Actor for Adder {
    type Msg = u64;
    fn handle(&mut self, n: u64, _: &mut Context<Self>) {
        match n {
            0 => panic!("zero"),
            u64::MAX => {
                if let Some(gate) = &self.gate {
                    let _ = gate.recv_timeout(support::WAIT);
                }
            }
            n => self.sum += n,
        }
    }
}

fn metrics_until(system: &System, what: &str, done: impl Fn(&Metrics) -> bool) -> Metrics {
    let mut last = system.metrics();
    eventually(what, || {
        last = system.metrics();
        done(&last)
    });
    last
}

#[test]
fn actor_counters_follow_spawns_messages_restarts_and_stops() {
    let system = System::builder().workers(2).build().unwrap();
    let before = system.metrics();
    assert_eq!(before.actors_live, 0);
    assert_eq!(before.messages_handled, 0);

    let a = system.spawn(Adder { sum: 0, gate: None });
    system.register("adder", &a).unwrap();
    let _anonymous = system.spawn(Adder { sum: 0, gate: None });
    for n in 1..=100 {
        a.send(n).unwrap();
    }
    let m = metrics_until(&system, "100 messages handled", |m| {
        m.messages_handled >= 100
    });
    assert_eq!(m.actors_live, 2);
    assert_eq!(m.actors_spawned, 2);
    assert_eq!(m.messages_by_name, vec![("adder".to_owned(), 100)]);
    assert!(m.mailbox_high_water >= 1, "{m:?}");

    // A restart in place is counted as a restart, not a stop.
    let sup = system.spawn_supervised(|| Adder { sum: 0, gate: None }, RestartPolicy::default());
    sup.send(0).unwrap();
    sup.send(5).unwrap();
    let m = metrics_until(&system, "the restart", |m| m.actors_restarted == 1);
    assert_eq!(m.actors_stopped, 0);
    assert_eq!(m.actors_spawned, 3);

    a.stop();
    let m = metrics_until(&system, "the stop", |m| m.actors_stopped == 1);
    assert_eq!(m.actors_live, 2);
    assert!(
        m.messages_by_name.is_empty(),
        "the name went with its actor"
    );
    shutdown_gracefully(system);
}

#[test]
fn mailbox_depth_and_refused_sends_of_a_full_mailbox() {
    let system = System::builder().workers(1).build().unwrap();
    let (go, gate) = mpsc::channel();
    let a = system
        .spawn_with(
            Adder {
                sum: 0,
                gate: Some(gate),
            },
            SpawnOptions::default().mailbox_capacity(4),
        )
        .unwrap();
    system.register("blocked", &a).unwrap();
    a.send(u64::MAX).unwrap();
    // The handler is blocked (its message is counted per name once started, in the total
    // once its turn ends): what follows waits in the mailbox.
    metrics_until(&system, "the blocking message taken", |m| {
        m.mailbox_depth == 0 && m.messages_by_name == vec![("blocked".to_owned(), 1)]
    });
    for n in 1..=4 {
        a.send(n).unwrap();
    }
    assert!(matches!(a.send(9), Err(TrySendError::Full(9))));
    assert!(matches!(a.send(9), Err(TrySendError::Full(9))));
    let m = system.metrics();
    assert_eq!(m.mailbox_depth, 4);
    assert_eq!(m.sends_refused_mailbox_full, 2);
    go.send(()).unwrap();
    // (A snapshot is not one instant: the depth is read before the turn counters.)
    let m = metrics_until(&system, "the queue handled", |m| {
        m.messages_handled == 5 && m.mailbox_depth == 0
    });
    assert!(m.mailbox_high_water >= 4, "{m:?}");
    shutdown_gracefully(system);
}

#[test]
fn handler_time_is_sampled_into_its_histogram() {
    let system = System::builder().workers(1).build().unwrap();
    let a = system.spawn(Adder { sum: 0, gate: None });
    // Each send is its own turn (the previous one was handled first): more than twice
    // HANDLER_TIME_SAMPLE turns, so at least two are timed.
    let turns = 2 * kendynet::actor::HANDLER_TIME_SAMPLE + 10;
    for n in 1..=turns {
        a.send(n).unwrap();
        metrics_until(&system, "the message handled", |m| m.messages_handled >= n);
    }
    let m = system.metrics();
    let h = &m.handler_time;
    assert!(h.count >= 2, "{h:?}");
    assert_eq!(h.buckets.iter().sum::<u64>(), h.count);
    assert!(!h.sum.is_zero());
    shutdown_gracefully(system);
}

/// Echoes, and tells the test of each `Disconnected`.
struct Echo(Sender<String>);

impl Actor for Echo {
    type Msg = NetEvent;
    fn handle(&mut self, ev: NetEvent, _: &mut Context<Self>) {
        match ev {
            NetEvent::Packet { sock, packet } => {
                if packet.payload() == b"bye" {
                    let _ = sock.close();
                } else {
                    let _ = sock.send(WPacket::from(packet));
                }
            }
            NetEvent::Disconnected { reason, .. } => {
                let _ = self
                    .0
                    .send(kendynet::runtime::close_reason_label(&reason).to_owned());
            }
            _ => {}
        }
    }
}

#[test]
fn socket_counters_follow_accepts_packets_and_closes() {
    let system = System::builder().workers(2).build().unwrap();
    let (tx, rx) = mpsc::channel();
    let echo = system.spawn(Echo(tx));
    let addr = system.listen(any_port(), &echo).unwrap();

    let mut c1 = client(addr);
    for i in 0..10u8 {
        write_frame(&mut c1, &[i; 100]).unwrap();
        assert_eq!(expect_frame(&mut c1), vec![i; 100]);
    }
    let m = system.metrics();
    assert_eq!(m.sockets_accepted, 1);
    assert_eq!(m.sockets_open, 1);
    assert_eq!(m.packets_in, 10);
    assert_eq!(m.bytes_in, 1000);
    assert_eq!(m.packets_out, 10);
    assert_eq!(m.bytes_out, 1000);

    // Closed by the peer, then closed by this side.
    drop(c1);
    assert_eq!(recv(&rx, "the first disconnect"), "peer_closed");
    let mut c2 = client(addr);
    write_frame(&mut c2, b"bye").unwrap();
    expect_eof(&mut c2);
    assert_eq!(recv(&rx, "the second disconnect"), "local");
    let m = metrics_until(&system, "both sockets freed", |m| m.sockets_open == 0);
    assert_eq!(m.sockets_accepted, 2);
    assert_eq!(m.sockets_closed.peer_closed, 1);
    assert_eq!(m.sockets_closed.local, 1);
    assert_eq!(m.sockets_closed.total(), 2);
    assert_eq!(m.packets_in, 11);
    assert_eq!(m.bytes_in, 1003);

    let text = m.to_prometheus();
    assert!(text.contains("kendynet_sockets_closed_total{reason=\"peer_closed\"} 1\n"));
    assert!(text.contains("kendynet_sockets_accepted_total 2\n"));
    shutdown_gracefully(system);
}

#[test]
fn timers_pending_are_counted() {
    /// `true`: sets three timers an hour away; `false`: cancels them.
    struct Sleeper(Vec<kendynet::TimerHandle>);
    impl Actor for Sleeper {
        type Msg = bool;
        fn handle(&mut self, set: bool, ctx: &mut Context<Self>) {
            if set {
                for _ in 0..3 {
                    let h = ctx.send_self_after(Duration::from_secs(3600), false);
                    self.0.push(h);
                }
            } else {
                for h in self.0.drain(..) {
                    assert!(ctx.cancel_timer(&h));
                }
            }
        }
    }
    let system = System::builder().workers(1).build().unwrap();
    let s = system.spawn(Sleeper(Vec::new()));
    s.send(true).unwrap();
    metrics_until(&system, "three timers pending", |m| m.timers_pending == 3);
    s.send(false).unwrap();
    metrics_until(&system, "no timer pending", |m| m.timers_pending == 0);
    shutdown_gracefully(system);
}
