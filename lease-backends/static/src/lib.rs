//! The static lease: the configuration names the primary. A node with `candidate: true` is the
//! primary for ever; every other node follows the hostname and advertise URL it is configured
//! with. There is no election, no expiry and no handoff; the primary never changes, so a watch
//! returns it once and then waits for ever; the cluster ID lives only in local files.

use std::time::Duration;

use ltxd_lease::{BoxFuture, Lease, LeaseError, Leaser, PrimaryInfo, PrimaryWatch};

/// A static lease as configured on one node.
#[derive(Clone, Debug)]
pub struct StaticLeaser {
    candidate: bool,
    hostname: String,
    advertise_url: String,
}

impl StaticLeaser {
    /// On the primary (`candidate: true`), `hostname` and `advertise_url` are its own; on a
    /// replica, they are the primary's.
    pub fn new(
        candidate: bool,
        hostname: impl Into<String>,
        advertise_url: impl Into<String>,
    ) -> StaticLeaser {
        StaticLeaser {
            candidate,
            hostname: hostname.into(),
            advertise_url: advertise_url.into(),
        }
    }
}

impl StaticLeaser {
    /// The primary as this node sees it: the configured one on a replica, none on the primary
    /// itself (as LiteFS's static lease reports it).
    fn primary(&self) -> Option<PrimaryInfo> {
        (!self.candidate).then(|| PrimaryInfo {
            hostname: self.hostname.clone(),
            advertise_url: self.advertise_url.clone(),
        })
    }
}

/// A watch of a primary that never changes: the first call returns it, later calls never
/// complete.
#[derive(Debug)]
struct StaticWatch {
    /// The value the first call returns; `None` once returned.
    primary: Option<Option<PrimaryInfo>>,
}

impl PrimaryWatch for StaticWatch {
    fn next(&mut self) -> BoxFuture<'_, Result<Option<PrimaryInfo>, LeaseError>> {
        match self.primary.take() {
            Some(primary) => Box::pin(std::future::ready(Ok(primary))),
            None => Box::pin(std::future::pending()),
        }
    }
}

/// The lease a static primary holds for ever.
#[derive(Debug)]
pub struct StaticLease;

/// How long a static lease lasts: effectively for ever.
pub const STATIC_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

impl Leaser for StaticLeaser {
    fn kind(&self) -> &'static str {
        "static"
    }

    fn hostname(&self) -> &str {
        &self.hostname
    }

    fn advertise_url(&self) -> &str {
        if self.candidate {
            &self.advertise_url
        } else {
            ""
        }
    }

    fn acquire(&self) -> BoxFuture<'_, Result<Box<dyn Lease>, LeaseError>> {
        let result: Result<Box<dyn Lease>, LeaseError> = if self.candidate {
            Ok(Box::new(StaticLease))
        } else {
            Err(LeaseError::PrimaryExists)
        };
        Box::pin(std::future::ready(result))
    }

    fn acquire_existing<'a>(
        &'a self,
        _id: &'a str,
    ) -> BoxFuture<'a, Result<Box<dyn Lease>, LeaseError>> {
        Box::pin(std::future::ready(Err(LeaseError::Unsupported {
            backend: "static",
            what: "handoff",
        })))
    }

    fn supports_handoff(&self) -> bool {
        false
    }

    fn primary_info(&self) -> BoxFuture<'_, Result<PrimaryInfo, LeaseError>> {
        let result = self.primary().ok_or(LeaseError::NoPrimary);
        Box::pin(std::future::ready(result))
    }

    fn watch(&self) -> BoxFuture<'_, Result<Box<dyn PrimaryWatch>, LeaseError>> {
        let watch: Box<dyn PrimaryWatch> = Box::new(StaticWatch {
            primary: Some(self.primary()),
        });
        Box::pin(std::future::ready(Ok(watch)))
    }

    fn cluster_id(&self) -> BoxFuture<'_, Result<Option<String>, LeaseError>> {
        Box::pin(std::future::ready(Ok(None)))
    }

    fn set_cluster_id<'a>(&'a self, _id: &'a str) -> BoxFuture<'a, Result<(), LeaseError>> {
        Box::pin(std::future::ready(Ok(())))
    }
}

impl Lease for StaticLease {
    fn id(&self) -> &str {
        "static"
    }

    fn epoch(&self) -> u64 {
        1
    }

    fn ttl(&self) -> Duration {
        STATIC_TTL
    }

    fn renew(&self) -> BoxFuture<'_, Result<(), LeaseError>> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn release(&self) -> BoxFuture<'_, Result<(), LeaseError>> {
        Box::pin(std::future::ready(Ok(())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::task::{Context, Poll, Waker};

    /// Runs a future that a static lease completes at once.
    fn now<T>(future: impl Future<Output = T>) -> T {
        let mut future = std::pin::pin!(future);
        match future
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
        {
            Poll::Ready(value) => value,
            Poll::Pending => panic!("a static lease never waits"),
        }
    }

    #[test]
    fn the_candidate_is_primary_for_ever() {
        let leaser = StaticLeaser::new(true, "node-a", "http://node-a:20202");
        let lease = now(leaser.acquire()).unwrap();
        assert_eq!(lease.ttl(), STATIC_TTL);
        assert_eq!(now(lease.renew()), Ok(()));
        assert_eq!(now(leaser.primary_info()), Err(LeaseError::NoPrimary));
        assert_eq!(leaser.advertise_url(), "http://node-a:20202");
    }

    #[test]
    fn a_replica_never_acquires_and_follows_the_configured_primary() {
        let leaser = StaticLeaser::new(false, "node-a", "http://node-a:20202");
        assert!(matches!(
            now(leaser.acquire()),
            Err(LeaseError::PrimaryExists)
        ));
        let info = now(leaser.primary_info()).unwrap();
        assert_eq!(info.hostname, "node-a");
        assert_eq!(info.advertise_url, "http://node-a:20202");
        assert_eq!(leaser.advertise_url(), "");
    }

    #[test]
    fn the_watch_returns_the_primary_once_and_then_waits() {
        let leaser = StaticLeaser::new(false, "node-a", "http://node-a:20202");
        let mut watch = now(leaser.watch()).unwrap();
        let first = now(watch.next()).unwrap().unwrap();
        assert_eq!(first.hostname, "node-a");
        let mut second = watch.next();
        assert!(second
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
            .is_pending());

        let primary = StaticLeaser::new(true, "node-a", "http://node-a:20202");
        let mut watch = now(primary.watch()).unwrap();
        assert_eq!(now(watch.next()), Ok(None));
    }

    #[test]
    fn a_static_lease_cannot_be_handed_off() {
        let leaser = StaticLeaser::new(false, "node-a", "http://node-a:20202");
        assert!(matches!(
            now(leaser.acquire_existing("static")),
            Err(LeaseError::Unsupported { .. })
        ));
    }

    #[test]
    fn primary_info_serializes_with_litefs_keys() {
        let info = PrimaryInfo {
            hostname: "h".into(),
            advertise_url: "http://h:1".into(),
        };
        let json = serde_json::to_string(&info).unwrap();
        assert_eq!(json, r#"{"hostname":"h","advertise-url":"http://h:1"}"#);
    }
}
