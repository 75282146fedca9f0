//! The management API query string (`Params::parse`) decoder on arbitrary bytes; the checks are
//! `rustsocks::fuzz_checks::api_query`, which `tests/fuzz_corpus.rs` also runs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rustsocks::fuzz_checks::api_query(data));
