//! Run durability: leases, the heartbeat, fencing and recovery.
//!
//! Every process has a worker id. A run it creates or claims carries that id and a lease
//! expiry (`runs.worker_id`, `runs.lease_expires_at`); one UPDATE per heartbeat extends the
//! leases of all its pending and running runs. A run whose lease has expired belongs to a
//! process that died (or lost the database for longer than the lease): any process may adopt
//! it (compare-and-set, exactly one wins) and then resumes it from its last checkpoint, or
//! fails it when `runs.recovery: fail`.
//!
//! Fencing: a process knows until when its leases are certainly valid (the start of its last
//! successful renewal + TTL, minus a margin for clock skew). Past that instant another process
//! may adopt its runs, so it stops writing: a run's session refuses to commit its units
//! (`crate::session`), and the executor skips the final row writes. A step is therefore never
//! committed by two processes.
//!
//! Several replicas (issue 5): every process runs a control loop that, every
//! `poll_interval`, reads the cancel requests other replicas recorded on its runs (one query
//! for all of them) and claims queued runs (pending, no owner) while it has capacity. Each
//! process also keeps an entry in the replica registry (refreshed by the heartbeat), which is
//! how a second server on a database that cannot be shared is refused at startup and how
//! `/info` lists the live replicas.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use antler_store::{
    Owner, ReplicaInfo, Run, RunId, RunStatus, ThreadId, ThreadStatus, ThreadUpdate,
};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::executor::{Job, encode_error};
use crate::{RunCreate, RunHandle, Runtime, RuntimeError};

/// The backends of this process, as the replica registry and `/info` report them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaBackends {
    /// Database backend: `sqlite`, `postgres`, `mysql` or `memory`.
    pub database: String,
    /// Stream bridge: `memory` or `redis`.
    pub bridge: String,
    /// Whether the bridge is shared between processes (Redis): only then may several
    /// replicas serve one shared database (a stream must be readable from any replica).
    pub bridge_shared: bool,
}

/// What `/info` reports about the deployment.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ReplicaStatus {
    /// This process's replica (worker) id.
    pub replica_id: String,
    /// Database backend (None until [`Runtime::register_replica`] ran).
    pub database: Option<String>,
    /// Stream bridge kind (None until [`Runtime::register_replica`] ran).
    pub bridge: Option<String>,
    /// Pending runs in the database (the queue depth, all replicas).
    pub queue_depth: u64,
    /// Runs live in this process (pending or running).
    pub live_runs: usize,
    /// `runs.max_concurrent_runs` of this process (None = unbounded).
    pub max_concurrent_runs: Option<usize>,
    /// Replicas whose registry heartbeat is fresh.
    pub replicas: Vec<ReplicaInfo>,
}

/// Most queued runs claimed per poll.
const QUEUE_BATCH: usize = 16;

/// The host name (the registry tells processes of one host apart by pid).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
pub(crate) fn host_name_for_tests() -> String {
    host_name()
}

/// Whether process `pid` of this host is alive (Linux: `/proc/<pid>`; elsewhere presumed).
fn pid_alive(pid: i64) -> bool {
    if !std::path::Path::new("/proc/self").exists() {
        return true;
    }
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// What happens to a run whose process died (`runs.recovery`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Recovery {
    /// Resume it from its last checkpoint and run it to completion (default).
    #[default]
    Resume,
    /// Mark it `error` (`ServerRestart`).
    Fail,
}

impl Recovery {
    /// Parses the config spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "resume" => Some(Recovery::Resume),
            "fail" => Some(Recovery::Fail),
            _ => None,
        }
    }
}

/// This process's lease clock.
pub(crate) struct Lease {
    pub(crate) worker_id: String,
    ttl: Duration,
    epoch: Instant,
    /// Milliseconds since `epoch` until which our leases are certainly valid.
    valid_until_ms: AtomicU64,
}

impl Lease {
    pub(crate) fn new(worker_id: String, ttl: Duration) -> Self {
        let lease = Lease {
            worker_id,
            ttl,
            epoch: Instant::now(),
            valid_until_ms: AtomicU64::new(0),
        };
        lease.renewed(lease.epoch);
        lease
    }

    /// Skew allowance between processes' clocks and statement latency.
    fn margin(&self) -> Duration {
        (self.ttl / 10).min(Duration::from_secs(5))
    }

    /// Whether this process still certainly owns its runs.
    pub(crate) fn valid(&self) -> bool {
        (self.epoch.elapsed().as_millis() as u64) < self.valid_until_ms.load(Ordering::Acquire)
    }

    /// The expiry to write for a run created or claimed now.
    pub(crate) fn expiry(&self) -> DateTime<Utc> {
        Utc::now() + chrono::Duration::from_std(self.ttl).unwrap_or(chrono::Duration::MAX)
    }

    /// A renewal that started at `started` succeeded.
    fn renewed(&self, started: Instant) {
        let until = (started + self.ttl)
            .saturating_duration_since(self.epoch)
            .saturating_sub(self.margin());
        self.valid_until_ms
            .fetch_max(until.as_millis() as u64, Ordering::AcqRel);
    }

    fn heartbeat_every(&self) -> Duration {
        (self.ttl / 3).max(Duration::from_millis(100))
    }
}

/// What is left of a stored run's `after_seconds`, which counts from its creation (a queued or
/// adopted run may start long after it).
fn delay_left(run: &Run, request: &RunCreate) -> f64 {
    let waited = (Utc::now() - run.created_at).num_milliseconds().max(0) as f64 / 1000.0;
    (request.after_seconds - waited).max(0.0)
}

/// Most abandoned runs adopted per recovery pass.
const RECOVERY_BATCH: usize = 100;

impl Runtime {
    /// Whether this process still certainly owns its runs (see the module docs).
    pub fn lease_valid(&self) -> bool {
        self.lease.valid()
    }

    /// This process's worker id (run ownership).
    pub fn worker_id(&self) -> &str {
        &self.lease.worker_id
    }

    /// Startup recovery, then the heartbeat and the periodic recovery in the background.
    /// Call once, after the graphs and system assistants are registered.
    pub async fn start_durability(self: &Arc<Self>) {
        // A process that is alone on its database (SQLite, memory) knows at startup that
        // every in-flight run it did not create was abandoned: no need to wait for leases.
        let now = if self.config.exclusive {
            Utc::now() + chrono::Duration::days(36_500)
        } else {
            Utc::now()
        };
        self.recover_pass(now).await;
        self.bridge
            .listen_wakeups(&self.lease.worker_id, self.wake.clone());
        let rt = self.clone();
        self.tracker
            .spawn(async move { rt.durability_loop().await });
        let rt = self.clone();
        self.tracker.spawn(async move { rt.control_loop().await });
    }

    /// Enters this process in the replica registry, refusing to start beside another live
    /// replica when the deployment cannot be shared: a SQLite (or memory) database is one
    /// process's, and with the in-memory bridge a run's stream is visible only on the replica
    /// executing it. A replica is live when its registry heartbeat is younger than the run
    /// lease TTL (and, on this host, its process exists). Call once at startup, before
    /// [`start_durability`](Self::start_durability).
    pub async fn register_replica(&self, backends: ReplicaBackends) -> Result<(), RuntimeError> {
        let now = antler_store::time::now();
        let host = host_name();
        let shareable = !self.config.exclusive && backends.bridge_shared;
        if !shareable && let Some(other) = self.live_replicas(&host).await?.first() {
            return Err(self.refusal(other, &backends));
        }
        let me = ReplicaInfo {
            replica_id: self.lease.worker_id.clone(),
            started_at: now,
            heartbeat_at: now,
            host,
            pid: i64::from(std::process::id()),
            database: backends.database.clone(),
            bridge: backends.bridge.clone(),
        };
        self.stores.runs.heartbeat_replica(&me).await?;
        if !shareable {
            // Two servers started at the same instant may both have found the registry empty.
            // Now that our entry is in, look again: whoever sees another entry leaves. Of two
            // simultaneous starts at least one sees the other, so they never both stay (both
            // may leave; starting again then finds the registry clear).
            let first = self.live_replicas(&me.host).await?.into_iter().next();
            if let Some(other) = first {
                let _ = self
                    .stores
                    .runs
                    .remove_replica(&me.replica_id, now - chrono::Duration::days(1))
                    .await;
                return Err(self.refusal(&other, &backends));
            }
        }
        let _ = self.replica.set(me);
        Ok(())
    }

    /// The other replicas whose registry heartbeat is fresh (and, on this host, whose process
    /// exists).
    async fn live_replicas(&self, host: &str) -> Result<Vec<ReplicaInfo>, RuntimeError> {
        let ttl = chrono::Duration::from_std(self.config.lease_ttl)
            .unwrap_or(chrono::Duration::seconds(30));
        Ok(self
            .stores
            .runs
            .list_replicas(antler_store::time::now() - ttl)
            .await?
            .into_iter()
            .filter(|r| r.replica_id != self.lease.worker_id)
            .filter(|r| r.host != host || pid_alive(r.pid))
            .collect())
    }

    /// The refusal to start beside `other` on a deployment that cannot be shared.
    fn refusal(&self, other: &ReplicaInfo, backends: &ReplicaBackends) -> RuntimeError {
        let why = if self.config.exclusive {
            format!(
                "the {} database cannot be shared by several servers (use PostgreSQL or MySQL with the Redis stream bridge to run replicas)",
                backends.database
            )
        } else {
            "the in-memory stream bridge is not shared between servers (configure 'stream_bridge: {type: redis}' on every replica)".to_string()
        };
        RuntimeError::Conflict(format!(
            "another antler server (replica {} on host {}, pid {}, heartbeat {}) is using this database: {why}",
            other.replica_id,
            other.host,
            other.pid,
            other.heartbeat_at.to_rfc3339()
        ))
    }

    /// Refreshes this process's registry entry (each heartbeat).
    async fn beat_registry(&self) {
        let Some(me) = self.replica.get() else {
            return;
        };
        let left = self.registry_left.lock().await;
        if *left {
            return;
        }
        let mut me = me.clone();
        me.heartbeat_at = antler_store::time::now();
        if let Err(e) = self.stores.runs.heartbeat_replica(&me).await {
            tracing::warn!(error = %e, "replica registry heartbeat failed");
        }
    }

    /// Leaves the registry (clean shutdown), sweeping long-dead entries on the way.
    pub(crate) async fn deregister_replica(&self) {
        if self.replica.get().is_none() {
            return;
        }
        // after a heartbeat in flight, before any later one: the entry stays gone
        let mut left = self.registry_left.lock().await;
        *left = true;
        let stale = antler_store::time::now() - chrono::Duration::days(1);
        if let Err(e) = self
            .stores
            .runs
            .remove_replica(&self.lease.worker_id, stale)
            .await
        {
            tracing::warn!(error = %e, "cannot leave the replica registry");
        }
    }

    /// The deployment as `/info` reports it.
    pub async fn replica_status(&self) -> Result<ReplicaStatus, RuntimeError> {
        let me = self.replica.get();
        let ttl = chrono::Duration::from_std(self.config.lease_ttl)
            .unwrap_or(chrono::Duration::seconds(30));
        let replicas = if me.is_some() {
            self.stores
                .runs
                .list_replicas(antler_store::time::now() - ttl)
                .await?
        } else {
            Vec::new()
        };
        Ok(ReplicaStatus {
            replica_id: self.lease.worker_id.clone(),
            database: me.map(|m| m.database.clone()),
            bridge: me.map(|m| m.bridge.clone()),
            queue_depth: self.stores.runs.count_pending().await?,
            live_runs: self.live_count(),
            max_concurrent_runs: self.config.max_concurrent_runs,
            replicas,
        })
    }

    /// Every `poll_interval`: carry out cancel requests made on other replicas for our runs,
    /// and claim queued runs while there is capacity.
    async fn control_loop(self: Arc<Self>) {
        let mut ticker = tokio::time::interval(self.config.poll_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = ticker.tick() => {}
                _ = self.wake.notified() => {}
            }
            if !self.lease.valid() {
                continue;
            }
            if !self.config.exclusive {
                // only other replicas record cancel requests
                self.poll_cancel_requests().await;
            }
            self.claim_queued().await;
        }
    }

    /// One query for the cancel requests on all of this process's live runs.
    pub(crate) async fn poll_cancel_requests(&self) {
        let any_durable = self.live.lock().runs.values().any(|h| !h.ephemeral);
        if !any_durable {
            return;
        }
        let requests = match self
            .stores
            .runs
            .cancel_requests(&self.lease.worker_id)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read cancel requests");
                return;
            }
        };
        for (run_id, action) in requests {
            let handle = self.live.lock().runs.get(&run_id).cloned();
            if let Some(h) = handle
                && h.cancel_action().is_none()
            {
                tracing::info!(run_id, "cancel requested on another replica");
                h.request_cancel(action);
            }
        }
    }

    /// Claims queued runs up to this process's capacity and starts them.
    pub(crate) async fn claim_queued(self: &Arc<Self>) {
        if self.shutdown.is_cancelled() {
            return;
        }
        // Capacity counts executing runs: a local run waiting for its turn on a thread (maybe
        // behind a queued run of that thread) must not keep the queue from being served.
        let running = self.counters.running.load(Ordering::Relaxed).max(0) as usize;
        let room = match self.config.max_concurrent_runs {
            Some(max) => max.saturating_sub(running),
            None => QUEUE_BATCH,
        }
        .min(QUEUE_BATCH);
        if room == 0 {
            self.queue_backlog.store(true, Ordering::Relaxed);
            return;
        }
        let claimed = match self
            .stores
            .runs
            .claim_next(&self.lease.worker_id, self.lease.expiry(), room)
            .await
        {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot claim queued runs");
                return;
            }
        };
        self.queue_backlog
            .store(claimed.len() >= room, Ordering::Relaxed);
        if self.shutdown.is_cancelled() {
            // Shutdown began during the claim: starting the runs now would only interrupt
            // them. They stay running under this process's lease, which the next process (or
            // another replica, once it expires) adopts and resumes.
            return;
        }
        for run in claimed {
            match RunCreate::from_run(&run) {
                Ok(request) => self.start_claimed(run, request).await,
                Err(e) => {
                    tracing::warn!(run_id = %run.run_id, error = %e, "cannot rebuild a queued run's request");
                    self.fail_abandoned(&run).await;
                }
            }
        }
    }

    /// The handle of a durable run this process takes over (claimed from the queue, adopted):
    /// a cancel requested on its row meanwhile is carried over.
    fn stored_run_handle(&self, run: &Run) -> Arc<RunHandle> {
        let handle = self.new_handle(&run.run_id, &run.thread_id, &run.owner, false);
        if let Some(action) = run.cancel_requested {
            handle.request_cancel(action);
        }
        handle
    }

    /// Starts a run claimed from the queue (already `running` under our lease).
    async fn start_claimed(self: &Arc<Self>, run: Run, mut request: RunCreate) {
        request.after_seconds = delay_left(&run, &request);
        let handle = self.stored_run_handle(&run);
        {
            // The store guarantees no other run of the thread is running or older and
            // pending: it starts now, and later local runs of the thread queue behind it.
            let mut live = self.live.lock();
            live.runs.insert(run.run_id.clone(), handle.clone());
            live.tails
                .entry(handle.thread_key())
                .or_insert_with(|| handle.clone());
        }
        let _ = self
            .stores
            .threads
            .update(
                Owner(&run.owner),
                ThreadId(&run.thread_id),
                ThreadUpdate {
                    status: Some(ThreadStatus::Busy),
                    ..Default::default()
                },
            )
            .await;
        self.counters.pending.fetch_add(1, Ordering::Relaxed);
        let graph_id = run
            .metadata
            .get("graph_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let rt = self.clone();
        let job = Job {
            run,
            request,
            graph_id,
            handle,
            prev: None,
            thread_update: None,
            adopted: false,
            claimed: true,
        };
        self.tracker.spawn(async move { rt.execute(job).await });
    }

    async fn durability_loop(self: Arc<Self>) {
        let every = self.lease.heartbeat_every();
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut tick: u64 = 0;
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            tick += 1;
            let started = Instant::now();
            match self
                .stores
                .runs
                .renew_leases(&self.lease.worker_id, self.lease.expiry())
                .await
            {
                Ok(_) => self.lease.renewed(started),
                Err(e) => tracing::warn!(error = %e, "run lease renewal failed"),
            }
            self.beat_registry().await;
            if !self.lease.valid() {
                self.abandon_all();
            }
            // recovery every other heartbeat (ttl * 2/3)
            if tick.is_multiple_of(2) {
                self.recover_pass(Utc::now()).await;
            }
        }
    }

    /// The lease is lost: stop every live run at once (they will be adopted elsewhere).
    fn abandon_all(&self) {
        let live: Vec<Arc<RunHandle>> = self.live.lock().runs.values().cloned().collect();
        for h in live.iter().filter(|h| !h.ephemeral) {
            if !h.cancel.is_cancelled() {
                tracing::error!(run_id = %h.run_id, "run lease lost: stopping the run");
                h.cancel.cancel();
            }
        }
    }

    /// Adopts every run whose lease expired before `now` and resumes or fails it.
    pub(crate) async fn recover_pass(self: &Arc<Self>, now: DateTime<Utc>) {
        if !self.lease.valid() || self.shutdown.is_cancelled() {
            return;
        }
        let expired = match self.stores.runs.list_expired(now, RECOVERY_BATCH).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list abandoned runs");
                return;
            }
        };
        for run in expired {
            if self.is_live(&run.run_id) {
                continue;
            }
            match self
                .stores
                .runs
                .adopt(
                    RunId(&run.run_id),
                    &self.lease.worker_id,
                    self.lease.expiry(),
                    now,
                )
                .await
            {
                Ok(true) => {}
                Ok(false) => continue, // another process was faster, or it finished
                Err(e) => {
                    tracing::warn!(run_id = %run.run_id, error = %e, "cannot adopt run");
                    continue;
                }
            }
            match self.config.recovery {
                Recovery::Fail => self.fail_abandoned(&run).await,
                Recovery::Resume => match RunCreate::from_run(&run) {
                    Ok(request) => self.resume_abandoned(run, request).await,
                    Err(e) => {
                        tracing::warn!(run_id = %run.run_id, error = %e, "cannot rebuild run request");
                        self.fail_abandoned(&run).await;
                    }
                },
            }
        }
    }

    /// `runs.recovery: fail`: the abandoned run ends as `error`.
    async fn fail_abandoned(&self, run: &Run) {
        const MESSAGE: &str = "The server executing this run stopped before it finished.";
        let err = encode_error("ServerRestart", MESSAGE);
        let _ = self
            .stores
            .runs
            .transition(
                RunId(&run.run_id),
                &[RunStatus::Pending, RunStatus::Running],
                RunStatus::Error,
                Some(&err),
            )
            .await;
        let _ = self
            .stores
            .threads
            .update(
                Owner(&run.owner),
                ThreadId(&run.thread_id),
                ThreadUpdate {
                    status: Some(ThreadStatus::Error),
                    error: Some(Some(json!({"error": "ServerRestart", "message": MESSAGE}))),
                    ..Default::default()
                },
            )
            .await;
        let data = json!({"error": "ServerRestart", "message": MESSAGE});
        self.publish(
            &run.run_id,
            &crate::thread_stream_id(&run.owner, &run.thread_id),
            "error",
            &data,
        )
        .await;
        let _ = self.bridge.publish_end(&run.run_id).await;
        self.bridge
            .cleanup(&run.run_id, self.config.stream_cleanup_delay)
            .await;
        tracing::warn!(run_id = %run.run_id, "abandoned run marked error (runs.recovery: fail)");
    }

    /// `runs.recovery: resume`: the run is queued on its thread (in creation order with the
    /// other recovered runs) and continues from its last checkpoint.
    async fn resume_abandoned(self: &Arc<Self>, run: Run, mut request: RunCreate) {
        let mut started = false;
        if run.status == RunStatus::Running {
            // Did it write a checkpoint? Then continue from the latest one (the engine re-runs
            // only the tasks of the step that had not committed); otherwise start it over.
            let latest = self
                .stores
                .checkpointer(&run.owner)
                .get_tuple(&run.thread_id, "", None)
                .await
                .ok()
                .flatten();
            started = latest.is_some_and(|t| {
                t.metadata.get("run_id").and_then(Value::as_str) == Some(run.run_id.as_str())
            });
        }
        if started {
            request.input = None;
            request.command = None;
            request.checkpoint_id = None;
        }
        request.after_seconds = if started {
            0.0
        } else {
            delay_left(&run, &request)
        };
        // Cancelled on another replica while its owner was dead: carried out, not resumed.
        let handle = self.stored_run_handle(&run);
        let prev = {
            let mut live = self.live.lock();
            live.runs.insert(run.run_id.clone(), handle.clone());
            live.tails.insert(handle.thread_key(), handle.clone())
        };
        self.publish(
            &run.run_id,
            &crate::thread_stream_id(&run.owner, &run.thread_id),
            "metadata",
            &json!({"run_id": run.run_id, "attempt": 2}),
        )
        .await;
        tracing::warn!(run_id = %run.run_id, resumed_from_checkpoint = started, "adopted an abandoned run");
        self.counters.created.fetch_add(1, Ordering::Relaxed);
        self.counters.pending.fetch_add(1, Ordering::Relaxed);
        let graph_id = run
            .metadata
            .get("graph_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let rt = self.clone();
        let job = Job {
            run,
            request,
            graph_id,
            handle,
            prev,
            thread_update: None,
            adopted: true,
            claimed: false,
        };
        self.tracker.spawn(async move { rt.execute(job).await });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_is_valid_until_ttl_minus_margin() {
        let lease = Lease::new("w".into(), Duration::from_millis(400));
        assert!(lease.valid());
        std::thread::sleep(Duration::from_millis(420));
        assert!(!lease.valid(), "past ttl - margin the lease is not certain");
        lease.renewed(Instant::now());
        assert!(lease.valid(), "a renewal extends it");
    }

    #[test]
    fn an_older_renewal_never_shortens_the_lease() {
        let lease = Lease::new("w".into(), Duration::from_secs(10));
        let before = lease.valid_until_ms.load(Ordering::Acquire);
        lease.renewed(lease.epoch);
        assert_eq!(lease.valid_until_ms.load(Ordering::Acquire), before);
    }

    #[test]
    fn recovery_modes_parse() {
        assert_eq!(Recovery::parse("resume"), Some(Recovery::Resume));
        assert_eq!(Recovery::parse("fail"), Some(Recovery::Fail));
        assert_eq!(Recovery::parse("retry"), None);
    }
}
