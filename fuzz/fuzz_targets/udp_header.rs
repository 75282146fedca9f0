//! The SOCKS5 UDP request header (RFC 1928 section 7) decoder on arbitrary bytes; the checks are
//! `rustsocks::fuzz_checks::udp_header`, which `tests/fuzz_corpus.rs` also runs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rustsocks::fuzz_checks::udp_header(data));
