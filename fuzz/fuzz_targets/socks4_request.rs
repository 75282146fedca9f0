//! The SOCKS4/4a request decoder on arbitrary bytes; the checks are
//! `rustsocks::fuzz_checks::socks4_request`, which `tests/fuzz_corpus.rs` also runs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rustsocks::fuzz_checks::socks4_request(data));
