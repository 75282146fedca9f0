//! The RFC 1929 username/password request decoder on arbitrary bytes; the checks are
//! `rustsocks::fuzz_checks::rfc1929_request`, which `tests/fuzz_corpus.rs` also runs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rustsocks::fuzz_checks::rfc1929_request(data));
