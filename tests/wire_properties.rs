//! Property tests of the wire format (DESIGN.md section 3), through the public API only.
//!
//! Two kinds of property live here:
//!
//! - Fast, pure ones on [`WPacket`] and [`RPacket`] (hundreds of cases each): typed fields
//!   round-trip bit-exactly against an encoder written independently here from the spec, and
//!   every read past the end (or past a truncation anywhere) is a [`PacketError::Truncated`]
//!   that leaves the cursor alone, never a value.
//! - Network ones through a real layer-2 [`Connection`] over a loopback socket (64 cases each):
//!   a framed stream cut at arbitrary points arrives as exactly the packets that were framed;
//!   arbitrary bytes are cut exactly as a reference decoder written here says, and never
//!   panic the engine; a declared length above `max_packet_len` ends the connection with
//!   [`DisconnectReason::PacketTooLarge`] before anything is reserved for it.
//!
//! The crate has no public decoder to test without sockets (its header parser is
//! crate-private), so the cutting properties go through a connection. Each network case runs
//! the server engine and a non-blocking std client on the test's own thread: the client writes
//! a piece, the engine gets a pass, and so on. Every wait is bounded by [`support::WAIT`]; nothing
//! sleeps in the hope that something has happened.
//!
//! The receive buffer's capacity is not observable through the public API, so this test binary
//! installs a global allocator that records, for the thread that asks, the largest single
//! allocation made while it is armed. The server runs on that thread, so "nothing reserved for
//! an oversized packet" becomes "no allocation anywhere near the declared length". A positive
//! control checks that the probe does see the reservation of an allowed large packet.

mod support;

use kendynet::net::{ConnOptions, Connection, DEFAULT_MAX_PACKET_LEN, DisconnectReason, Engine};
use kendynet::{PacketError, RPacket, WPacket};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, RefCell};
use std::io::{self, Write};
use std::net::TcpStream;
use std::rc::Rc;
use std::time::{Duration, Instant};
use support::engine::run_until;
use support::wire::frame;
use support::{WAIT, any_port};

// ---------------------------------------------------------------------------------------------
// The allocation probe.

/// Passes every call to [`System`], noting the largest request made on an armed thread.
struct PeakAlloc;

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn note_alloc(size: usize) {
    // `try_with`: allocations also happen while a thread's locals are torn down. The cells
    // are const-initialised without destructors, so touching them never allocates.
    let _ = ARMED.try_with(|armed| {
        if armed.get() {
            let _ = PEAK.try_with(|peak| peak.set(peak.get().max(size)));
        }
    });
}

// SAFETY: every method forwards to `System` with the arguments it was given, so `System`'s
// guarantees carry over unchanged; the bookkeeping touches only thread-local `Cell`s.
unsafe impl GlobalAlloc for PeakAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_alloc(layout.size());
        // SAFETY: the caller's contract for `alloc` is passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_alloc(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_alloc(new_size);
        // SAFETY: `ptr` and `layout` come from this allocator, which is `System`'s.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` and `layout` come from this allocator, which is `System`'s.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: PeakAlloc = PeakAlloc;

/// Records the largest allocation this thread makes until [`Probe::peak`].
struct Probe;

impl Probe {
    fn arm() -> Probe {
        PEAK.with(|p| p.set(0));
        ARMED.with(|a| a.set(true));
        Probe
    }

    fn peak(&self) -> usize {
        PEAK.with(Cell::get)
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        ARMED.with(|a| a.set(false));
    }
}

/// What the read path may reserve regardless of headers: a few 64 KiB read chunks (the
/// connection reads in chunks of that size, and a growing buffer may double once).
const CHUNK_SLACK: usize = 4 * 64 * 1024;

// ---------------------------------------------------------------------------------------------
// A layer-2 connection and a non-blocking client, both driven from this thread.

/// What the server's callbacks saw.
#[derive(Default, Debug)]
struct Log {
    packets: Vec<Vec<u8>>,
    ends: Vec<DisconnectReason>,
    /// Packets delivered after `on_disconnect` (there must be none).
    after_end: usize,
}

struct Rig {
    engine: Engine,
    client: Option<TcpStream>,
    log: Rc<RefCell<Log>>,
}

impl Rig {
    /// An engine with one layer-2 connection (with `options`) accepted from a fresh client.
    fn new(options: ConnOptions) -> Rig {
        let mut engine = Engine::new().expect("Engine::new");
        let accepted = Rc::new(RefCell::new(None));
        let slot = accepted.clone();
        let listener = engine
            .listen(any_port(), move |_, socket| {
                *slot.borrow_mut() = Some(socket)
            })
            .expect("listen");
        let addr = engine.listener_addr(listener).expect("listener_addr");
        let client = support::wire::client(addr);
        run_until(&mut engine, "the accept", |_| accepted.borrow().is_some());
        engine.close_listener(listener);
        let socket = accepted.borrow_mut().take().expect("accepted");
        let log = Rc::new(RefCell::new(Log::default()));
        let (on_packet, on_end) = (log.clone(), log.clone());
        Connection::new(socket)
            .options(options)
            .bind(
                &mut engine,
                move |_, _, packet| {
                    let mut log = on_packet.borrow_mut();
                    if !log.ends.is_empty() {
                        log.after_end += 1;
                    }
                    log.packets.push(packet.payload().to_vec());
                },
                move |_, _, reason| on_end.borrow_mut().ends.push(reason),
            )
            .expect("Connection::bind");
        client.set_nonblocking(true).expect("set_nonblocking");
        Rig {
            engine,
            client: Some(client),
            log,
        }
    }

    /// One engine pass that does not block.
    fn pump(&mut self) {
        self.engine
            .run_once(Some(Duration::ZERO))
            .expect("run_once");
    }

    /// Writes each piece whole, giving the engine a pass after each so that the pieces tend
    /// to arrive in separate reads (only coverage depends on that, never the verdict).
    /// Returns the first write error (a server that has closed the connection).
    fn write_pieces<'a>(&mut self, pieces: impl IntoIterator<Item = &'a [u8]>) -> io::Result<()> {
        let deadline = Instant::now() + WAIT;
        for piece in pieces {
            let mut rest = piece;
            while !rest.is_empty() {
                let client = self.client.as_mut().expect("client still open");
                match client.write(rest) {
                    Ok(n) => rest = &rest[n..],
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        assert!(
                            Instant::now() < deadline,
                            "timed out after {WAIT:?} writing to the server"
                        );
                        self.engine
                            .run_once(Some(Duration::from_millis(1)))
                            .expect("run_once");
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            self.pump();
        }
        Ok(())
    }

    /// Runs the engine until `done` holds of the log (bounded by [`WAIT`]).
    fn run_until(&mut self, what: &str, mut done: impl FnMut(&Log) -> bool) {
        let log = self.log.clone();
        run_until(&mut self.engine, what, |_| done(&log.borrow()));
    }

    /// Closes the client (end of stream after the bytes written; nothing is left unread, so
    /// no reset) and runs until the server has ended the connection.
    fn close_client(&mut self) {
        self.client = None;
        self.run_until("on_disconnect after the client closed", |log| {
            !log.ends.is_empty()
        });
    }

    /// Closes the client if still open, runs until the engine has released the connection,
    /// and returns the log.
    fn finish(mut self) -> Log {
        self.client = None;
        run_until(&mut self.engine, "the connection to be released", |e| {
            e.registrations() == 0
        });
        // One more pass: nothing may arrive for a released connection.
        self.pump();
        self.log.take()
    }
}

/// The wire stream of `payloads`, framed and concatenated.
fn framed(payloads: &[Vec<u8>]) -> Vec<u8> {
    payloads.iter().flat_map(|p| frame(p)).collect()
}

/// Cuts `stream` at the given points (any order, repeats allowed).
fn cut<'a>(stream: &'a [u8], cuts: &[Index]) -> Vec<&'a [u8]> {
    let mut at: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
    at.push(0);
    at.push(stream.len());
    at.sort_unstable();
    at.dedup();
    at.windows(2).map(|w| &stream[w[0]..w[1]]).collect()
}

/// Compares packet lists without printing megabytes on failure.
fn same_packets(got: &[Vec<u8>], want: &[Vec<u8>]) -> Result<(), TestCaseError> {
    if let Some(i) = (0..got.len().min(want.len())).find(|&i| got[i] != want[i]) {
        return Err(TestCaseError::fail(format!(
            "packet #{i} differs: got {} bytes, want {} bytes (first bytes {:?} vs {:?})",
            got[i].len(),
            want[i].len(),
            &got[i][..got[i].len().min(16)],
            &want[i][..want[i].len().min(16)],
        )));
    }
    prop_assert_eq!(got.len(), want.len(), "number of packets delivered");
    Ok(())
}

/// A payload of `n` bytes that is not constant, without generating every byte.
fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(seed | 1) ^ (i >> 8) as u8)
        .collect()
}

/// Payloads: often empty or tiny, sometimes larger than the connection's read chunk.
fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => Just(Vec::new()),
        6 => vec(any::<u8>(), 1..64),
        2 => vec(any::<u8>(), 64..2048),
        1 => (60_000usize..200_000, any::<u8>()).prop_map(|(n, s)| pattern(n, s)),
    ]
}

/// Cases per property: `default`, or `PROPTEST_CASES` when set (for a longer soak).
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Settings for the network properties: few cases, bounded shrinking (each case is a real
/// connection, and a case that times out takes [`WAIT`]).
fn net_config() -> ProptestConfig {
    ProptestConfig {
        cases: cases(64),
        max_shrink_time: 60_000,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------
// A reference decoder of framed streams, written from the spec.

/// What a framed reader must make of `stream` with the limit `max`.
#[derive(Debug, PartialEq)]
struct Cutting {
    /// The complete packets, in order, up to the first oversized header.
    packets: Vec<Vec<u8>>,
    /// The first declared length above `max`, if any.
    too_large: Option<usize>,
    /// The largest declared length that was allowed (including a packet left incomplete).
    largest_allowed: usize,
}

fn cut_reference(stream: &[u8], max: usize) -> Cutting {
    let mut out = Cutting {
        packets: Vec::new(),
        too_large: None,
        largest_allowed: 0,
    };
    let mut at = 0;
    while stream.len() - at >= 4 {
        let len = u32::from_le_bytes(stream[at..at + 4].try_into().unwrap()) as usize;
        if len > max {
            out.too_large = Some(len);
            break;
        }
        out.largest_allowed = out.largest_allowed.max(len);
        if stream.len() - at - 4 < len {
            break;
        }
        out.packets.push(stream[at + 4..at + 4 + len].to_vec());
        at += 4 + len;
    }
    out
}

/// A frame whose payload fits the limit `max` (and is short).
fn fitting_frame(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..=max.min(40)).prop_map(|p| frame(&p))
}

/// A stream chunk for the garbage property: mostly frames that fit, sometimes a header whose
/// body does not match it, an allowed header of any length (the server then reserves for
/// it), noise, or an arbitrary header, so that frames both line up and slip.
fn chunk(max: usize) -> impl Strategy<Value = Vec<u8>> {
    let max32 = u32::try_from(max).unwrap_or(u32::MAX);
    prop_oneof![
        12 => fitting_frame(max),
        1 => (0u32..48, vec(any::<u8>(), 0..48)).prop_map(|(len, body)| {
            let mut v = len.to_le_bytes().to_vec();
            v.extend(body);
            v
        }),
        1 => (0..=max32).prop_map(|len| len.to_le_bytes().to_vec()),
        1 => vec(any::<u8>(), 1..16),
        1 => any::<u32>().prop_map(|h| h.to_le_bytes().to_vec()),
    ]
}

/// A limit and a stream for the garbage property: a clean run of frames that fit, perhaps
/// some noise, then a tail of chunks.
fn limit_and_garbage() -> impl Strategy<Value = (usize, Vec<u8>)> {
    prop_oneof![1 => 0usize..=8, 3 => 40usize..=300, 2 => Just(DEFAULT_MAX_PACKET_LEN)]
        .prop_flat_map(|max| {
            (
                Just(max),
                vec(fitting_frame(max), 0..12),
                proptest::option::weighted(0.3, vec(any::<u8>(), 1..24)),
                vec(chunk(max), 0..6),
            )
        })
        .prop_map(|(max, clean, noise, tail)| {
            let mut stream = clean.concat();
            stream.extend(noise.unwrap_or_default());
            stream.extend(tail.concat());
            (max, stream)
        })
}

proptest! {
    #![proptest_config(net_config())]

    /// Framed payloads (some empty, some larger than a read chunk), concatenated and cut at
    /// arbitrary points, come out of a real connection as exactly the same packets in order;
    /// the end of the stream then ends the connection once, with `PeerClosed`.
    #[test]
    fn framed_stream_cut_anywhere_arrives_as_the_same_packets(
        payloads in vec(payload(), 0..12),
        cuts in vec(any::<Index>(), 0..32),
    ) {
        let stream = framed(&payloads);
        let mut rig = Rig::new(ConnOptions::default());
        rig.write_pieces(cut(&stream, &cuts)).expect("client write");
        // The end of stream follows the last byte: every packet is delivered before it.
        rig.close_client();
        let log = rig.finish();
        same_packets(&log.packets, &payloads)?;
        prop_assert_eq!(log.ends, [DisconnectReason::PeerClosed]);
        prop_assert_eq!(log.after_end, 0);
    }

    /// Arbitrary bytes never panic the engine and are cut exactly as the reference decoder
    /// says: the complete packets up to the first oversized header, then `PacketTooLarge`
    /// with the declared length, or `PeerClosed` when the client stops first. Nothing is
    /// reserved beyond what allowed headers declared.
    #[test]
    fn arbitrary_bytes_are_cut_as_the_reference_decoder_says(
        (max, stream) in limit_and_garbage(),
        cuts in vec(any::<Index>(), 0..24),
    ) {
        let want = cut_reference(&stream, max);
        let mut rig = Rig::new(ConnOptions::default().max_packet_len(max));
        let probe = Probe::arm();
        let wrote = rig.write_pieces(cut(&stream, &cuts));
        if want.too_large.is_none() {
            wrote.expect("client write with no oversized header");
        }
        // The end of stream follows the last byte, so the server meets an oversized header
        // (if any) first; it ends the connection either way, without a wait that could time out.
        rig.close_client();
        let peak = probe.peak();
        drop(probe);
        let log = rig.finish();
        same_packets(&log.packets, &want.packets)?;
        let reason = match want.too_large {
            Some(len) => DisconnectReason::PacketTooLarge { len, max },
            None => DisconnectReason::PeerClosed,
        };
        prop_assert_eq!(log.ends, [reason]);
        prop_assert_eq!(log.after_end, 0);
        let bound = CHUNK_SLACK + 2 * (want.largest_allowed + 4);
        prop_assert!(
            peak <= bound,
            "largest allocation {} bytes, bound {} (largest allowed header {})",
            peak, bound, want.largest_allowed
        );
    }

    /// A declared length above the limit (just above, or up to 4 GiB) closes the connection
    /// with `PacketTooLarge { len, max }` after delivering the packets before it, and the
    /// server allocates nothing anywhere near the declared length, whatever follows the
    /// header and however the stream is cut.
    #[test]
    fn oversized_header_closes_before_anything_is_reserved(
        max in prop_oneof![Just(0usize), 0usize..=64, 64usize..=65_536],
        before in vec(vec(any::<u8>(), 0..64), 0..6),
        excess in prop_oneof![1u64..=16, 1u64..=u64::from(u32::MAX)],
        trailing in vec(any::<u8>(), 0..256),
        cuts in vec(any::<Index>(), 0..16),
    ) {
        let before: Vec<Vec<u8>> = before
            .into_iter()
            .map(|mut p| {
                p.truncate(max);
                p
            })
            .collect();
        let declared = (max as u64 + excess).min(u64::from(u32::MAX)) as usize;
        let mut stream = framed(&before);
        stream.extend_from_slice(&(declared as u32).to_le_bytes());
        stream.extend_from_slice(&trailing);

        let mut rig = Rig::new(ConnOptions::default().max_packet_len(max));
        let probe = Probe::arm();
        // Writes may fail once the server has closed: the verdict is the server's.
        let _ = rig.write_pieces(cut(&stream, &cuts));
        rig.close_client();
        let peak = probe.peak();
        drop(probe);
        let log = rig.finish();
        same_packets(&log.packets, &before)?;
        prop_assert_eq!(log.ends, [DisconnectReason::PacketTooLarge { len: declared, max }]);
        prop_assert_eq!(log.after_end, 0);
        prop_assert!(
            peak <= CHUNK_SLACK,
            "largest allocation {} bytes for a refused declared length of {}",
            peak, declared
        );
    }

    /// Raw mode: arbitrary bytes, cut anywhere, are delivered as they are (no packet is
    /// empty, and together they are the stream).
    #[test]
    fn raw_mode_delivers_the_bytes_as_they_are(
        stream in vec(any::<u8>(), 0..4096),
        cuts in vec(any::<Index>(), 0..24),
    ) {
        let mut rig = Rig::new(ConnOptions::default().raw(true));
        rig.write_pieces(cut(&stream, &cuts)).expect("client write");
        rig.close_client();
        let log = rig.finish();
        prop_assert!(log.packets.iter().all(|p| !p.is_empty()), "an empty raw packet");
        prop_assert!(log.packets.concat() == stream, "raw bytes differ");
        prop_assert_eq!(log.ends, [DisconnectReason::PeerClosed]);
    }
}

/// The positive control of the allocation probe: an allowed 6 MiB packet is held whole, so
/// the probe must see an allocation at least that large. Without this, a probe that saw
/// nothing would pass the oversized-header property vacuously.
#[test]
fn probe_sees_the_buffer_of_an_allowed_large_packet() {
    const LEN: usize = 6 << 20;
    let payload = pattern(LEN, 7);
    let mut rig = Rig::new(ConnOptions::default().max_packet_len(8 << 20));
    let probe = Probe::arm();
    let stream = frame(&payload);
    rig.write_pieces(stream.chunks(64 * 1024))
        .expect("client write");
    rig.run_until("the large packet", |log| !log.packets.is_empty());
    let peak = probe.peak();
    drop(probe);
    rig.close_client();
    let log = rig.finish();
    assert!(log.packets == [payload], "the large packet differs");
    assert!(peak >= LEN, "the probe saw at most {peak} bytes");
}

// ---------------------------------------------------------------------------------------------
// Typed fields, without sockets.

/// One typed field; `F64` holds the bits so that NaN payloads and -0.0 compare exactly.
#[derive(Debug, Clone)]
enum Field {
    U8(u8),
    U16(u16),
    U32(u32),
    U64(u64),
    I8(i8),
    I16(i16),
    I32(i32),
    I64(i64),
    F64(u64),
    Bytes(Vec<u8>),
    Str(String),
    Raw(Vec<u8>),
}

/// `f64` bit patterns: any, plus the ones a careless encoder gets wrong.
fn f64_bits() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => any::<u64>(),
        1 => Just((-0.0f64).to_bits()),
        1 => Just(0.0f64.to_bits()),
        1 => Just(f64::NAN.to_bits()),
        1 => Just((-f64::NAN).to_bits()),
        // Signalling NaN (quiet bit clear) and NaNs with payloads, either sign.
        1 => Just(0x7ff0_0000_0000_0001),
        2 => (1u64..1 << 52, any::<bool>())
            .prop_map(|(m, neg)| (u64::from(neg) << 63) | 0x7ff0_0000_0000_0000 | m),
        1 => Just(f64::INFINITY.to_bits()),
        1 => Just(f64::NEG_INFINITY.to_bits()),
        1 => Just(1),
        1 => Just(f64::MAX.to_bits()),
    ]
}

fn field() -> impl Strategy<Value = Field> {
    prop_oneof![
        any::<u8>().prop_map(Field::U8),
        any::<u16>().prop_map(Field::U16),
        any::<u32>().prop_map(Field::U32),
        any::<u64>().prop_map(Field::U64),
        any::<i8>().prop_map(Field::I8),
        any::<i16>().prop_map(Field::I16),
        any::<i32>().prop_map(Field::I32),
        any::<i64>().prop_map(Field::I64),
        f64_bits().prop_map(Field::F64),
        vec(any::<u8>(), 0..48).prop_map(Field::Bytes),
        // Any Unicode, interior NULs included.
        any::<String>().prop_map(Field::Str),
        vec(any::<u8>(), 0..16).prop_map(Field::Raw),
    ]
}

/// `n` little-endian bytes of `v`, by shifting (independent of `to_le_bytes`).
fn le(v: u64, n: usize) -> Vec<u8> {
    (0..n).map(|i| (v >> (8 * i)) as u8).collect()
}

/// The spec's encoding of a field, and the byte count a reader needs for it.
fn encode(f: &Field) -> Vec<u8> {
    match f {
        Field::U8(v) => le(u64::from(*v), 1),
        Field::U16(v) => le(u64::from(*v), 2),
        Field::U32(v) => le(u64::from(*v), 4),
        Field::U64(v) => le(*v, 8),
        Field::I8(v) => le(*v as u64, 1),
        Field::I16(v) => le(*v as u64, 2),
        Field::I32(v) => le(*v as u64, 4),
        Field::I64(v) => le(*v as u64, 8),
        Field::F64(bits) => le(*bits, 8),
        Field::Bytes(b) => [le(b.len() as u64, 4), b.clone()].concat(),
        // Binary of the UTF-8 bytes plus a trailing NUL; the length counts the NUL.
        Field::Str(s) => [le(s.len() as u64 + 1, 4), s.as_bytes().to_vec(), vec![0]].concat(),
        Field::Raw(b) => b.clone(),
    }
}

fn write(w: &mut WPacket, f: &Field) {
    match f {
        Field::U8(v) => w.write_u8(*v),
        Field::U16(v) => w.write_u16(*v),
        Field::U32(v) => w.write_u32(*v),
        Field::U64(v) => w.write_u64(*v),
        Field::I8(v) => w.write_i8(*v),
        Field::I16(v) => w.write_i16(*v),
        Field::I32(v) => w.write_i32(*v),
        Field::I64(v) => w.write_i64(*v),
        Field::F64(bits) => w.write_f64(f64::from_bits(*bits)),
        Field::Bytes(b) => w.write_bytes(b),
        Field::Str(s) => w.write_str(s),
        Field::Raw(b) => w.write_raw(b),
    };
}

/// Reads the field `f` describes and checks the value; `Err` carries the reader's error.
fn read_and_check(r: &mut RPacket, f: &Field) -> Result<Result<(), PacketError>, TestCaseError> {
    macro_rules! check {
        ($read:expr, $want:expr) => {
            match $read {
                Ok(got) => {
                    prop_assert_eq!(got, $want);
                    Ok(())
                }
                Err(e) => Err(e),
            }
        };
    }
    Ok(match f {
        Field::U8(v) => check!(r.read_u8(), *v),
        Field::U16(v) => check!(r.read_u16(), *v),
        Field::U32(v) => check!(r.read_u32(), *v),
        Field::U64(v) => check!(r.read_u64(), *v),
        Field::I8(v) => check!(r.read_i8(), *v),
        Field::I16(v) => check!(r.read_i16(), *v),
        Field::I32(v) => check!(r.read_i32(), *v),
        Field::I64(v) => check!(r.read_i64(), *v),
        Field::F64(bits) => check!(r.read_f64().map(f64::to_bits), *bits),
        Field::Bytes(b) => check!(r.read_bytes(), &b[..]),
        Field::Str(s) => check!(r.read_str(), s.as_str()),
        Field::Raw(b) => check!(r.read_raw(b.len()), &b[..]),
    })
}

/// The error a reader of `f` must return when only `left` bytes of its encoding are there.
fn truncated_error(f: &Field, left: usize) -> PacketError {
    let needed = match f {
        Field::Bytes(_) | Field::Str(_) if left < 4 => 4,
        _ => encode(f).len(),
    };
    PacketError::Truncated {
        needed,
        remaining: left,
    }
}

/// Every fixed-size reader, at the end of a packet: an error, never a value.
fn every_reader_fails_at_the_end(r: &mut RPacket) -> Result<(), TestCaseError> {
    let at = r.position();
    let t = |needed| {
        Err::<(), _>(PacketError::Truncated {
            needed,
            remaining: 0,
        })
    };
    prop_assert_eq!(r.read_u8().map(drop), t(1));
    prop_assert_eq!(r.read_i8().map(drop), t(1));
    prop_assert_eq!(r.read_u16().map(drop), t(2));
    prop_assert_eq!(r.read_i16().map(drop), t(2));
    prop_assert_eq!(r.read_u32().map(drop), t(4));
    prop_assert_eq!(r.read_i32().map(drop), t(4));
    prop_assert_eq!(r.read_u64().map(drop), t(8));
    prop_assert_eq!(r.read_i64().map(drop), t(8));
    prop_assert_eq!(r.read_f64().map(drop), t(8));
    prop_assert_eq!(r.read_bytes().map(drop), t(4));
    prop_assert_eq!(r.read_str().map(drop), t(4));
    prop_assert_eq!(r.read_string().map(drop), t(4));
    prop_assert_eq!(r.read_raw(1).map(drop), t(1));
    prop_assert_eq!(r.read_raw(0).map(|b| b.len()), Ok(0));
    prop_assert_eq!(r.position(), at, "a failed read moved the cursor");
    Ok(())
}

/// One reader, chosen by number, on arbitrary bytes.
#[derive(Debug, Clone, Copy)]
enum Reader {
    U8,
    U16,
    U32,
    U64,
    F64,
    Bytes,
    Str,
    Raw(usize),
}

fn reader() -> impl Strategy<Value = Reader> {
    prop_oneof![
        Just(Reader::U8),
        Just(Reader::U16),
        Just(Reader::U32),
        Just(Reader::U64),
        Just(Reader::F64),
        Just(Reader::Bytes),
        Just(Reader::Str),
        (0usize..12).prop_map(Reader::Raw),
    ]
}

/// What `reader` must make of `rest` (the bytes after the cursor): the bytes it consumes, or
/// its error. Written from the spec, without the crate.
fn reference_read(reader: Reader, rest: &[u8]) -> Result<usize, PacketError> {
    let fixed = |n: usize| {
        if rest.len() < n {
            Err(PacketError::Truncated {
                needed: n,
                remaining: rest.len(),
            })
        } else {
            Ok(n)
        }
    };
    match reader {
        Reader::U8 => fixed(1),
        Reader::U16 => fixed(2),
        Reader::U32 => fixed(4),
        Reader::U64 | Reader::F64 => fixed(8),
        Reader::Raw(n) => fixed(n),
        Reader::Bytes | Reader::Str => {
            fixed(4)?;
            let len = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
            fixed(4 + len)?;
            if let Reader::Str = reader {
                let body = &rest[4..4 + len];
                match body.split_last() {
                    Some((0, text)) => {
                        if let Err(e) = std::str::from_utf8(text) {
                            return Err(PacketError::InvalidUtf8(e));
                        }
                    }
                    _ => return Err(PacketError::MissingNul),
                }
            }
            Ok(4 + len)
        }
    }
}

/// Runs `reader` on `r`, returning the bytes it consumed (by the cursor) or its error, and
/// checking that a value it returns is the one at the cursor.
fn run_reader(
    r: &mut RPacket,
    reader: Reader,
) -> Result<Result<usize, PacketError>, TestCaseError> {
    let at = r.position();
    let rest = r.payload()[at..].to_vec();
    let res = match reader {
        Reader::U8 => r.read_u8().map(|v| v.to_le_bytes().to_vec()),
        Reader::U16 => r.read_u16().map(|v| v.to_le_bytes().to_vec()),
        Reader::U32 => r.read_u32().map(|v| v.to_le_bytes().to_vec()),
        Reader::U64 => r.read_u64().map(|v| v.to_le_bytes().to_vec()),
        Reader::F64 => r.read_f64().map(|v| v.to_bits().to_le_bytes().to_vec()),
        Reader::Raw(n) => r.read_raw(n).map(|b| b.to_vec()),
        Reader::Bytes => r
            .read_bytes()
            .map(|b| [le(b.len() as u64, 4), b.to_vec()].concat()),
        Reader::Str => r
            .read_str()
            .map(|s| [le(s.len() as u64 + 1, 4), s.as_bytes().to_vec(), vec![0]].concat()),
    };
    Ok(match res {
        Ok(bytes) => {
            // The value read must re-encode to exactly the bytes it consumed.
            prop_assert_eq!(r.position(), at + bytes.len(), "cursor after {:?}", reader);
            prop_assert_eq!(
                &rest[..bytes.len()],
                &bytes[..],
                "{:?} read another value",
                reader
            );
            Ok(bytes.len())
        }
        Err(e) => {
            prop_assert_eq!(r.position(), at, "failed {:?} moved the cursor", reader);
            Err(e)
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(1024), ..ProptestConfig::default() })]

    /// Any sequence of typed fields encodes exactly as the spec says (compared with an
    /// encoder written here), frames with the right header, reads back bit-exactly (NaN
    /// payloads and -0.0 included), forwards as the same frame, and leaves every reader
    /// failing at the end.
    #[test]
    fn typed_fields_round_trip_bit_exactly(fields in vec(field(), 0..24)) {
        let mut w = WPacket::new();
        for f in &fields {
            write(&mut w, f);
        }
        let want: Vec<u8> = fields.iter().flat_map(encode).collect();
        prop_assert_eq!(w.payload(), &want[..]);
        prop_assert_eq!(w.len(), want.len());

        let frame = w.to_frame();
        prop_assert_eq!(&frame[..4], &le(want.len() as u64, 4)[..]);
        prop_assert_eq!(&frame[4..], &want[..]);
        // Writing to a clone of the frozen packet leaves the frame alone.
        let mut other = w.clone();
        other.write_u8(0xa5);
        prop_assert_eq!(&w.to_frame(), &frame);

        let mut r = RPacket::from_payload(&want);
        for (i, f) in fields.iter().enumerate() {
            let res = read_and_check(&mut r, f)?;
            prop_assert_eq!(res, Ok(()), "field #{} {:?}", i, f);
        }
        prop_assert_eq!(r.remaining(), 0);
        every_reader_fails_at_the_end(&mut r)?;

        r.rewind();
        prop_assert_eq!(WPacket::from(r).into_frame(), frame);
    }

    /// A packet cut short anywhere reads its whole fields back, then fails on the field the
    /// cut falls in with `Truncated { needed, remaining }`, without moving the cursor, and
    /// keeps failing: a missing byte is never read as a zero.
    #[test]
    fn truncated_packet_fails_on_the_cut_field(
        fields in vec(field(), 1..16),
        cut_at in any::<Index>(),
    ) {
        let want: Vec<u8> = fields.iter().flat_map(encode).collect();
        let t = cut_at.index(want.len() + 1);
        let mut r = RPacket::from_payload(&want[..t]);
        let mut at = 0;
        for f in &fields {
            let size = encode(f).len();
            if at + size <= t {
                prop_assert_eq!(read_and_check(&mut r, f)?, Ok(()), "{:?} before the cut", f);
                at += size;
                continue;
            }
            let err = truncated_error(f, t - at);
            for _ in 0..2 {
                prop_assert_eq!(read_and_check(&mut r, f)?, Err(err), "{:?} across the cut", f);
                prop_assert_eq!(r.position(), at);
            }
            break;
        }
    }

    /// Any reader on arbitrary bytes returns what a spec-written reference says: a value that
    /// re-encodes to exactly the bytes it consumed, or the reference's error with the cursor
    /// unmoved. Nothing panics.
    #[test]
    fn readers_on_arbitrary_bytes_match_the_reference(
        bytes in vec(any::<u8>(), 0..64),
        readers in vec(reader(), 0..32),
    ) {
        let mut r = RPacket::from_payload(&bytes);
        for reader in readers {
            let want = reference_read(reader, &bytes[r.position()..]);
            let got = run_reader(&mut r, reader)?;
            prop_assert_eq!(got, want, "{:?} at {}", reader, r.position());
        }
    }
}
