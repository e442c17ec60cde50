//! Runs the role state machine against a lease backend, the mount and the follower.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ltxd_lease::{Lease, LeaseError, Leaser, PrimaryInfo, PrimaryWatch};
use ltxd_protocol::Connector;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{Command, EpochFile, Input, Role, RoleMachine};
use crate::mount::Applier;
use crate::replication::{Follower, FollowerOptions, NodeState};

/// What the driver needs besides the lease.
pub struct NodeParts {
    /// The mount's handle for applying and for switching writability.
    pub applier: Applier,
    /// The node's shared state.
    pub node: Arc<NodeState>,
    /// The highest lease epoch seen.
    pub epochs: Arc<EpochFile>,
    /// How replicas reach the primary.
    pub connector: Arc<dyn Connector>,
    /// The first reconnect delay of a follower.
    pub reconnect_delay: Duration,
}

/// Drives a node's role until shutdown.
pub struct NodeDriver {
    leaser: Arc<dyn Leaser>,
    machine: RoleMachine,
    parts: NodeParts,
    lease: Option<Box<dyn Lease>>,
    follower: Option<(watch::Sender<bool>, JoinHandle<()>)>,
    decided: watch::Sender<bool>,
}

impl NodeDriver {
    /// A driver for a node on `leaser`. `candidate` nodes race for the lease.
    pub fn new(leaser: Arc<dyn Leaser>, candidate: bool, parts: NodeParts) -> NodeDriver {
        let machine = RoleMachine::new(candidate, leaser.hostname(), Duration::from_millis(500));
        NodeDriver {
            leaser,
            machine,
            parts,
            lease: None,
            follower: None,
            decided: watch::Sender::new(false),
        }
    }

    /// Turns true once the node knows its first role (primary, or a replica of a known primary).
    pub fn decided(&self) -> watch::Receiver<bool> {
        self.decided.subscribe()
    }

    /// Runs until `shutdown` turns true; then releases the lease if it holds it.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut pending: VecDeque<Command> = self.machine.on(Input::Start, Instant::now()).into();
        let mut primary_watch: Option<Box<dyn PrimaryWatch>> = None;
        let mut next_renewal: Option<Instant> = None;
        loop {
            while let Some(command) = pending.pop_front() {
                tracing::debug!(?command, "role command");
                for input in self.execute(command).await {
                    pending.extend(self.machine.on(input, Instant::now()));
                }
            }
            match self.machine.role() {
                Role::Stopped => break,
                Role::Primary { .. } | Role::Replica { primary: Some(_) } => {
                    self.decided
                        .send_if_modified(|decided| !std::mem::replace(decided, true));
                }
                _ => {}
            }
            if matches!(self.machine.role(), Role::Primary { .. }) {
                if next_renewal.is_none() {
                    next_renewal = self.machine.renew_interval().map(|i| Instant::now() + i);
                }
            } else {
                next_renewal = None;
            }
            if primary_watch.is_none() {
                match self.leaser.watch().await {
                    Ok(watch) => primary_watch = Some(watch),
                    Err(err) => tracing::warn!(%err, "cannot watch the lease"),
                }
            }
            let deadline = self
                .machine
                .next_deadline()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            let input = tokio::select! {
                _ = shutdown.changed() => Input::Shutdown,
                () = tokio::time::sleep_until(deadline.into()) => Input::Tick,
                () = sleep_until_option(next_renewal) => {
                    next_renewal = None;
                    self.renew().await
                }
                change = next_change(&mut primary_watch) => match change {
                    Ok(primary) => Input::PrimaryIs(primary),
                    Err(err) => {
                        tracing::warn!(%err, "the lease watch failed");
                        primary_watch = None;
                        Input::BackendFailed
                    }
                },
            };
            tracing::debug!(?input, role = ?self.machine.role(), "role input");
            pending.extend(self.machine.on(input, Instant::now()));
        }
        self.stop_following().await;
    }

    /// Renews the lease, within a third of its TTL.
    async fn renew(&self) -> Input {
        let Some(lease) = &self.lease else {
            return Input::LeaseLost;
        };
        let limit = lease.ttl() / 3;
        match tokio::time::timeout(limit, lease.renew()).await {
            Ok(Ok(())) => Input::Renewed,
            Ok(Err(LeaseError::Expired)) => {
                tracing::error!("the lease was lost");
                Input::LeaseLost
            }
            Ok(Err(err)) => {
                tracing::warn!(%err, "cannot renew the lease");
                Input::BackendFailed
            }
            Err(_) => {
                tracing::warn!("renewing the lease timed out");
                Input::BackendFailed
            }
        }
    }

    /// Carries out one command; returns what it learned.
    async fn execute(&mut self, command: Command) -> Vec<Input> {
        match command {
            Command::TryAcquire => match self.leaser.acquire().await {
                Ok(lease) => {
                    let (epoch, ttl) = (lease.epoch(), lease.ttl());
                    if let Err(err) = self.parts.epochs.observe(epoch) {
                        tracing::error!(%err, "refusing a lease older than an epoch already seen");
                        let _ = lease.release().await;
                        return vec![Input::BackendFailed];
                    }
                    self.lease = Some(lease);
                    vec![Input::Acquired { epoch, ttl }]
                }
                Err(LeaseError::PrimaryExists) => vec![self.look_up().await],
                Err(err) => {
                    tracing::warn!(%err, "cannot acquire the lease");
                    vec![Input::BackendFailed]
                }
            },
            Command::LookUpPrimary => vec![self.look_up().await],
            Command::MakeReadOnly => {
                self.parts.applier.set_writable(false);
                self.parts.node.become_replica(None);
                tracing::warn!("demoted: writes are refused");
                Vec::new()
            }
            Command::MakeWritable { epoch } => {
                self.parts
                    .node
                    .become_primary(self.leaser.hostname(), Some(epoch));
                self.parts.applier.set_writable(true);
                tracing::info!(epoch, "primary: writes are accepted");
                Vec::new()
            }
            Command::Follow(primary) => {
                self.stop_following().await;
                self.follow(primary);
                Vec::new()
            }
            Command::StopFollowing => {
                self.stop_following().await;
                Vec::new()
            }
            Command::ReleaseLease => {
                if let Some(lease) = self.lease.take() {
                    match lease.release().await {
                        Ok(()) => tracing::info!("lease released"),
                        Err(err) => tracing::warn!(%err, "cannot release the lease"),
                    }
                }
                Vec::new()
            }
        }
    }

    /// Asks the backend who the primary is.
    async fn look_up(&self) -> Input {
        match self.leaser.primary_info().await {
            Ok(primary) => Input::PrimaryIs(Some(primary)),
            Err(LeaseError::NoPrimary) => Input::BackendFailed,
            Err(err) => {
                tracing::warn!(%err, "cannot learn the primary");
                Input::BackendFailed
            }
        }
    }

    fn follow(&mut self, primary: PrimaryInfo) {
        tracing::info!(
            primary = primary.hostname,
            url = primary.advertise_url,
            "following"
        );
        self.parts
            .node
            .become_replica(Some(primary.hostname.clone()));
        let follower = Follower::new(
            self.parts.applier.clone(),
            Arc::clone(&self.parts.epochs),
            Arc::clone(&self.parts.connector),
            Arc::clone(&self.parts.node),
            FollowerOptions {
                stream_per_database: crate::replication::SchemeConnector::is_quic(
                    &primary.advertise_url,
                ),
                primary_url: primary.advertise_url,
                reconnect_delay: self.parts.reconnect_delay,
                max_backoff: Duration::from_secs(5),
            },
        );
        let (stop, stopped) = watch::channel(false);
        self.follower = Some((stop, tokio::spawn(follower.run(stopped))));
    }

    async fn stop_following(&mut self) {
        if let Some((stop, task)) = self.follower.take() {
            let _ = stop.send(true);
            let _ = task.await;
        }
    }
}

async fn sleep_until_option(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

async fn next_change(
    watch: &mut Option<Box<dyn PrimaryWatch>>,
) -> Result<Option<PrimaryInfo>, LeaseError> {
    match watch {
        Some(watch) => watch.next().await,
        None => std::future::pending().await,
    }
}
