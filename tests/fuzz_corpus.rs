//! The fuzz targets' properties (`fuzz/src/lib.rs`) on stable Rust: every input
//! the fuzzers kept in `fuzz/corpus/`, decoded as libFuzzer hands it to the
//! target, then a short pass of seeded random inputs. CI runs this; the long
//! runs are `cargo +nightly fuzz run` (docs/RELIABILITY.md).

#[path = "../fuzz/src/lib.rs"]
mod properties;

use arbitrary::{Arbitrary, Unstructured};

/// Random inputs per target in the short pass.
const RANDOM_INPUTS: usize = 20_000;

/// Runs `property` on `bytes` decoded as the fuzz target decodes them.
fn on<'a, T: Arbitrary<'a>>(bytes: &'a [u8], property: fn(T)) {
    if let Ok(input) = T::arbitrary_take_rest(Unstructured::new(bytes)) {
        property(input);
    }
}

/// Every corpus file of `target`, then seeded random inputs, through `run`.
fn replay(target: &str, run: impl Fn(&[u8])) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|err| panic!("{}: {err}", dir.display())) {
        run(&std::fs::read(entry.unwrap().path()).unwrap());
        files += 1;
    }
    assert!(files > 0, "{} holds the target's corpus", dir.display());
    let mut state = 0x2545_f491_4f6c_dd1d_u64 ^ target.len() as u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..RANDOM_INPUTS {
        let len = (next() % 300) as usize;
        let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        run(&bytes);
    }
}

#[test]
fn secrets() {
    replay("secrets", |bytes| on(bytes, properties::secrets));
}

#[test]
fn urls() {
    replay("urls", |bytes| on(bytes, properties::urls));
}

#[test]
fn hosts() {
    replay("hosts", |bytes| on(bytes, properties::hosts));
}

#[test]
fn page_tokens() {
    replay("page_tokens", |bytes| on(bytes, properties::page_tokens));
}

#[test]
fn config() {
    replay("config", |bytes| on(bytes, properties::config));
}
