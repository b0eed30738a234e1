//! The secret classifier and import rules on any text: never a panic; what
//! classifies as generated carries the locator it was made with; a secret made
//! for that locator classifies back to it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| credd_fuzz::secrets(text));
