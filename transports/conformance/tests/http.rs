//! The conformance suite against the HTTP transport in cleartext, over TLS with a token, and over
//! mTLS; the HTTP-specific refusals: wrong certificates and missing or wrong tokens; and the
//! HTTP-only calls: `POST /promote`, `/handoff`'s node ID query, and `GET /metrics`.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use common::Pki;
use conformance::{try_subscribe, FakeService, Started, Transport};
use ltxd_http::{serve, HttpConnector, HttpSecurity, HttpServer};
use ltxd_protocol::{
    BoxFuture, Checksum, ConnectError, Connector, Pos, Promotion, Refusal, Service, TxId,
};
use ltxd_transport_conformance as conformance;
use ltxd_transport_security::{client_config, server_tls, TlsFiles, Token};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "correct horse battery staple";

/// How both sides of a test are configured.
struct Http {
    server: HttpSecurity,
    client_tls: Option<rustls::ClientConfig>,
    client_token: Option<Token>,
}

impl Http {
    fn cleartext() -> Http {
        Http {
            server: HttpSecurity::default(),
            client_tls: None,
            client_token: None,
        }
    }

    /// TLS with certificate files (no client certificate) and a token.
    fn tls_with_token(pki: &Pki) -> Http {
        let client = TlsFiles {
            cert_file: None,
            key_file: None,
            ..pki.client()
        };
        Http {
            server: HttpSecurity::new(
                Some(server_tls(&pki.server(false)).unwrap()),
                Some(token(TOKEN)),
            ),
            client_tls: Some(client_config(&client).unwrap()),
            client_token: Some(token(TOKEN)),
        }
    }

    /// mTLS with certificate files, and no token.
    fn mtls(pki: &Pki) -> Http {
        Http {
            server: HttpSecurity::new(Some(server_tls(&pki.server(true)).unwrap()), None),
            client_tls: Some(client_config(&pki.client()).unwrap()),
            client_token: None,
        }
    }

    async fn server(&self, service: Arc<dyn Service>, addr: SocketAddr) -> HttpServer {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        serve(listener, service, self.server.clone()).unwrap()
    }

    fn connector(&self) -> HttpConnector {
        if self.client_tls.is_none() && self.client_token.is_none() {
            return HttpConnector::new();
        }
        HttpConnector::with_security(self.client_tls.clone(), self.client_token.clone())
    }

    fn url(&self, server: &HttpServer) -> String {
        let scheme = match self.server.tls {
            Some(_) => "https",
            None => "http",
        };
        format!("{scheme}://{}", server.local_addr())
    }
}

impl Transport for Http {
    fn start(&self, service: Arc<dyn Service>) -> BoxFuture<'_, Started> {
        Box::pin(async move {
            let server = self.server(service, localhost()).await;
            Started {
                url: self.url(&server),
                connector: Box::new(self.connector()),
                shutdown: Box::pin(server.shutdown()),
            }
        })
    }

    fn tokenless_connector(&self) -> Option<Box<dyn Connector>> {
        self.server.token.as_ref()?;
        Some(Box::new(HttpConnector::with_security(
            self.client_tls.clone(),
            None,
        )))
    }
}

fn token(secret: &str) -> Token {
    Token::new(secret).unwrap()
}

fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_arrives_intact() {
    conformance::request_arrives_intact(&Http::cleartext()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_arrive_byte_exact() {
    conformance::frames_arrive_byte_exact(&Http::cleartext()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_body_streams_with_backpressure() {
    conformance::large_body_streams_with_backpressure(&Http::cleartext()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_subscription_does_not_block_another() {
    conformance::stalled_subscription_does_not_block_another(&Http::cleartext()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_map_to_statuses() {
    conformance::refusals_map_to_statuses(&Http::cleartext()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_round_trips() {
    conformance::info_round_trips(&Http::cleartext()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handoff_reaches_the_service() {
    conformance::handoff_reaches_the_service(&Http::cleartext()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handoff_refusals_map_to_statuses() {
    conformance::handoff_refusals_map_to_statuses(&Http::cleartext()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_reach_the_service() {
    conformance::acks_reach_the_service(&Http::cleartext()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_refusals_map_to_statuses() {
    conformance::ack_refusals_map_to_statuses(&Http::cleartext()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_body_ends_the_server_stream() {
    conformance::dropping_the_body_ends_the_server_stream(&Http::cleartext()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_open_streams() {
    conformance::shutdown_ends_open_streams(&Http::cleartext()).await;
}

/// The whole suite again, over TLS with certificate files and a token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_suite_over_tls_with_a_token() {
    conformance::run_all(&Http::tls_with_token(&Pki::new())).await;
}

/// The whole suite again, over mTLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_suite_over_mtls() {
    conformance::run_all(&Http::mtls(&Pki::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_share_one_connection_and_survive_a_restart() {
    let http = Http::tls_with_token(&Pki::new());
    let service = FakeService::new();
    let server = http.server(service.clone(), localhost()).await;
    let addr = server.local_addr();
    let url = http.url(&server);
    let client = http.connector();
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
    let server = http.server(service.clone(), addr).await;
    try_subscribe(&client, &url, "a.db")
        .await
        .expect("subscribing after the primary restarted");
    assert_eq!(server.open_connections(), 1);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_certificate_from_another_ca_is_refused() {
    let (pki, other) = (Pki::new(), Pki::new());
    let service = FakeService::new();
    let server = Http::mtls(&pki).server(service.clone(), localhost()).await;
    let err = try_subscribe(
        &Http::mtls(&other).connector(),
        &format!("https://{}", server.local_addr()),
        "a.db",
    )
    .await
    .expect_err("a client that does not trust the server's CA connected");
    let text = err.to_string();
    eprintln!("refused as: {text}");
    assert!(matches!(err, ConnectError::Io(_)), "{err:?}");
    assert!(text.contains("certificate"), "the error says why: {text}");
    assert!(service.requests().is_empty(), "refused before the service");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_a_certificate_is_refused_under_mtls() {
    let pki = Pki::new();
    let service = FakeService::new();
    let http = Http::mtls(&pki);
    let server = http.server(service.clone(), localhost()).await;
    let anonymous = TlsFiles {
        cert_file: None,
        key_file: None,
        ..pki.client()
    };
    let client = HttpConnector::with_security(Some(client_config(&anonymous).unwrap()), None);
    let url = http.url(&server);
    let err = try_subscribe(&client, &url, "a.db")
        .await
        .expect_err("a client without a certificate was served");
    let text = err.to_string();
    eprintln!("refused as: {text}");
    assert!(matches!(err, ConnectError::Io(_)), "{text}");
    assert!(
        text.to_lowercase().contains("certificate"),
        "the error says why: {text}"
    );
    let info = client.info(&url).await;
    assert!(matches!(info, Err(ConnectError::Io(_))), "info: {info:?}");
    assert!(service.requests().is_empty(), "refused before the service");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_or_missing_token_is_refused_with_401() {
    let pki = Pki::new();
    let with_tls = Http::tls_with_token(&pki);
    let cleartext = Http {
        server: HttpSecurity::new(None, Some(token(TOKEN))),
        ..Http::cleartext()
    };
    for http in [with_tls, cleartext] {
        let service = FakeService::new();
        let server = http.server(service.clone(), localhost()).await;
        let url = http.url(&server);
        for (presented, why) in [
            (Some("wrong"), "wrong token"),
            (Some("correct horse battery stapler"), "wrong token"),
            (None, "no token presented"),
        ] {
            let client =
                HttpConnector::with_security(http.client_tls.clone(), presented.map(token));
            let expected = format!("unauthorized: {why}");
            match try_subscribe(&client, &url, "a.db").await {
                Err(ConnectError::Refused {
                    status: 401,
                    message,
                }) => assert_eq!(message, expected, "{url}"),
                other => panic!("{url} with token {presented:?}: {other:?}"),
            }
            match client.info(&url).await {
                Err(ConnectError::Refused {
                    status: 401,
                    message,
                }) => assert_eq!(message, expected, "{url}"),
                other => panic!("info from {url} with token {presented:?}: {other:?}"),
            }
            match client.handoff(&url, 9).await {
                Err(ConnectError::Refused {
                    status: 401,
                    message,
                }) => assert_eq!(message, expected, "{url}"),
                other => panic!("a handoff at {url} with token {presented:?}: {other:?}"),
            }
            match client.promote(&url).await {
                Err(ConnectError::Refused {
                    status: 401,
                    message,
                }) => assert_eq!(message, expected, "{url}"),
                other => panic!("a promotion at {url} with token {presented:?}: {other:?}"),
            }
            // A large request is refused before its body is read; the replica, still sending,
            // gets the answer all the same.
            let mut large = conformance::filtered(9, "a.db");
            for i in 0..100_000u64 {
                large
                    .positions
                    .insert(format!("db-{i:06}.db"), Pos::new(TxId(i + 1), Checksum(i)));
            }
            let refused = client.subscribe(&url, &large).await;
            assert!(
                matches!(refused, Err(ConnectError::Refused { status: 401, .. })),
                "a large request to {url} with token {presented:?}: {:?}",
                refused.map(drop)
            );
        }
        assert!(service.requests().is_empty(), "refused before the service");
        assert!(service.handoffs().is_empty(), "refused before the service");
        assert_eq!(service.promotions(), 0, "refused before the service");
        server.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cleartext_client_cannot_reach_a_tls_server() {
    let http = Http::tls_with_token(&Pki::new());
    let service = FakeService::new();
    let server = http.server(service.clone(), localhost()).await;
    let client = HttpConnector::with_security(None, Some(token(TOKEN)));
    let err = try_subscribe(&client, &format!("http://{}", server.local_addr()), "a.db")
        .await
        .expect_err("a cleartext client was served by a TLS server");
    assert!(matches!(err, ConnectError::Io(_)), "{err:?}");
    assert!(service.requests().is_empty());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urls_must_match_the_connectors_security() {
    let pki = Pki::new();
    let cleartext = Http::cleartext().connector();
    let tls = Http::tls_with_token(&pki).connector();
    for (client, url) in [
        (&cleartext, "quic://127.0.0.1:1"),
        (&cleartext, "https://127.0.0.1:1"),
        (&cleartext, "http://user@127.0.0.1:1"),
        (&cleartext, "127.0.0.1:1"),
        (&tls, "http://127.0.0.1:1"),
        (&tls, "quic://127.0.0.1:1"),
    ] {
        let result = try_subscribe(client, url, "a.db").await;
        assert!(
            matches!(result, Err(ConnectError::BadUrl(_))),
            "{url}: {result:?}"
        );
    }
}

/// The server speaks HTTP/1.1 over TLS too, to a client whose ALPN asks for it (as LiteFS's
/// tools and curl do), and the token guards it the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_over_tls_is_served_and_guarded() {
    let pki = Pki::new();
    let http = Http::tls_with_token(&pki);
    let server = http.server(FakeService::new(), localhost()).await;
    let mut config = http.client_tls.clone().unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let get_info = |authorization: &'static str| {
        let connector = connector.clone();
        let addr = server.local_addr();
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
            let mut tls = connector.connect(name, tcp).await.unwrap();
            assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
            let request = format!(
                "GET /info HTTP/1.1\r\nHost: 127.0.0.1\r\n{authorization}Connection: close\r\n\r\n"
            );
            tls.write_all(request.as_bytes()).await.unwrap();
            let mut response = Vec::new();
            // The server may close without close_notify; what arrived is enough.
            let _ = tls.read_to_end(&mut response).await;
            String::from_utf8(response).unwrap().to_lowercase()
        }
    };
    let served = get_info("Authorization: Bearer correct horse battery staple\r\n").await;
    assert!(served.starts_with("http/1.1 200"), "{served}");
    assert!(served.contains("\"isprimary\""), "{served}");
    let refused = get_info("Authorization: bearer not it\r\n").await;
    assert!(refused.starts_with("http/1.1 401"), "{refused}");
    assert!(refused.contains("www-authenticate: bearer"), "{refused}");
    assert!(refused.contains("unauthorized: wrong token"), "{refused}");
    let anonymous = get_info("").await;
    assert!(
        anonymous.contains("unauthorized: no token presented"),
        "{anonymous}"
    );
    server.shutdown().await;
}

/// `HttpConnector::promote` carries each of the service's answers to a promotion: both
/// [`Promotion`]s, and each refusal as its status.
async fn promote_answers_round_trip(http: &Http) {
    let service = FakeService::new();
    let server = http.server(service.clone(), localhost()).await;
    let url = http.url(&server);
    let client = http.connector();
    for answer in [Promotion::AlreadyPrimary, Promotion::HandedOff] {
        service.answer_next_promotion(Ok(answer));
        assert_eq!(client.promote(&url).await, Ok(answer), "{url}");
    }
    let refusals = [
        (Refusal::NotCandidate, 409),
        (
            Refusal::Failed("the primary is unreachable".to_string()),
            500,
        ),
        (Refusal::NotPrimary, 503),
    ];
    for (refusal, status) in refusals {
        service.answer_next_promotion(Err(refusal.clone()));
        assert_eq!(
            client.promote(&url).await,
            Err(ConnectError::Refused {
                status,
                message: refusal.to_string()
            }),
            "{url}"
        );
    }
    assert_eq!(
        service.promotions(),
        5,
        "every promotion reached the service"
    );
    assert!(service.handoffs().is_empty(), "a promotion is no handoff");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_answers_round_trip_in_cleartext() {
    promote_answers_round_trip(&Http::cleartext()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_answers_round_trip_over_tls_with_a_token() {
    promote_answers_round_trip(&Http::tls_with_token(&Pki::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_answers_round_trip_over_mtls() {
    promote_answers_round_trip(&Http::mtls(&Pki::new())).await;
}

/// Sends `POST <path>` over cleartext HTTP/1.1 and returns the response, lowercased.
async fn post_http1(addr: SocketAddr, path: &str) -> String {
    request_http1(addr, "POST", path).await.to_lowercase()
}

/// Sends `<method> <path>` over cleartext HTTP/1.1 and returns the response.
async fn request_http1(addr: SocketAddr, method: &str, path: &str) -> String {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tcp.read_to_end(&mut response).await.unwrap();
    String::from_utf8(response).unwrap()
}

/// `GET /metrics` serves the service's metrics as Prometheus's text format, as LiteFS does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_served_as_prometheus_text() {
    let server = Http::cleartext()
        .server(FakeService::new(), localhost())
        .await;
    let response = request_http1(server.local_addr(), "GET", "/metrics").await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response
            .to_lowercase()
            .contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
        "{response}"
    );
    assert!(response.ends_with(FakeService::METRICS), "{response}");
    server.shutdown().await;
}

/// `POST /handoff` takes the node ID as LiteFS sends it, `nodeID=` and up to 16 hex digits,
/// and answers anything else 400 without asking the service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handoff_without_a_valid_node_id_is_a_bad_request() {
    let service = FakeService::new();
    let server = Http::cleartext().server(service.clone(), localhost()).await;
    for path in [
        "/handoff",
        "/handoff?nodeID=",
        "/handoff?nodeID=xyz",
        "/handoff?nodeID=00000000000000001",
        "/handoff?nodeid=1",
        "/handoff?node=1",
    ] {
        let response = post_http1(server.local_addr(), path).await;
        assert!(response.starts_with("http/1.1 400"), "{path}: {response}");
        assert!(response.contains("invalid nodeid"), "{path}: {response}");
    }
    assert!(service.handoffs().is_empty(), "refused before the service");
    let response = post_http1(server.local_addr(), "/handoff?x=1&nodeID=00000000000000aB").await;
    assert!(response.starts_with("http/1.1 200"), "{response}");
    assert_eq!(service.handoffs(), [0xab]);
    server.shutdown().await;
}

/// Whether a server authenticates its peers follows from what was built, never from a flag: a
/// token, or TLS that verifies client certificates. `ltxd mount` opens the API beyond loopback
/// only when it does (docs/http-security.md has the table of combinations).
#[test]
fn a_server_authenticates_only_with_a_token_or_verified_client_certificates() {
    let pki = Pki::new();
    let tls = |client_auth| Some(server_tls(&pki.server(client_auth)).unwrap());
    let flag_without_tls = HttpSecurity {
        tls_verifies_clients: true,
        ..HttpSecurity::default()
    };
    let rows = [
        ("cleartext", HttpSecurity::new(None, None), false),
        (
            "cleartext, token",
            HttpSecurity::new(None, Some(token(TOKEN))),
            true,
        ),
        ("TLS", HttpSecurity::new(tls(false), None), false),
        (
            "TLS, token",
            HttpSecurity::new(tls(false), Some(token(TOKEN))),
            true,
        ),
        ("mTLS", HttpSecurity::new(tls(true), None), true),
        (
            "mTLS, token",
            HttpSecurity::new(tls(true), Some(token(TOKEN))),
            true,
        ),
        ("a client-auth flag without TLS", flag_without_tls, false),
    ];
    for (name, security, authenticates) in rows {
        assert_eq!(security.authenticates(), authenticates, "{name}");
    }
}
