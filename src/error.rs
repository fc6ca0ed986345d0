//! Error types. A send that fails hands the message back: nothing is dropped silently.

use std::fmt;

/// A send that could not be carried out. The message (or packet) is handed back.
#[derive(PartialEq, Eq, Clone)]
pub enum TrySendError<T> {
    /// The receiver's queue is at its limit (mailbox capacity, or a socket's write limit).
    Full(T),
    /// The receiver is gone: the actor stopped, or the socket closed.
    Closed(T),
}

impl<T> TrySendError<T> {
    /// Takes the message back.
    pub fn into_inner(self) -> T {
        match self {
            TrySendError::Full(t) | TrySendError::Closed(t) => t,
        }
    }

    /// Whether the receiver is gone for good (retrying cannot help).
    pub fn is_closed(&self) -> bool {
        matches!(self, TrySendError::Closed(_))
    }

    /// Whether the receiver was full (retrying later may succeed).
    pub fn is_full(&self) -> bool {
        matches!(self, TrySendError::Full(_))
    }
}

impl<T> fmt::Debug for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySendError::Full(_) => f.write_str("Full(..)"),
            TrySendError::Closed(_) => f.write_str("Closed(..)"),
        }
    }
}

impl<T> fmt::Display for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySendError::Full(_) => f.write_str("the receiver's queue is full"),
            TrySendError::Closed(_) => f.write_str("the receiver is closed"),
        }
    }
}

impl<T> std::error::Error for TrySendError<T> {}

/// A send to an actor that has stopped. The message is handed back.
#[derive(PartialEq, Eq, Clone)]
pub struct SendError<T>(pub T);

impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SendError(..)")
    }
}

impl<T> fmt::Display for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the actor has stopped")
    }
}

impl<T> std::error::Error for SendError<T> {}
