//! The crate's own tracing macros: `tracing`'s, behind the `tracing` feature, and nothing at
//! all without it (their arguments are not even evaluated, so the hot paths carry no trace
//! of them).
//!
//! Spans and events go to the target `kendynet`: a turn of an actor is a `turn` span at
//! TRACE level (fields `actor`, `actor_type`, `name` (a registered name, if any),
//! `messages`); sockets accepted,
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

/// A `turn` span, entered until it drops; then it records how far the actor's count of
/// messages started moved meanwhile (whichever way the turn returned).
#[cfg(all(feature = "tracing", not(loom)))]
pub(crate) struct TurnSpan<'a> {
    span: Option<::tracing::span::EnteredSpan>,
    started: &'a crate::sync::AtomicU64,
    before: u64,
}

#[cfg(all(feature = "tracing", not(loom)))]
impl<'a> TurnSpan<'a> {
    pub(crate) fn enter(
        actor: u64,
        actor_type: &'static str,
        name: Option<&str>,
        started: &'a crate::sync::AtomicU64,
    ) -> TurnSpan<'a> {
        let span = ::tracing::trace_span!(
            target: "kendynet",
            "turn",
            actor,
            actor_type,
            name,
            messages = ::tracing::field::Empty,
        );
        TurnSpan {
            span: Some(span.entered()),
            before: started.load(crate::sync::Ordering::Relaxed),
            started,
        }
    }
}

#[cfg(all(feature = "tracing", not(loom)))]
impl Drop for TurnSpan<'_> {
    fn drop(&mut self) {
        if let Some(span) = self.span.take() {
            let now = self.started.load(crate::sync::Ordering::Relaxed);
            span.record("messages", now.wrapping_sub(self.before));
        }
    }
}

/// `let _span = turn_span!(actor_id, type_name, name, &started_count);`: a [`TurnSpan`]
/// with the feature, `()` without.
#[cfg(all(feature = "tracing", not(loom)))]
macro_rules! turn_span {
    ($id:expr, $ty:expr, $name:expr, $started:expr) => {
        crate::trace::TurnSpan::enter($id.0, $ty, $name, $started)
    };
}

#[cfg(not(all(feature = "tracing", not(loom))))]
macro_rules! turn_span {
    ($id:expr, $ty:expr, $name:expr, $started:expr) => {
        ()
    };
}
