//! Driving a layer-1 [`Engine`]: on the test thread until a condition holds ([`run_until`]),
//! or on a thread of its own ([`EngineThread`]), since an `Engine` is not `Send`.

use super::WAIT;
use kendynet::net::{Engine, EngineHandle};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How long an engine thread may live at most, so that a test that forgets to stop it (or
/// panics first) cannot leave it running.
const ENGINE_LIFETIME: Duration = Duration::from_secs(60);

/// Runs `engine` on this thread until `done` holds, failing after [`WAIT`] with `what`.
#[track_caller]
pub fn run_until(engine: &mut Engine, what: &str, mut done: impl FnMut(&mut Engine) -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done(engine) {
        let now = Instant::now();
        assert!(
            now < deadline,
            "timed out after {WAIT:?} waiting for {what}"
        );
        engine
            .run_once(Some((deadline - now).min(Duration::from_millis(50))))
            .expect("run_once");
    }
}

/// An engine running on its own thread (an `Engine` is not `Send`, so it is made there).
/// Stopped and joined on drop; a panic on the engine thread fails the test when it is stopped.
pub struct EngineThread {
    handle: EngineHandle,
    stop: Arc<AtomicBool>,
    join: Option<JoinHandle<()>>,
}

impl EngineThread {
    /// Creates an engine on a new thread, runs `setup` there and hands its result back, then
    /// keeps running the engine until stopped.
    pub fn spawn<R: Send + 'static>(
        setup: impl FnOnce(&mut Engine) -> R + Send + 'static,
    ) -> (EngineThread, R) {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let flag = stop.clone();
        let join = thread::Builder::new()
            .name("test-engine".into())
            .spawn(move || {
                let mut engine = Engine::new().expect("Engine::new");
                let r = setup(&mut engine);
                tx.send((engine.handle(), r)).unwrap();
                let born = Instant::now();
                while !flag.load(Ordering::SeqCst) && born.elapsed() < ENGINE_LIFETIME {
                    engine
                        .run_once(Some(Duration::from_millis(100)))
                        .expect("run_once");
                }
            })
            .expect("spawn engine thread");
        let (handle, r) = rx
            .recv_timeout(WAIT)
            .expect("engine thread did not start (setup panicked?)");
        (
            EngineThread {
                handle,
                stop,
                join: Some(join),
            },
            r,
        )
    }

    /// The engine's cross-thread handle.
    pub fn handle(&self) -> &EngineHandle {
        &self.handle
    }

    /// Runs `f` on the engine thread and returns its result.
    pub fn call<R: Send + 'static>(&self, f: impl FnOnce(&mut Engine) -> R + Send + 'static) -> R {
        let (tx, rx) = mpsc::channel();
        self.handle
            .post(move |engine| {
                let _ = tx.send(f(engine));
            })
            .expect("post");
        rx.recv_timeout(WAIT)
            .expect("posted closure did not run on the engine thread")
    }

    /// Stops the engine thread and joins it, failing the test if it panicked.
    pub fn stop(mut self) {
        self.shutdown(true);
    }

    fn shutdown(&mut self, check: bool) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.handle.wake();
        if let Some(join) = self.join.take() {
            let res = join.join();
            if check && res.is_err() {
                panic!("the engine thread panicked");
            }
        }
    }
}

impl Drop for EngineThread {
    fn drop(&mut self) {
        // Do not panic while a failing test is already unwinding.
        self.shutdown(false);
    }
}
