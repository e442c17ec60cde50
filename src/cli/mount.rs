//! `ltxd mount`: the mount daemon. It takes its role from the lease, serves the log to replicas
//! at `http.addr` on the primary, and follows the primary on a replica.

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
use ltxd::replication::{Follower, FollowerOptions, LogService, NodeState};
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
fn role_from_lease(runtime: &tokio::runtime::Runtime, leaser: &dyn Leaser) -> anyhow::Result<Role> {
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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("ltxd-net")
        .enable_all()
        .build()?;
    let node = Arc::new(NodeState::new(
        node_id(),
        config.lease.candidate,
        data_dir.clone(),
    ));
    let (lease, primary) = match role_from_lease(&runtime, &leaser)? {
        Role::Primary(lease) => {
            node.become_primary(&config.lease.hostname, Some(lease.epoch()));
            (Some(lease), None)
        }
        Role::Replica(info) => {
            node.become_replica(Some(info.hostname.clone()));
            (None, Some(info))
        }
    };
    let writable = lease.is_some();
    let options = MountOptions {
        data_dir: data_dir.clone(),
        writable,
        primary_hostname: primary.as_ref().map(|p| p.hostname.clone()),
        capture: CaptureOptions {
            compress: config.data.compress,
            node_id: node_id(),
        },
    };
    let fs = LtxdFs::new(options, Arc::clone(&log)).context("recover the databases")?;
    let applier = fs.applier();
    fs.set_node_view(Arc::clone(&node) as Arc<dyn ltxd::mount::NodeView>);
    let mounted = Mounted::mount(fs, &mount_dir, config.fuse.allow_other, 4)
        .with_context(|| format!("mount {}", mount_dir.display()))?;
    let role = if writable { "primary" } else { "replica" };
    tracing::info!(dir = %mount_dir.display(), role, "mounted");

    let service = Arc::new(LogService::new(
        Arc::clone(&log),
        Arc::clone(&node),
        runtime.handle().clone(),
    ));
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(listen_address(
            &config.http.addr,
        )))
        .with_context(|| format!("http.addr: cannot listen on {}", config.http.addr))?;
    let server = {
        let _guard = runtime.enter();
        ltxd_http::serve(listener, service)?
    };
    tracing::info!(addr = %server.local_addr(), "serving replication");
    let (stop_follower, follower_stopped) = tokio::sync::watch::channel(false);
    if let Some(primary) = &primary {
        let follower = Follower::new(
            applier,
            Arc::new(ltxd_http::HttpConnector::new()),
            Arc::clone(&node),
            FollowerOptions {
                primary_url: primary.advertise_url.clone(),
                reconnect_delay: config.lease.reconnect_delay.max(Duration::from_millis(50)),
                max_backoff: Duration::from_secs(5),
            },
        );
        runtime.spawn(follower.run(follower_stopped));
    }

    let stop = Arc::new(AtomicBool::new(false));
    let policy = Policy::with_retention(config.data.retention);
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
    let _ = stop_follower.send(true);
    runtime.block_on(server.shutdown());
    mounted.unmount().context("unmount")?;
    if let Some(lease) = lease {
        runtime.block_on(lease.release())?;
    }
    runtime.shutdown_timeout(Duration::from_secs(1));
    log.flush_index()?;
    tracing::info!("unmounted");
    Ok(ExitCode::SUCCESS)
}

/// A Go-style listen address (`":20202"`) as a socket address to bind.
fn listen_address(addr: &str) -> String {
    match addr.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => addr.to_string(),
    }
}
