//! Runs the role state machine against a lease backend, the mount and the follower.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ltxd_lease::{Lease, LeaseError, Leaser, PrimaryInfo, PrimaryWatch};
use ltxd_protocol::{Connector, Refusal};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::{Backoff, ClusterIdFile, Command, Delays, EpochFile, Input, Role, RoleMachine};
use crate::mount::Applier;
use crate::replication::{
    Follower, FollowerOptions, HandoffInbox, HandoffRequest, Handoffs, NodeState,
};

/// The first delay before a failed lease watch is tried again; it doubles up to
/// [`WATCH_RETRY_MAX`].
const WATCH_RETRY_FIRST: Duration = Duration::from_millis(500);
/// The longest delay between attempts to watch an unreachable lease backend.
const WATCH_RETRY_MAX: Duration = Duration::from_secs(30);
/// How long a handoff lets in-flight write transactions finish.
const DRAIN_WAIT: Duration = Duration::from_secs(2);
/// How long a handoff waits for the replica's stream to catch it up and send the lease.
const SEND_LEASE_WAIT: Duration = Duration::from_secs(5);
/// How long a replica offered the lease waits to have everything the old primary has.
const CATCH_UP_WAIT: Duration = Duration::from_secs(10);

/// What the driver needs besides the lease.
pub struct NodeParts {
    /// The mount's handle for applying and for switching writability.
    pub applier: Applier,
    /// The node's shared state.
    pub node: Arc<NodeState>,
    /// The highest lease epoch seen.
    pub epochs: Arc<EpochFile>,
    /// This node's cluster ID.
    pub cluster_id: Arc<ClusterIdFile>,
    /// How replicas reach the primary.
    pub connector: Arc<dyn Connector>,
    /// The first reconnect delay of a follower.
    pub reconnect_delay: Duration,
    /// How long a primary that handed its lease away keeps from trying for it again.
    pub demote_delay: Duration,
    /// The registry of replica streams, for handing the lease over.
    pub handoffs: Arc<Handoffs>,
    /// Handoff requests and offers for this driver.
    pub inbox: HandoffInbox,
}

/// Drives a node's role until shutdown.
pub struct NodeDriver {
    leaser: Arc<dyn Leaser>,
    machine: RoleMachine,
    parts: NodeParts,
    lease: Option<Box<dyn Lease>>,
    follower: Option<(watch::Sender<bool>, JoinHandle<()>)>,
    decided: watch::Sender<bool>,
    /// True once the node said why it may not lead, until it may.
    ineligible_logged: bool,
    /// The `/handoff` call waiting for the handoff in progress.
    handoff_reply: Option<tokio::sync::oneshot::Sender<Result<(), Refusal>>>,
}

impl NodeDriver {
    /// A driver for a node on `leaser`. `candidate` nodes race for the lease.
    pub fn new(leaser: Arc<dyn Leaser>, candidate: bool, parts: NodeParts) -> NodeDriver {
        let delays = Delays {
            retry: Duration::from_millis(500),
            demote: parts.demote_delay,
        };
        let machine = RoleMachine::new(candidate, leaser.hostname(), delays);
        NodeDriver {
            leaser,
            machine,
            parts,
            lease: None,
            follower: None,
            decided: watch::Sender::new(false),
            handoff_reply: None,
            ineligible_logged: false,
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
        // A failed watch is retried after a growing delay, so that an unreachable backend
        // costs a few lines a minute, not a busy loop.
        let mut watch_backoff = Backoff::new(WATCH_RETRY_FIRST, WATCH_RETRY_MAX);
        let mut watch_retry: Option<Instant> = None;
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
            if primary_watch.is_none() && watch_retry.is_none_or(|at| Instant::now() >= at) {
                watch_retry = None;
                match self.leaser.watch().await {
                    Ok(watch) => primary_watch = Some(watch),
                    Err(err) => {
                        let retry_in = watch_backoff.failed();
                        tracing::warn!(?retry_in, "cannot watch the lease: {err}");
                        watch_retry = Some(Instant::now() + retry_in);
                    }
                }
            }
            let deadline = self
                .machine
                .next_deadline()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            let input = tokio::select! {
                _ = shutdown.changed() => Input::Shutdown,
                Some(request) = self.parts.inbox.requests.recv() => match self.accept(request) {
                    Some(input) => input,
                    None => continue,
                },
                Some(lease_id) = self.parts.inbox.offers.recv() => Input::LeaseOffered { lease_id },
                () = tokio::time::sleep_until(deadline.into()) => Input::Tick,
                () = sleep_until_option(next_renewal) => {
                    next_renewal = None;
                    self.renew().await
                }
                () = sleep_until_option(watch_retry) => continue,
                change = next_change(&mut primary_watch) => match change {
                    Ok(primary) => {
                        watch_backoff.succeeded();
                        Input::PrimaryIs(primary)
                    }
                    Err(err) => {
                        let retry_in = watch_backoff.failed();
                        tracing::warn!(?retry_in, "the lease watch failed: {err}");
                        primary_watch = None;
                        watch_retry = Some(Instant::now() + retry_in);
                        Input::BackendFailed
                    }
                },
            };
            tracing::debug!(?input, role = ?self.machine.role(), "role input");
            pending.extend(self.machine.on(input, Instant::now()));
        }
        self.stop_following().await;
    }

    /// Takes a handoff request on, or answers it at once when it cannot be carried out.
    fn accept(&mut self, request: HandoffRequest) -> Option<Input> {
        let refusal = if !matches!(self.machine.role(), Role::Primary { .. }) {
            Some(Refusal::NotPrimary)
        } else if !self.leaser.supports_handoff() {
            Some(Refusal::Failed(format!(
                "the {} lease cannot be handed off",
                self.leaser.kind()
            )))
        } else {
            None
        };
        if let Some(refusal) = refusal {
            let _ = request.reply.send(Err(refusal));
            return None;
        }
        self.handoff_reply = Some(request.reply);
        Some(Input::HandoffRequested {
            node_id: request.node_id,
        })
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
            Command::TryAcquire => {
                let lease_cluster = match self.eligibility().await {
                    Ok(lease_cluster) => lease_cluster,
                    Err(input) => return vec![input],
                };
                match self.leaser.acquire().await {
                    Ok(lease) => vec![self.took(lease, lease_cluster.is_none()).await],
                    Err(LeaseError::PrimaryExists) => vec![self.look_up().await],
                    Err(err) => {
                        tracing::warn!(%err, "cannot acquire the lease");
                        vec![Input::BackendFailed]
                    }
                }
            }
            Command::LookUpPrimary => vec![self.look_up().await],
            Command::MakeReadOnly => {
                self.parts.applier.set_writable(false);
                self.parts.node.become_replica(None);
                if matches!(self.machine.role(), Role::Stopped) {
                    // A clean shutdown, not a lost lease.
                    tracing::info!("shutting down: writes are refused");
                } else {
                    tracing::warn!("demoted: writes are refused");
                }
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
            Command::HandOff { node_id } => {
                let span =
                    tracing::info_span!("handoff", to = ltxd_protocol::format_node_id(node_id));
                let result = self.hand_off(node_id).instrument(span).await;
                let input = match &result {
                    Ok(()) => Input::HandedOff,
                    Err(Refusal::NotPrimary) => Input::LeaseLost,
                    Err(_) => Input::HandoffFailed,
                };
                if let Some(reply) = self.handoff_reply.take() {
                    let _ = reply.send(result);
                }
                vec![input]
            }
            Command::TakeOver { lease_id, primary } => {
                let span = tracing::info_span!("take_over", from = primary.hostname);
                vec![self.take_over(&lease_id, &primary).instrument(span).await]
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

    /// Stops writes once in-flight transactions finish, renews the lease one last time, and has
    /// a stream to `node_id` send it (after every transaction). On success the lease is kept
    /// unreleased: the replica takes it over.
    async fn hand_off(&mut self, node_id: u64) -> Result<(), Refusal> {
        let node = ltxd_protocol::format_node_id(node_id);
        let applier = self.parts.applier.clone();
        let busy = tokio::task::spawn_blocking(move || applier.stop_writes_gracefully(DRAIN_WAIT))
            .await
            .unwrap_or_default();
        if !busy.is_empty() {
            tracing::warn!(
                ?busy,
                "writers still held these databases: their transactions were cut off"
            );
        }
        tracing::info!("writes stopped for the handoff");
        let Some(lease) = &self.lease else {
            return Err(Refusal::NotPrimary);
        };
        match self.renew().await {
            Input::Renewed => {}
            Input::LeaseLost => return Err(Refusal::NotPrimary),
            _ => return Err(Refusal::Failed("cannot renew the lease".into())),
        }
        let lease_id = lease.id().to_string();
        if !self
            .parts
            .handoffs
            .send_lease(node_id, &lease_id, SEND_LEASE_WAIT)
            .await
        {
            tracing::warn!("the replica did not take the lease in time: writes resume");
            return Err(Refusal::Failed(format!(
                "node {node} did not catch up within {SEND_LEASE_WAIT:?}"
            )));
        }
        // Dropped, not released: the replica renews the same lease from now on.
        self.lease = None;
        self.parts.node.become_replica(None);
        tracing::info!("the lease was handed over");
        Ok(())
    }

    /// Takes over the lease `lease_id` from `primary`, once this node has every transaction the
    /// primary has (it stopped writing before it handed the lease over).
    async fn take_over(&mut self, lease_id: &str, primary: &PrimaryInfo) -> Input {
        if let Err(why) = self.catch_up(&primary.advertise_url).await {
            tracing::error!(
                why,
                "refusing the handed-over lease: it would lose transactions"
            );
            return Input::BackendFailed;
        }
        match self.leaser.acquire_existing(lease_id).await {
            Ok(lease) => {
                tracing::info!(epoch = lease.epoch(), "took over the lease");
                self.took(lease, false).await
            }
            Err(err) => {
                tracing::warn!(%err, "cannot take over the handed-over lease");
                Input::BackendFailed
            }
        }
    }

    /// Waits until every database is where the primary at `url` has it.
    async fn catch_up(&self, url: &str) -> Result<(), String> {
        let deadline = Instant::now() + CATCH_UP_WAIT;
        loop {
            let info = self
                .parts
                .connector
                .info(url)
                .await
                .map_err(|err| format!("cannot read the primary's positions: {err}"))?;
            let local = self.parts.applier.positions();
            let behind: Vec<&String> = info
                .databases
                .iter()
                .filter(|(name, status)| {
                    let pos = local.get(*name).copied().unwrap_or_default();
                    status.txid != format!("{:016x}", pos.txid.0)
                        || status.checksum != format!("{:016x}", pos.post_apply_checksum.0)
                })
                .map(|(name, _)| name)
                .collect();
            if behind.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "still behind in {behind:?} after {CATCH_UP_WAIT:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether this node may become primary of the lease's cluster: returns the lease's cluster
    /// ID, or (as the input to go on with) the primary's info when this node may not lead.
    async fn eligibility(&mut self) -> Result<Option<String>, Input> {
        let lease_cluster = match self.leaser.cluster_id().await {
            Ok(id) => id,
            Err(err) => {
                tracing::warn!(%err, "cannot read the cluster ID");
                return Err(Input::BackendFailed);
            }
        };
        let refusal = match (&lease_cluster, self.parts.cluster_id.get()) {
            (Some(remote), None) => Some(format!(
                "the lease belongs to cluster {remote}, which this node has not joined: it \
                 follows a primary before it may lead"
            )),
            (Some(remote), Some(local)) if *remote != local => Some(format!(
                "the lease belongs to cluster {remote}, this node to {local}: check lease.* \
                 and data.dir"
            )),
            _ => None,
        };
        match refusal {
            Some(why) => {
                if !std::mem::replace(&mut self.ineligible_logged, true) {
                    tracing::error!(why, "not trying for the lease");
                }
                Err(self.look_up().await)
            }
            None => {
                self.ineligible_logged = false;
                Ok(lease_cluster)
            }
        }
    }

    /// Takes a newly acquired lease on: checks its epoch and, when the lease has no cluster ID
    /// yet (`publish`), publishes this node's.
    async fn took(&mut self, lease: Box<dyn Lease>, publish: bool) -> Input {
        let (epoch, ttl) = (lease.epoch(), lease.ttl());
        if let Err(err) = self.parts.epochs.observe(epoch) {
            tracing::error!(%err, "refusing a lease older than an epoch already seen");
            let _ = lease.release().await;
            return Input::BackendFailed;
        }
        if publish {
            let published = match self.parts.cluster_id.get_or_generate() {
                Ok(id) => self
                    .leaser
                    .set_cluster_id(&id)
                    .await
                    .map_err(|err| err.to_string()),
                Err(err) => Err(err.to_string()),
            };
            if let Err(err) = published {
                tracing::error!(err, "cannot publish the cluster ID: giving the lease back");
                let _ = lease.release().await;
                return Input::BackendFailed;
            }
        }
        self.lease = Some(lease);
        Input::Acquired { epoch, ttl }
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
        self.parts.node.become_replica(Some(&primary));
        let follower = Follower::new(
            self.parts.applier.clone(),
            Arc::clone(&self.parts.epochs),
            Arc::clone(&self.parts.cluster_id),
            Arc::clone(&self.parts.connector),
            Arc::clone(&self.parts.node),
            Arc::clone(&self.parts.handoffs),
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
