//! `lossyfs`: mounts the lossy file system until SIGTERM or SIGINT; SIGUSR1 cuts the power.
//!
//! ```text
//! lossyfs --live DIR --store DIR --mountpoint DIR [--trap-ops fsync,rename --trap-path segments --trap-nth 3]
//! ```
//!
//! When the power is cut, `--power-marker FILE` is created with the reason. On exit the live
//! directory keeps only what was durable if the power was cut, and the operation counts are
//! printed on stderr.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use ltxd_lossyfs::{Action, Mounted, Op, Trap};

#[derive(Parser)]
#[command(about = "A FUSE pass-through that forgets unsynced writes when the power is cut")]
struct Args {
    /// The directory served; after a power cut it keeps only what was durable.
    #[arg(long)]
    live: PathBuf,
    /// Where lossyfs keeps durable copies while mounted (emptied first; outside --live).
    #[arg(long)]
    store: PathBuf,
    /// Where to mount.
    #[arg(long)]
    mountpoint: PathBuf,
    /// Operations the trap counts, comma-separated (write, truncate, create, mkdir, unlink,
    /// rmdir, rename, fsync, fsyncdir); none counts all.
    #[arg(long, value_delimiter = ',')]
    trap_ops: Vec<String>,
    /// Only operations on paths containing this are counted.
    #[arg(long, default_value = "")]
    trap_path: String,
    /// Cut the power just before the n-th counted operation.
    #[arg(long)]
    trap_nth: Option<u64>,
    /// A file created, holding the reason, when the power is cut.
    #[arg(long)]
    power_marker: Option<PathBuf>,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("lossyfs: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> std::io::Result<()> {
    let trap = match args.trap_nth {
        Some(nth) => {
            let ops = args
                .trap_ops
                .iter()
                .map(|name| {
                    Op::parse(name)
                        .ok_or_else(|| std::io::Error::other(format!("unknown operation {name:?}")))
                })
                .collect::<Result<Vec<Op>, _>>()?;
            Some(Trap {
                ops,
                path_contains: args.trap_path,
                nth,
                action: Action::CutPower,
            })
        }
        None => None,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let cut = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&stop))?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGUSR1, Arc::clone(&cut))?;
    let mounted = Mounted::mount(&args.live, &args.store, &args.mountpoint, trap)?;
    let mut marked = false;
    while !stop.load(Ordering::Relaxed) {
        if cut.swap(false, Ordering::Relaxed) {
            mounted.power_off("SIGUSR1");
        }
        if let (false, Some(reason), Some(marker)) =
            (marked, mounted.power_cut(), &args.power_marker)
        {
            std::fs::write(marker, reason)?;
            marked = true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let report = mounted.unmount()?;
    for (op, count) in &report.counts {
        eprintln!("lossyfs: {op} {count}");
    }
    if let Some(reason) = &report.power_cut {
        eprintln!("lossyfs: power cut ({reason}); kept only what was durable");
    }
    Ok(())
}
