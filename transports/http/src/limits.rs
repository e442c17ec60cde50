//! The server's limits against hostile, broken and overloaded clients, and the small state
//! machines that enforce them without I/O: when an idle connection is closed, how long the accept
//! loop waits after an error, and how often a repeated warning is logged.

use std::io;
use std::time::{Duration, Instant};

/// The most client connections served at once when the descriptor limit allows more.
const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// The fewest client connections a default allows, however low the descriptor limit.
const MIN_CONNECTIONS: usize = 16;
/// The first wait of the accept loop after a resource error (EMFILE, ENFILE, ...).
const FIRST_BACKOFF: Duration = Duration::from_millis(5);
/// The longest wait of the accept loop after resource errors.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// How often a repeated warning (accept failures, the connection limit) is logged.
pub(crate) const WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// How much of the node one client, and all clients together, may hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// How long a connection may take from its accept (or from the end of its last request) to a
    /// complete request header: a client that trickles half a header is closed after this.
    /// (`http.header-read-timeout`, 10 s.)
    pub header_read_timeout: Duration,
    /// How long a connection may stay open with no request in flight (`http.idle-timeout`,
    /// 60 s). A replication stream is a request in flight for as long as it lasts.
    pub idle_timeout: Duration,
    /// The most client connections open at once (`http.max-connections`). Beyond it the server
    /// stops accepting until one closes; new clients wait in the kernel's backlog. The default
    /// is [`default_max_connections`].
    pub max_connections: usize,
    /// The most `/stream` subscriptions one peer address may hold open at once
    /// (`http.max-streams-per-peer`, 64); more are refused with 429.
    pub max_streams_per_peer: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: default_max_connections(),
            max_streams_per_peer: 64,
        }
    }
}

/// The default connection cap: 1,024, or half of the process's soft `RLIMIT_NOFILE` when that is
/// lower (at least 16), so that connections never take the descriptors the mount needs to open
/// databases.
pub fn default_max_connections() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given.
    let descriptors = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX)
    } else {
        usize::MAX
    };
    connections_for_descriptors(descriptors)
}

/// The connection cap for a soft descriptor limit of `descriptors`.
fn connections_for_descriptors(descriptors: usize) -> usize {
    (descriptors / 2).clamp(MIN_CONNECTIONS, DEFAULT_MAX_CONNECTIONS)
}

/// When a connection that is not serving a request is closed.
#[derive(Clone, Debug)]
pub(crate) struct IdleClock {
    in_flight: usize,
    /// When the connection last had no request in flight: its accept, or its last request's end.
    idle_since: Instant,
    /// True once a request header has been read.
    served: bool,
}

impl IdleClock {
    /// A connection accepted at `now`.
    pub(crate) fn new(now: Instant) -> Self {
        IdleClock {
            in_flight: 0,
            idle_since: now,
            served: false,
        }
    }

    /// A request's header was read.
    pub(crate) fn request_started(&mut self) {
        self.in_flight += 1;
        self.served = true;
    }

    /// A request's response was sent in full, or dropped, at `now`.
    pub(crate) fn request_ended(&mut self, now: Instant) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if self.in_flight == 0 {
            self.idle_since = now;
        }
    }

    /// When the connection is to be closed unless a request starts before: `None` while a
    /// request is in flight. Before its first request a connection has `header_read_timeout`
    /// (a client that never completes a header is not a client); between requests it has
    /// `idle_timeout`.
    pub(crate) fn deadline(&self, limits: &HttpLimits) -> Option<Instant> {
        if self.in_flight > 0 {
            return None;
        }
        let allowed = if self.served {
            limits.idle_timeout
        } else {
            limits.header_read_timeout
        };
        Some(self.idle_since + allowed)
    }
}

/// How long the accept loop waits after an error before it accepts again.
#[derive(Clone, Debug, Default)]
pub(crate) struct AcceptBackoff {
    delay: Duration,
}

impl AcceptBackoff {
    /// A connection was accepted: the next error starts from the first wait again.
    pub(crate) fn accepted(&mut self) {
        self.delay = Duration::ZERO;
    }

    /// Accepting failed with `err`: how long to wait. An error about one connection (it was
    /// reset before it was accepted, a signal) needs no wait. Any other, above all a lack of
    /// descriptors or memory, waits, doubling up to 1 s, so that a full descriptor table is
    /// not retried in a busy loop while the connections that hold it close.
    pub(crate) fn failed(&mut self, err: &io::Error) -> Duration {
        if matches!(
            err.raw_os_error(),
            Some(libc::ECONNABORTED | libc::ECONNRESET | libc::EINTR | libc::EAGAIN | libc::EPROTO)
        ) {
            return Duration::ZERO;
        }
        self.delay = (self.delay * 2).clamp(FIRST_BACKOFF, MAX_BACKOFF);
        self.delay
    }
}

/// A warning that may repeat very often, logged at most once per interval with the number of
/// times it happened since it was last logged.
#[derive(Clone, Debug)]
pub(crate) struct RateLimitedWarning {
    interval: Duration,
    last: Option<Instant>,
    count: u64,
}

impl RateLimitedWarning {
    /// At most one line per `interval`.
    pub(crate) fn new(interval: Duration) -> Self {
        RateLimitedWarning {
            interval,
            last: None,
            count: 0,
        }
    }

    /// It happened at `now`: `Some(n)` when a line is due, `n` being how many times it happened
    /// since the last line (this time included).
    pub(crate) fn hit(&mut self, now: Instant) -> Option<u64> {
        self.count += 1;
        let due = self
            .last
            .is_none_or(|last| now.saturating_duration_since(last) >= self.interval);
        if !due {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.count))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> HttpLimits {
        HttpLimits {
            header_read_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(5),
            max_connections: 10,
            max_streams_per_peer: 2,
        }
    }

    #[test]
    fn the_connection_cap_is_half_the_descriptors_within_bounds() {
        assert_eq!(connections_for_descriptors(256), 128);
        assert_eq!(connections_for_descriptors(20_000), 1024);
        assert_eq!(connections_for_descriptors(10), 16);
        assert_eq!(connections_for_descriptors(usize::MAX), 1024);
        assert!(default_max_connections() >= MIN_CONNECTIONS);
    }

    #[test]
    fn a_connection_without_a_request_has_the_header_timeout_then_the_idle_timeout() {
        let start = Instant::now();
        let mut clock = IdleClock::new(start);
        assert_eq!(
            clock.deadline(&limits()),
            Some(start + Duration::from_secs(2))
        );
        clock.request_started();
        clock.request_started();
        assert_eq!(clock.deadline(&limits()), None);
        let later = start + Duration::from_secs(30);
        clock.request_ended(later);
        assert_eq!(
            clock.deadline(&limits()),
            None,
            "one request is still in flight"
        );
        let end = later + Duration::from_secs(1);
        clock.request_ended(end);
        assert_eq!(
            clock.deadline(&limits()),
            Some(end + Duration::from_secs(5))
        );
    }

    #[test]
    fn accept_waits_double_on_resource_errors_and_reset_on_success() {
        let mut backoff = AcceptBackoff::default();
        let emfile = io::Error::from_raw_os_error(libc::EMFILE);
        let waits: Vec<_> = (0..10).map(|_| backoff.failed(&emfile)).collect();
        assert_eq!(waits[0], FIRST_BACKOFF);
        assert_eq!(waits[1], FIRST_BACKOFF * 2);
        assert_eq!(waits[9], MAX_BACKOFF);
        let aborted = io::Error::from_raw_os_error(libc::ECONNABORTED);
        assert_eq!(backoff.failed(&aborted), Duration::ZERO);
        backoff.accepted();
        let enfile = io::Error::from_raw_os_error(libc::ENFILE);
        assert_eq!(backoff.failed(&enfile), FIRST_BACKOFF);
    }

    #[test]
    fn a_repeated_warning_is_logged_once_per_interval_with_its_count() {
        let start = Instant::now();
        let mut warning = RateLimitedWarning::new(Duration::from_secs(10));
        assert_eq!(warning.hit(start), Some(1));
        for ms in 1..1000 {
            assert_eq!(warning.hit(start + Duration::from_millis(ms)), None);
        }
        assert_eq!(warning.hit(start + Duration::from_secs(10)), Some(1000));
        assert_eq!(warning.hit(start + Duration::from_secs(11)), None);
        assert_eq!(warning.hit(start + Duration::from_secs(20)), Some(2));
    }
}
