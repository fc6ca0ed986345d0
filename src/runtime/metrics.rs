//! A system's metrics: a snapshot of counters that cost nothing much when nobody reads them
//! ([`SystemHandle::metrics`]), and its Prometheus text rendering
//! ([`Metrics::to_prometheus`]).
//!
//! Who counts what, and why it is cheap:
//!
//! - each actor counts the messages it starts and its mailbox its high-water mark, as they
//!   did before metrics existed (a count per actor, written by the thread running it);
//! - each worker times a sample of its turns, in counters of its own (see
//!   [`HANDLER_TIME_SAMPLE`]);
//! - each poller counts the packets it delivered to owners, the frames it wrote (sends
//!   accepted) and the sockets that ended, by reason, in counters of its own, once per pass;
//! - rare events (spawns, stops, restarts, accepts, refusals) use one shared counter each;
//! - a snapshot sums all of them and scans the live actors (mailbox depths, per-name
//!   message counts): it costs a little, and only its reader pays.
//!
//! Every counter is a `Relaxed` atomic: a snapshot is not an instant of the whole system,
//! each number is only exact on its own.

use super::net_stats::{CLOSE_KINDS, ClosedSockets, NetStats};
use super::transport::transport_of;
use crate::actor::{HANDLER_TIME_SAMPLE, HandlerTime, SystemHandle};
use crate::sync::Ordering;
use crate::sync::unmodelled::AtomicU64;
use std::fmt::Write as _;

/// A snapshot of a system's counters, from [`SystemHandle::metrics`].
///
/// Counters (everything but `actors_live`, `mailbox_depth`, `sockets_open` and
/// `timers_pending`) only grow while the system runs; subtract two snapshots for rates.
///
/// ```
/// use kendynet::{Actor, Context, System};
/// use std::time::Duration;
///
/// struct Counter(u64);
/// impl Actor for Counter {
///     type Msg = u64;
///     fn handle(&mut self, n: u64, _: &mut Context<Self>) {
///         self.0 += n;
///     }
/// }
///
/// let system = System::builder().workers(1).build()?;
/// let counter = system.spawn(Counter(0));
/// system.register("counter", &counter).unwrap();
/// for n in 0..10 {
///     counter.send(n).unwrap();
/// }
/// # let deadline = std::time::Instant::now() + Duration::from_secs(10);
/// # while system.metrics().messages_handled < 10 && std::time::Instant::now() < deadline {
/// #     std::thread::sleep(Duration::from_millis(1));
/// # }
/// let m = system.metrics();
/// assert_eq!(m.actors_live, 1);
/// assert_eq!(m.messages_handled, 10);
/// assert_eq!(m.messages_by_name, vec![("counter".to_owned(), 10)]);
/// print!("{}", m.to_prometheus()); // kendynet_messages_handled_total 10 ...
/// # system.shutdown(Duration::from_secs(1));
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct Metrics {
    /// Actors alive now.
    pub actors_live: usize,
    /// Actors spawned so far (each pool instance and dedicated actor counts).
    pub actors_spawned: u64,
    /// Actors that stopped for good so far (a restart in place is not a stop).
    pub actors_stopped: u64,
    /// Restarts in place (supervisors and restart policies).
    pub actors_restarted: u64,
    /// Messages handled by all actors so far (user messages, network events included),
    /// counted as each one starts. (While an actor stops, a snapshot may count its messages
    /// twice; the next one is exact again.)
    pub messages_handled: u64,
    /// Messages handled so far by each live actor that holds a registered name, sorted by
    /// name (an actor holding two names appears twice); counted as each one starts.
    pub messages_by_name: Vec<(String, u64)>,
    /// User messages waiting in all mailboxes now.
    pub mailbox_depth: usize,
    /// The most messages a mailbox held when its actor took a batch from it, since the
    /// system started.
    pub mailbox_high_water: usize,
    /// How long actor turns took, sampled (see [`HandlerTime`]).
    pub handler_time: HandlerTime,
    /// Sockets open now.
    pub sockets_open: usize,
    /// Sockets accepted by listeners so far.
    pub sockets_accepted: u64,
    /// Sockets dialled with `connect` that connected, so far.
    pub sockets_connected: u64,
    /// Sockets that ended so far, by reason.
    pub sockets_closed: ClosedSockets,
    /// Sockets refused at the system's connection limit so far: accepted and closed at once
    /// ([`SystemHandle::accept_refusals`]), or dials refused before they started.
    pub sockets_refused: u64,
    /// Packets delivered to sockets' owners.
    pub packets_in: u64,
    /// Payload bytes of those packets.
    pub bytes_in: u64,
    /// Packets sent on sockets and accepted for writing (a broadcast counts once per socket
    /// it was queued for).
    pub packets_out: u64,
    /// Payload bytes of those packets.
    pub bytes_out: u64,
    /// Sends refused because the actor's mailbox was full ([`TrySendError::Full`] from a
    /// bounded mailbox).
    ///
    /// [`TrySendError::Full`]: crate::TrySendError::Full
    pub sends_refused_mailbox_full: u64,
    /// Packets refused because a socket's write queue was full (its write limit, or the
    /// drop policy of a slow consumer); broadcasts that skipped a socket count too.
    pub sends_refused_write_full: u64,
    /// Timers pending on the workers' wheels, as of each worker's last pass (a timer
    /// cancelled from outside its worker counts until that worker next wakes).
    pub timers_pending: usize,
}

impl SystemHandle {
    /// A snapshot of the system's counters (see [`Metrics`]). It sums per-worker and
    /// per-poller counters and scans the live actors and registered names: cheap enough
    /// for once a second, not for every message.
    pub fn metrics(&self) -> Metrics {
        let inner = &self.inner;
        let a = inner.actor_counts();
        let transport = transport_of(inner);
        let mut m = Metrics {
            actors_live: a.live,
            actors_spawned: a.spawned,
            actors_stopped: a.stopped,
            actors_restarted: a.restarted,
            messages_handled: a.messages,
            messages_by_name: a.by_name,
            mailbox_depth: a.mailbox_depth,
            mailbox_high_water: a.high_water,
            handler_time: a.turns.handler_time,
            sockets_open: transport.open_sockets(),
            sockets_refused: transport.accept_refusals(),
            sends_refused_mailbox_full: a.refused_full,
            timers_pending: a.turns.timers as usize,
            ..Metrics::default()
        };
        if let Some(stats) = transport.sock_table().net_stats() {
            add_net(&stats, &mut m);
        }
        m
    }
}

/// Adds the network counters to `m`.
fn add_net(stats: &NetStats, m: &mut Metrics) {
    let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let mut closed = [0u64; 7];
    for p in stats.pollers.iter() {
        m.packets_in += n(&p.packets_in);
        m.bytes_in += n(&p.bytes_in);
        m.packets_out += n(&p.packets_out);
        m.bytes_out += n(&p.bytes_out);
        for (c, a) in closed.iter_mut().zip(&p.closed) {
            *c += n(a);
        }
    }
    m.sockets_closed = ClosedSockets::from_array(closed);
    m.sockets_accepted = n(&stats.accepted);
    m.sockets_connected = n(&stats.connected);
    m.sockets_refused += n(&stats.dials_refused);
    m.sends_refused_write_full = n(&stats.refused_write_full);
}

/// Escapes a label value (backslash, double quote, line feed).
fn label_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

impl Metrics {
    /// The snapshot in the Prometheus text exposition format (version 0.0.4): `# HELP` and
    /// `# TYPE` lines, names prefixed `kendynet_`, the handler-time histogram as
    /// `_bucket{le="…"}` (in seconds), `_sum` and `_count`, the per-name message counts and
    /// the closed sockets as labels. Serve it with any HTTP server, with the content type
    /// `text/plain; version=0.0.4`.
    ///
    /// ```
    /// let m = kendynet::Metrics::default();
    /// let text = m.to_prometheus();
    /// assert!(text.contains("# TYPE kendynet_messages_handled_total counter\n"));
    /// assert!(text.contains("kendynet_handler_seconds_bucket{le=\"+Inf\"} 0\n"));
    /// ```
    pub fn to_prometheus(&self) -> String {
        let mut out = String::with_capacity(4096);
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, String)]| {
            let _ = writeln!(out, "# HELP kendynet_{name} {help}");
            let _ = writeln!(out, "# TYPE kendynet_{name} {kind}");
            for (suffix_labels, value) in samples {
                let _ = writeln!(out, "kendynet_{name}{suffix_labels} {value}");
            }
        };
        let one = |v: String| vec![(String::new(), v)];
        metric(
            "actors_live",
            "gauge",
            "Actors alive.",
            &one(self.actors_live.to_string()),
        );
        metric(
            "actors_spawned_total",
            "counter",
            "Actors spawned.",
            &one(self.actors_spawned.to_string()),
        );
        metric(
            "actors_stopped_total",
            "counter",
            "Actors stopped for good.",
            &one(self.actors_stopped.to_string()),
        );
        metric(
            "actors_restarted_total",
            "counter",
            "Actors restarted in place.",
            &one(self.actors_restarted.to_string()),
        );
        metric(
            "messages_handled_total",
            "counter",
            "Messages handled by all actors.",
            &one(self.messages_handled.to_string()),
        );
        let by_name: Vec<(String, String)> = self
            .messages_by_name
            .iter()
            .map(|(name, n)| (format!("{{name=\"{}\"}}", label_value(name)), n.to_string()))
            .collect();
        metric(
            "actor_messages_handled_total",
            "counter",
            "Messages handled by each actor with a registered name.",
            &by_name,
        );
        metric(
            "mailbox_depth",
            "gauge",
            "User messages waiting in all mailboxes.",
            &one(self.mailbox_depth.to_string()),
        );
        metric(
            "mailbox_high_water",
            "gauge",
            "The most messages one mailbox held when its actor took a batch.",
            &one(self.mailbox_high_water.to_string()),
        );
        let mut hist = Vec::with_capacity(self.handler_time.buckets.len() + 2);
        let mut cumulative = 0u64;
        for (i, n) in self.handler_time.buckets.iter().enumerate() {
            cumulative += n;
            let le = match HandlerTime::upper_bound_us(i) {
                Some(us) => format!("{}", us as f64 / 1e6),
                None => "+Inf".to_owned(),
            };
            hist.push((format!("_bucket{{le=\"{le}\"}}"), cumulative.to_string()));
        }
        hist.push((
            "_sum".to_owned(),
            format!("{}", self.handler_time.sum.as_secs_f64()),
        ));
        hist.push(("_count".to_owned(), self.handler_time.count.to_string()));
        metric(
            "handler_seconds",
            "histogram",
            &format!(
                "Time of actor turns, one turn in {HANDLER_TIME_SAMPLE} sampled on each worker."
            ),
            &hist,
        );
        metric(
            "sockets_open",
            "gauge",
            "Sockets open.",
            &one(self.sockets_open.to_string()),
        );
        metric(
            "sockets_accepted_total",
            "counter",
            "Sockets accepted by listeners.",
            &one(self.sockets_accepted.to_string()),
        );
        metric(
            "sockets_connected_total",
            "counter",
            "Sockets dialled that connected.",
            &one(self.sockets_connected.to_string()),
        );
        let closed: Vec<(String, String)> = CLOSE_KINDS
            .iter()
            .zip(self.sockets_closed.as_array())
            .map(|(kind, n)| (format!("{{reason=\"{kind}\"}}"), n.to_string()))
            .collect();
        metric(
            "sockets_closed_total",
            "counter",
            "Sockets that ended, by reason.",
            &closed,
        );
        metric(
            "sockets_refused_total",
            "counter",
            "Sockets refused at the connection limit.",
            &one(self.sockets_refused.to_string()),
        );
        metric(
            "packets_in_total",
            "counter",
            "Packets delivered to sockets' owners.",
            &one(self.packets_in.to_string()),
        );
        metric(
            "bytes_in_total",
            "counter",
            "Payload bytes of the packets delivered.",
            &one(self.bytes_in.to_string()),
        );
        metric(
            "packets_out_total",
            "counter",
            "Packets accepted for sending.",
            &one(self.packets_out.to_string()),
        );
        metric(
            "bytes_out_total",
            "counter",
            "Payload bytes of the packets accepted for sending.",
            &one(self.bytes_out.to_string()),
        );
        metric(
            "sends_refused_total",
            "counter",
            "Sends refused because a queue was full.",
            &[
                (
                    "{queue=\"mailbox\"}".to_owned(),
                    self.sends_refused_mailbox_full.to_string(),
                ),
                (
                    "{queue=\"socket\"}".to_owned(),
                    self.sends_refused_write_full.to_string(),
                ),
            ],
        );
        metric(
            "timers_pending",
            "gauge",
            "Timers pending on the workers.",
            &one(self.timers_pending.to_string()),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actor::HANDLER_TIME_BUCKETS;
    use crate::net::DisconnectReason;
    use crate::runtime::net_stats::close_reason_label;
    use std::collections::HashMap;
    use std::time::Duration;

    /// A line-by-line parser of the text format: every sample belongs to a metric whose
    /// HELP and TYPE came first; returns the samples by their full name and labels.
    fn parse(text: &str) -> (HashMap<String, f64>, HashMap<String, String>) {
        let mut samples = HashMap::new();
        let mut types = HashMap::new();
        let mut helped = None::<String>;
        for line in text.lines() {
            assert!(!line.is_empty(), "no empty lines");
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').expect("HELP name text");
                assert!(!help.is_empty());
                helped = Some(name.to_owned());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
                assert_eq!(helped.as_deref(), Some(name), "HELP before TYPE");
                assert!(["counter", "gauge", "histogram"].contains(&kind));
                assert!(types.insert(name.to_owned(), kind.to_owned()).is_none());
            } else {
                assert!(!line.starts_with('#'));
                let (key, value) = line.rsplit_once(' ').expect("sample value");
                let name = key.split('{').next().unwrap();
                assert!(name.starts_with("kendynet_"), "{name}");
                let family = helped.as_deref().expect("a sample after its HELP");
                assert!(name.starts_with(family), "{name} under {family}");
                if let Some(labels) = key.strip_prefix(name) {
                    if !labels.is_empty() {
                        assert!(labels.starts_with('{') && labels.ends_with('}'), "{labels}");
                        let inner = &labels[1..labels.len() - 1];
                        let (k, v) = inner.split_once('=').expect("label=value");
                        assert!(k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
                        assert!(v.starts_with('"') && v.ends_with('"'));
                    }
                }
                let v: f64 = if value == "+Inf" {
                    f64::INFINITY
                } else {
                    value.parse().expect("a number")
                };
                assert!(samples.insert(key.to_owned(), v).is_none(), "{key} twice");
            }
        }
        (samples, types)
    }

    #[test]
    fn prometheus_text_parses_back() {
        let mut m = Metrics {
            actors_live: 3,
            actors_spawned: 5,
            actors_stopped: 2,
            actors_restarted: 1,
            messages_handled: 1234,
            messages_by_name: vec![("gate".into(), 1000), ("room \"1\"".into(), 7)],
            mailbox_depth: 4,
            mailbox_high_water: 99,
            sockets_open: 2,
            sockets_accepted: 10,
            sockets_closed: ClosedSockets {
                peer_closed: 6,
                timeout: 2,
                ..ClosedSockets::default()
            },
            packets_in: 500,
            bytes_in: 64_000,
            sends_refused_write_full: 3,
            timers_pending: 8,
            ..Metrics::default()
        };
        m.handler_time.buckets[0] = 10;
        m.handler_time.buckets[3] = 5;
        m.handler_time.buckets[21] = 1;
        m.handler_time.count = 16;
        m.handler_time.sum = Duration::from_millis(1500);
        let (s, types) = parse(&m.to_prometheus());
        assert_eq!(types["kendynet_handler_seconds"], "histogram");
        assert_eq!(types["kendynet_messages_handled_total"], "counter");
        assert_eq!(types["kendynet_mailbox_depth"], "gauge");
        assert_eq!(s["kendynet_actors_live"], 3.0);
        assert_eq!(s["kendynet_messages_handled_total"], 1234.0);
        assert_eq!(
            s["kendynet_actor_messages_handled_total{name=\"gate\"}"],
            1000.0
        );
        assert_eq!(
            s["kendynet_actor_messages_handled_total{name=\"room \\\"1\\\"\"}"],
            7.0
        );
        assert_eq!(s["kendynet_handler_seconds_bucket{le=\"0.000001\"}"], 10.0);
        assert_eq!(s["kendynet_handler_seconds_bucket{le=\"0.000004\"}"], 10.0);
        assert_eq!(s["kendynet_handler_seconds_bucket{le=\"0.000008\"}"], 15.0);
        assert_eq!(s["kendynet_handler_seconds_bucket{le=\"+Inf\"}"], 16.0);
        assert_eq!(s["kendynet_handler_seconds_count"], 16.0);
        assert_eq!(s["kendynet_handler_seconds_sum"], 1.5);
        // Buckets are cumulative and never fall.
        let mut last = 0.0;
        for i in 0..HANDLER_TIME_BUCKETS {
            let le = HandlerTime::upper_bound_us(i)
                .map_or("+Inf".to_owned(), |us| format!("{}", us as f64 / 1e6));
            let v = s[&format!("kendynet_handler_seconds_bucket{{le=\"{le}\"}}")];
            assert!(v >= last);
            last = v;
        }
        assert_eq!(
            s["kendynet_sockets_closed_total{reason=\"peer_closed\"}"],
            6.0
        );
        assert_eq!(s["kendynet_sockets_closed_total{reason=\"timeout\"}"], 2.0);
        assert_eq!(s["kendynet_sockets_closed_total{reason=\"error\"}"], 0.0);
        assert_eq!(s["kendynet_sends_refused_total{queue=\"socket\"}"], 3.0);
        assert_eq!(s["kendynet_bytes_in_total"], 64_000.0);
        assert_eq!(s["kendynet_timers_pending"], 8.0);
    }

    #[test]
    fn every_disconnect_reason_has_a_bucket() {
        let reasons = [
            DisconnectReason::PeerClosed,
            DisconnectReason::Reset,
            DisconnectReason::ClosedLocally,
            DisconnectReason::RecvTimeout,
            DisconnectReason::SendTimeout,
            DisconnectReason::PacketTimeout,
            DisconnectReason::SlowConsumer { queued: 1 },
            DisconnectReason::PacketTooLarge { len: 2, max: 1 },
            DisconnectReason::Error {
                kind: std::io::ErrorKind::Other,
                code: None,
            },
        ];
        let labels: Vec<&str> = reasons.iter().map(close_reason_label).collect();
        assert_eq!(
            labels,
            [
                "peer_closed",
                "reset",
                "local",
                "timeout",
                "timeout",
                "timeout",
                "slow_consumer",
                "protocol",
                "error"
            ]
        );
    }
}
