//! Host normalisation on any text: canonical forms are fixed points, and a parsed
//! DNS host is canonical, ASCII, and parses to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| credd_fuzz::hosts(text));
