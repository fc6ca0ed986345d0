//! The name registry: an actor registered under a name is found by it (with its type); a
//! taken name is refused, never replaced, also to racing threads; a name is freed when its
//! holder stops, however it stops, and can then be taken again.
//!
//! A [`Watcher`] reports each stop through a channel. Every wait is bounded
//! ([`WAIT`](support::WAIT)).

mod support;

use kendynet::{Actor, Addr, Context, RegistryError, SpawnOptions, StopReason, System};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Barrier};
use std::thread;
use support::actors::{Bystander, Watcher, expect_stopped, watch};
use support::{eventually, recv, shutdown_gracefully};

/// A registrable actor that says who it is.
struct Named {
    label: &'static str,
}

enum NamedMsg {
    Who(Sender<&'static str>),
    Register(String, Sender<Result<(), RegistryError>>),
    Boom,
}

impl Actor for Named {
    type Msg = NamedMsg;
    fn handle(&mut self, msg: NamedMsg, ctx: &mut Context<Self>) {
        match msg {
            NamedMsg::Who(reply) => {
                let _ = reply.send(self.label);
            }
            NamedMsg::Register(name, reply) => {
                let _ = reply.send(ctx.register(&name));
            }
            NamedMsg::Boom => panic!("named actor fails"),
        }
    }
}

/// Register and look up; duplicates refused; a name is freed when its holder stops
/// (however it stops) and can then be taken again; a lookup with the wrong type finds nothing.
#[test]
fn registry_refuses_duplicates_and_frees_names_of_stopped_actors() {
    let system = System::builder().workers(2).build().unwrap();
    let (wtx, wrx) = mpsc::channel();
    let watcher = system.spawn(Watcher { out: wtx });
    let first = system.spawn(Named { label: "first" });
    let second = system.spawn(Named { label: "second" });
    let (tx, rx) = mpsc::channel();
    let who = |a: &Addr<Named>| {
        a.send(NamedMsg::Who(tx.clone())).unwrap();
        recv(&rx, "an answer")
    };

    assert_eq!(system.register("svc", &first), Ok(()));
    let found = system.lookup::<Named>("svc").expect("a registered name");
    assert_eq!(found, first);
    assert_eq!(who(&found), "first");
    assert!(system.lookup::<Named>("nope").is_none());
    assert!(
        system.lookup::<Bystander>("svc").is_none(),
        "a lookup with the wrong type"
    );

    // Duplicates are refused, never replaced: by register, spawn_with and Context::register.
    assert_eq!(
        system.register("svc", &second),
        Err(RegistryError::NameTaken("svc".into()))
    );
    assert_eq!(
        system.register("svc", &first),
        Err(RegistryError::NameTaken("svc".into())),
        "not even by its holder"
    );
    match system.spawn_with(
        Named { label: "third" },
        SpawnOptions::default().name("svc"),
    ) {
        Err(RegistryError::NameTaken(n)) => assert_eq!(n, "svc"),
        other => panic!("spawn_with a taken name: {other:?}"),
    }
    let (rtx, rrx) = mpsc::channel();
    second
        .send(NamedMsg::Register("svc".into(), rtx.clone()))
        .unwrap();
    assert_eq!(
        recv(&rrx, "Context::register"),
        Err(RegistryError::NameTaken("svc".into()))
    );
    assert_eq!(who(&system.lookup::<Named>("svc").unwrap()), "first");

    // Several threads race for one name: exactly one wins.
    let racers: Vec<Addr<Named>> = (0..8)
        .map(|_| system.spawn(Named { label: "racer" }))
        .collect();
    let barrier = Arc::new(Barrier::new(racers.len()));
    let wins: usize = racers
        .iter()
        .map(|r| {
            let (h, r, b) = (system.handle(), r.clone(), barrier.clone());
            thread::spawn(move || {
                b.wait();
                h.register("contested", &r)
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| usize::from(t.join().unwrap().is_ok()))
        .sum();
    assert_eq!(wins, 1, "exactly one racer holds the name");

    // An actor under two names (one from inside) loses both when it stops normally.
    second
        .send(NamedMsg::Register("svc-b".into(), rtx.clone()))
        .unwrap();
    assert_eq!(recv(&rrx, "Context::register"), Ok(()));
    assert_eq!(system.register("svc-b2", &second), Ok(()));
    watch(&watcher, &first);
    watch(&watcher, &second);
    first.stop();
    assert_eq!(expect_stopped(&wrx, first.id()), StopReason::Normal);
    eventually("the name of a stopped actor to be freed", || {
        system.lookup::<Named>("svc").is_none()
    });
    // Taken again by another actor.
    let again = system
        .spawn_with(
            Named { label: "again" },
            SpawnOptions::default().name("svc"),
        )
        .expect("a freed name can be taken again");
    assert_eq!(who(&system.lookup::<Named>("svc").unwrap()), "again");
    assert_eq!(again, system.lookup::<Named>("svc").unwrap());

    // A panic frees names too.
    second.send(NamedMsg::Boom).unwrap();
    assert!(matches!(
        expect_stopped(&wrx, second.id()),
        StopReason::Panicked(_)
    ));
    eventually("the names of a panicked actor to be freed", || {
        system.lookup::<Named>("svc-b").is_none() && system.lookup::<Named>("svc-b2").is_none()
    });
    assert_eq!(system.register("svc-b", &again), Ok(()));
    // Registering a stopped actor is refused, and does not take the name.
    assert_eq!(
        system.register("ghost", &first),
        Err(RegistryError::ActorStopped)
    );
    assert!(system.lookup::<Named>("ghost").is_none());
    assert_eq!(system.register("ghost", &again), Ok(()));
    assert_eq!(system.registered_names(), 4, "svc, svc-b, ghost, contested");
    shutdown_gracefully(system);
}
