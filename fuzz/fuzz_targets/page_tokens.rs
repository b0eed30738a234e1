//! Page tokens and sizes as a caller sends them: never a panic, never a page
//! larger than the maximum, and a token is only accepted for the list it names.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (i32, &str, &str)| credd_fuzz::page_tokens(input));
