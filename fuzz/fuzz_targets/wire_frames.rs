//! Arbitrary bytes as a replication stream and as a position map: never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ltxd_protocol::wire::{decode_positions, FrameDecoder};

fuzz_target!(|data: &[u8]| {
    let _ = decode_positions(data);
    let mut decoder = FrameDecoder::new();
    for piece in data.chunks(7) {
        decoder.push(piece);
        while let Ok(Some(_)) = decoder.next_event() {}
    }
});
