//! Leader election with a `coordination.k8s.io/v1` Lease, as the official
//! sidecars do it (client-go's leaderelection): of two replicas only the one
//! holding the Lease runs the controllers, so no claim is provisioned twice.
//!
//! The holder writes `renewTime` every [`RENEW_PERIOD`]; the others retry
//! every [`RETRY_PERIOD`] and take the Lease over only once it has not been
//! renewed for [`LEASE_DURATION`]. Writes carry the `resourceVersion` they
//! read, so two candidates racing for a free Lease cannot both win: the API
//! server answers the slower one 409 Conflict.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};

pub const LEASE_DURATION: Duration = Duration::from_secs(15);
pub const RENEW_PERIOD: Duration = Duration::from_secs(10);
pub const RETRY_PERIOD: Duration = Duration::from_secs(2);

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

/// One candidate for one Lease.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
}

impl Elector {
    pub fn new(api: Api<Lease>, name: String, identity: String) -> Self {
        Self { api, name, identity }
    }

    /// One round: read the Lease, decide, write. `Ok(true)`: we hold the Lease
    /// now. A lost race (409) is `Ok(false)`, not an error.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let current = self.api.get_opt(&self.name).await?;
        let decision = decide(current.as_ref().and_then(|l| l.spec.as_ref()), &self.identity, now);
        let spec = |old: Option<&LeaseSpec>, renewing: bool| LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
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
                return Ok(false);
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
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Blocks until we hold the Lease.
    pub async fn acquire(&self) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    tracing::info!(lease = %self.name, identity = %self.identity, "became the leader");
                    return;
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, lease = %self.name, "leader election: cannot read or write the Lease")
                }
            }
            tokio::time::sleep(RETRY_PERIOD).await;
        }
    }

    /// Renews the Lease every [`RENEW_PERIOD`]; returns when it could not be
    /// renewed before it expired (another replica may have it by now), so the
    /// caller must stop acting, as client-go's OnStoppedLeading does.
    pub async fn keep_renewing(&self) {
        let mut last_renewed = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(if last_renewed.elapsed() < RENEW_PERIOD {
                RENEW_PERIOD
            } else {
                RETRY_PERIOD
            })
            .await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last_renewed = tokio::time::Instant::now(),
                Ok(false) => {
                    tracing::error!(lease = %self.name, "lost the Lease to another replica");
                    return;
                }
                Err(e) => tracing::warn!(error = %e, "cannot renew the Lease, retrying"),
            }
            if last_renewed.elapsed() >= LEASE_DURATION {
                tracing::error!(lease = %self.name, "could not renew the Lease in time");
                return;
            }
        }
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
    fn lease_names_are_dns_labels() {
        assert_eq!(lease_name("csi.workshop.dev"), "csi-workshop-dev-rs-provisioner");
    }
}
