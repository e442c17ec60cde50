//! A small HTTP/1.1 load generator and echo server for `benches/proxy-bench.sh`.
//!
//! `http_load serve PORT` answers every request with `pong` (a fast application, so that the
//! proxy's own cost shows). `http_load load ADDR PATH METHOD CONCURRENCY SECONDS` keeps
//! CONCURRENCY keep-alive connections busy for SECONDS and prints one JSON line: requests per
//! second and latency percentiles (µs), and the count of non-2xx answers.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    match args.first().map(String::as_str) {
        Some("serve") => runtime.block_on(serve(args[1].parse().unwrap())),
        Some("load") => {
            let result = runtime.block_on(load(
                args[1].clone(),
                args[2].clone(),
                args[3].clone(),
                args[4].parse().unwrap(),
                Duration::from_secs(args[5].parse().unwrap()),
            ));
            println!("{result}");
        }
        _ => eprintln!("usage: http_load serve PORT | load ADDR PATH METHOD CONCURRENCY SECONDS"),
    }
}

async fn serve(port: u16) {
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    loop {
        let (stream, _) = listener.accept().await.unwrap();
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = service_fn(|_req: Request<hyper::body::Incoming>| async {
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"pong\n"))))
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn load(
    addr: String,
    path: String,
    method: String,
    concurrency: usize,
    duration: Duration,
) -> String {
    let deadline = Instant::now() + duration;
    let addr = Arc::new(addr);
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let (addr, path, method) = (Arc::clone(&addr), path.clone(), method.clone());
        tasks.push(tokio::spawn(async move {
            let stream = TcpStream::connect(addr.as_str()).await.unwrap();
            let _ = stream.set_nodelay(true);
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream))
                    .await
                    .unwrap();
            tokio::spawn(connection);
            let (mut latencies, mut failures, mut i) = (Vec::new(), 0u64, 0u64);
            while Instant::now() < deadline {
                i += 1;
                let body = if method == "POST" {
                    Bytes::from(format!("bench-{worker}-{i}"))
                } else {
                    Bytes::new()
                };
                let request = Request::builder()
                    .method(method.as_str())
                    .uri(path.as_str())
                    .header("host", addr.as_str())
                    .body(Full::new(body))
                    .unwrap();
                let start = Instant::now();
                if sender.ready().await.is_err() {
                    break;
                }
                match sender.send_request(request).await {
                    Ok(response) => {
                        let ok = response.status().is_success();
                        let _ = response.into_body().collect().await;
                        latencies.push(start.elapsed().as_micros() as u64);
                        failures += u64::from(!ok);
                    }
                    Err(_) => break,
                }
            }
            (latencies, failures)
        }));
    }
    let started = Instant::now();
    let (mut latencies, mut failures) = (Vec::new(), 0);
    for task in tasks {
        let (l, f) = task.await.unwrap();
        latencies.extend(l);
        failures += f;
    }
    let elapsed = started.elapsed().as_secs_f64().max(duration.as_secs_f64());
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    format!(
        "{{\"requests\": {}, \"rps\": {:.0}, \"p50_us\": {}, \"p99_us\": {}, \"failures\": {failures}}}",
        latencies.len(),
        latencies.len() as f64 / elapsed,
        pct(0.50),
        pct(0.99)
    )
}
