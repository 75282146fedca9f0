//! Round trips, truncation and hostile input for every message type.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use proptest::prelude::*;

use super::socks5::{
    Command, Greeting, Method, MethodSelection, Reply, ReplyCode, Request, UserPassReply,
    UserPassRequest,
};
use super::{socks4, Decode, Encode, ProtocolError, TargetAddr};

fn ip_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(o, p)| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(o)), p)),
        (any::<[u8; 16]>(), any::<u16>())
            .prop_map(|(o, p)| SocketAddr::new(IpAddr::V6(Ipv6Addr::from(o)), p)),
    ]
}

/// Printable ASCII host names without NUL, 1..=255 bytes.
fn host() -> impl Strategy<Value = String> {
    proptest::collection::vec(0x21u8..0x7f, 1..=255)
        .prop_map(|b| String::from_utf8(b).expect("ASCII is UTF-8"))
}

fn target() -> impl Strategy<Value = TargetAddr> {
    prop_oneof![
        ip_addr().prop_map(TargetAddr::Ip),
        (host(), any::<u16>()).prop_map(|(h, p)| TargetAddr::Domain(h, p)),
    ]
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        Just(Command::Connect),
        Just(Command::Bind),
        Just(Command::UdpAssociate)
    ]
}

/// Encodes, decodes, and checks that every strict prefix asks for more bytes and
/// that bytes after the message are left alone.
fn round_trip<T: Decode + Encode + PartialEq + std::fmt::Debug>(msg: &T) {
    let mut bytes = msg.to_bytes();
    for cut in 0..bytes.len() {
        assert_eq!(
            T::decode(&bytes[..cut]).map(|o| o.is_none()),
            Ok(true),
            "prefix {cut}"
        );
    }
    let len = bytes.len();
    bytes.extend_from_slice(b"trailing");
    let (decoded, used) = T::decode(&bytes).expect("valid").expect("complete");
    assert_eq!(&decoded, msg);
    assert_eq!(used, len);
}

proptest! {
    #[test]
    fn greeting_round_trips(methods in proptest::collection::vec(any::<u8>(), 1..=255)) {
        round_trip(&Greeting { methods: methods.into_iter().map(Method).collect() });
    }

    #[test]
    fn method_selection_round_trips(m in any::<u8>()) {
        round_trip(&MethodSelection(Method(m)));
    }

    #[test]
    fn userpass_round_trips(
        username in proptest::collection::vec(any::<u8>(), 1..=255),
        password in proptest::collection::vec(any::<u8>(), 0..=255),
    ) {
        round_trip(&UserPassRequest { username, password });
    }

    #[test]
    fn userpass_reply_round_trips(success in any::<bool>()) {
        round_trip(&UserPassReply { success });
    }

    #[test]
    fn request_round_trips(command in command(), dest in target()) {
        round_trip(&Request { command, dest });
    }

    #[test]
    fn reply_round_trips(code in any::<u8>(), bind in target()) {
        round_trip(&Reply { code: ReplyCode::from_byte(code), bind });
    }

    #[test]
    fn socks4_request_round_trips(
        connect in any::<bool>(),
        v4 in (any::<[u8; 4]>(), any::<u16>()),
        domain in proptest::option::of(host()),
        user_id in proptest::collection::vec(1u8..=255, 0..=255),
    ) {
        let command = if connect { socks4::Command::Connect } else { socks4::Command::Bind };
        // 0.0.0.x with x != 0 is the SOCKS4a marker, so plain SOCKS4 avoids it.
        let mut octets = v4.0;
        if octets[..3] == [0, 0, 0] && octets[3] != 0 {
            octets[0] = 1;
        }
        let dest = match domain {
            Some(h) => TargetAddr::Domain(h, v4.1),
            None => TargetAddr::Ip(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(octets)), v4.1)),
        };
        round_trip(&socks4::Request { command, dest, user_id });
    }

    #[test]
    fn socks4_reply_round_trips(granted in any::<bool>(), ip in any::<[u8; 4]>(), port in any::<u16>()) {
        let bind = std::net::SocketAddrV4::new(Ipv4Addr::from(ip), port);
        round_trip(&socks4::Reply { granted, bind });
    }

    #[test]
    fn udp_header_round_trips(frag in any::<u8>(), dest in target(), payload in proptest::collection::vec(any::<u8>(), 0..64)) {
        let header = super::udp::UdpHeader { frag, dest };
        let mut bytes = Vec::new();
        header.encode(&mut bytes);
        let len = bytes.len();
        for cut in 0..len {
            prop_assert!(super::udp::UdpHeader::decode(&bytes[..cut]).is_err());
        }
        bytes.extend_from_slice(&payload);
        let (decoded, rest) = super::udp::UdpHeader::decode(&bytes).unwrap();
        prop_assert_eq!(decoded, header);
        prop_assert_eq!(rest, &payload[..]);
    }

    #[test]
    fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = super::udp::UdpHeader::decode(&bytes);
        let _ = Greeting::decode(&bytes);
        let _ = MethodSelection::decode(&bytes);
        let _ = UserPassRequest::decode(&bytes);
        let _ = UserPassReply::decode(&bytes);
        let _ = Request::decode(&bytes);
        let _ = Reply::decode(&bytes);
        let _ = socks4::Request::decode(&bytes);
        let _ = socks4::Reply::decode(&bytes);
    }

    #[test]
    fn decoded_length_never_exceeds_input(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(Some((_, n))) = Request::decode(&bytes) { prop_assert!(n <= bytes.len()); }
        if let Ok(Some((_, n))) = socks4::Request::decode(&bytes) { prop_assert!(n <= bytes.len()); }
        if let Ok(Some((_, n))) = UserPassRequest::decode(&bytes) { prop_assert!(n <= bytes.len()); }
    }
}

#[test]
fn greeting_errors() {
    assert_eq!(
        Greeting::decode(&[4]),
        Err(ProtocolError::UnsupportedVersion(4))
    );
    assert_eq!(Greeting::decode(&[5, 0]), Err(ProtocolError::NoMethods));
    assert_eq!(Greeting::decode(&[5, 2, 0]), Ok(None));
}

#[test]
fn request_errors_carry_reply_codes() {
    let cases: [(&[u8], ProtocolError, Option<ReplyCode>); 6] = [
        (
            &[5, 9],
            ProtocolError::UnknownCommand(9),
            Some(ReplyCode::CommandNotSupported),
        ),
        (
            &[5, 1, 0, 7],
            ProtocolError::UnknownAddressType(7),
            Some(ReplyCode::AddressTypeNotSupported),
        ),
        (
            &[5, 1, 0, 3, 0],
            ProtocolError::EmptyDomain,
            Some(ReplyCode::GeneralFailure),
        ),
        (
            &[5, 1, 1],
            ProtocolError::NonZeroReserved(1),
            Some(ReplyCode::GeneralFailure),
        ),
        (
            &[5, 1, 0, 3, 1, 0xff, 0, 80],
            ProtocolError::DomainNotUtf8,
            Some(ReplyCode::GeneralFailure),
        ),
        (&[4, 1, 0], ProtocolError::UnsupportedVersion(4), None),
    ];
    for (bytes, err, reply) in cases {
        assert_eq!(Request::decode(bytes), Err(err.clone()), "{bytes:?}");
        assert_eq!(err.reply(), reply, "{err}");
    }
}

#[test]
fn userpass_errors() {
    assert_eq!(
        UserPassRequest::decode(&[5, 1]),
        Err(ProtocolError::UnsupportedAuthVersion(5))
    );
    assert_eq!(
        UserPassRequest::decode(&[1, 0, 0]),
        Err(ProtocolError::EmptyUsername)
    );
    // ULEN says 255 but only 3 bytes came: wait for the rest.
    assert_eq!(
        UserPassRequest::decode(&[1, 255, b'a', b'b', b'c']),
        Ok(None)
    );
}

#[test]
fn socks4a_reads_host_after_user_id() {
    let bytes = b"\x04\x01\x00\x50\x00\x00\x00\x01bob\x00example.com\x00rest";
    let (req, n) = socks4::Request::decode(bytes).unwrap().unwrap();
    assert_eq!(req.dest, TargetAddr::Domain("example.com".into(), 80));
    assert_eq!(req.user_id, b"bob");
    assert_eq!(&bytes[n..], b"rest");
}

#[test]
fn socks4_unterminated_fields_are_capped() {
    let mut bytes = b"\x04\x01\x00\x50\x7f\x00\x00\x01".to_vec();
    bytes.extend(std::iter::repeat_n(b'a', super::MAX_SOCKS4_FIELD));
    assert_eq!(socks4::Request::decode(&bytes), Ok(None));
    bytes.push(b'a');
    assert_eq!(
        socks4::Request::decode(&bytes),
        Err(ProtocolError::FieldTooLong)
    );
    let bytes = b"\x04\x01\x00\x50\x00\x00\x00\x01\x00\x00";
    assert_eq!(
        socks4::Request::decode(bytes),
        Err(ProtocolError::EmptyDomain)
    );
    assert_eq!(
        socks4::Request::decode(b"\x04\x03"),
        Err(ProtocolError::UnknownCommand(3))
    );
}
