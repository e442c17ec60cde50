//! `ltxd mount`: the mount daemon. It takes its role from the lease, serves the log to replicas
//! at `http.addr` on the primary, and follows the primary on a replica.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use super::{exec, proxy, role_wait};
use ltxd::config::{Config, LeaseType, SecurityConfig};
use ltxd::log::{Log, Policy};
use ltxd::metrics::Metrics;
use ltxd::mount::{CaptureOptions, LtxdFs, MountOptions, Mounted};
use ltxd::node::{ClusterIdFile, EpochFile, NodeDriver, NodeParts};
use ltxd::replication::sync::SyncGate;
use ltxd::replication::{Handoffs, LogService, NodeState, SchemeConnector};
use ltxd_lease::Leaser;
use ltxd_lease_static::StaticLeaser;
use ltxd_transport_security::{client_config, server_config, server_tls, TlsFiles, Token};

/// `ltxd mount` arguments.
#[derive(Args)]
pub struct MountArgs {
    /// The configuration file (litefs.yml schema). Without it: ./ltxd.yml, ./litefs.yml,
    /// ~/litefs.yml, /etc/litefs.yml.
    #[arg(long)]
    config: Option<PathBuf>,
    #[command(flatten)]
    litefs: super::mount_flags::LitefsFlags,
    /// The application to run once the node is ready, in place of the configuration's `exec`:
    /// `ltxd mount -- myapp --flag`. The daemon stops when it exits.
    #[arg(last = true)]
    command: Vec<String>,
}

/// How long `ltxd mount` waits for the lease to decide the node's role before it mounts.
const ROLE_WAIT: Duration = Duration::from_secs(30);

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

/// The lease backend the configuration names.
fn leaser_from_config(config: &Config) -> anyhow::Result<Arc<dyn Leaser>> {
    let lease = &config.lease;
    Ok(match lease.kind {
        LeaseType::Static => Arc::new(StaticLeaser::new(
            lease.candidate,
            &lease.hostname,
            &lease.advertise_url,
        )),
        LeaseType::Consul => {
            let mut consul = ltxd_lease_consul::ConsulConfig::new(
                &lease.consul.url,
                &lease.consul.key,
                &lease.hostname,
                &lease.advertise_url,
            );
            consul.ttl = lease.consul.ttl;
            consul.lock_delay = lease.consul.lock_delay;
            Arc::new(ltxd_lease_consul::ConsulLeaser::new(consul).context("lease.consul")?)
        }
        LeaseType::Etcd => {
            let etcd = &lease.etcd;
            let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
            let file = |s: &str| some(s).map(PathBuf::from);
            let mut config = ltxd_lease_etcd::EtcdConfig::new(
                etcd.endpoints.clone(),
                &etcd.key,
                &lease.hostname,
                &lease.advertise_url,
            );
            config.ttl = etcd.ttl;
            config.username = some(&etcd.username);
            config.password = some(&etcd.password);
            config.ca_file = file(&etcd.ca_file);
            config.cert_file = file(&etcd.cert_file);
            config.key_file = file(&etcd.key_file);
            Arc::new(ltxd_lease_etcd::EtcdLeaser::new(config).context("lease.etcd")?)
        }
    })
}

/// Runs the mount daemon until SIGINT or SIGTERM, then unmounts cleanly. The application in
/// `exec` exiting stops it too, with the application's exit status, and so does a mount
/// unmounted from outside ltxd, with exit status 1.
pub fn run(args: MountArgs) -> anyhow::Result<ExitCode> {
    let (config, path) = super::mount_flags::load(args.config.as_deref(), &args.litefs)?;
    if args.litefs.check_config {
        println!(
            "# {}\n{}",
            path.display(),
            super::mount_flags::printable(&config)
        );
        return Ok(ExitCode::SUCCESS);
    }
    super::logging::init(&config.log);
    tracing::info!(config = %path.display(), "configuration loaded");
    // Shutdown waits for SIGINT or SIGTERM, or for the mount to end without them: an unmount
    // from outside must not leave a primary that holds the lease but takes no writes. The
    // signals are caught from here on, so one that arrives while the log is opened or the
    // databases are recovered is acted on at the role wait, never by the default action.
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])?;
    super::mount_flags::warn_unacted(&config, &args.litefs);
    let data_dir = PathBuf::from(&config.data.dir);
    let mount_dir = PathBuf::from(&config.fuse.dir);
    let log = Arc::new(
        Log::open(&data_dir).with_context(|| format!("open the log in {}", data_dir.display()))?,
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
    let epochs = Arc::new(EpochFile::open(&data_dir)?);
    let cluster_id = Arc::new(ClusterIdFile::open(&data_dir)?);
    let leaser = {
        let _guard = runtime.enter();
        leaser_from_config(&config)?
    };
    let metrics = Arc::new(Metrics::new());
    let options = MountOptions {
        data_dir: data_dir.clone(),
        writable: false,
        primary_hostname: None,
        capture: CaptureOptions {
            compress: config.data.compress,
            node_id: node.node_id,
        },
        metrics: Arc::clone(&metrics),
        busy_poll: busy_poll(config.fuse.busy_poll),
    };
    let backup = super::backup::start(&config, &runtime, &log, &node, &metrics)?;
    let mut fs = LtxdFs::new(options, Arc::clone(&log)).context("recover the databases")?;
    let session_ended = Arc::new(AtomicBool::new(false));
    {
        let (ended, handle) = (Arc::clone(&session_ended), signals.handle());
        fs.on_session_end(move || {
            ended.store(true, Ordering::SeqCst);
            handle.close();
        });
    }
    let applier = fs.applier();
    fs.set_node_view(Arc::clone(&node) as Arc<dyn ltxd::mount::NodeView>);
    let sync = SyncGate::new(
        config.replication.sync,
        config.replication.sync_timeout,
        Some(metrics.registry()),
    );
    if sync.offers_acks() {
        tracing::info!(
            mode = config.replication.sync.as_str(),
            timeout = ?config.replication.sync_timeout,
            "synchronous replication: commits wait for replicas' acknowledgements"
        );
        fs.set_commit_gate(Arc::clone(&sync) as Arc<dyn ltxd::mount::CommitGate>);
    }

    let connector: Arc<dyn ltxd_protocol::Connector> = Arc::new(SchemeConnector::new(
        Arc::new(http_connector(&config)?),
        quic_connector(&config)?,
    ));
    let (handoffs, inbox) = Handoffs::new();
    let driver = NodeDriver::new(
        leaser,
        config.lease.candidate,
        NodeParts {
            applier,
            node: Arc::clone(&node),
            epochs,
            cluster_id: Arc::clone(&cluster_id),
            connector: Arc::clone(&connector),
            reconnect_delay: config.lease.reconnect_delay.max(Duration::from_millis(50)),
            demote_delay: config.lease.demote_delay,
            handoffs: Arc::clone(&handoffs),
            inbox,
        },
    );
    let mut decided = driver.decided();
    let (stop_driver, driver_stopped) = tokio::sync::watch::channel(false);
    let driver = runtime.spawn(driver.run(driver_stopped));
    // Mount once the role is known, so that a primary's first writes are accepted. SIGINT or
    // SIGTERM ends the wait: the driver gives the lease back, and nothing was mounted yet.
    match runtime.block_on(role_wait::wait_for_role(
        &mut decided,
        &mut signals,
        ROLE_WAIT,
    )) {
        role_wait::RoleWait::Decided => {}
        role_wait::RoleWait::Undecided => tracing::warn!(
            "no role after {ROLE_WAIT:?}: mounting read-only until the lease decides"
        ),
        role_wait::RoleWait::Signal(signal) => {
            tracing::info!(signal, "shutting down before the node has a role");
            let _ = stop_driver.send(true);
            let _ = runtime
                .block_on(async { tokio::time::timeout(Duration::from_secs(5), driver).await });
            runtime.shutdown_timeout(Duration::from_secs(1));
            return Ok(ExitCode::SUCCESS);
        }
    }

    let proxy_server = proxy::start(
        &config,
        &runtime,
        &node,
        &log,
        &connector,
        metrics.registry().clone(),
    )?;
    let service = Arc::new(
        LogService::new(
            Arc::clone(&log),
            Arc::clone(&node),
            handoffs,
            cluster_id,
            connector,
            metrics,
            runtime.handle().clone(),
        )
        .with_max_subscriptions(config.http.max_subscriptions)
        .with_sync(sync),
    );
    let security = http_security(&config)?;
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(http_listen_address(
            &config,
            security.authenticates(),
        )))
        .with_context(|| format!("http.addr: cannot listen on {}", config.http.addr))?;
    let server = {
        let _guard = runtime.enter();
        ltxd_http::serve_with_limits(
            listener,
            Arc::clone(&service) as Arc<dyn ltxd_protocol::Service>,
            security,
            http_limits(&config),
        )?
    };
    tracing::info!(addr = %server.local_addr(), "serving replication over HTTP");
    let quic_server = if config.quic.addr.is_empty() {
        None
    } else {
        let _guard = runtime.enter();
        let server = serve_quic(
            &config,
            Arc::clone(&service) as Arc<dyn ltxd_protocol::Service>,
        )?;
        tracing::info!(addr = %server.local_addr(), "serving replication over QUIC");
        Some(server)
    };
    if config.lease.promote {
        promote_when_ready(&runtime, &service, &node);
    }
    let mounted = Mounted::mount(fs, &mount_dir, config.fuse.allow_other, 4)
        .with_context(|| format!("mount {}", mount_dir.display()))?;
    let role = if node.is_primary() {
        "primary"
    } else {
        "replica"
    };
    tracing::info!(dir = %mount_dir.display(), role, "mounted");

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
    let lines = exec::command_lines(&config.exec, &args.command, config.lease.candidate)?;
    let exec = if lines.is_empty() {
        None
    } else {
        let (node, skip_sync, handle) = (Arc::clone(&node), config.skip_sync, signals.handle());
        Some(exec::Exec::start(
            lines,
            move || skip_sync || node.is_ready(),
            move || handle.close(),
        )?)
    };
    let exit = wait_for_shutdown(&mut signals, exec, &session_ended, &mount_dir);
    stop.store(true, Ordering::Relaxed);
    if let Some(backup) = backup {
        let _ = backup.send(true);
    }
    // The driver refuses writes and releases the lease, so another node takes over at once.
    let _ = stop_driver.send(true);
    let _ = runtime.block_on(async { tokio::time::timeout(Duration::from_secs(5), driver).await });
    drop(proxy_server);
    runtime.block_on(server.shutdown());
    if let Some(quic) = quic_server {
        runtime.block_on(quic.shutdown());
    }
    mounted.unmount().context("unmount")?;
    runtime.shutdown_timeout(Duration::from_secs(1));
    log.flush_index()?;
    tracing::info!("unmounted");
    Ok(exit)
}

/// Waits for what stops the daemon, and returns the exit code. A signal is forwarded to the
/// application (`exec`), which is waited for, and the daemon exits with 0. The application's
/// own exit, or a failed command before it, gives its status. A mount unmounted from outside
/// ltxd sends the application SIGTERM and gives 1.
fn wait_for_shutdown(
    signals: &mut signal_hook::iterator::Signals,
    exec: Option<exec::Exec>,
    session_ended: &AtomicBool,
    mount_dir: &std::path::Path,
) -> ExitCode {
    let signal = signals.forever().next();
    let lost = signal.is_none() && session_ended.load(Ordering::SeqCst);
    match signal {
        Some(signal) => tracing::info!(signal, "shutting down"),
        None if lost => tracing::error!(
            dir = %mount_dir.display(),
            "the mount was unmounted by something other than ltxd: shutting down"
        ),
        None => tracing::info!("exec: the last command has exited: shutting down"),
    }
    let status = exec.and_then(|exec| {
        match (signal, lost) {
            (Some(signal), _) => exec.signal(signal),
            (None, true) => exec.signal(libc::SIGTERM),
            (None, false) => {}
        }
        exec.wait()
    });
    match (signal, lost, status) {
        (_, true, _) => ExitCode::FAILURE,
        (None, false, Some(status)) => ExitCode::from(exec::exit_code(status)),
        _ => ExitCode::SUCCESS,
    }
}

/// `lease.promote`: once this candidate replica has caught up with the primary, asks for the
/// lease, as `ltxd promote` would.
fn promote_when_ready(
    runtime: &tokio::runtime::Runtime,
    service: &Arc<LogService>,
    node: &Arc<NodeState>,
) {
    if !node.candidate {
        tracing::warn!("lease.promote is ignored: this node is not a candidate");
        return;
    }
    let (service, node) = (Arc::clone(service), Arc::clone(node));
    runtime.spawn(async move {
        while !node.is_ready() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        match ltxd_protocol::Service::promote(&*service).await {
            Ok(promotion) => tracing::info!(?promotion, "lease.promote: promoted"),
            Err(err) => tracing::error!(%err, "lease.promote: the promotion failed"),
        }
    });
}

/// The TLS files of a transport section, as the security crate takes them.
pub(super) fn tls_files(security: &SecurityConfig) -> TlsFiles {
    let path = |p: &str| (!p.is_empty()).then(|| PathBuf::from(p));
    TlsFiles {
        cert_file: path(&security.cert_file),
        key_file: path(&security.key_file),
        ca_file: path(&security.ca_file),
        client_auth: security.client_auth,
        insecure_dev: security.insecure_dev,
    }
}

/// The shared token of a transport section, if one is set.
pub(super) fn token(section: &str, security: &SecurityConfig) -> anyhow::Result<Option<Token>> {
    let nonempty = |s: &str| (!s.is_empty()).then(|| s.to_string());
    Token::from_settings(
        nonempty(&security.token).as_deref(),
        nonempty(&security.token_env).as_deref(),
    )
    .with_context(|| format!("{section}.token"))
}

/// The QUIC connector for following a `quic://` primary, when this node has client settings.
fn quic_connector(config: &Config) -> anyhow::Result<Option<Arc<dyn ltxd_protocol::Connector>>> {
    let security = config.quic.security();
    if security.ca_file.is_empty() && !security.insecure_dev {
        return Ok(None);
    }
    let tls = client_config(&tls_files(&security)).context("quic.ca-file")?;
    let connector =
        ltxd_quic::QuicConnector::new(tls, token("quic", &security)?, quic_options(config))
            .context("quic")?;
    Ok(Some(Arc::new(connector)))
}

fn quic_options(config: &Config) -> ltxd_quic::QuicOptions {
    ltxd_quic::QuicOptions {
        keep_alive_interval: config.quic.keep_alive_interval,
        idle_timeout: config.quic.idle_timeout,
        max_connections: config.quic.max_connections,
        max_streams: config.quic.max_streams,
        ..ltxd_quic::QuicOptions::default()
    }
}

/// Serves replication over QUIC at `quic.addr`.
fn serve_quic(
    config: &Config,
    service: Arc<dyn ltxd_protocol::Service>,
) -> anyhow::Result<ltxd_quic::QuicServer> {
    let security = config.quic.security();
    let addr = listen_address(&config.quic.addr)
        .parse()
        .with_context(|| format!("quic.addr: not a socket address: {}", config.quic.addr))?;
    let tls = server_config(&tls_files(&security)).context("quic.cert-file")?;
    ltxd_quic::serve(
        addr,
        service,
        tls,
        token("quic", &security)?,
        &quic_options(config),
    )
    .context("quic.addr")
}

/// The HTTP server's TLS and token, from `http.*`.
fn http_security(config: &Config) -> anyhow::Result<ltxd_http::HttpSecurity> {
    let security = config.http.security();
    let tls = if security.cert_file.is_empty() && !security.insecure_dev {
        None
    } else {
        Some(server_tls(&tls_files(&security)).context("http.cert-file")?)
    };
    Ok(ltxd_http::HttpSecurity::new(tls, token("http", &security)?))
}

/// What HTTP clients may hold, from `http.*`.
fn http_limits(config: &Config) -> ltxd_http::HttpLimits {
    let http = &config.http;
    ltxd_http::HttpLimits {
        header_read_timeout: http.header_read_timeout,
        idle_timeout: http.idle_timeout,
        max_connections: match http.max_connections {
            0 => ltxd_http::default_max_connections(),
            n => n,
        },
        max_streams_per_peer: http.max_streams_per_peer,
    }
}

/// How this node reaches an HTTP primary: with TLS when `http.ca-file` (or `insecure-dev`) is
/// set, and with the token when one is.
fn http_connector(config: &Config) -> anyhow::Result<ltxd_http::HttpConnector> {
    let security = config.http.security();
    let tls = if security.ca_file.is_empty() && !security.insecure_dev {
        None
    } else {
        Some(client_config(&tls_files(&security)).context("http.ca-file")?)
    };
    Ok(ltxd_http::HttpConnector::with_security(
        tls,
        token("http", &security)?,
    ))
}

/// Where the HTTP API listens. When the server that was built authenticates nobody (no token,
/// no TLS that verifies client certificates) and without the explicit
/// `http.insecure-cleartext: true`, only on loopback: no replication or control endpoint is
/// open to anyone who can reach the port unless the configuration says so.
fn http_listen_address(config: &Config, authenticated: bool) -> String {
    let addr = listen_address(&config.http.addr);
    if config.http.insecure_cleartext || authenticated {
        return addr;
    }
    let port = addr.rsplit(':').next().unwrap_or("20202");
    let loopback = format!("127.0.0.1:{port}");
    let host = addr.rsplit_once(':').map_or("", |(host, _)| host);
    if host != "127.0.0.1" && host != "localhost" && host != "[::1]" {
        tracing::warn!(
            "http: the API is not authenticated, so it listens on {loopback} only; set \
             http.insecure-cleartext: true for LiteFS's open access"
        );
    }
    if host == "localhost" || host == "[::1]" {
        return addr;
    }
    loopback
}

/// A Go-style listen address (`":20202"`) as a socket address to bind.
fn listen_address(addr: &str) -> String {
    match addr.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => addr.to_string(),
    }
}

/// `fuse.busy-poll`, or zero on a machine with one CPU, where a polling thread would take the
/// CPU from the application it waits for.
fn busy_poll(configured: Duration) -> Duration {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    if !configured.is_zero() && cpus < 2 {
        tracing::warn!("fuse.busy-poll is ignored: this machine has one CPU");
        return Duration::ZERO;
    }
    configured
}
