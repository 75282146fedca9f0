//! The SOCKS5 request (RFC 1928 section 4) decoder on arbitrary bytes; the checks are
//! `rustsocks::fuzz_checks::socks5_request`, which `tests/fuzz_corpus.rs` also runs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rustsocks::fuzz_checks::socks5_request(data));
