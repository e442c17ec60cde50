//! The lease conformance suite, and a few etcd-specific checks, against a real etcd.
//!
//! Every test starts its own `etcd` (Debian's `etcd-server`) on 127.0.0.1, on free ports and
//! with a temporary data directory, waits until it answers, and kills it when the test ends,
//! panics included. The binary is `etcd` from `PATH`, or `LTXD_ETCD` if set. Without it the
//! tests fail and say how to install it, unless `LTXD_SKIP_ETCD=1`, which skips them.

use std::fs::File;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ltxd_lease::{BoxFuture, LeaseError, Leaser};
use ltxd_lease_conformance::{Capabilities, Cluster, Timing, Unavailable};
use ltxd_lease_etcd::{EtcdConfig, EtcdLeaser};

/// The TTL the tests ask for: etcd's shortest with its default election timeout.
const TTL: Duration = Duration::from_secs(2);

/// How long etcd may take to start answering.
const STARTUP: Duration = Duration::from_secs(20);

/// A running etcd, killed (and its data directory removed) when dropped.
struct Etcd {
    child: Child,
    endpoint: String,
    /// The files a client needs to reach an etcd that serves TLS.
    tls: Option<ClientTls>,
    /// Removed when dropped, after the process is gone.
    _dir: tempfile::TempDir,
}

/// PEM files for a client of an etcd that serves TLS and requires client certificates.
#[derive(Clone)]
struct ClientTls {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The etcd binary, or why there is none to use.
fn etcd_binary() -> Result<PathBuf, Unavailable> {
    if std::env::var("LTXD_SKIP_ETCD").as_deref() == Ok("1") {
        return Err(Unavailable("LTXD_SKIP_ETCD=1".into()));
    }
    if let Some(path) = std::env::var_os("LTXD_ETCD") {
        return Ok(PathBuf::from(path));
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("etcd"))
            .find(|path| path.is_file())
    });
    match found {
        Some(path) => Ok(path),
        None => panic!(
            "the etcd tests need a real etcd, and there is no `etcd` in PATH: install it \
             (Debian: apt-get install etcd-server), point LTXD_ETCD at it, or set \
             LTXD_SKIP_ETCD=1 to skip these tests"
        ),
    }
}

/// A free port on 127.0.0.1. (Another process could take it before etcd does; `start` tries
/// again with new ports if etcd exits.)
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}

impl Etcd {
    async fn start() -> Result<Etcd, Unavailable> {
        Etcd::start_with(None, false).await
    }

    /// Starts etcd with its client URL on `port` (or on a free port), serving TLS with client
    /// certificates if `tls`.
    async fn start_with(port: Option<u16>, tls: bool) -> Result<Etcd, Unavailable> {
        let binary = etcd_binary()?;
        let mut last_failure = String::new();
        for _attempt in 0..3 {
            let client = port.unwrap_or_else(free_port);
            match Etcd::try_start(&binary, client, tls).await {
                Ok(etcd) => return Ok(etcd),
                Err(failure) => last_failure = failure,
            }
        }
        panic!("etcd did not start: {last_failure}");
    }

    async fn try_start(binary: &PathBuf, client: u16, tls: bool) -> Result<Etcd, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("a temporary directory: {e}"))?;
        let peer = free_port();
        let scheme = if tls { "https" } else { "http" };
        let endpoint = format!("{scheme}://127.0.0.1:{client}");
        let mut tls_args = Vec::new();
        let client_tls = if tls {
            let (server, client) = make_certificates(dir.path());
            tls_args = vec![
                format!("--cert-file={}", server.cert.display()),
                format!("--key-file={}", server.key.display()),
                format!("--trusted-ca-file={}", server.ca.display()),
                "--client-cert-auth".to_string(),
            ];
            Some(client)
        } else {
            None
        };
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log_path = dir.path().join("etcd.log");
        let log = File::create(&log_path).map_err(|e| format!("the etcd log: {e}"))?;
        let log_err = log.try_clone().map_err(|e| format!("the etcd log: {e}"))?;
        let child = Command::new(binary)
            .arg("--name=ltxd-test")
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={endpoint}"))
            .arg(format!("--advertise-client-urls={endpoint}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=ltxd-test={peer_url}"))
            .arg("--initial-cluster-state=new")
            .args(&tls_args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
        let mut etcd = Etcd {
            child,
            endpoint,
            tls: client_tls,
            _dir: dir,
        };
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = etcd.child.try_wait() {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                return Err(format!("etcd exited with {status}: {tail:?}"));
            }
            if etcd.answers().await {
                return Ok(etcd);
            }
            if started.elapsed() > STARTUP {
                return Err(format!("etcd did not answer within {STARTUP:?}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether etcd answers a read, which it does once it has a leader.
    async fn answers(&self) -> bool {
        let leaser = EtcdLeaser::new(self.config(0, "/ltxd-test/health")).expect("a leaser");
        matches!(
            tokio::time::timeout(Duration::from_secs(1), leaser.primary_info()).await,
            Ok(Err(LeaseError::NoPrimary))
        )
    }

    fn config(&self, node: usize, key: &str) -> EtcdConfig {
        let mut config = EtcdConfig::new(
            vec![self.endpoint.clone()],
            key,
            format!("node-{node}"),
            format!("http://node-{node}:20202"),
        );
        config.ttl = TTL;
        if let Some(tls) = &self.tls {
            config.ca_file = Some(tls.ca.clone());
            config.cert_file = Some(tls.cert.clone());
            config.key_file = Some(tls.key.clone());
        }
        config
    }
}

/// Writes a CA, a server certificate for 127.0.0.1 and a client certificate, all signed by
/// the CA, into `dir`; returns the server's files and the client's.
fn make_certificates(dir: &std::path::Path) -> (ClientTls, ClientTls) {
    use rcgen::{
        BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
        KeyUsagePurpose,
    };
    let write = |name: &str, pem: String| {
        let path = dir.join(name);
        std::fs::write(&path, pem).expect("write a PEM file");
        path
    };
    let ca_key = KeyPair::generate().expect("a CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key).expect("the CA certificate");
    let ca = write("ca.pem", ca_cert.pem());
    let issuer = Issuer::new(ca_params, ca_key);
    let issue = |name: &str, usage: ExtendedKeyUsagePurpose| {
        let key = KeyPair::generate().expect("a key");
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("certificate parameters");
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &issuer).expect("a certificate");
        ClientTls {
            ca: ca.clone(),
            cert: write(&format!("{name}.pem"), cert.pem()),
            key: write(&format!("{name}-key.pem"), key.serialize_pem()),
        }
    };
    let server = issue("server", ExtendedKeyUsagePurpose::ServerAuth);
    let client = issue("client", ExtendedKeyUsagePurpose::ClientAuth);
    (server, client)
}

/// An etcd and the key its nodes contend for.
struct EtcdCluster {
    etcd: Etcd,
}

impl Cluster for EtcdCluster {
    fn backend(&self) -> &str {
        "etcd"
    }

    fn leaser(&self, node: usize) -> BoxFuture<'_, Result<Box<dyn Leaser>, LeaseError>> {
        let leaser = EtcdLeaser::new(self.etcd.config(node, "/ltxd-test/lease"))
            .map(|l| Box::new(l) as Box<dyn Leaser>);
        Box::pin(std::future::ready(leaser))
    }

    fn timing(&self) -> Timing {
        Timing {
            ttl: TTL,
            // etcd's leader looks for expired leases every 500 ms, then revokes them through
            // Raft.
            expiry_bound: TTL + Duration::from_secs(1),
            slack: Duration::from_secs(3),
        }
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            elections: true,
            cluster_id: true,
            handoff: true,
        }
    }
}

async fn cluster() -> Result<Box<dyn Cluster>, Unavailable> {
    let etcd = Etcd::start().await?;
    Ok(Box::new(EtcdCluster { etcd }))
}

ltxd_lease_conformance::suite!(cluster);

/// Runs an etcd-specific test with an etcd of its own, unless etcd is to be skipped.
fn with_etcd<F>(test: impl FnOnce(Etcd) -> F)
where
    F: std::future::Future<Output = ()>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        match Etcd::start().await {
            Ok(etcd) => test(etcd).await,
            Err(Unavailable(reason)) => println!("skipped: {reason}"),
        }
    });
}

#[test]
fn the_key_holds_litefs_style_primary_info_and_lives_with_the_lease() {
    with_etcd(|etcd| async move {
        let leaser = EtcdLeaser::new(etcd.config(0, "/app/lease")).unwrap();
        let lease = leaser.acquire().await.unwrap();
        assert!(lease.ttl() >= TTL);
        // The lease ID is etcd's, in hex, as etcdctl shows it.
        assert!(
            i64::from_str_radix(lease.id(), 16).is_ok(),
            "{}",
            lease.id()
        );
        let info = leaser.primary_info().await.unwrap();
        assert_eq!(info.hostname, "node-0");
        assert_eq!(info.advertise_url, "http://node-0:20202");
        lease.release().await.unwrap();
        assert_eq!(leaser.primary_info().await, Err(LeaseError::NoPrimary));
        drop(etcd);
    });
}

#[test]
fn a_stopped_etcd_is_a_backend_error_for_leases_and_watches() {
    with_etcd(|etcd| async move {
        let config = etcd.config(0, "/app/lease");
        let leaser = EtcdLeaser::new(config.clone()).unwrap();
        let mut watch = leaser.watch().await.unwrap();
        assert_eq!(watch.next().await, Ok(None));
        drop(etcd);
        let failed = tokio::time::timeout(Duration::from_secs(20), watch.next())
            .await
            .expect("the watch notices that etcd is gone");
        assert!(matches!(failed, Err(LeaseError::Backend(_))), "{failed:?}");
        assert!(matches!(
            leaser.acquire().await,
            Err(LeaseError::Backend(_))
        ));
    });
}

#[test]
fn an_etcd_that_is_down_at_first_is_reached_later() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        // A leaser made while nothing listens at its endpoint fails, then works once etcd is
        // there: it connects on first use, and reconnects.
        if let Err(Unavailable(reason)) = etcd_binary() {
            println!("skipped: {reason}");
            return;
        }
        let port = free_port();
        let mut config = EtcdConfig::new(
            vec![format!("http://127.0.0.1:{port}")],
            "/app/lease",
            "node-0",
            "http://node-0:20202",
        );
        config.request_timeout = Duration::from_secs(1);
        let leaser = EtcdLeaser::new(config).unwrap();
        assert!(matches!(
            leaser.primary_info().await,
            Err(LeaseError::Backend(_))
        ));
        let _etcd = Etcd::start_with(Some(port), false)
            .await
            .expect("etcd starts");
        let started = Instant::now();
        loop {
            match leaser.primary_info().await {
                Err(LeaseError::NoPrimary) => break,
                Err(LeaseError::Backend(e)) if started.elapsed() < Duration::from_secs(15) => {
                    println!("not yet: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                other => panic!("the leaser never reached etcd: {other:?}"),
            }
        }
    });
}

#[test]
fn tls_with_client_certificates_works_and_is_required() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        let etcd = match Etcd::start_with(None, true).await {
            Ok(etcd) => etcd,
            Err(Unavailable(reason)) => return println!("skipped: {reason}"),
        };
        assert!(etcd.endpoint.starts_with("https://"));
        let leaser = EtcdLeaser::new(etcd.config(0, "/app/lease")).unwrap();
        let lease = leaser.acquire().await.expect("acquire over TLS");
        assert_eq!(leaser.primary_info().await.unwrap().hostname, "node-0");
        lease.release().await.unwrap();

        // Without a client certificate, etcd refuses the connection.
        let mut config = etcd.config(1, "/app/lease");
        config.cert_file = None;
        config.key_file = None;
        config.request_timeout = Duration::from_secs(2);
        let anonymous = EtcdLeaser::new(config).unwrap();
        assert!(matches!(
            anonymous.acquire().await,
            Err(LeaseError::Backend(_))
        ));
    });
}

#[test]
fn a_user_and_password_authenticate() {
    with_etcd(|etcd| async move {
        let mut admin = etcd_client::Client::connect([&etcd.endpoint], None)
            .await
            .expect("an admin client");
        admin
            .user_add("root", "rootpw", None)
            .await
            .expect("add root");
        // etcd may already have the root role; granting it is what matters.
        let _ = admin.role_add("root").await;
        admin
            .user_grant_role("root", "root")
            .await
            .expect("grant root the root role");
        admin.auth_enable().await.expect("enable authentication");

        let mut config = etcd.config(0, "/app/lease");
        config.username = Some("root".into());
        config.password = Some("rootpw".into());
        let leaser = EtcdLeaser::new(config.clone()).unwrap();
        let lease = leaser.acquire().await.expect("acquire as root");
        lease.renew().await.expect("renew as root");
        lease.release().await.expect("release as root");

        config.password = Some("wrong".into());
        let wrong = EtcdLeaser::new(config).unwrap();
        assert!(matches!(wrong.acquire().await, Err(LeaseError::Backend(_))));
        let anonymous = EtcdLeaser::new(etcd.config(1, "/app/lease")).unwrap();
        assert!(matches!(
            anonymous.acquire().await,
            Err(LeaseError::Backend(_))
        ));
    });
}
