//! The crate's own tracing macros: `tracing`'s, behind the `tracing` feature, and nothing at
//! all without it (their arguments are not even evaluated, so the hot paths carry no trace
//! of them).
//!
//! Spans and events go to the target `kendynet`: a turn of an actor is a `turn` span at
//! TRACE level (fields `actor`, `actor_type`, `name`, `messages`); sockets accepted,
//! connected and disconnected (with `reason` and its `kind`) are DEBUG events; sends
//! refused because a mailbox or a write queue was full are DEBUG events; restarts are INFO;
//! panics, watchdog stalls and dropped messages are WARN.

/// An event on the target `kendynet`: `trace_event!(LEVEL, fields..., "message")`.
#[cfg(all(feature = "tracing", not(loom)))]
macro_rules! trace_event {
    ($lvl:ident, $($rest:tt)+) => {
        ::tracing::event!(target: "kendynet", ::tracing::Level::$lvl, $($rest)+)
    };
}

#[cfg(not(all(feature = "tracing", not(loom))))]
macro_rules! trace_event {
    ($($rest:tt)*) => {};
}

/// Runs `$body` inside a `turn` span of actor `$id` (type `$ty`, registered name `$name`, an
/// `Option<&str>`), recording the messages it handled (`$messages`, evaluated after the
/// body) in the span.
#[cfg(all(feature = "tracing", not(loom)))]
macro_rules! in_turn_span {
    ($id:expr, $ty:expr, $name:expr, $messages:expr, $body:expr) => {{
        let span = ::tracing::trace_span!(
            target: "kendynet",
            "turn",
            actor = $id.0,
            actor_type = $ty,
            name = $name,
            messages = ::tracing::field::Empty,
        );
        let entered = span.enter();
        let out = $body;
        span.record("messages", $messages);
        drop(entered);
        out
    }};
}

#[cfg(not(all(feature = "tracing", not(loom))))]
macro_rules! in_turn_span {
    ($id:expr, $ty:expr, $name:expr, $messages:expr, $body:expr) => {
        $body
    };
}
