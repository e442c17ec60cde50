//! `ltxd ltx ...`: offline LTX commands, with output columns that follow the reference `ltx` tool.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use serde_json::json;

use super::table;
use ltxd::database::{self, EncodeOptions, LtxSource};
use ltxd::ltx::{self, Format, Header, Trailer, Verified};

/// The `ltxd ltx` subcommands.
#[derive(Subcommand)]
pub enum LtxCommand {
    /// One row per file: TXID range, commit, pages, checksums, timestamp, WAL fields, format.
    List {
        #[command(flatten)]
        read: ReadArgs,
        /// The LTX files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print the header, the page headers and the trailer of a file.
    Dump {
        #[command(flatten)]
        read: ReadArgs,
        /// The LTX file.
        file: PathBuf,
    },
    /// Check each file completely; print `ok` or the precise error; exit 1 if any fails.
    Verify {
        #[command(flatten)]
        read: ReadArgs,
        /// The LTX files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print the database checksum of a SQLite file as 16 hex digits.
    Checksum {
        /// The database file.
        db: PathBuf,
    },
    /// Apply LTX files in order to a database, refusing a broken checksum chain.
    Apply {
        /// The database file; created if missing.
        #[arg(long)]
        db: PathBuf,
        /// The LTX files, in TXID order.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Encode a database as a snapshot LTX file (TXID 1).
    EncodeDb {
        /// Output format.
        #[arg(long, default_value = "v1")]
        format: Format,
        /// Wrap the v1 body in an LZ4 frame, as LiteFS does by default.
        #[arg(long)]
        compress: bool,
        /// Header timestamp in milliseconds since the Unix epoch (default: now).
        #[arg(long)]
        timestamp: Option<i64>,
        /// The output file.
        #[arg(short, long)]
        output: PathBuf,
        /// The database file.
        db: PathBuf,
    },
    /// Compact a run of consecutive LTX files into one.
    Compact {
        /// Output format (default: the first input's).
        #[arg(long)]
        format: Option<Format>,
        /// Wrap the v1 body in an LZ4 frame.
        #[arg(long)]
        compress: bool,
        /// The output file.
        #[arg(short, long)]
        output: PathBuf,
        /// The LTX files, in TXID order.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

/// How the reading commands take and show LTX files.
#[derive(clap::Args)]
pub struct ReadArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Read the files as this format instead of detecting it (v1 or v3).
    #[arg(long)]
    format: Option<Format>,
}

/// Runs an `ltxd ltx` subcommand.
pub fn run(command: LtxCommand) -> anyhow::Result<ExitCode> {
    match command {
        LtxCommand::List { read, files } => list(&files, read.format, read.json),
        LtxCommand::Dump { read, file } => dump(&file, read.format, read.json),
        LtxCommand::Verify { read, files } => verify(&files, read.format, read.json),
        LtxCommand::Checksum { db } => {
            let state = database::checksum_file(&db)
                .with_context(|| format!("checksum {}", db.display()))?;
            println!("{}", state.checksum);
            Ok(ExitCode::SUCCESS)
        }
        LtxCommand::Apply { db, files } => {
            let sources: Vec<LtxSource> = files.iter().map(LtxSource::file).collect();
            let applied = database::apply_files(&db, &sources)?;
            println!("applied {} file(s); position {}", files.len(), applied.pos);
            Ok(ExitCode::SUCCESS)
        }
        LtxCommand::EncodeDb {
            format,
            compress,
            timestamp,
            output,
            db,
        } => {
            let options = EncodeOptions {
                format,
                compress,
                timestamp: timestamp.unwrap_or_else(super::log::now_ms),
                node_id: 0,
            };
            let trailer = database::encode_database_file(&db, &output, options)?;
            println!(
                "wrote {}: post-apply checksum {}",
                output.display(),
                trailer.post_apply_checksum
            );
            Ok(ExitCode::SUCCESS)
        }
        LtxCommand::Compact {
            format,
            compress,
            output,
            files,
        } => {
            let sources: Vec<LtxSource> = files.iter().map(LtxSource::file).collect();
            let trailer = database::compact_files(&sources, &output, format, compress)?;
            println!(
                "wrote {}: post-apply checksum {}",
                output.display(),
                trailer.post_apply_checksum
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// RFC 3339 in UTC to the second, as the reference tool prints it (Go's `time.RFC3339`).
pub fn format_timestamp(ms: i64) -> String {
    let format = &time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .ok()
        .and_then(|t| t.format(format).ok())
        .unwrap_or_else(|| format!("invalid({ms})"))
}

fn exit_code(all_ok: bool) -> ExitCode {
    if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn list(files: &[PathBuf], format: Option<Format>, json: bool) -> anyhow::Result<ExitCode> {
    let mut rows = vec![[
        "min_txid",
        "max_txid",
        "commit",
        "pages",
        "preapply",
        "postapply",
        "timestamp",
        "wal_offset",
        "wal_size",
        "wal_salt",
        "version",
    ]
    .map(String::from)
    .to_vec()];
    let mut entries = Vec::new();
    let mut all_ok = true;
    for path in files {
        match ltx::verify_file(path, format) {
            Ok(v) => {
                let h = &v.header;
                rows.push(vec![
                    h.min_txid.to_string(),
                    h.max_txid.to_string(),
                    h.commit.to_string(),
                    v.page_count.to_string(),
                    h.pre_apply_checksum.to_string(),
                    v.trailer.post_apply_checksum.to_string(),
                    format_timestamp(h.timestamp),
                    h.wal_offset.to_string(),
                    h.wal_size.to_string(),
                    format!("{:08x} {:08x}", h.wal_salt1, h.wal_salt2),
                    v.format.to_string(),
                ]);
                entries.push(verified_json(path, &v));
            }
            Err(err) => {
                all_ok = false;
                eprintln!("{}: {err}", path.display());
                entries.push(json!({ "path": path, "error": err.to_string() }));
            }
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
    } else {
        print!("{}", table::render(&rows));
    }
    Ok(exit_code(all_ok))
}

fn verified_json(path: &Path, v: &Verified) -> serde_json::Value {
    json!({
        "path": path,
        "format": v.format,
        "version": v.format.version(),
        "header": header_json(&v.header),
        "pages": v.page_count,
        "trailer": v.trailer,
    })
}

fn header_json(h: &Header) -> serde_json::Value {
    let mut value = serde_json::to_value(h).unwrap_or_default();
    value["timestamp_rfc3339"] = json!(format_timestamp(h.timestamp));
    value
}

fn dump(path: &Path, format: Option<Format>, json: bool) -> anyhow::Result<ExitCode> {
    let mut decoder =
        ltx::open_file(path, format).with_context(|| format!("{}", path.display()))?;
    let header = decoder.header().clone();
    let format = decoder.format();
    let mut page = vec![0u8; decoder.page_size().bytes()];
    let mut frames = Vec::new();
    let mut failure = None;
    loop {
        match decoder.next_page(&mut page) {
            Ok(Some(frame)) => frames.push(frame),
            Ok(None) => break,
            Err(err) => {
                failure = Some(err);
                break;
            }
        }
    }
    let trailer = match failure {
        Some(err) => Err(err),
        None => decoder.finish(),
    };
    if json {
        let pages: Vec<_> = frames
            .iter()
            .map(|f| json!({"pgno": f.pgno.0, "offset": f.offset, "size": f.size}))
            .collect();
        let (trailer, error) = match &trailer {
            Ok(t) => (json!(t), None),
            Err(e) => (serde_json::Value::Null, Some(e.to_string())),
        };
        let value = json!({
            "path": path, "format": format, "version": format.version(),
            "header": header_json(&header), "pages": pages, "trailer": trailer, "error": error,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print!(
            "{}",
            dump_text(&header, format, &frames, trailer.as_ref().ok())
        );
    }
    match trailer {
        Ok(_) => Ok(ExitCode::SUCCESS),
        Err(err) => {
            eprintln!("{}: {err}", path.display());
            Ok(ExitCode::FAILURE)
        }
    }
}

fn dump_text(
    h: &Header,
    format: Format,
    frames: &[ltx::PageFrame],
    trailer: Option<&Trailer>,
) -> String {
    let mut out = format!(
        "# HEADER\nVersion:   {}\nFlags:     0x{:08x}\nPage size: {}\nCommit:    {}\n\
         Min TXID:  {} ({})\nMax TXID:  {} ({})\nTimestamp: {} ({})\nPre-apply: {}\n\
         WAL offset: {}\nWAL size:   {}\nWAL salt:   {:08x} {:08x}\nNode ID:   {:016x}\n\n# PAGE DATA\n",
        format.version(),
        h.flags,
        h.page_size,
        h.commit,
        h.min_txid,
        h.min_txid.0,
        h.max_txid,
        h.max_txid.0,
        format_timestamp(h.timestamp),
        h.timestamp,
        h.pre_apply_checksum,
        h.wal_offset,
        h.wal_size,
        h.wal_salt1,
        h.wal_salt2,
        h.node_id,
    );
    for (i, frame) in frames.iter().enumerate() {
        out.push_str(&format!("Frame #{i}: pgno={}\n", frame.pgno));
    }
    if let Some(t) = trailer {
        out.push_str(&format!(
            "\n# TRAILER\nPost-apply:    {}\nFile Checksum: {}\n",
            t.post_apply_checksum, t.file_checksum
        ));
    }
    out
}

fn verify(files: &[PathBuf], format: Option<Format>, json: bool) -> anyhow::Result<ExitCode> {
    let results: Vec<_> = files
        .iter()
        .map(|p| (p, ltx::verify_file(p, format)))
        .collect();
    let failed = results.iter().filter(|(_, r)| r.is_err()).count();
    if json {
        let entries: Vec<_> = results
            .iter()
            .map(|(path, r)| match r {
                Ok(v) => json!({"path": path, "ok": true, "format": v.format}),
                Err(e) => json!({"path": path, "ok": false, "error": e.to_string()}),
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&entries)?);
    } else {
        for (path, result) in &results {
            match result {
                Ok(_) => println!("{}: ok", path.display()),
                Err(e) => println!("{}: {e}", path.display()),
            }
        }
        if results.len() > 1 {
            println!("{} ok, {failed} invalid", results.len() - failed);
        }
    }
    Ok(exit_code(failed == 0))
}
