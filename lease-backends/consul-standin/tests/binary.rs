//! The stand-in as a process, spoken to in plain HTTP/1.1: the way tests that start ltxd nodes
//! as processes will use it. The lease's own use of it is tested by the Consul backend's
//! conformance suite.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `ltxd-consul-standin`, killed when dropped.
struct Process {
    child: Child,
    addr: String,
}

impl Process {
    fn start(args: &[&str]) -> Process {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ltxd-consul-standin"))
            .args(["--addr", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start ltxd-consul-standin");
        let stdout = child.stdout.take().expect("its stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read its first line");
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_string();
        Process { child, addr }
    }

    fn request(&self, method: &str, path: &str, token: Option<&str>, body: &str) -> Reply {
        let mut stream = TcpStream::connect(&self.addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("a read timeout");
        let token = token
            .map(|t| format!("X-Consul-Token: {t}\r\n"))
            .unwrap_or_default();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: consul\r\nConnection: close\r\n{token}\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .expect("send");
        let mut text = String::new();
        stream.read_to_string(&mut text).expect("read the reply");
        Reply::parse(&text)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn parse(text: &str) -> Reply {
        let (head, body) = text.split_once("\r\n\r\n").expect("a header and a body");
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|line| line.split(' ').nth(1))
            .and_then(|code| code.parse().ok())
            .expect("a status line");
        let headers = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
            .collect();
        Reply {
            status,
            headers,
            body: body.to_string(),
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    fn index(&self) -> u64 {
        self.header("x-consul-index")
            .and_then(|value| value.parse().ok())
            .expect("an X-Consul-Index header")
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).expect("a JSON body")
    }
}

fn create_session(consul: &Process, token: Option<&str>, ttl: &str) -> String {
    let body = format!(r#"{{"TTL":"{ttl}","LockDelay":"1s","Behavior":"delete"}}"#);
    let reply = consul.request("PUT", "/v1/session/create", token, &body);
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()["ID"].as_str().expect("an ID").to_string()
}

#[test]
fn the_binary_serves_kv_and_sessions() {
    let consul = Process::start(&["--min-ttl", "1s"]);
    let missing = consul.request("GET", "/v1/kv/app/lease", None, "");
    assert_eq!(missing.status, 404);
    assert!(missing.index() >= 1);

    let a = create_session(&consul, None, "2s");
    let b = create_session(&consul, None, "2s");
    let put = |session: &str, verb: &str, value: &str| {
        consul
            .request(
                "PUT",
                &format!("/v1/kv/app/lease?{verb}={session}"),
                None,
                value,
            )
            .body
    };
    assert_eq!(put(&a, "acquire", "hello"), "true");
    assert_eq!(put(&b, "acquire", "other"), "false");

    let got = consul.request("GET", "/v1/kv/app/lease", None, "");
    assert_eq!(got.status, 200);
    let entry = &got.json()[0];
    assert_eq!(entry["Key"], "app/lease");
    assert_eq!(entry["Value"], "aGVsbG8="); // base64 of "hello"
    assert_eq!(entry["Session"], a.as_str());
    assert_eq!(entry["LockIndex"], 1);
    assert_eq!(got.index(), entry["ModifyIndex"].as_u64().unwrap());

    // A blocking query with nothing changing waits out its `wait`.
    let started = Instant::now();
    let path = format!("/v1/kv/app/lease?index={}&wait=300ms", got.index());
    let same = consul.request("GET", &path, None, "");
    assert!(started.elapsed() >= Duration::from_millis(290));
    assert_eq!(same.index(), got.index());

    // A blocking query returns as soon as the key changes.
    let index = got.index();
    std::thread::scope(|scope| {
        let waiter = scope.spawn(|| {
            let path = format!("/v1/kv/app/lease?index={index}&wait=10s");
            let started = Instant::now();
            let reply = consul.request("GET", &path, None, "");
            (started.elapsed(), reply)
        });
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(put(&a, "release", ""), "true");
        let (took, reply) = waiter.join().expect("the waiter");
        assert!(took < Duration::from_secs(5), "{took:?}");
        assert!(reply.index() > index);
        assert!(reply.json()[0].get("Session").is_none());
    });

    let cas = consul.request("PUT", "/v1/kv/app/lease/clusterid?cas=0", None, "c1");
    assert_eq!(cas.body, "true");
    let cas = consul.request("PUT", "/v1/kv/app/lease/clusterid?cas=0", None, "c2");
    assert_eq!(cas.body, "false");

    let renewed = consul.request("PUT", &format!("/v1/session/renew/{b}"), None, "");
    assert_eq!(renewed.status, 200);
    assert_eq!(renewed.json()[0]["ID"], b.as_str());
    let destroyed = consul.request("PUT", &format!("/v1/session/destroy/{b}"), None, "");
    assert_eq!(destroyed.body, "true");
    let gone = consul.request("PUT", &format!("/v1/session/renew/{b}"), None, "");
    assert_eq!(gone.status, 404);
}

#[test]
fn sessions_expire_after_twice_their_ttl_and_delete_their_keys() {
    let consul = Process::start(&["--min-ttl", "1s"]);
    let a = create_session(&consul, None, "1s");
    let acquired = consul.request("PUT", &format!("/v1/kv/k?acquire={a}"), None, "v");
    assert_eq!(acquired.body, "true");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(consul.request("GET", "/v1/kv/k", None, "").status, 200);
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(consul.request("GET", "/v1/kv/k", None, "").status, 404);
    let renew = consul.request("PUT", &format!("/v1/session/renew/{a}"), None, "");
    assert_eq!(renew.status, 404);
}

#[test]
fn consuls_limits_hold_by_default() {
    let consul = Process::start(&["--token", "s3cret"]);
    assert_eq!(consul.request("GET", "/v1/kv/k", None, "").status, 403);
    assert_eq!(
        consul.request("GET", "/v1/kv/k", Some("wrong"), "").status,
        403
    );
    assert_eq!(
        consul.request("GET", "/v1/kv/k", Some("s3cret"), "").status,
        404
    );
    assert_eq!(
        consul
            .request("GET", "/v1/kv/k?token=s3cret", None, "")
            .status,
        404
    );
    // Consul's shortest TTL is 10 s.
    let short = consul.request(
        "PUT",
        "/v1/session/create",
        Some("s3cret"),
        r#"{"TTL":"5s"}"#,
    );
    assert_eq!(short.status, 400);
    let session = create_session(&consul, Some("s3cret"), "10s");
    let both = format!("/v1/kv/k?acquire={session}&cas=0");
    assert_eq!(consul.request("PUT", &both, Some("s3cret"), "").status, 400);
    let unknown = consul.request(
        "PUT",
        "/v1/kv/k?acquire=00000000-0000-0000-0000-000000000000",
        Some("s3cret"),
        "",
    );
    assert_eq!(unknown.status, 500);
}
