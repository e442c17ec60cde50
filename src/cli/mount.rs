//! `ltxd mount`: the mount daemon on a static lease.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;

use ltxd::config::{process_env, Config, LeaseType};
use ltxd::log::{Log, Policy};
use ltxd::mount::{CaptureOptions, LtxdFs, MountOptions, Mounted};
use ltxd_lease::{Lease, LeaseError, Leaser, PrimaryInfo};
use ltxd_lease_static::StaticLeaser;

/// `ltxd mount` arguments.
#[derive(Args)]
pub struct MountArgs {
    /// The configuration file (litefs.yml schema). Without it: ./ltxd.yml, ./litefs.yml,
    /// ~/litefs.yml, /etc/litefs.yml.
    #[arg(long)]
    config: Option<PathBuf>,
}

/// A random node ID for this process, as LiteFS draws one at every start.
fn node_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.finish()
}

/// Runs compaction, snapshots and retention for every database every `interval`, until `stop`.
fn maintain_in_background(
    log: Arc<Log>,
    policy: Policy,
    interval: Duration,
    stop: Arc<AtomicBool>,
) {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            std::thread::park_timeout(interval);
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let now = ltxd::mount::now_ms();
            for name in log.database_names() {
                match log.database(&name).and_then(|db| db.maintain(&policy, now)) {
                    Ok(done) => tracing::debug!(db = name, ?done, "maintenance"),
                    Err(err) => tracing::error!(db = name, %err, "maintenance failed"),
                }
            }
        }
    });
}

/// This node's role, as the lease decides it.
enum Role {
    /// This node holds the lease.
    Primary(Box<dyn Lease>),
    /// Another node does.
    Replica(PrimaryInfo),
}

/// Asks the lease who is primary: this node, or another.
fn role_from_lease(leaser: &dyn Leaser) -> anyhow::Result<Role> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match leaser.acquire().await {
            Ok(lease) => Ok(Role::Primary(lease)),
            Err(LeaseError::PrimaryExists) => Ok(Role::Replica(leaser.primary_info().await?)),
            Err(err) => Err(err.into()),
        }
    })
}

/// Runs the mount daemon until SIGINT or SIGTERM, then unmounts cleanly.
pub fn run(args: MountArgs) -> anyhow::Result<ExitCode> {
    let (config, path) = Config::load(args.config.as_deref(), &process_env)?;
    tracing::info!(config = %path.display(), "configuration loaded");
    if config.lease.kind != LeaseType::Static {
        bail!(
            "lease.type: {} is not supported yet; this build runs a static lease (lease.type: static)",
            config.lease.kind.as_str()
        );
    }
    let data_dir = PathBuf::from(&config.data.dir);
    let mount_dir = PathBuf::from(&config.fuse.dir);
    let log = Arc::new(
        Log::open(&data_dir).with_context(|| format!("open the log in {}", data_dir.display()))?,
    );
    let leaser = StaticLeaser::new(
        config.lease.candidate,
        &config.lease.hostname,
        &config.lease.advertise_url,
    );
    let (lease, primary) = match role_from_lease(&leaser)? {
        Role::Primary(lease) => (Some(lease), None),
        Role::Replica(info) => (None, Some(info.hostname)),
    };
    let writable = lease.is_some();
    let options = MountOptions {
        data_dir: data_dir.clone(),
        writable,
        primary_hostname: primary,
        capture: CaptureOptions {
            compress: config.data.compress,
            node_id: node_id(),
        },
    };
    let fs = LtxdFs::new(options, Arc::clone(&log)).context("recover the databases")?;
    let mounted = Mounted::mount(fs, &mount_dir, config.fuse.allow_other, 4)
        .with_context(|| format!("mount {}", mount_dir.display()))?;
    let role = if writable { "primary" } else { "replica" };
    tracing::info!(dir = %mount_dir.display(), role, "mounted");

    let stop = Arc::new(AtomicBool::new(false));
    let policy = Policy {
        retention: config.data.retention,
        ..Policy::default()
    };
    if !config.data.retention_monitor_interval.is_zero() {
        maintain_in_background(
            Arc::clone(&log),
            policy,
            config.data.retention_monitor_interval,
            Arc::clone(&stop),
        );
    }
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])?;
    if let Some(signal) = signals.forever().next() {
        tracing::info!(signal, "shutting down");
    }
    stop.store(true, Ordering::Relaxed);
    mounted.unmount().context("unmount")?;
    if let Some(lease) = lease {
        tokio::runtime::Builder::new_current_thread()
            .build()?
            .block_on(lease.release())?;
    }
    log.flush_index()?;
    tracing::info!("unmounted");
    Ok(ExitCode::SUCCESS)
}
