//! Byte-exact wire vectors for packets, through the public API only.
//!
//! The vectors pin the format shared with the C original: a little-endian `u32` payload length,
//! little-endian fields without padding, and strings sent with a trailing NUL counted in their
//! length.

use kendynet::{PacketError, RPacket, WPacket};

/// The payload of a packet built by `f`.
fn payload(f: impl FnOnce(&mut WPacket) -> &mut WPacket) -> Vec<u8> {
    let mut w = WPacket::new();
    f(&mut w);
    w.payload().to_vec()
}

/// The wire frame (header plus payload) of a packet built by `f`.
fn frame(f: impl FnOnce(&mut WPacket) -> &mut WPacket) -> Vec<u8> {
    let mut w = WPacket::new();
    f(&mut w);
    w.into_frame().to_vec()
}

#[test]
fn unsigned_integers_are_little_endian() {
    assert_eq!(payload(|w| w.write_u8(0xab)), [0xab]);
    assert_eq!(payload(|w| w.write_u16(0x1234)), [0x34, 0x12]);
    assert_eq!(
        payload(|w| w.write_u32(0x1234_5678)),
        [0x78, 0x56, 0x34, 0x12]
    );
    assert_eq!(
        payload(|w| w.write_u64(0x0102_0304_0506_0708)),
        [8, 7, 6, 5, 4, 3, 2, 1]
    );
}

#[test]
fn signed_integers_are_little_endian_twos_complement() {
    assert_eq!(payload(|w| w.write_i8(-1)), [0xff]);
    assert_eq!(payload(|w| w.write_i16(-2)), [0xfe, 0xff]);
    assert_eq!(payload(|w| w.write_i32(-3)), [0xfd, 0xff, 0xff, 0xff]);
    assert_eq!(
        payload(|w| w.write_i64(i64::MIN)),
        [0, 0, 0, 0, 0, 0, 0, 0x80]
    );
}

#[test]
fn f64_is_its_ieee_bits_little_endian() {
    // 1.5 = 0x3FF8_0000_0000_0000.
    assert_eq!(
        payload(|w| w.write_f64(1.5)),
        [0, 0, 0, 0, 0, 0, 0xf8, 0x3f]
    );
    assert_eq!(payload(|w| w.write_f64(-0.0)), [0, 0, 0, 0, 0, 0, 0, 0x80]);
}

#[test]
fn binary_is_u32_length_then_bytes() {
    assert_eq!(
        payload(|w| w.write_bytes(&[9, 8, 7])),
        [3, 0, 0, 0, 9, 8, 7]
    );
    assert_eq!(payload(|w| w.write_bytes(&[])), [0, 0, 0, 0]);
}

#[test]
fn string_carries_a_trailing_nul_counted_in_its_length() {
    assert_eq!(payload(|w| w.write_str("hi")), [3, 0, 0, 0, b'h', b'i', 0]);
    assert_eq!(payload(|w| w.write_str("")), [1, 0, 0, 0, 0]);
    assert_eq!(payload(|w| w.write_str("é")), [3, 0, 0, 0, 0xc3, 0xa9, 0]);
}

#[test]
fn raw_has_no_length_prefix() {
    assert_eq!(payload(|w| w.write_raw(&[1, 2, 3])), [1, 2, 3]);
}

#[test]
fn frame_is_u32_payload_length_then_payload() {
    assert_eq!(frame(|w| w.write_u32(1)), [4, 0, 0, 0, 1, 0, 0, 0]);
    assert_eq!(frame(|w| w), [0, 0, 0, 0]);
    assert_eq!(
        frame(|w| w.write_str("hi")),
        [7, 0, 0, 0, 3, 0, 0, 0, b'h', b'i', 0]
    );
}

#[test]
fn mixed_fields_are_concatenated_without_padding() {
    let bytes = frame(|w| {
        w.write_u8(1)
            .write_u16(2)
            .write_str("ab")
            .write_u32(3)
            .write_bytes(&[4])
            .write_i8(-1)
            .write_u64(5)
    });
    assert_eq!(
        bytes,
        [
            28, 0, 0, 0, // header
            1, // u8
            2, 0, // u16
            3, 0, 0, 0, b'a', b'b', 0, // string
            3, 0, 0, 0, // u32
            1, 0, 0, 0, 4,    // binary
            0xff, // i8
            5, 0, 0, 0, 0, 0, 0, 0, // u64
        ]
    );
}

#[test]
fn every_field_round_trips() {
    let mut w = WPacket::with_capacity(128);
    w.write_u8(u8::MAX)
        .write_u16(u16::MAX - 1)
        .write_u32(0xdead_beef)
        .write_u64(u64::MAX / 3)
        .write_i8(i8::MIN)
        .write_i16(-12345)
        .write_i32(i32::MIN + 7)
        .write_i64(-1)
        .write_f64(std::f64::consts::PI)
        .write_bytes(b"\x00binary\xff")
        .write_str("héllo")
        .write_str("")
        .write_raw(b"tail");
    let len = w.len();

    let mut r = RPacket::from_payload(w.payload());
    assert_eq!(r.len(), len);
    assert_eq!(r.read_u8(), Ok(u8::MAX));
    assert_eq!(r.read_u16(), Ok(u16::MAX - 1));
    assert_eq!(r.read_u32(), Ok(0xdead_beef));
    assert_eq!(r.read_u64(), Ok(u64::MAX / 3));
    assert_eq!(r.read_i8(), Ok(i8::MIN));
    assert_eq!(r.read_i16(), Ok(-12345));
    assert_eq!(r.read_i32(), Ok(i32::MIN + 7));
    assert_eq!(r.read_i64(), Ok(-1));
    assert_eq!(r.read_f64(), Ok(std::f64::consts::PI));
    assert_eq!(r.read_bytes().unwrap(), &b"\x00binary\xff"[..]);
    assert_eq!(r.read_string().as_deref(), Ok("héllo"));
    assert_eq!(r.read_str(), Ok(""));
    assert_eq!(r.remaining(), 4);
    assert_eq!(r.read_raw(4).unwrap(), &b"tail"[..]);
    assert_eq!(r.remaining(), 0);
    assert_eq!(r.position(), len);

    r.rewind();
    assert_eq!(r.position(), 0);
    assert_eq!(r.read_u8(), Ok(u8::MAX));
}

#[test]
fn nan_bits_round_trip() {
    let bits = 0x7ff8_0000_dead_beef_u64;
    let mut w = WPacket::new();
    w.write_f64(f64::from_bits(bits));
    let mut r = RPacket::from_payload(w.payload());
    assert_eq!(r.read_f64().map(f64::to_bits), Ok(bits));
}

/// Reading a field of `size` bytes from a packet one byte too short is an error, not a zero,
/// and the cursor stays put.
fn assert_truncated<T: std::fmt::Debug>(
    size: usize,
    read: impl Fn(&mut RPacket) -> Result<T, PacketError>,
) {
    let short = vec![0x5a; size - 1];
    let mut r = RPacket::from_payload(&short);
    assert_eq!(
        read(&mut r).unwrap_err(),
        PacketError::Truncated {
            needed: size,
            remaining: size - 1
        }
    );
    assert_eq!(r.position(), 0);

    let mut empty = RPacket::from_payload(&[]);
    assert_eq!(
        read(&mut empty).unwrap_err(),
        PacketError::Truncated {
            needed: size,
            remaining: 0
        }
    );
}

#[test]
fn reading_past_the_end_is_an_error_for_every_type() {
    assert_truncated(1, RPacket::read_u8);
    assert_truncated(2, RPacket::read_u16);
    assert_truncated(4, RPacket::read_u32);
    assert_truncated(8, RPacket::read_u64);
    assert_truncated(1, RPacket::read_i8);
    assert_truncated(2, RPacket::read_i16);
    assert_truncated(4, RPacket::read_i32);
    assert_truncated(8, RPacket::read_i64);
    assert_truncated(8, RPacket::read_f64);
    assert_truncated(4, RPacket::read_bytes);
    assert_truncated(4, |r| r.read_str().map(str::to_owned));
    assert_truncated(4, RPacket::read_string);
    assert_truncated(3, |r| r.read_raw(3));
}

#[test]
fn field_body_shorter_than_its_length_is_truncated() {
    // Declares 5 bytes, carries 2.
    let body = [5, 0, 0, 0, b'h', 0];
    for read in [
        (|r: &mut RPacket| r.read_bytes().map(drop)) as fn(&mut RPacket) -> _,
        |r: &mut RPacket| r.read_str().map(drop),
    ] {
        let mut r = RPacket::from_payload(&body);
        assert_eq!(
            read(&mut r),
            Err(PacketError::Truncated {
                needed: 9,
                remaining: 6
            })
        );
        assert_eq!(r.position(), 0);
    }
}

#[test]
fn string_without_its_nul_is_an_error() {
    let mut r = RPacket::from_payload(&[2, 0, 0, 0, b'h', b'i']);
    assert_eq!(r.read_str(), Err(PacketError::MissingNul));
    assert_eq!(r.position(), 0);
    // The same bytes are still readable as binary.
    assert_eq!(r.read_bytes().unwrap(), &b"hi"[..]);

    let mut empty_field = RPacket::from_payload(&[0, 0, 0, 0]);
    assert_eq!(empty_field.read_str(), Err(PacketError::MissingNul));
}

#[test]
fn string_that_is_not_utf8_is_an_error() {
    let mut r = RPacket::from_payload(&[3, 0, 0, 0, 0xc3, 0x28, 0]);
    let err = r.read_str().unwrap_err();
    assert!(matches!(err, PacketError::InvalidUtf8(_)), "{err:?}");
    assert!(std::error::Error::source(&err).is_some());
    assert_eq!(r.position(), 0);
    assert!(matches!(r.read_string(), Err(PacketError::InvalidUtf8(_))));
}

#[test]
fn string_may_contain_an_interior_nul() {
    let mut r = RPacket::from_payload(&[4, 0, 0, 0, b'a', 0, b'b', 0]);
    assert_eq!(r.read_str(), Ok("a\0b"));
}

#[test]
fn zero_length_packet_is_valid() {
    let w = WPacket::new();
    assert!(w.is_empty());
    assert_eq!(w.len(), 0);
    let r = RPacket::from_payload(&[]);
    assert!(r.is_empty());
    assert_eq!(r.remaining(), 0);
    assert_eq!(WPacket::from(r).into_frame(), &[0u8, 0, 0, 0][..]);
}

#[test]
fn forwarding_a_received_packet_shares_its_bytes() {
    let mut r = RPacket::from_payload(b"forward me");
    assert_eq!(r.read_u8(), Ok(b'f'));
    let before = r.payload().as_ptr();
    let shared = r.payload_bytes();
    assert_eq!(shared.as_ptr(), before);

    let mut w = WPacket::from(r);
    assert!(w.is_frozen());
    assert_eq!(w.payload().as_ptr(), before);
    let frame = w.to_frame();
    assert_eq!(frame[4..].as_ptr(), before);
    assert_eq!(&frame[..], b"\x0a\0\0\0forward me");
}

#[test]
fn read_bytes_and_read_raw_do_not_copy() {
    let r0 = RPacket::from_payload(&[2, 0, 0, 0, 7, 8, 9]);
    let base = r0.payload().as_ptr();
    let mut r = r0.clone();
    assert_eq!(r.read_bytes().unwrap().as_ptr(), base.wrapping_add(4));
    assert_eq!(r.read_raw(1).unwrap().as_ptr(), base.wrapping_add(6));
}

#[test]
fn cloning_a_frozen_packet_shares_its_bytes() {
    let mut w = WPacket::new();
    w.write_str("broadcast");
    w.freeze();
    let clones: Vec<WPacket> = (0..4).map(|_| w.clone()).collect();
    for c in &clones {
        assert_eq!(c.payload().as_ptr(), w.payload().as_ptr());
    }
    let mut c = clones[0].clone();
    assert_eq!(c.to_frame().as_ptr(), w.to_frame().as_ptr());
}

#[test]
fn writing_to_a_shared_packet_leaves_the_other_clones_alone() {
    let mut a = WPacket::new();
    a.write_u8(1);
    a.freeze();
    let b = a.clone();
    let frame_before = a.to_frame();

    a.write_u8(2);
    assert!(!a.is_frozen());
    assert_eq!(a.payload(), [1, 2]);
    assert_eq!(b.payload(), [1]);
    assert_eq!(frame_before, &[1u8, 0, 0, 0, 1][..]);
    assert_eq!(b.into_frame(), &[1u8, 0, 0, 0, 1][..]);
    assert_eq!(a.into_frame(), &[2u8, 0, 0, 0, 1, 2][..]);
}

#[test]
fn writing_to_a_forwarded_packet_leaves_the_received_one_alone() {
    let r = RPacket::from_payload(&[1]);
    let keep = r.clone();
    let mut w = WPacket::from(r);
    w.write_u8(2);
    assert_eq!(w.payload(), [1, 2]);
    assert_eq!(keep.payload(), [1]);
}

#[test]
fn to_frame_then_more_writes_keeps_earlier_frames_intact() {
    let mut w = WPacket::new();
    w.write_u16(0x0102);
    let first = w.to_frame();
    w.write_u16(0x0304);
    let second = w.to_frame();
    assert_eq!(first, &[2u8, 0, 0, 0, 2, 1][..]);
    assert_eq!(second, &[4u8, 0, 0, 0, 2, 1, 4, 3][..]);
}

#[test]
fn errors_have_messages() {
    let e = PacketError::Truncated {
        needed: 4,
        remaining: 1,
    };
    assert_eq!(
        e.to_string(),
        "packet truncated: read needs 4 bytes, 1 remain"
    );
    assert_eq!(
        PacketError::MissingNul.to_string(),
        "string field lacks its trailing NUL"
    );
}

#[test]
fn default_max_packet_len_is_one_mebibyte() {
    assert_eq!(kendynet::net::packet::DEFAULT_MAX_PACKET_LEN, 1 << 20);
    assert_eq!(kendynet::net::packet::HEADER_LEN, 4);
}
