//! Arbitrary bytes as a QUIC request header and as each kind of response header: never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ltxd_quic::fuzzing::decode_headers(data));
