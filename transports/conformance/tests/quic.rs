//! The conformance suite against the QUIC transport, with insecure-dev TLS and with real
//! certificate files (mTLS and a token), and the QUIC-specific refusals.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::Pki;
use conformance::{try_subscribe, FakeService, Started, Transport};
use ltxd_protocol::{BoxFuture, Checksum, ConnectError, Connector, Pos, Service, TxId};
use ltxd_quic::{serve, QuicConnector, QuicOptions, QuicServer};
use ltxd_transport_conformance as conformance;
use ltxd_transport_security::{client_config, server_config, TlsFiles, Token};

/// How one side of a test is configured.
#[derive(Clone)]
struct Side {
    tls: TlsFiles,
    token: Option<&'static str>,
}

impl Side {
    fn insecure_dev() -> Side {
        Side {
            tls: TlsFiles {
                insecure_dev: true,
                ..TlsFiles::default()
            },
            token: None,
        }
    }

    fn token(&self) -> Option<Token> {
        self.token.map(|t| Token::new(t).unwrap())
    }
}

fn mtls_server(pki: &Pki) -> Side {
    Side {
        tls: pki.server(true),
        token: Some("correct horse battery staple"),
    }
}

fn mtls_client(pki: &Pki) -> Side {
    Side {
        tls: pki.client(),
        token: Some("correct horse battery staple"),
    }
}

fn options() -> QuicOptions {
    QuicOptions {
        handshake_timeout: Duration::from_secs(5),
        ..QuicOptions::default()
    }
}

fn start_server(service: Arc<dyn Service>, side: &Side, addr: SocketAddr) -> QuicServer {
    serve(
        addr,
        service,
        server_config(&side.tls).unwrap(),
        side.token(),
        &options(),
    )
    .unwrap()
}

fn connector(side: &Side) -> QuicConnector {
    QuicConnector::new(client_config(&side.tls).unwrap(), side.token(), options()).unwrap()
}

fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn url(server: &QuicServer) -> String {
    format!("quic://{}", server.local_addr())
}

/// The QUIC transport with the given server and client settings.
struct Quic {
    server: Side,
    client: Side,
}

impl Transport for Quic {
    fn start(&self, service: Arc<dyn Service>) -> BoxFuture<'_, Started> {
        Box::pin(async move {
            let server = start_server(service, &self.server, localhost());
            Started {
                url: url(&server),
                connector: Box::new(connector(&self.client)),
                shutdown: Box::pin(server.shutdown()),
            }
        })
    }

    fn tokenless_connector(&self) -> Option<Box<dyn Connector>> {
        self.server.token?;
        Some(Box::new(connector(&Side {
            token: None,
            ..self.client.clone()
        })))
    }
}

fn insecure() -> Quic {
    Quic {
        server: Side::insecure_dev(),
        client: Side::insecure_dev(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_arrives_intact() {
    conformance::request_arrives_intact(&insecure()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_arrive_byte_exact() {
    conformance::frames_arrive_byte_exact(&insecure()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_body_streams_with_backpressure() {
    conformance::large_body_streams_with_backpressure(&insecure()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_subscription_does_not_block_another() {
    conformance::stalled_subscription_does_not_block_another(&insecure()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_map_to_statuses() {
    conformance::refusals_map_to_statuses(&insecure()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_round_trips() {
    conformance::info_round_trips(&insecure()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handoff_reaches_the_service() {
    conformance::handoff_reaches_the_service(&insecure()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handoff_refusals_map_to_statuses() {
    conformance::handoff_refusals_map_to_statuses(&insecure()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_reach_the_service() {
    conformance::acks_reach_the_service(&insecure()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_refusals_map_to_statuses() {
    conformance::ack_refusals_map_to_statuses(&insecure()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_body_ends_the_server_stream() {
    conformance::dropping_the_body_ends_the_server_stream(&insecure()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_open_streams() {
    conformance::shutdown_ends_open_streams(&insecure()).await;
}

/// The whole suite again, with certificate files, mTLS and a token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_suite_with_certificate_files_mtls_and_a_token() {
    let pki = Pki::new();
    conformance::run_all(&Quic {
        server: mtls_server(&pki),
        client: mtls_client(&pki),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_share_one_connection_and_survive_a_restart() {
    let service = FakeService::new();
    let server = start_server(service.clone(), &Side::insecure_dev(), localhost());
    let addr = server.local_addr();
    let url = url(&server);
    let client = connector(&Side::insecure_dev());
    let mut bodies = Vec::new();
    for db in ["a.db", "b.db", "c.db"] {
        bodies.push(
            client
                .subscribe(&url, &conformance::filtered(9, db))
                .await
                .expect("subscribing"),
        );
    }
    client.info(&url).await.expect("info");
    assert_eq!(server.open_connections(), 1, "one connection per primary");

    // A new server on the same address: the connector notices the old connection closed and
    // opens a new one on the next call.
    server.shutdown().await;
    drop(bodies);
    let server = start_server(service.clone(), &Side::insecure_dev(), addr);
    try_subscribe(&client, &url, "a.db")
        .await
        .expect("subscribing after the primary restarted");
    assert_eq!(server.open_connections(), 1);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_certificate_from_another_ca_is_refused() {
    let (pki, other) = (Pki::new(), Pki::new());
    let server = start_server(FakeService::new(), &mtls_server(&pki), localhost());
    let err = try_subscribe(&connector(&mtls_client(&other)), &url(&server), "a.db")
        .await
        .expect_err("a client that does not trust the server's CA connected");
    let text = err.to_string();
    eprintln!("refused as: {text}");
    assert!(matches!(err, ConnectError::Io(_)), "{err:?}");
    assert!(text.contains("certificate"), "the error says why: {text}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_a_certificate_is_refused_under_mtls() {
    let pki = Pki::new();
    let service = FakeService::new();
    let server = start_server(service.clone(), &mtls_server(&pki), localhost());
    let mut anonymous = mtls_client(&pki);
    anonymous.tls.cert_file = None;
    anonymous.tls.key_file = None;
    let service_err = try_subscribe(&connector(&anonymous), &url(&server), "a.db")
        .await
        .expect_err("a client without a certificate was served");
    let text = service_err.to_string();
    assert!(matches!(service_err, ConnectError::Io(_)), "{text}");
    assert!(text.contains("certificate"), "the error says why: {text}");
    assert!(service.requests().is_empty(), "refused before the service");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_or_missing_token_is_refused_with_401() {
    let pki = Pki::new();
    let service = FakeService::new();
    let server = start_server(service.clone(), &mtls_server(&pki), localhost());
    for token in [Some("wrong"), None] {
        let client = Side {
            token,
            ..mtls_client(&pki)
        };
        match try_subscribe(&connector(&client), &url(&server), "a.db").await {
            Err(ConnectError::Refused {
                status: 401,
                message,
            }) => {
                assert!(message.contains("token"), "{message}");
            }
            other => panic!("token {token:?}: {other:?}"),
        }
        let info = connector(&client).info(&url(&server)).await;
        assert!(
            matches!(info, Err(ConnectError::Refused { status: 401, .. })),
            "info with token {token:?}: {info:?}"
        );
        let handoff = connector(&client).handoff(&url(&server), 9).await;
        assert!(
            matches!(handoff, Err(ConnectError::Refused { status: 401, .. })),
            "a handoff with token {token:?}: {handoff:?}"
        );
        // A large request is refused as soon as its token is read; the replica, still
        // sending, gets the answer all the same.
        let mut large = conformance::filtered(9, "a.db");
        for i in 0..100_000u64 {
            large
                .positions
                .insert(format!("db-{i:06}.db"), Pos::new(TxId(i + 1), Checksum(i)));
        }
        let refused = connector(&client).subscribe(&url(&server), &large).await;
        assert!(
            matches!(refused, Err(ConnectError::Refused { status: 401, .. })),
            "a large request with token {token:?}: {:?}",
            refused.map(drop)
        );
    }
    assert!(service.requests().is_empty(), "refused before the service");
    assert!(service.handoffs().is_empty(), "refused before the service");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urls_of_other_transports_are_bad() {
    let client = connector(&Side::insecure_dev());
    assert!(matches!(
        try_subscribe(&client, "http://127.0.0.1:1", "a.db").await,
        Err(ConnectError::BadUrl(_))
    ));
    assert!(matches!(
        client.handoff("http://127.0.0.1:1", 9).await,
        Err(ConnectError::BadUrl(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_are_refused() {
    let side = Side::insecure_dev();
    let server = serve(
        localhost(),
        FakeService::new(),
        server_config(&side.tls).unwrap(),
        None,
        &QuicOptions {
            max_connections: 1,
            ..options()
        },
    )
    .unwrap();
    let first = connector(&side);
    first.info(&url(&server)).await.unwrap();
    let second = connector(&side);
    assert!(
        second.info(&url(&server)).await.is_err(),
        "a second connection was accepted beyond the cap of 1"
    );
    first.info(&url(&server)).await.unwrap();
    drop(first);
    server.shutdown().await;
}
