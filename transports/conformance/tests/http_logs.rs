//! What the HTTP transport logs when it refuses a peer. This test has a binary of its own: a
//! subscriber set for one thread can miss events from call sites that other tests' threads
//! register at the same moment.

mod common;
mod logs;

use common::Pki;
use conformance::FakeService;
use ltxd_http::{serve, HttpConnector, HttpSecurity};
use ltxd_transport_conformance as conformance;
use ltxd_transport_security::{client_config, server_tls, TlsFiles, Token};

/// Starts a server secured by `security` on 127.0.0.1, subscribes through `client` once, and
/// shuts the server down.
async fn subscribe_once(security: HttpSecurity, client: HttpConnector) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = serve(listener, FakeService::new(), security).unwrap();
    let url = format!("https://{}", server.local_addr());
    let _ = conformance::try_subscribe(&client, &url, "a.db").await;
    server.shutdown().await;
}

/// Each refusal is logged as a warning with the peer's address and the reason, and no log line
/// at any level holds a token, the right one or a wrong one. The runtime has one thread, the one
/// the subscriber is set for.
#[tokio::test(flavor = "current_thread")]
async fn refusals_are_logged_with_the_peer_and_why_but_never_the_token() {
    let logs = logs::capture();
    let pki = Pki::new();
    let (right, wrong) = ("correct horse battery staple", "an-incorrect-secret-token");

    let anonymous = TlsFiles {
        cert_file: None,
        key_file: None,
        ..pki.client()
    };
    let client_tls = client_config(&anonymous).unwrap();
    let with_token = HttpSecurity::new(
        Some(server_tls(&pki.server(false)).unwrap()),
        Some(Token::new(right).unwrap()),
    );
    for presented in [Some(wrong), None, Some(right)] {
        let token = presented.map(|secret| Token::new(secret).unwrap());
        let client = HttpConnector::with_security(Some(client_tls.clone()), token);
        subscribe_once(with_token.clone(), client).await;
    }
    let mtls = HttpSecurity::new(Some(server_tls(&pki.server(true)).unwrap()), None);
    subscribe_once(mtls, HttpConnector::with_security(Some(client_tls), None)).await;

    logs::assert_refusals_logged(
        &logs.text(),
        "HTTP request refused: unauthorized",
        "TLS connection refused: the handshake failed",
        [right, wrong],
    );
}
