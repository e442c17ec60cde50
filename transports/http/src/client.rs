//! The HTTP client: subscribes to a primary's `/stream` with HTTP/2 prior knowledge.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use ltxd_protocol::wire::encode_positions;
use ltxd_protocol::{
    format_node_id, parse_node_id, BoxFuture, ConnectError, Connector, Features, NodeInfo,
    StreamRequest, StreamResponse, CLUSTER_ID_HEADER, EPOCH_HEADER, FEATURES_HEADER,
    NODE_ID_HEADER,
};
use tokio::net::TcpStream;

use crate::body::IncomingBytes;

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest `/info` answer read.
const MAX_INFO_BODY: usize = 4 << 20;

/// Reaches primaries over HTTP (`http://host:port`).
#[derive(Clone, Debug, Default)]
pub struct HttpConnector;

impl HttpConnector {
    /// A connector.
    pub fn new() -> HttpConnector {
        HttpConnector
    }
}

/// An HTTP/2 connection to the authority of `url`, and the parsed URL.
async fn connect(
    url: &str,
) -> Result<(hyper::client::conn::http2::SendRequest<BoxedBody>, Uri), ConnectError> {
    let uri: Uri = url
        .parse()
        .map_err(|_| ConnectError::BadUrl(url.to_string()))?;
    if uri.scheme_str() != Some("http") {
        return Err(ConnectError::BadUrl(format!(
            "{url}: the HTTP transport takes http:// URLs"
        )));
    }
    let authority = uri
        .authority()
        .ok_or_else(|| ConnectError::BadUrl(url.to_string()))?;
    let address = format!(
        "{}:{}",
        authority.host(),
        authority.port_u16().unwrap_or(80)
    );
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&address))
        .await
        .map_err(|_| ConnectError::Io(format!("connecting to {address} timed out")))?
        .map_err(|err| ConnectError::Io(format!("connecting to {address}: {err}")))?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .map_err(|err| ConnectError::Io(format!("HTTP/2 handshake with {address}: {err}")))?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!(%err, "HTTP/2 connection ended");
        }
    });
    Ok((sender, uri))
}

type BoxedBody = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

/// The URL of `path` on the node at `base`.
fn endpoint(base: &Uri, path_and_query: &str) -> Result<Uri, ConnectError> {
    let authority = base
        .authority()
        .ok_or_else(|| ConnectError::BadUrl(base.to_string()))?;
    format!("http://{authority}{path_and_query}")
        .parse()
        .map_err(|_| ConnectError::BadUrl(base.to_string()))
}

/// Reads a refusal's status and message.
async fn refusal(response: http::Response<hyper::body::Incoming>) -> ConnectError {
    let status = response.status().as_u16();
    let body = http_body_util::Limited::new(response.into_body(), 64 << 10)
        .collect()
        .await
        .map(|b| String::from_utf8_lossy(&b.to_bytes()).trim().to_string())
        .unwrap_or_default();
    ConnectError::Refused {
        status,
        message: body,
    }
}

impl Connector for HttpConnector {
    fn subscribe<'a>(
        &'a self,
        url: &'a str,
        request: &'a StreamRequest,
    ) -> BoxFuture<'a, Result<StreamResponse, ConnectError>> {
        Box::pin(async move {
            let (mut sender, base) = connect(url).await?;
            let path = match request.filter_query() {
                Some(query) => format!("/stream?{query}"),
                None => "/stream".to_string(),
            };
            let body = Full::new(Bytes::from(encode_positions(&request.positions))).boxed();
            let http_request = Request::builder()
                .method(Method::POST)
                .uri(endpoint(&base, &path)?)
                .header(NODE_ID_HEADER, format_node_id(request.node_id))
                .header(FEATURES_HEADER, request.features.to_header())
                .body(body)
                .map_err(|err| ConnectError::Protocol(err.to_string()))?;
            let response = sender
                .send_request(http_request)
                .await
                .map_err(|err| ConnectError::Io(err.to_string()))?;
            if response.status() != StatusCode::OK {
                return Err(refusal(response).await);
            }
            let header = |name: &str| {
                response
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            let node_id = header(NODE_ID_HEADER)
                .as_deref()
                .and_then(parse_node_id)
                .unwrap_or(0);
            let cluster_id = header(CLUSTER_ID_HEADER);
            let features = header(FEATURES_HEADER)
                .as_deref()
                .map_or(Features::NONE, Features::from_header);
            let epoch = match header(EPOCH_HEADER) {
                None => None,
                Some(text) => Some(text.parse().map_err(|_| {
                    ConnectError::Protocol(format!("invalid {EPOCH_HEADER}: {text}"))
                })?),
            };
            Ok(StreamResponse {
                node_id,
                cluster_id,
                epoch,
                features,
                body: Box::pin(IncomingBytes(response.into_body())),
            })
        })
    }

    fn info<'a>(&'a self, url: &'a str) -> BoxFuture<'a, Result<NodeInfo, ConnectError>> {
        Box::pin(async move {
            let (mut sender, base) = connect(url).await?;
            let request = Request::builder()
                .method(Method::GET)
                .uri(endpoint(&base, "/info")?)
                .body(Empty::new().boxed())
                .map_err(|err| ConnectError::Protocol(err.to_string()))?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|err| ConnectError::Io(err.to_string()))?;
            if response.status() != StatusCode::OK {
                return Err(refusal(response).await);
            }
            let body = http_body_util::Limited::new(response.into_body(), MAX_INFO_BODY)
                .collect()
                .await
                .map_err(|err| ConnectError::Io(err.to_string()))?
                .to_bytes();
            serde_json::from_slice(&body).map_err(|err| ConnectError::Protocol(err.to_string()))
        })
    }
}
