//! The HTTP server: `POST /stream` and `GET /info` over a [`Service`].

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use ltxd_protocol::wire::decode_positions;
use ltxd_protocol::{
    format_node_id, parse_node_id, Features, Refusal, Service, StreamRequest, StreamResponse,
    CLUSTER_ID_HEADER, EPOCH_HEADER, FEATURES_HEADER, NODE_ID_HEADER,
};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::body::StreamingBody;

/// The largest position map accepted (bytes).
const MAX_REQUEST_BODY: usize = 16 << 20;

type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// A running server. Dropping it does not stop it; call [`HttpServer::shutdown`].
pub struct HttpServer {
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl HttpServer {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting connections and ends the open ones.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Serves `service` on `listener` until [`HttpServer::shutdown`].
pub fn serve(listener: TcpListener, service: Arc<dyn Service>) -> std::io::Result<HttpServer> {
    let local_addr = listener.local_addr()?;
    let (stop, mut stopped) = watch::channel(false);
    let task = tokio::spawn(async move {
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        tracing::warn!(%err, "accept failed");
                        continue;
                    }
                },
                _ = stopped.changed() => break,
            };
            let _ = stream.set_nodelay(true);
            let service = Arc::clone(&service);
            let mut stopped = stopped.clone();
            tokio::spawn(async move {
                let handler = hyper::service::service_fn(move |request| {
                    let service = Arc::clone(&service);
                    async move { Ok::<_, std::convert::Infallible>(route(&*service, request).await) }
                });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let connection = builder.serve_connection(TokioIo::new(stream), handler);
                tokio::pin!(connection);
                tokio::select! {
                    result = connection.as_mut() => {
                        if let Err(err) = result {
                            tracing::debug!(%peer, %err, "connection ended with an error");
                        }
                    }
                    _ = stopped.changed() => {}
                }
            });
        }
    });
    Ok(HttpServer {
        local_addr,
        stop,
        task,
    })
}

async fn route(service: &dyn Service, request: Request<Incoming>) -> Response<Body> {
    let info = service.info();
    let mut response = match (request.method(), request.uri().path()) {
        (&Method::POST, "/stream") => stream(service, request).await,
        (&Method::GET, "/info") => {
            let mut json = serde_json::to_string_pretty(&info).unwrap_or_default();
            json.push('\n');
            let mut response = Response::new(full(json));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            response
        }
        _ => error(StatusCode::NOT_FOUND, "not found"),
    };
    if let Some(cluster_id) = info
        .cluster_id
        .and_then(|id| header::HeaderValue::from_str(&id).ok())
    {
        response.headers_mut().insert(CLUSTER_ID_HEADER, cluster_id);
    }
    response
}

async fn stream(service: &dyn Service, request: Request<Incoming>) -> Response<Body> {
    let headers = request.headers();
    let node_id = match headers
        .get(NODE_ID_HEADER)
        .map(|v| v.to_str().ok().and_then(parse_node_id))
    {
        None => 0,
        Some(Some(id)) => id,
        Some(None) => return error(StatusCode::BAD_REQUEST, "invalid Litefs-Id"),
    };
    let features = headers
        .get(FEATURES_HEADER)
        .and_then(|v| v.to_str().ok())
        .map_or(Features::NONE, Features::from_header);
    let filter = request.uri().query().and_then(|query| {
        query
            .split('&')
            .find_map(|pair| pair.strip_prefix("filter="))
            .map(StreamRequest::parse_filter)
    });
    let body = match Limited::new(request.into_body(), MAX_REQUEST_BODY)
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(err) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("cannot read the body: {err}"),
            )
        }
    };
    let positions = match decode_positions(&body) {
        Ok(positions) => positions,
        Err(err) => return error(StatusCode::BAD_REQUEST, &format!("bad position map: {err}")),
    };
    let request = StreamRequest {
        node_id,
        filter,
        positions,
        features,
    };
    match service.subscribe(request) {
        Ok(accepted) => streaming(accepted),
        Err(refusal) => {
            tracing::info!(node = format_node_id(node_id), %refusal, "stream refused");
            let status = match refusal {
                Refusal::NotPrimary => StatusCode::SERVICE_UNAVAILABLE,
                Refusal::SelfConnect | Refusal::BadRequest(_) => StatusCode::BAD_REQUEST,
                Refusal::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            };
            error(status, &refusal.to_string())
        }
    }
}

fn streaming(accepted: StreamResponse) -> Response<Body> {
    let mut response = Response::new(StreamingBody(accepted.body).boxed_unsync());
    let headers = response.headers_mut();
    let mut set = |name: &'static str, value: String| {
        if let Ok(value) = header::HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    };
    set(NODE_ID_HEADER, format_node_id(accepted.node_id));
    set(FEATURES_HEADER, accepted.features.to_header());
    if let Some(epoch) = accepted.epoch {
        set(EPOCH_HEADER, epoch.to_string());
    }
    if let Some(cluster_id) = accepted.cluster_id {
        set(CLUSTER_ID_HEADER, cluster_id);
    }
    response
}

fn full(text: String) -> Body {
    Full::new(Bytes::from(text))
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A plain-text error, as Go's `http.Error` writes it.
fn error(status: StatusCode, message: &str) -> Response<Body> {
    let mut response = Response::new(full(format!("{message}\n")));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
