//! The role state machine. See the module documentation of [`crate::node`].

use std::time::{Duration, Instant};

use ltxd_lease::PrimaryInfo;

/// What the node is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// Deciding: no lease and no primary known yet.
    Starting,
    /// Holding the lease of `epoch`: the mount is writable.
    Primary {
        /// The lease's epoch.
        epoch: u64,
    },
    /// Following `primary` (or waiting for one, when `None`): the mount is read-only.
    Replica {
        /// The primary being followed.
        primary: Option<PrimaryInfo>,
    },
    /// Shut down.
    Stopped,
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// The node starts.
    Start,
    /// This node acquired the lease.
    Acquired {
        /// The lease's epoch.
        epoch: u64,
        /// How long it lasts without renewal.
        ttl: Duration,
    },
    /// The lease was renewed.
    Renewed,
    /// The lease is gone (renewal said so, or another node holds it).
    LeaseLost,
    /// Another node is primary, or (`None`) no node is.
    PrimaryIs(Option<PrimaryInfo>),
    /// An attempt to reach the lease backend failed; try again later.
    BackendFailed,
    /// Time passed; see [`RoleMachine::next_deadline`].
    Tick,
    /// SIGINT or SIGTERM.
    Shutdown,
    /// `POST /handoff`: hand the lease to the replica `node_id`.
    HandoffRequested {
        /// The replica's node ID.
        node_id: u64,
    },
    /// The lease was handed over: the replica's stream is sending it.
    HandedOff,
    /// The handoff did not happen; this node still holds the lease.
    HandoffFailed,
    /// The primary handed its lease, `lease_id`, to this node.
    LeaseOffered {
        /// The lease to take over.
        lease_id: String,
    },
}

/// What the driver does, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Try to acquire the lease (answer with `Acquired`, `PrimaryIs` or `BackendFailed`).
    TryAcquire,
    /// Ask the backend who the primary is (answer with `PrimaryIs` or `BackendFailed`).
    LookUpPrimary,
    /// Refuse writes from now on. Always comes before anything else in a demotion.
    MakeReadOnly,
    /// Accept writes, as primary with this epoch.
    MakeWritable {
        /// The lease's epoch.
        epoch: u64,
    },
    /// Follow this primary (replacing any current subscription).
    Follow(PrimaryInfo),
    /// Stop following.
    StopFollowing,
    /// Release the lease so that another node can take over at once.
    ReleaseLease,
    /// Let in-flight transactions finish, refuse writes, and hand the lease to the replica
    /// `node_id` (answer with `HandedOff`, `HandoffFailed` or `LeaseLost`).
    HandOff {
        /// The replica's node ID.
        node_id: u64,
    },
    /// Once this replica has everything `primary` has, take over the lease it handed to this
    /// node (answer with `Acquired` or `BackendFailed`).
    TakeOver {
        /// The lease's ID.
        lease_id: String,
        /// The primary that handed it over.
        primary: PrimaryInfo,
    },
}

/// The machine's timing.
#[derive(Clone, Copy, Debug)]
pub struct Delays {
    /// How long to wait before trying the backend again after a failure.
    pub retry: Duration,
    /// How long a primary that handed its lease away waits before it may try for the lease
    /// again (`lease.demote-delay`).
    pub demote: Duration,
}

/// The node's role logic.
#[derive(Debug)]
pub struct RoleMachine {
    candidate: bool,
    hostname: String,
    role: Role,
    /// While primary: the lease's TTL, and the instant after which it may have expired.
    lease: Option<(Duration, Instant)>,
    /// When to retry the backend (acquire or look up), after a failure or while nobody is
    /// primary.
    retry_at: Option<Instant>,
    /// After a handoff: no attempt to acquire before this instant.
    hold_until: Option<Instant>,
    delays: Delays,
}

impl RoleMachine {
    /// A machine for a node that may (`candidate`) or may not become primary. `hostname` is
    /// this node's, so that it recognizes itself in the primary's info.
    pub fn new(candidate: bool, hostname: &str, delays: Delays) -> RoleMachine {
        RoleMachine {
            candidate,
            hostname: hostname.to_string(),
            role: Role::Starting,
            lease: None,
            retry_at: None,
            hold_until: None,
            delays,
        }
    }

    /// The current role.
    pub fn role(&self) -> &Role {
        &self.role
    }

    /// When the driver must send [`Input::Tick`] at the latest.
    pub fn next_deadline(&self) -> Option<Instant> {
        let expiry = self.lease.map(|(_, expiry)| expiry);
        match (expiry, self.retry_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// How often a primary renews: a third of the TTL.
    pub fn renew_interval(&self) -> Option<Duration> {
        self.lease.map(|(ttl, _)| ttl / 3)
    }

    /// The lease is good until this long before its TTL runs out from the last renewal.
    fn safety_margin(ttl: Duration) -> Duration {
        (ttl / 5).max(Duration::from_millis(100)).min(ttl / 2)
    }

    /// Handles `input` at `now`, returning the commands to run in order.
    pub fn on(&mut self, input: Input, now: Instant) -> Vec<Command> {
        if self.role == Role::Stopped {
            return Vec::new();
        }
        match input {
            Input::Start => self.seek(now),
            Input::Acquired { epoch, ttl } => {
                self.lease = Some((ttl, now + ttl - Self::safety_margin(ttl)));
                self.retry_at = None;
                let was_following = matches!(self.role, Role::Replica { primary: Some(_) });
                self.role = Role::Primary { epoch };
                let mut commands = Vec::new();
                if was_following {
                    commands.push(Command::StopFollowing);
                }
                commands.push(Command::MakeWritable { epoch });
                commands
            }
            Input::Renewed => {
                if let Some((ttl, expiry)) = &mut self.lease {
                    *expiry = now + *ttl - Self::safety_margin(*ttl);
                }
                Vec::new()
            }
            Input::LeaseLost => self.demote(now),
            Input::PrimaryIs(Some(info)) if self.candidate && info.hostname == self.hostname => {
                // Our own entry: a lease of ours that we no longer hold (a restart before it
                // expired). Wait for it to expire, then acquire. (A static replica names the
                // primary's hostname as its own, so this applies to candidates only.)
                if matches!(self.role, Role::Primary { .. }) {
                    return Vec::new();
                }
                self.retry_later(now);
                Vec::new()
            }
            Input::PrimaryIs(Some(info)) => {
                let mut commands = Vec::new();
                if matches!(self.role, Role::Primary { .. }) {
                    commands.extend(self.demote_quietly());
                }
                self.retry_at = None;
                if self.role
                    != (Role::Replica {
                        primary: Some(info.clone()),
                    })
                {
                    self.role = Role::Replica {
                        primary: Some(info.clone()),
                    };
                    commands.push(Command::Follow(info));
                }
                commands
            }
            Input::PrimaryIs(None) => {
                if matches!(self.role, Role::Primary { .. }) {
                    return Vec::new();
                }
                self.seek(now)
            }
            Input::BackendFailed => {
                if !matches!(self.role, Role::Primary { .. }) {
                    self.retry_later(now);
                }
                Vec::new()
            }
            Input::Tick => {
                if let Some((_, expiry)) = self.lease {
                    if now >= expiry {
                        return self.demote(now);
                    }
                }
                match self.retry_at {
                    Some(at) if now >= at => {
                        self.retry_at = None;
                        self.seek(now)
                    }
                    _ => Vec::new(),
                }
            }
            Input::Shutdown => {
                let mut commands = Vec::new();
                if matches!(self.role, Role::Primary { .. }) {
                    commands.push(Command::MakeReadOnly);
                    commands.push(Command::ReleaseLease);
                }
                if matches!(self.role, Role::Replica { primary: Some(_) }) {
                    commands.push(Command::StopFollowing);
                }
                self.role = Role::Stopped;
                self.lease = None;
                self.retry_at = None;
                commands
            }
            Input::HandoffRequested { node_id } => match self.role {
                Role::Primary { .. } => vec![Command::HandOff { node_id }],
                _ => Vec::new(),
            },
            Input::HandedOff => {
                if matches!(self.role, Role::Primary { .. }) {
                    // Not released: the replica holds it now. Keep away from it for a while,
                    // then look for the new primary (the watch usually names it first).
                    self.lease = None;
                    self.role = Role::Replica { primary: None };
                    self.hold_until = Some(now + self.delays.demote);
                    self.retry_at = self.hold_until;
                }
                Vec::new()
            }
            Input::HandoffFailed => match self.role {
                Role::Primary { epoch } => vec![Command::MakeWritable { epoch }],
                _ => Vec::new(),
            },
            Input::LeaseOffered { lease_id } => match &self.role {
                Role::Replica {
                    primary: Some(primary),
                } if self.candidate => vec![Command::TakeOver {
                    lease_id,
                    primary: primary.clone(),
                }],
                _ => Vec::new(),
            },
        }
    }

    /// Tries the backend again after the retry delay (or after a hold, if later).
    fn retry_later(&mut self, now: Instant) {
        let at = now + self.delays.retry;
        self.retry_at = Some(self.hold_until.map_or(at, |hold| hold.max(at)));
    }

    /// Looks for a role: a candidate tries to acquire (unless it handed the lease away moments
    /// ago), anyone else asks who the primary is.
    fn seek(&mut self, now: Instant) -> Vec<Command> {
        match self.hold_until {
            Some(hold) if self.candidate && now < hold => {
                self.retry_at = Some(hold);
                return vec![Command::LookUpPrimary];
            }
            _ => self.hold_until = None,
        }
        if self.candidate {
            vec![Command::TryAcquire]
        } else {
            vec![Command::LookUpPrimary]
        }
    }

    /// Stops being primary without looking for a new role.
    fn demote_quietly(&mut self) -> Vec<Command> {
        self.lease = None;
        self.role = Role::Replica { primary: None };
        vec![Command::MakeReadOnly]
    }

    /// Stops being primary (writes refused first), then looks for the new primary.
    fn demote(&mut self, now: Instant) -> Vec<Command> {
        if !matches!(self.role, Role::Primary { .. }) {
            return Vec::new();
        }
        let mut commands = self.demote_quietly();
        commands.extend(self.seek(now));
        commands
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(10);

    fn info(host: &str) -> PrimaryInfo {
        PrimaryInfo {
            hostname: host.into(),
            advertise_url: format!("http://{host}:20202"),
        }
    }

    const DELAYS: Delays = Delays {
        retry: Duration::from_secs(1),
        demote: Duration::from_secs(10),
    };

    fn machine(candidate: bool) -> (RoleMachine, Instant) {
        (RoleMachine::new(candidate, "me", DELAYS), Instant::now())
    }

    #[test]
    fn a_candidate_that_wins_becomes_a_writable_primary() {
        let (mut m, t) = machine(true);
        assert_eq!(m.on(Input::Start, t), vec![Command::TryAcquire]);
        assert_eq!(
            m.on(Input::Acquired { epoch: 7, ttl: TTL }, t),
            vec![Command::MakeWritable { epoch: 7 }]
        );
        assert_eq!(m.role(), &Role::Primary { epoch: 7 });
        assert_eq!(m.renew_interval(), Some(TTL / 3));
    }

    #[test]
    fn a_candidate_that_loses_follows_and_a_non_candidate_never_acquires() {
        let (mut m, t) = machine(true);
        m.on(Input::Start, t);
        assert_eq!(
            m.on(Input::PrimaryIs(Some(info("a"))), t),
            vec![Command::Follow(info("a"))]
        );
        let (mut m, t) = machine(false);
        assert_eq!(m.on(Input::Start, t), vec![Command::LookUpPrimary]);
        assert_eq!(
            m.on(Input::PrimaryIs(None), t),
            vec![Command::LookUpPrimary]
        );
        assert_eq!(
            m.on(Input::PrimaryIs(Some(info("a"))), t),
            vec![Command::Follow(info("a"))]
        );
        assert_eq!(m.on(Input::PrimaryIs(Some(info("a"))), t), vec![]);
    }

    #[test]
    fn a_primary_demotes_itself_before_its_lease_can_expire_without_news() {
        let (mut m, t) = machine(true);
        m.on(Input::Start, t);
        m.on(Input::Acquired { epoch: 1, ttl: TTL }, t);
        let deadline = m.next_deadline().unwrap();
        assert!(
            deadline < t + TTL,
            "the lease is trusted for less than its TTL"
        );
        assert_eq!(
            m.on(Input::Tick, deadline - Duration::from_millis(1)),
            vec![]
        );
        m.on(Input::Renewed, t + Duration::from_secs(3));
        assert!(m.next_deadline().unwrap() > deadline, "renewal extends it");
        let later = m.next_deadline().unwrap();
        assert_eq!(
            m.on(Input::Tick, later),
            vec![Command::MakeReadOnly, Command::TryAcquire]
        );
        assert_eq!(m.role(), &Role::Replica { primary: None });
    }

    #[test]
    fn losing_the_lease_refuses_writes_first_then_follows_the_new_primary() {
        let (mut m, t) = machine(true);
        m.on(Input::Acquired { epoch: 1, ttl: TTL }, t);
        assert_eq!(
            m.on(Input::LeaseLost, t),
            vec![Command::MakeReadOnly, Command::TryAcquire]
        );
        assert_eq!(
            m.on(Input::PrimaryIs(Some(info("b"))), t),
            vec![Command::Follow(info("b"))]
        );
        let (mut m, t) = machine(true);
        m.on(Input::Acquired { epoch: 1, ttl: TTL }, t);
        assert_eq!(
            m.on(Input::PrimaryIs(Some(info("b"))), t),
            vec![Command::MakeReadOnly, Command::Follow(info("b"))],
            "seeing another primary demotes at once"
        );
    }

    #[test]
    fn a_replica_whose_primary_vanished_races_for_the_lease() {
        let (mut m, t) = machine(true);
        m.on(Input::PrimaryIs(Some(info("a"))), t);
        assert_eq!(m.on(Input::PrimaryIs(None), t), vec![Command::TryAcquire]);
        assert_eq!(
            m.on(Input::Acquired { epoch: 2, ttl: TTL }, t),
            vec![Command::StopFollowing, Command::MakeWritable { epoch: 2 }]
        );
    }

    #[test]
    fn backend_failures_are_retried_after_the_delay() {
        let (mut m, t) = machine(true);
        m.on(Input::Start, t);
        assert_eq!(m.on(Input::BackendFailed, t), vec![]);
        let at = m.next_deadline().unwrap();
        assert_eq!(at, t + Duration::from_secs(1));
        assert_eq!(m.on(Input::Tick, at), vec![Command::TryAcquire]);
    }

    #[test]
    fn shutdown_releases_the_lease_after_refusing_writes() {
        let (mut m, t) = machine(true);
        m.on(Input::Acquired { epoch: 1, ttl: TTL }, t);
        assert_eq!(
            m.on(Input::Shutdown, t),
            vec![Command::MakeReadOnly, Command::ReleaseLease]
        );
        assert_eq!(m.role(), &Role::Stopped);
        assert_eq!(m.on(Input::PrimaryIs(None), t), vec![]);
        let (mut m, t) = machine(false);
        m.on(Input::PrimaryIs(Some(info("a"))), t);
        assert_eq!(m.on(Input::Shutdown, t), vec![Command::StopFollowing]);
    }

    #[test]
    fn our_own_stale_entry_is_waited_out() {
        let (mut m, t) = machine(true);
        m.on(Input::Start, t);
        assert_eq!(m.on(Input::PrimaryIs(Some(info("me"))), t), vec![]);
        let at = m.next_deadline().unwrap();
        assert_eq!(m.on(Input::Tick, at), vec![Command::TryAcquire]);
    }

    #[test]
    fn a_handoff_keeps_the_lease_unreleased_and_holds_off_before_seeking_it() {
        let (mut m, t) = machine(true);
        m.on(Input::Acquired { epoch: 3, ttl: TTL }, t);
        assert_eq!(
            m.on(Input::HandoffRequested { node_id: 9 }, t),
            vec![Command::HandOff { node_id: 9 }]
        );
        assert_eq!(m.on(Input::HandedOff, t), vec![]);
        assert_eq!(m.role(), &Role::Replica { primary: None });
        assert_eq!(m.renew_interval(), None, "no renewals after a handoff");
        // Our own entry lingers until the new primary takes over: no acquire during the hold.
        assert_eq!(m.on(Input::PrimaryIs(Some(info("me"))), t), vec![]);
        assert_eq!(m.next_deadline(), Some(t + DELAYS.demote));
        assert_eq!(
            m.on(Input::PrimaryIs(None), t),
            vec![Command::LookUpPrimary]
        );
        assert_eq!(
            m.on(Input::PrimaryIs(Some(info("b"))), t),
            vec![Command::Follow(info("b"))]
        );
        // After the hold, it is a candidate like any other.
        let (mut m, t) = machine(true);
        m.on(Input::Acquired { epoch: 3, ttl: TTL }, t);
        m.on(Input::HandedOff, t);
        let later = t + DELAYS.demote;
        assert_eq!(m.on(Input::Tick, later), vec![Command::TryAcquire]);
    }

    #[test]
    fn a_failed_handoff_makes_the_primary_writable_again() {
        let (mut m, t) = machine(true);
        m.on(Input::Acquired { epoch: 3, ttl: TTL }, t);
        m.on(Input::HandoffRequested { node_id: 9 }, t);
        assert_eq!(
            m.on(Input::HandoffFailed, t),
            vec![Command::MakeWritable { epoch: 3 }]
        );
        assert_eq!(m.role(), &Role::Primary { epoch: 3 });
        let (mut m, t) = machine(true);
        m.on(Input::PrimaryIs(Some(info("a"))), t);
        assert_eq!(m.on(Input::HandoffRequested { node_id: 9 }, t), vec![]);
        assert_eq!(
            m.on(Input::HandoffFailed, t),
            vec![],
            "a replica ignores it"
        );
    }

    #[test]
    fn an_offered_lease_is_taken_over_by_candidates_only() {
        let (mut m, t) = machine(true);
        m.on(Input::PrimaryIs(Some(info("a"))), t);
        assert_eq!(
            m.on(
                Input::LeaseOffered {
                    lease_id: "l".into()
                },
                t
            ),
            vec![Command::TakeOver {
                lease_id: "l".into(),
                primary: info("a")
            }]
        );
        assert_eq!(
            m.on(Input::Acquired { epoch: 4, ttl: TTL }, t),
            vec![Command::StopFollowing, Command::MakeWritable { epoch: 4 }]
        );
        let (mut m, t) = machine(false);
        m.on(Input::PrimaryIs(Some(info("a"))), t);
        assert_eq!(
            m.on(
                Input::LeaseOffered {
                    lease_id: "l".into()
                },
                t
            ),
            vec![]
        );
    }
}
