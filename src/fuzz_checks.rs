//! What the fuzz targets in `fuzz/` check, one function per decoder of network input.
//!
//! Each function takes arbitrary bytes, feeds them to one decoder and panics if a
//! property a client or the server relies on does not hold. The libFuzzer targets
//! call these functions, and `tests/fuzz_corpus.rs` replays the committed corpus
//! through the same functions on every test run, so the two cannot drift apart.
//! Not an API: hidden from the docs and free to change with the fuzz targets.

use std::fmt::Debug;

use crate::api::query::Params;
use crate::api::ApiError;
use crate::protocol::socks5::{Greeting, Request, UserPassRequest};
use crate::protocol::udp::UdpHeader;
use crate::protocol::{socks4, Decode, Encode};

/// A check: panics when the property it guards does not hold for the input.
pub type Check = fn(&[u8]);

/// Every fuzz target by name (the name of its file in `fuzz/fuzz_targets/` and of its
/// corpus directory in `fuzz/corpus/`) and the check it runs.
pub const TARGETS: &[(&str, Check)] = &[
    ("socks5_greeting", socks5_greeting),
    ("socks5_request", socks5_request),
    ("rfc1929_request", rfc1929_request),
    ("socks4_request", socks4_request),
    ("udp_header", udp_header),
    ("api_query", api_query),
];

/// SOCKS5 greeting: streamed decoding, byte-exact re-encoding, 1 to 255 methods.
pub fn socks5_greeting(data: &[u8]) {
    if let Some((greeting, used)) = decode_streamed::<Greeting>(data) {
        assert_eq!(used, 2 + greeting.methods.len(), "{greeting:?}");
        assert!((1..=255).contains(&greeting.methods.len()));
        round_trip(&greeting, &data[..used]);
    }
}

/// SOCKS5 request: streamed decoding, byte-exact re-encoding.
pub fn socks5_request(data: &[u8]) {
    if let Some((request, used)) = decode_streamed::<Request>(data) {
        round_trip(&request, &data[..used]);
    }
}

/// RFC 1929 username/password request: streamed decoding, byte-exact re-encoding,
/// a non-empty username.
pub fn rfc1929_request(data: &[u8]) {
    if let Some((request, used)) = decode_streamed::<UserPassRequest>(data) {
        assert!(!request.username.is_empty());
        assert_eq!(used, 3 + request.username.len() + request.password.len());
        round_trip(&request, &data[..used]);
    }
}

/// SOCKS4/4a request: streamed decoding, and decode(encode(x)) == x. The bytes are
/// re-encoded exactly only for SOCKS4: a SOCKS4a request may use any 0.0.0.x
/// marker address, while the encoder always writes 0.0.0.1.
pub fn socks4_request(data: &[u8]) {
    if let Some((request, used)) = decode_streamed::<socks4::Request>(data) {
        assert!(!request.user_id.contains(&0));
        let bytes = request.to_bytes();
        assert_eq!(
            socks4::Request::decode(&bytes),
            Ok(Some((request.clone(), bytes.len())))
        );
        if let crate::protocol::TargetAddr::Ip(_) = request.dest {
            assert_eq!(bytes, &data[..used]);
        }
    }
}

/// SOCKS5 UDP header: the payload is exactly the bytes after the header, the header
/// re-encodes to the bytes it came from, and a datagram cut short inside the header
/// is refused (never read as a different destination).
pub fn udp_header(data: &[u8]) {
    let Ok((header, payload)) = UdpHeader::decode(data) else {
        return;
    };
    let header_len = data.len() - payload.len();
    assert!(payload.len() <= data.len());
    assert_eq!(payload, &data[header_len..]);
    let mut bytes = Vec::new();
    header.encode(&mut bytes);
    assert_eq!(bytes, &data[..header_len]);
    for cut in 0..header_len {
        assert!(UdpHeader::decode(&data[..cut]).is_err(), "cut at {cut}");
    }
    bytes.extend_from_slice(payload);
    let (again, again_payload) = UdpHeader::decode(&bytes).expect("re-encoded header");
    assert_eq!(again, header);
    assert_eq!(again_payload, payload);
}

/// Every query parameter name a handler of the management API accepts.
static API_PARAMS_LIST: std::sync::LazyLock<Vec<&'static str>> = std::sync::LazyLock::new(|| {
    let mut all: Vec<&'static str> = crate::api::QUERY_PARAMS.concat();
    all.sort_unstable();
    all.dedup();
    all
});

/// The management API's query-string parser on any UTF-8 text: errors name a
/// parameter that is really wrong, no value is longer than the query it came from,
/// the typed getters keep their ranges, and the parameters re-encoded canonically
/// parse back to the same values.
pub fn api_query(data: &[u8]) {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let params = match Params::parse(Some(raw), &API_PARAMS_LIST) {
        Ok(params) => params,
        Err(ApiError::UnknownParam(name)) => {
            assert!(!API_PARAMS_LIST.contains(&name.as_str()), "{name:?}");
            return;
        }
        Err(ApiError::RepeatedParam(name)) => {
            assert!(API_PARAMS_LIST.contains(&name.as_str()), "{name:?}");
            return;
        }
        Err(other) => panic!("parse can only fail on a name, got {other:?}"),
    };
    let present: Vec<(&str, &str)> = API_PARAMS_LIST
        .iter()
        .filter_map(|&name| params.get(name).map(|v| (name, v)))
        .collect();
    assert!(present.len() <= raw.split('&').filter(|p| !p.is_empty()).count());
    for (name, value) in &present {
        assert!(value.len() <= raw.len(), "{name}={value:?} from {raw:?}");
    }
    match params.int("page", 1, 1000, 7) {
        Ok(page) => assert!(page == 7 || (1..=1000).contains(&page)),
        Err(e) => assert!(params.get("page").is_some(), "{e}"),
    }
    if let Err(e) = params.time("since") {
        assert!(params.get("since").is_some(), "{e}");
    }
    let canonical = form_encode(&present);
    let again = Params::parse(Some(&canonical), &API_PARAMS_LIST).expect("canonical form parses");
    for &name in API_PARAMS_LIST.iter() {
        assert_eq!(
            again.get(name),
            params.get(name),
            "{name} via {canonical:?}"
        );
    }
}

/// `name=value&...` with every byte but ASCII letters and digits percent-encoded.
fn form_encode(pairs: &[(&str, &str)]) -> String {
    let escape = |s: &str| -> String {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    };
    let encoded: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{}={}", escape(k), escape(v)))
        .collect();
    encoded.join("&")
}

/// Decodes `data` whole and as the handshake sees it arrive, a prefix at a time: the
/// first prefix that gets an answer other than "need more bytes" must get the same
/// answer as the whole input, so the result cannot depend on how TCP split the bytes.
/// A decoded message never claims more bytes than it was given.
fn decode_streamed<T: Decode + PartialEq + Debug>(data: &[u8]) -> Option<(T, usize)> {
    let whole = T::decode(data);
    if let Ok(Some((_, used))) = &whole {
        assert!(*used <= data.len(), "claims {used} of {} bytes", data.len());
    }
    let first = (0..data.len())
        .map(|cut| (cut, T::decode(&data[..cut])))
        .find(|(_, answer)| !matches!(answer, Ok(None)));
    if let Some((cut, answer)) = first {
        assert_eq!(answer, whole, "answer at {cut} of {} bytes", data.len());
    }
    whole.ok().flatten()
}

/// The message re-encodes to exactly the bytes it was decoded from, and decodes back.
fn round_trip<T: Decode + Encode + PartialEq + Debug>(msg: &T, wire: &[u8]) {
    let bytes = msg.to_bytes();
    assert_eq!(bytes, wire, "{msg:?}");
    match T::decode(&bytes) {
        Ok(Some((again, used))) => {
            assert_eq!(&again, msg);
            assert_eq!(used, bytes.len());
        }
        other => panic!("{msg:?} re-encoded as {bytes:?} decodes as {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ProtocolError;

    /// Claims one byte more than it was given once it has three.
    #[derive(Debug, PartialEq)]
    struct Overreach;

    impl Decode for Overreach {
        fn decode(buf: &[u8]) -> Result<Option<(Self, usize)>, ProtocolError> {
            Ok((buf.len() >= 3).then(|| (Self, buf.len() + 1)))
        }
    }

    /// Rejects two bytes but accepts three: the answer depends on the split.
    #[derive(Debug, PartialEq)]
    struct Fickle;

    impl Decode for Fickle {
        fn decode(buf: &[u8]) -> Result<Option<(Self, usize)>, ProtocolError> {
            match buf.len() {
                0 | 1 => Ok(None),
                2 => Err(ProtocolError::Truncated),
                _ => Ok(Some((Self, 3))),
            }
        }
    }

    #[test]
    #[should_panic(expected = "claims 4 of 3 bytes")]
    fn overlong_claim_is_caught() {
        decode_streamed::<Overreach>(&[0; 3]);
    }

    #[test]
    #[should_panic(expected = "answer at 2 of 3 bytes")]
    fn split_dependent_answer_is_caught() {
        decode_streamed::<Fickle>(&[0; 3]);
    }

    #[test]
    fn valid_messages_pass_every_check() {
        socks5_greeting(&[5, 2, 0, 2, 9]);
        socks5_request(&[5, 1, 0, 3, 3, b'a', b'.', b'b', 0, 80]);
        rfc1929_request(&[1, 1, b'u', 2, b'p', b'w']);
        socks4_request(b"\x04\x01\x00\x50\x00\x00\x00\x07me\0host\0");
        udp_header(&[0, 0, 0, 1, 127, 0, 0, 1, 0, 53, 0xAA]);
        api_query(b"page=2&since=2026-11-27T16%3A00%3A00Z&user=a+b");
    }
}
