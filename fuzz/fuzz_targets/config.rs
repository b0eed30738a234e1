//! The settings file (TOML) on any text: never a panic; a file credd accepts
//! yields settings that parse.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| credd_fuzz::config(text));
