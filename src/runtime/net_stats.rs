//! The counters behind [`Metrics`]: each poller's own (written by its thread alone) and the
//! system's shared ones for rare events. See [`metrics`](super::metrics) for who counts what.

use crate::net::DisconnectReason;
use crate::sync::Ordering;
use crate::sync::unmodelled::AtomicU64;

/// Sockets that ended, counted by why.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClosedSockets {
    /// The peer closed its end ([`DisconnectReason::PeerClosed`]).
    pub peer_closed: u64,
    /// The peer reset the connection ([`DisconnectReason::Reset`]).
    pub reset: u64,
    /// Closed by this side: `close`, a shutdown ([`DisconnectReason::ClosedLocally`]).
    pub local: u64,
    /// A receive, send or packet timeout.
    pub timeout: u64,
    /// Closed by the slow-consumer policy ([`DisconnectReason::SlowConsumer`]).
    pub slow_consumer: u64,
    /// The peer broke the protocol (a packet longer than the limit).
    pub protocol: u64,
    /// Any other socket error.
    pub error: u64,
}

/// The reason buckets, in the order of [`ClosedSockets`]'s fields (and their label values).
pub(crate) const CLOSE_KINDS: [&str; 7] = [
    "peer_closed",
    "reset",
    "local",
    "timeout",
    "slow_consumer",
    "protocol",
    "error",
];

/// The bucket of `reason` (an index into [`CLOSE_KINDS`]).
pub(crate) fn close_kind(reason: &DisconnectReason) -> usize {
    match reason {
        DisconnectReason::PeerClosed => 0,
        DisconnectReason::Reset => 1,
        DisconnectReason::ClosedLocally => 2,
        DisconnectReason::RecvTimeout
        | DisconnectReason::SendTimeout
        | DisconnectReason::PacketTimeout => 3,
        DisconnectReason::SlowConsumer { .. } => 4,
        DisconnectReason::PacketTooLarge { .. } => 5,
        _ => 6,
    }
}

/// The label value of the reason bucket of `reason` (as in the Prometheus output and the
/// `kind` field of the `disconnect` trace event).
pub fn close_reason_label(reason: &DisconnectReason) -> &'static str {
    CLOSE_KINDS[close_kind(reason)]
}

impl ClosedSockets {
    /// All of them.
    pub fn total(&self) -> u64 {
        self.as_array().iter().sum()
    }

    pub(crate) fn as_array(&self) -> [u64; 7] {
        [
            self.peer_closed,
            self.reset,
            self.local,
            self.timeout,
            self.slow_consumer,
            self.protocol,
            self.error,
        ]
    }

    pub(crate) fn from_array(a: [u64; 7]) -> ClosedSockets {
        let [
            peer_closed,
            reset,
            local,
            timeout,
            slow_consumer,
            protocol,
            error,
        ] = a;
        ClosedSockets {
            peer_closed,
            reset,
            local,
            timeout,
            slow_consumer,
            protocol,
            error,
        }
    }
}

/// One poller's counters, written by its thread only.
#[repr(align(128))]
pub(crate) struct PollerCounters {
    pub(crate) packets_in: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) packets_out: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    pub(crate) closed: [AtomicU64; 7],
}

#[inline]
fn bump(a: &AtomicU64, n: u64) {
    if n != 0 {
        a.store(a.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    }
}

impl PollerCounters {
    fn new() -> PollerCounters {
        PollerCounters {
            packets_in: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            packets_out: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            closed: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// Counts the events of one delivery pass (called by the poller's thread only).
    #[inline]
    pub(crate) fn delivered(&self, packets: u64, bytes: u64) {
        bump(&self.packets_in, packets);
        bump(&self.bytes_in, bytes);
    }

    /// Counts packets handed to connections for writing.
    #[inline]
    pub(crate) fn sent(&self, packets: u64, bytes: u64) {
        bump(&self.packets_out, packets);
        bump(&self.bytes_out, bytes);
    }

    /// A socket ended for `reason`.
    pub(crate) fn closed(&self, reason: &DisconnectReason) {
        bump(&self.closed[close_kind(reason)], 1);
    }
}

/// The network counters of a system.
pub(crate) struct NetStats {
    pub(crate) pollers: Box<[PollerCounters]>,
    pub(crate) accepted: AtomicU64,
    pub(crate) connected: AtomicU64,
    pub(crate) dials_refused: AtomicU64,
    pub(crate) refused_write_full: AtomicU64,
}

impl NetStats {
    pub(crate) fn new(pollers: usize) -> NetStats {
        NetStats {
            pollers: (0..pollers).map(|_| PollerCounters::new()).collect(),
            accepted: AtomicU64::new(0),
            connected: AtomicU64::new(0),
            dials_refused: AtomicU64::new(0),
            refused_write_full: AtomicU64::new(0),
        }
    }

    /// Poller `i`'s counters.
    #[inline]
    pub(crate) fn poller(&self, i: usize) -> &PollerCounters {
        &self.pollers[i]
    }

    /// Counts one rare event (a read-modify-write on a shared counter).
    pub(crate) fn count(a: &AtomicU64) {
        a.fetch_add(1, Ordering::Relaxed);
    }
}
