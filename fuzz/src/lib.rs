//! Helpers shared by the fuzz targets.

use std::io::Cursor;

use ltxd::ltx::{Decoder, Format};

/// Decodes arbitrary bytes as an LTX file of `format`, page by page, then finishes: any outcome
/// but a panic is fine.
pub fn decode_all(data: &[u8], format: Format) {
    let Ok(mut decoder) = Decoder::new(Cursor::new(data), format) else {
        return;
    };
    let mut page = vec![0u8; decoder.page_size().bytes()];
    loop {
        match decoder.next_page(&mut page) {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(_) => return,
        }
    }
    let _ = decoder.finish();
}
