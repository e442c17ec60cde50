//! Arbitrary bytes through format detection and then a full verify: never a panic, and a
//! detected format leaves the reader at the start of the file.
#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;
use ltxd::ltx::{detect_format, Decoder};

fuzz_target!(|data: &[u8]| {
    let mut cursor = Cursor::new(data);
    let Ok(format) = detect_format(&mut cursor) else {
        return;
    };
    assert_eq!(cursor.position(), 0, "detect_format must rewind the reader");
    if let Ok(decoder) = Decoder::new(cursor, format) {
        let _ = decoder.verify();
    }
});
