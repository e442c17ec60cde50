//! What the proxy does with a request: a decision from the request's method, path and cookie
//! and the node's state, with no I/O, so that every case is tested here.

use http::Method;

use super::glob::{any_matches, Glob};

/// The health path LiteFS's proxy answers itself.
pub const HEALTH_PATH: &str = "/litefs/health";

/// How many times a request may be forwarded between proxies. The second hop covers a request
/// that reached the old primary as it handed over the lease.
pub const MAX_HOPS: u32 = 2;

/// How replicas send writes to the primary (`proxy.mode`, an ltxd extension).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Forward the request to the primary's proxy and stream the answer back.
    Forward,
    /// Answer with LiteFS's `fly-replay` header, for Fly.io's edge to replay the request.
    FlyReplay,
}

/// The globs and mode that route requests, from `proxy.*`.
#[derive(Clone, Debug)]
pub struct Rules {
    /// `proxy.passthrough`.
    pub passthrough: Vec<Glob>,
    /// `proxy.always-forward`.
    pub always_forward: Vec<Glob>,
    /// `proxy.mode`.
    pub mode: Mode,
}

/// What the node knows when the request arrives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeFacts {
    /// True on the primary.
    pub is_primary: bool,
    /// The TXID of `proxy.db` here; 0 when the database does not exist yet.
    pub local_txid: u64,
    /// True on a replica that trails the primary by more than `proxy.max-lag`.
    pub lagging: bool,
}

/// The request, as far as routing cares.
#[derive(Clone, Copy, Debug)]
pub struct RequestFacts<'a> {
    /// The method.
    pub method: &'a Method,
    /// The path, without the query.
    pub path: &'a str,
    /// The TXID of a valid `__txid` cookie.
    pub txid: Option<u64>,
    /// How many proxies forwarded it already (0 from a client).
    pub hops: u32,
}

/// What to do with a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// `GET /litefs/health`: answer from the node's lag.
    Health,
    /// Send it to the local application. With `set_cookie`, the answer carries `__txid` with
    /// `proxy.db`'s position once the application has answered.
    Target {
        /// True after a request that may have written.
        set_cookie: bool,
    },
    /// Wait until `proxy.db` reaches this TXID, then [`after_wait`] decides.
    WaitFor(u64),
    /// Send it to the primary's proxy.
    Forward,
    /// Answer with `fly-replay: instance=<primary>`.
    FlyReplay,
    /// Answer 503: the request went round too many proxies.
    TooManyHops,
}

/// True for a request that may write: every method but GET, HEAD and OPTIONS, and the paths of
/// `always-forward`.
pub fn may_write(rules: &Rules, method: &Method, path: &str) -> bool {
    let read = *method == Method::GET || *method == Method::HEAD || *method == Method::OPTIONS;
    !read || any_matches(&rules.always_forward, path)
}

/// The first decision about a request.
pub fn decide(rules: &Rules, request: &RequestFacts<'_>, node: &NodeFacts) -> Action {
    if any_matches(&rules.passthrough, request.path) {
        return Action::Target { set_cookie: false };
    }
    if *request.method == Method::GET && request.path == HEALTH_PATH {
        return Action::Health;
    }
    if node.is_primary {
        let set_cookie = may_write(rules, request.method, request.path);
        return Action::Target { set_cookie };
    }
    if may_write(rules, request.method, request.path) {
        return elsewhere(rules, request);
    }
    if node.lagging {
        return elsewhere(rules, request);
    }
    match request.txid {
        Some(txid) if node.local_txid < txid => Action::WaitFor(txid),
        _ => Action::Target { set_cookie: false },
    }
}

/// The decision after waiting for a read's TXID: local once it arrived, the primary otherwise.
pub fn after_wait(rules: &Rules, request: &RequestFacts<'_>, reached: bool) -> Action {
    if reached {
        Action::Target { set_cookie: false }
    } else {
        elsewhere(rules, request)
    }
}

/// Where a request that this replica cannot serve goes.
fn elsewhere(rules: &Rules, request: &RequestFacts<'_>) -> Action {
    match rules.mode {
        Mode::FlyReplay => Action::FlyReplay,
        Mode::Forward if request.hops >= MAX_HOPS => Action::TooManyHops,
        Mode::Forward => Action::Forward,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(mode: Mode) -> Rules {
        Rules {
            passthrough: vec![Glob::new("/static/*")],
            always_forward: vec![Glob::new("/login")],
            mode,
        }
    }

    fn request<'a>(method: &'a Method, path: &'a str, txid: Option<u64>) -> RequestFacts<'a> {
        RequestFacts {
            method,
            path,
            txid,
            hops: 0,
        }
    }

    const PRIMARY: NodeFacts = NodeFacts {
        is_primary: true,
        local_txid: 10,
        lagging: false,
    };
    const REPLICA: NodeFacts = NodeFacts {
        is_primary: false,
        local_txid: 10,
        lagging: false,
    };

    #[test]
    fn the_primary_serves_everything_and_marks_writes() {
        let r = rules(Mode::Forward);
        let read = decide(&r, &request(&Method::GET, "/", Some(99)), &PRIMARY);
        assert_eq!(read, Action::Target { set_cookie: false });
        for method in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
            let write = decide(&r, &request(&method, "/", None), &PRIMARY);
            assert_eq!(write, Action::Target { set_cookie: true });
        }
        let options = decide(&r, &request(&Method::OPTIONS, "/", None), &PRIMARY);
        assert_eq!(options, Action::Target { set_cookie: false });
        let login = decide(&r, &request(&Method::GET, "/login", None), &PRIMARY);
        assert_eq!(login, Action::Target { set_cookie: true });
    }

    #[test]
    fn passthrough_skips_everything() {
        let r = rules(Mode::Forward);
        for node in [PRIMARY, REPLICA] {
            for method in [Method::GET, Method::POST] {
                let action = decide(&r, &request(&method, "/static/a.css", Some(99)), &node);
                assert_eq!(action, Action::Target { set_cookie: false });
            }
        }
    }

    #[test]
    fn replicas_forward_writes_or_answer_fly_replay() {
        let write = request(&Method::POST, "/x", None);
        assert_eq!(
            decide(&rules(Mode::Forward), &write, &REPLICA),
            Action::Forward
        );
        assert_eq!(
            decide(&rules(Mode::FlyReplay), &write, &REPLICA),
            Action::FlyReplay
        );
        let login = request(&Method::GET, "/login", None);
        assert_eq!(
            decide(&rules(Mode::Forward), &login, &REPLICA),
            Action::Forward
        );
    }

    #[test]
    fn replicas_wait_for_a_newer_cookie_then_serve_or_forward() {
        let r = rules(Mode::Forward);
        let behind = request(&Method::GET, "/", Some(11));
        assert_eq!(decide(&r, &behind, &REPLICA), Action::WaitFor(11));
        assert_eq!(
            after_wait(&r, &behind, true),
            Action::Target { set_cookie: false }
        );
        assert_eq!(after_wait(&r, &behind, false), Action::Forward);
        for caught_up in [None, Some(10), Some(3)] {
            let read = request(&Method::HEAD, "/", caught_up);
            assert_eq!(
                decide(&r, &read, &REPLICA),
                Action::Target { set_cookie: false }
            );
        }
    }

    #[test]
    fn a_missing_database_waits_as_position_zero() {
        let node = NodeFacts {
            local_txid: 0,
            ..REPLICA
        };
        let read = request(&Method::GET, "/", Some(1));
        let action = decide(&rules(Mode::Forward), &read, &node);
        assert_eq!(action, Action::WaitFor(1));
    }

    #[test]
    fn a_lagging_replica_forwards_reads() {
        let node = NodeFacts {
            lagging: true,
            ..REPLICA
        };
        let read = request(&Method::GET, "/", None);
        assert_eq!(decide(&rules(Mode::Forward), &read, &node), Action::Forward);
    }

    #[test]
    fn health_is_answered_by_the_proxy() {
        let health = request(&Method::GET, HEALTH_PATH, None);
        assert_eq!(
            decide(&rules(Mode::Forward), &health, &REPLICA),
            Action::Health
        );
    }

    #[test]
    fn forwarding_stops_after_max_hops() {
        let mut write = request(&Method::POST, "/", None);
        write.hops = MAX_HOPS;
        let action = decide(&rules(Mode::Forward), &write, &REPLICA);
        assert_eq!(action, Action::TooManyHops);
        assert_eq!(
            decide(&rules(Mode::Forward), &write, &PRIMARY),
            Action::Target { set_cookie: true }
        );
    }
}
