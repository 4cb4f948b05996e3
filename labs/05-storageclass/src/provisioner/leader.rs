//! Leader election with a `coordination.k8s.io/v1` Lease, as the official
//! sidecars do it (client-go's leaderelection): of two replicas only the one
//! holding the Lease runs the controllers, so no claim is provisioned twice.
//!
//! Three durations ([`Timing`], client-go's defaults 15 s / 10 s / 2 s):
//!
//! - the leader renews the Lease every **retry period**;
//! - if it has not managed to renew it for the **renew deadline**, it gives
//!   up: it stops its controllers and exits (client-go's OnStoppedLeading);
//! - a standby takes the Lease over only once it has not been renewed for
//!   the **lease duration**.
//!
//! The renew deadline is shorter than the lease duration on purpose: the old
//! leader has stopped acting before anyone else may start. (Were they equal,
//! the leader would give up at the very moment a standby may take over, and
//! both could act at once.) Each renewal call is cut off at the deadline too,
//! so an API request that hangs cannot keep a leader past it.
//!
//! Writes carry the `resourceVersion` they read, so two candidates racing for
//! a free Lease cannot both win: the API server answers the slower one 409
//! Conflict.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};
use tokio::time::Instant;

pub const LEASE_DURATION: Duration = Duration::from_secs(15);
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);
pub const RETRY_PERIOD: Duration = Duration::from_secs(2);

/// The durations of leader election (the official sidecars'
/// `--leader-election-lease-duration`, `-renew-deadline`, `-retry-period`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How long a Lease stays valid after its last renewal; a standby takes
    /// it over only after that.
    pub lease_duration: Duration,
    /// How long the leader keeps failing to renew before it stops leading.
    pub renew_deadline: Duration,
    /// The pause between two attempts, to renew (leader) or to acquire (standby).
    pub retry_period: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self { lease_duration: LEASE_DURATION, renew_deadline: RENEW_DEADLINE, retry_period: RETRY_PERIOD }
    }
}

impl Timing {
    /// The rules client-go enforces: lease duration > renew deadline >
    /// 1.2 × retry period (room for one retry with client-go's jitter).
    pub fn validate(&self) -> Result<(), String> {
        if self.retry_period.is_zero() {
            return Err("the retry period must be more than zero".into());
        }
        if self.lease_duration <= self.renew_deadline {
            return Err(format!(
                "the lease duration ({:?}) must be longer than the renew deadline ({:?}): the leader must stop before a standby may start",
                self.lease_duration, self.renew_deadline
            ));
        }
        if self.renew_deadline.as_secs_f64() <= 1.2 * self.retry_period.as_secs_f64() {
            return Err(format!(
                "the renew deadline ({:?}) must be longer than 1.2 × the retry period ({:?})",
                self.renew_deadline, self.retry_period
            ));
        }
        Ok(())
    }

    /// How long a leader that lost the Lease may let running reconciliations
    /// finish: from the renew deadline to the moment the Lease expires (when
    /// the loss is the deadline), that is, while no standby can have it yet.
    pub fn stop_grace(&self) -> Duration {
        self.lease_duration.saturating_sub(self.renew_deadline)
    }
}

/// What a candidate should do with the Lease it just read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nobody holds it, or the holder stopped renewing: take it.
    Acquire,
    /// We hold it: write a new renewTime.
    Renew,
    /// Someone else holds it and renews it: stand by.
    Wait { holder: String },
}

// ANCHOR: leader-decide
/// The decision for candidate `me` at `now`, given the Lease's spec (`None`:
/// the Lease does not exist yet).
pub fn decide(spec: Option<&LeaseSpec>, me: &str, now: Timestamp) -> Decision {
    let Some(spec) = spec else { return Decision::Acquire };
    let holder = spec.holder_identity.as_deref().unwrap_or_default();
    if holder.is_empty() {
        return Decision::Acquire; // released by its last holder
    }
    if holder == me {
        return Decision::Renew;
    }
    let duration = spec.lease_duration_seconds.map_or(LEASE_DURATION.as_secs() as i64, i64::from);
    let last = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()).map(|t| t.0);
    match last {
        Some(last) if now < last + SignedDuration::from_secs(duration) => {
            Decision::Wait { holder: holder.to_owned() }
        }
        _ => Decision::Acquire, // expired (or never renewed): the holder is gone
    }
}
// ANCHOR_END: leader-decide

/// The Lease name for a driver's provisioner: the driver name made a DNS
/// label (`csi.workshop.dev` → `csi-workshop-dev-rs-provisioner`).
pub fn lease_name(driver: &str) -> String {
    let clean: String = driver
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
        .collect();
    format!("{}-rs-provisioner", clean.trim_matches('-'))
}

/// Why a leader stopped leading.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LostLease {
    #[error("another replica holds the Lease now ({0})")]
    TakenOver(String),
    #[error("the Lease could not be renewed within the renew deadline ({0:?})")]
    NotRenewed(Duration),
}

/// The outcome of one read-decide-write round.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Round {
    /// We hold the Lease, freshly written.
    Leading,
    /// Another candidate holds it and renews it.
    Standby { holder: String },
    /// Our write lost a race (409 Conflict): someone wrote the Lease between
    /// our read and our write.
    Conflict,
}

/// One candidate for one Lease.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timing: Timing,
}

impl Elector {
    pub fn new(api: Api<Lease>, name: String, identity: String) -> Self {
        Self { api, name, identity, timing: Timing::default() }
    }

    /// The same, with other durations (call [`Timing::validate`] first).
    pub fn with_timing(mut self, timing: Timing) -> Self {
        self.timing = timing;
        self
    }

    pub fn timing(&self) -> Timing {
        self.timing
    }

    /// One round: read the Lease, decide, write. `Ok(true)`: we hold the Lease
    /// now. A lost race (409) is `Ok(false)`, not an error.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        Ok(self.round().await? == Round::Leading)
    }

    async fn round(&self) -> Result<Round, kube::Error> {
        let now = Timestamp::now();
        let current = self.api.get_opt(&self.name).await?;
        let decision = decide(current.as_ref().and_then(|l| l.spec.as_ref()), &self.identity, now);
        let spec = |old: Option<&LeaseSpec>, renewing: bool| LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.timing.lease_duration.as_secs().max(1) as i32),
            acquire_time: if renewing {
                old.and_then(|s| s.acquire_time.clone())
            } else {
                Some(MicroTime(now))
            },
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(
                old.and_then(|s| s.lease_transitions).unwrap_or(0) + i32::from(!renewing && old.is_some()),
            ),
            ..Default::default()
        };
        let result = match (decision, current) {
            (Decision::Wait { holder }, _) => {
                tracing::debug!(%holder, lease = %self.name, "another replica leads");
                return Ok(Round::Standby { holder });
            }
            // `decide` never renews a Lease that does not exist.
            (_, None) => {
                let lease = Lease {
                    metadata: ObjectMeta { name: Some(self.name.clone()), ..Default::default() },
                    spec: Some(spec(None, false)),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            (decision, Some(mut lease)) => {
                // `replace` sends the resourceVersion we read: optimistic locking.
                lease.spec = Some(spec(lease.spec.as_ref(), decision == Decision::Renew));
                self.api.replace(&self.name, &PostParams::default(), &lease).await
            }
        };
        match result {
            Ok(_) => Ok(Round::Leading),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(Round::Conflict),
            Err(e) => Err(e),
        }
    }

    /// Blocks until we hold the Lease.
    pub async fn acquire(&self) {
        loop {
            // A hung request must not stall the candidate forever.
            match tokio::time::timeout(self.timing.renew_deadline, self.round()).await {
                Ok(Ok(Round::Leading)) => {
                    tracing::info!(lease = %self.name, identity = %self.identity, "became the leader");
                    return;
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, lease = %self.name, "leader election: cannot read or write the Lease")
                }
                Err(_) => {
                    tracing::warn!(lease = %self.name, "leader election: the API did not answer in time")
                }
            }
            tokio::time::sleep(self.timing.retry_period).await;
        }
    }

    // ANCHOR: keep-renewing
    /// Renews the Lease every retry period, and returns as soon as we are no
    /// longer the leader: another replica holds the Lease, or it could not
    /// be renewed for the renew deadline (the API unreachable, each attempt
    /// failing or hanging). Call it right after [`Elector::acquire`]; the
    /// caller must stop acting when it returns.
    pub async fn keep_renewing(&self) -> LostLease {
        let Timing { renew_deadline, retry_period, .. } = self.timing;
        let mut renewed = Instant::now();
        loop {
            tokio::time::sleep(retry_period).await;
            let deadline = renewed + renew_deadline;
            let attempt = Instant::now();
            // Each attempt ends at the deadline at the latest: a request
            // that hangs cannot keep us leading past it.
            match tokio::time::timeout_at(deadline, self.round()).await {
                Ok(Ok(Round::Leading)) => renewed = attempt,
                Ok(Ok(Round::Standby { holder })) => {
                    tracing::error!(lease = %self.name, %holder, "lost the Lease to another replica");
                    return LostLease::TakenOver(holder);
                }
                Ok(Ok(Round::Conflict)) => {
                    tracing::warn!(lease = %self.name, "renewing the Lease: conflict, retrying")
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, lease = %self.name, "cannot renew the Lease, retrying")
                }
                Err(_) => tracing::warn!(lease = %self.name, "renewing the Lease timed out"),
            }
            if Instant::now() >= renewed + renew_deadline {
                tracing::error!(lease = %self.name, deadline = ?renew_deadline, "could not renew the Lease in time");
                return LostLease::NotRenewed(renew_deadline);
            }
        }
    }
    // ANCHOR_END: keep-renewing

    /// Gives the Lease up (holder cleared), so that a standby takes it at its
    /// next retry instead of waiting for it to expire: client-go's
    /// ReleaseOnCancel. Only when we still hold it; errors are logged, since
    /// the Lease expires anyway.
    pub async fn release(&self) {
        let result = async {
            let Some(mut lease) = self.api.get_opt(&self.name).await? else { return Ok(false) };
            let Some(spec) = lease.spec.as_mut() else { return Ok(false) };
            if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
                return Ok(false);
            }
            let now = MicroTime(Timestamp::now());
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
            spec.acquire_time = Some(now.clone());
            spec.renew_time = Some(now);
            self.api.replace(&self.name, &PostParams::default(), &lease).await.map(|_| true)
        };
        match tokio::time::timeout(self.timing.retry_period, result).await {
            Ok(Ok(true)) => tracing::info!(lease = %self.name, "released the Lease"),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, lease = %self.name, "cannot release the Lease; it expires by itself")
            }
            Err(_) => {
                tracing::warn!(lease = %self.name, "releasing the Lease timed out; it expires by itself")
            }
        }
    }

    // ANCHOR: lead
    /// Runs `controllers` while we hold the Lease (call [`Elector::acquire`]
    /// first). `controllers` gets a stop signal and must stop starting new
    /// work when it fires.
    ///
    /// - `shutdown` resolves (SIGTERM): stop the controllers, let them finish
    ///   what they are doing, release the Lease, `Ok(())`.
    /// - The Lease is lost: stop the controllers at once, give running
    ///   reconciliations [`Timing::stop_grace`] to finish (no standby can
    ///   hold the Lease before then), abort them after it, and return the
    ///   reason: the caller exits non-zero so that the Pod restarts as a
    ///   candidate, as the Go sidecars do (they exit in OnStoppedLeading).
    pub async fn lead<F, Fut>(
        &self,
        shutdown: impl Future<Output = ()>,
        controllers: F,
    ) -> Result<(), LostLease>
    where
        F: FnOnce(Stop) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut work = tokio::spawn(controllers(Stop(stop_rx)));
        tokio::pin!(shutdown);
        let lost = tokio::select! {
            () = &mut shutdown => None,
            lost = self.keep_renewing() => Some(lost),
            _ = &mut work => {
                tracing::warn!("the controllers stopped by themselves");
                None
            }
        };
        let _ = stop_tx.send(true);
        match lost {
            None => {
                // kubelet's termination grace period bounds this wait.
                let _ = (&mut work).await;
                self.release().await;
                Ok(())
            }
            Some(reason) => {
                if tokio::time::timeout(self.timing.stop_grace(), &mut work).await.is_err() {
                    tracing::error!(grace = ?self.timing.stop_grace(), "reconciliations still running after the Lease was lost: aborted");
                    work.abort();
                }
                Err(reason)
            }
        }
    }
    // ANCHOR_END: lead
}

/// The stop signal [`Elector::lead`] hands to the controllers: a future that
/// resolves when they must stop (pass it to `controller::run`).
#[derive(Debug, Clone)]
pub struct Stop(tokio::sync::watch::Receiver<bool>);

impl Stop {
    /// Resolves once the controllers must stop (or the leader is gone).
    pub async fn wait(mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    fn held_by(holder: &str, renewed_at: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(t(renewed_at))),
            ..Default::default()
        }
    }

    #[test]
    fn a_missing_or_released_lease_is_acquired() {
        assert_eq!(decide(None, "pod-a", t(0)), Decision::Acquire);
        assert_eq!(decide(Some(&LeaseSpec::default()), "pod-a", t(0)), Decision::Acquire);
        assert_eq!(decide(Some(&held_by("", 0)), "pod-a", t(1)), Decision::Acquire);
    }

    #[test]
    fn our_own_lease_is_renewed() {
        assert_eq!(decide(Some(&held_by("pod-a", 0)), "pod-a", t(5)), Decision::Renew);
        assert_eq!(
            decide(Some(&held_by("pod-a", 0)), "pod-a", t(500)),
            Decision::Renew,
            "even late: still ours"
        );
    }

    #[test]
    fn a_lease_renewed_by_another_within_its_duration_is_waited_for() {
        for now in [0, 1, 10, 14] {
            assert_eq!(
                decide(Some(&held_by("pod-b", 0)), "pod-a", t(now)),
                Decision::Wait { holder: "pod-b".into() },
                "{now}s after the renewal"
            );
        }
    }

    #[test]
    fn an_expired_lease_of_another_is_taken_over() {
        for now in [15, 16, 3600] {
            assert_eq!(decide(Some(&held_by("pod-b", 0)), "pod-a", t(now)), Decision::Acquire, "{now}s");
        }
        let never_renewed = LeaseSpec { holder_identity: Some("pod-b".into()), ..Default::default() };
        assert_eq!(decide(Some(&never_renewed), "pod-a", t(0)), Decision::Acquire);
    }

    #[test]
    fn the_leader_gives_up_before_a_standby_may_take_over() {
        let t = Timing::default();
        assert_eq!(
            (t.lease_duration, t.renew_deadline, t.retry_period),
            (Duration::from_secs(15), Duration::from_secs(10), Duration::from_secs(2)),
            "client-go's defaults"
        );
        assert!(t.validate().is_ok());
        assert_eq!(t.stop_grace(), Duration::from_secs(5));
        let equal = Timing { renew_deadline: t.lease_duration, ..t };
        assert!(equal.validate().unwrap_err().contains("must be longer than the renew deadline"));
        let tight = Timing { renew_deadline: Duration::from_secs(2), ..t };
        assert!(tight.validate().is_err(), "no room to retry within the deadline");
        assert!(Timing { retry_period: Duration::ZERO, ..t }.validate().is_err());
    }

    #[test]
    fn lease_names_are_dns_labels() {
        assert_eq!(lease_name("csi.workshop.dev"), "csi-workshop-dev-rs-provisioner");
    }
}
