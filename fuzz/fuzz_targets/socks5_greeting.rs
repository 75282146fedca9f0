//! The SOCKS5 greeting (RFC 1928 section 3) decoder on arbitrary bytes; the checks are
//! `rustsocks::fuzz_checks::socks5_greeting`, which `tests/fuzz_corpus.rs` also runs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rustsocks::fuzz_checks::socks5_greeting(data));
