//! Arbitrary bytes decoded as a v3 (current) LTX file, page by page: never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ltxd::ltx::Format;

fuzz_target!(|data: &[u8]| ltxd_fuzz::decode_all(data, Format::V3));
