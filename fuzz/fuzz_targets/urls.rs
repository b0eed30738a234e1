//! Callback URLs, App Links and the redirect check on any input: never a panic;
//! what is stored holds no control character or space and matches itself; a
//! presented redirect that matches a stored callback has its scheme and host.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (&str, &str)| credd_fuzz::urls(input));
