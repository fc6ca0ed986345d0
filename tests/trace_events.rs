//! The `tracing` feature: a span per actor turn, events for sockets, panics, restarts and
//! refused sends, seen by a small subscriber of the test's own.

mod support;

use kendynet::{Actor, Context, NetEvent, RestartPolicy, SpawnOptions, System, WPacket};
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use support::wire::{client, expect_frame, write_frame};
use support::{any_port, eventually, shutdown_gracefully};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

type Fields = HashMap<String, String>;

/// Every span (its name and fields, later records included) and event it was told of.
#[derive(Default)]
struct Collector {
    next: AtomicU64,
    spans: Mutex<HashMap<u64, (String, Fields)>>,
    events: Mutex<Vec<Fields>>,
}

struct Fill<'a>(&'a mut Fields);

impl Visit for Fill<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

struct Sub(&'static Collector);

impl Subscriber for Sub {
    fn enabled(&self, meta: &Metadata<'_>) -> bool {
        meta.target() == "kendynet"
    }
    fn new_span(&self, attrs: &Attributes<'_>) -> Id {
        let id = self.0.next.fetch_add(1, Ordering::Relaxed) + 1;
        let mut fields = Fields::new();
        attrs.record(&mut Fill(&mut fields));
        self.0
            .spans
            .lock()
            .unwrap()
            .insert(id, (attrs.metadata().name().to_owned(), fields));
        Id::from_u64(id)
    }
    fn record(&self, span: &Id, values: &Record<'_>) {
        if let Some((_, fields)) = self.0.spans.lock().unwrap().get_mut(&span.into_u64()) {
            values.record(&mut Fill(fields));
        }
    }
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields::new();
        event.record(&mut Fill(&mut fields));
        self.0.events.lock().unwrap().push(fields);
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

fn collector() -> &'static Collector {
    static C: OnceLock<&'static Collector> = OnceLock::new();
    C.get_or_init(|| {
        let c: &'static Collector = Box::leak(Box::default());
        tracing::subscriber::set_global_default(Sub(c)).expect("the only subscriber");
        c
    })
}

fn has_event(what: &str, pred: impl Fn(&Fields) -> bool) {
    let c = collector();
    eventually(what, || c.events.lock().unwrap().iter().any(&pred));
}

struct Echo;

impl Actor for Echo {
    type Msg = NetEvent;
    fn handle(&mut self, ev: NetEvent, _: &mut Context<Self>) {
        if let NetEvent::Packet { sock, packet } = ev {
            let _ = sock.send(WPacket::from(packet));
        }
    }
}

struct Fragile;

impl Actor for Fragile {
    type Msg = u32;
    fn handle(&mut self, n: u32, _: &mut Context<Self>) {
        assert_ne!(n, 0, "fragile got a zero");
    }
}

#[test]
fn turns_are_spans_and_socket_and_failure_events_are_events() {
    let c = collector();
    let system = System::builder().workers(1).build().unwrap();
    let echo = system.spawn(Echo);
    system.register("echo", &echo).unwrap();
    let addr = system.listen(any_port(), &echo).unwrap();
    let mut s = client(addr);
    write_frame(&mut s, b"hello").unwrap();
    assert_eq!(expect_frame(&mut s), b"hello");
    drop(s);

    has_event("the accept event", |e| e["message"] == "accept");
    has_event("the disconnect event with its reason", |e| {
        e["message"] == "disconnect"
            && e.get("reason").map(String::as_str) == Some("peer closed the connection")
            && e.get("kind").map(String::as_str) == Some("peer_closed")
    });
    // The echo's turns: spans named `turn` with the actor, its name and a message count.
    eventually("a turn span of the echo that handled the packet", || {
        c.spans.lock().unwrap().values().any(|(name, f)| {
            name == "turn"
                && f.get("name").map(String::as_str) == Some("echo")
                && f.get("actor_type").is_some_and(|t| t.ends_with("Echo"))
                && f.get("actor").is_some()
                && f.get("messages")
                    .is_some_and(|n| n.parse::<u64>().unwrap() >= 1)
        })
    });

    // A panic and the restart after it.
    let fragile = system.spawn_supervised(|| Fragile, RestartPolicy::default());
    fragile.send(0).unwrap();
    has_event("the panic event", |e| {
        e["message"] == "handler panicked"
            && e.get("panic")
                .is_some_and(|p| p.contains("fragile got a zero"))
    });
    has_event("the restart event", |e| e["message"] == "actor restarted");

    // A send refused by a full mailbox.
    let small = system
        .spawn_with(Fragile, SpawnOptions::default().mailbox_capacity(1))
        .unwrap();
    let mut refused = false;
    for _ in 0..10_000 {
        if small.send(1).is_err() {
            refused = true;
            break;
        }
    }
    assert!(refused, "a mailbox of one refuses a burst");
    has_event("the refused-send event", |e| {
        e["message"] == "send refused: mailbox full"
    });
    shutdown_gracefully(system);
}
