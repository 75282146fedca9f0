//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) through the checks the
//! fuzz targets run (`rustsocks::fuzz_checks`), so every test run covers the inputs
//! the fuzzer found interesting without building the fuzz crate.

use std::fs;
use std::path::{Path, PathBuf};

use rustsocks::fuzz_checks::TARGETS;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The files in one target's corpus directory, sorted; panics if there are none, so a
/// missing or emptied corpus fails instead of passing vacuously.
fn corpus_files(target: &str) -> Vec<PathBuf> {
    let dir = fuzz_dir().join("corpus").join(target);
    let entries = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus directory {} unreadable: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "corpus {} is empty", dir.display());
    files
}

#[test]
fn every_corpus_input_passes_its_targets_checks() {
    for &(target, check) in TARGETS {
        for path in corpus_files(target) {
            let bytes = fs::read(&path).expect("corpus file");
            let outcome = std::panic::catch_unwind(|| check(&bytes));
            assert!(outcome.is_ok(), "{target}: {} fails", path.display());
        }
    }
}

/// A fuzz target without a check (or a check without a target, a `[[bin]]` entry or a
/// corpus) would be fuzzed but never replayed, or replayed but never fuzzed.
#[test]
fn every_fuzz_target_has_a_check_and_a_corpus() {
    let mut on_disk: Vec<String> = fs::read_dir(fuzz_dir().join("fuzz_targets"))
        .expect("fuzz/fuzz_targets")
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "rs"))
        .map(|path| path.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = TARGETS.iter().map(|(name, _)| name.to_string()).collect();
    listed.sort();
    assert_eq!(on_disk, listed, "fuzz/fuzz_targets/*.rs");
    assert_eq!(cargo_bins(), listed, "[[bin]] entries of fuzz/Cargo.toml");
    let mut corpora: Vec<String> = fs::read_dir(fuzz_dir().join("corpus"))
        .expect("fuzz/corpus")
        .map(|entry| entry.expect("directory entry").file_name())
        .map(|name| name.to_string_lossy().into_owned())
        .collect();
    corpora.sort();
    assert_eq!(corpora, listed, "fuzz/corpus/*");
}

/// The `name` of every `[[bin]]` table in `fuzz/Cargo.toml`, sorted.
fn cargo_bins() -> Vec<String> {
    let manifest = fs::read_to_string(fuzz_dir().join("Cargo.toml")).expect("fuzz/Cargo.toml");
    let mut names: Vec<String> = manifest
        .split("[[bin]]")
        .skip(1)
        .filter_map(|table| {
            let line = table.lines().find(|l| l.trim_start().starts_with("name"))?;
            Some(line.split('"').nth(1)?.to_owned())
        })
        .collect();
    names.sort();
    names
}
