//! The decoder streams: `ltxd ltx verify` reads a large file from a pipe with a peak memory that
//! does not grow with the file. Set `LTXD_LONG=1` to stream 10 GiB instead of the default size.

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

use ltxd::ltx::{Encoder, Format, Header, PageNo, PageSize, TxId, FLAG_COMPRESS_LZ4};

const PAGE: usize = 4096;

/// Streams a snapshot of `pages` pages in `format` into `ltxd ltx verify`, and returns the
/// verifier's peak resident set in KiB.
#[expect(
    clippy::zombie_processes,
    reason = "the child is reaped by wait4, which reports its peak memory"
)]
fn peak_rss_kib_verifying(format: Format, flags: u32, pages: u32) -> i64 {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ltxd"))
        .args([
            "ltx",
            "verify",
            "--format",
            &format.to_string(),
            "/dev/stdin",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stdin = std::io::BufWriter::with_capacity(1 << 20, child.stdin.take().unwrap());
    let page_size = PageSize::new(PAGE as u32).unwrap();
    let mut header = Header::new(page_size, pages, TxId(1), TxId(1));
    header.flags = flags;
    let mut encoder = Encoder::new(stdin, format, header).unwrap();
    let mut data = vec![0u8; PAGE];
    for pgno in (1..=pages).filter(|&p| PageNo(p) != page_size.lock_page()) {
        data[..4].copy_from_slice(&pgno.to_be_bytes());
        data[PAGE - 4..].copy_from_slice(&pgno.wrapping_mul(2_654_435_761).to_le_bytes());
        encoder.encode_page(PageNo(pgno), &data).unwrap();
    }
    let (mut stdin, _) = encoder.finish_snapshot().unwrap();
    stdin.flush().unwrap();
    drop(stdin);

    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child, writing into locals of the right types.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32);
    let status = std::process::ExitStatus::from_raw(status);
    assert!(status.success(), "verify failed: {status}");
    usage.ru_maxrss
}

#[test]
fn verify_memory_does_not_grow_with_file_size() {
    let long = std::env::var_os("LTXD_LONG").is_some();
    let large_pages: u32 = if long { 10 << 18 } else { 1 << 16 }; // 10 GiB or 256 MiB of pages
    for (format, flags) in [
        (Format::V1, 0),
        (Format::V1, FLAG_COMPRESS_LZ4),
        (Format::V3, 0),
    ] {
        let small = peak_rss_kib_verifying(format, flags, 1 << 10);
        let large = peak_rss_kib_verifying(format, flags, large_pages);
        eprintln!(
            "{format} flags {flags}: peak RSS {small} KiB at 4 MiB, {large} KiB at {} MiB",
            large_pages / 256
        );
        assert!(
            large < small + 8 * 1024,
            "{format}: {large} KiB vs {small} KiB"
        );
        assert!(large < 64 * 1024, "{format}: peak RSS {large} KiB");
    }
}
