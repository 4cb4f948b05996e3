//! The migration from Flex to CSI as pure functions: the steps, the journal
//! that says which of them are done, and the mapping of a Flex PV to a CSI
//! PV. No I/O here; [`crate::migrate`] runs the steps against the API.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{CSIPersistentVolumeSource, PersistentVolume, PersistentVolumeSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

use crate::flex;

/// The CSI driver that takes the volumes over.
pub const CSI_DRIVER: &str = "csi.workshop.dev";
/// The journal of one PV, JSON, on the PV itself.
pub const JOURNAL_ANNOTATION: &str = "csi-migrate.workshop.dev/journal";
/// The last completed step, for humans (`kubectl get pv -o yaml`).
pub const STEP_ANNOTATION: &str = "csi-migrate.workshop.dev/step";
/// Set on the CSI PV: where it came from.
pub const MIGRATED_FROM_ANNOTATION: &str = "csi-migrate.workshop.dev/migrated-from";
/// Which provisioner deletes the PV's volume once its claim is gone and the
/// reclaim policy is Delete. external-provisioner and lab 05's provisioner
/// (`decide::on_released`) only act on PVs that name their driver here; the
/// PV controller leaves such PVs to them.
pub const PROVISIONED_BY_ANNOTATION: &str = "pv.kubernetes.io/provisioned-by";
/// The ConfigMap that keeps the original PV and the journal while the PV
/// does not exist (between delete and create) and for `--rollback`.
pub const JOURNAL_CONFIGMAP: &str = "csi-migrate-journal";

// ANCHOR: migration-steps
/// The steps, in order. The journal records the last one completed, so a
/// run that was interrupted starts again at the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// Note the Deployments/StatefulSets that use the claim, with replicas.
    RecordWorkload,
    /// Reclaim policy Retain (the old one goes into the journal): deleting
    /// the PV must never delete the data.
    RetainPolicy,
    /// Scale the workload to 0 and wait until no Pod uses the claim.
    ScaleDown,
    /// Checksum every file of the volume through a short-lived Pod.
    VerifyBefore,
    /// Save the original PV in the journal ConfigMap.
    SaveOriginal,
    /// Delete the Flex PV (its finalizer removed, the claim is released).
    DeleteFlexPv,
    /// Create the CSI PV: same name, same claimRef, same data.
    CreateCsiPv,
    /// The same checksum, read through the CSI driver.
    VerifyAfter,
    /// Scale the workload back to its recorded replicas.
    RestoreWorkload,
    /// Put the original reclaim policy back.
    RestorePolicy,
    /// Nothing left to do.
    Done,
}
// ANCHOR_END: migration-steps

impl Step {
    pub const ALL: [Step; 11] = [
        Step::RecordWorkload,
        Step::RetainPolicy,
        Step::ScaleDown,
        Step::VerifyBefore,
        Step::SaveOriginal,
        Step::DeleteFlexPv,
        Step::CreateCsiPv,
        Step::VerifyAfter,
        Step::RestoreWorkload,
        Step::RestorePolicy,
        Step::Done,
    ];

    /// 1-based, as `--stop-after-step` counts.
    pub fn number(self) -> usize {
        Self::ALL.iter().position(|s| *s == self).expect("in ALL") + 1
    }

    pub fn name(self) -> &'static str {
        match self {
            Step::RecordWorkload => "record-workload",
            Step::RetainPolicy => "retain-policy",
            Step::ScaleDown => "scale-down",
            Step::VerifyBefore => "verify-before",
            Step::SaveOriginal => "save-original",
            Step::DeleteFlexPv => "delete-flex-pv",
            Step::CreateCsiPv => "create-csi-pv",
            Step::VerifyAfter => "verify-after",
            Step::RestoreWorkload => "restore-workload",
            Step::RestorePolicy => "restore-policy",
            Step::Done => "done",
        }
    }

    /// Whether the step only reads (the checksums), so `--no-verify` may
    /// skip it.
    pub fn is_verification(self) -> bool {
        matches!(self, Step::VerifyBefore | Step::VerifyAfter)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
}

/// A Deployment or StatefulSet whose Pods mount the claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workload {
    pub kind: WorkloadKind,
    pub namespace: String,
    pub name: String,
    pub replicas: i32,
}

/// What the tool knows about one PV's migration. Kept as JSON in the PV's
/// [`JOURNAL_ANNOTATION`], and from [`Step::SaveOriginal`] on also in the
/// [`JOURNAL_CONFIGMAP`], because the PV is deleted in between.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Journal {
    pub pv: String,
    /// Counts every write of the journal. The two copies are written one
    /// after the other, so an interruption can leave one behind; the
    /// higher revision is the newer one, whichever way the record moved
    /// (a rollback does not move `completed` forward, but must win).
    #[serde(default)]
    pub revision: u64,
    #[serde(default)]
    pub completed: Option<Step>,
    /// `--rollback` started: a forward run refuses until it has finished.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rolling_back: bool,
    #[serde(default)]
    pub workloads: Vec<Workload>,
    /// The reclaim policy before [`Step::RetainPolicy`].
    #[serde(default)]
    pub reclaim_policy: Option<String>,
    /// The checksum of [`Step::VerifyBefore`].
    #[serde(default)]
    pub checksum: Option<String>,
}

impl Journal {
    pub fn new(pv: &str) -> Self {
        Self { pv: pv.to_owned(), ..Default::default() }
    }

    /// Of two copies (the PV's and the ConfigMap's), the newer: the higher
    /// revision, and for journals written before revisions, the one further on.
    pub fn newest(a: Option<Journal>, b: Option<Journal>) -> Option<Journal> {
        match (a, b) {
            (Some(a), Some(b)) => {
                Some(if (b.revision, b.completed) > (a.revision, a.completed) { b } else { a })
            }
            (a, b) => a.or(b),
        }
    }
}

/// Why the tool will not touch a PV.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("PV {0} is not a {driver} FlexVolume PV", driver = flex::DRIVER_NAME)]
    NotFlex(String),
    #[error("PV {pv}: spec.flexVolume.options.{option} is missing")]
    MissingOption { pv: String, option: &'static str },
    #[error("PV {pv}: options.type={value:?} is neither block nor file")]
    BadType { pv: String, value: String },
    #[error("claim {claim} is in use by pod(s) {pods}: stop them, or pass --drain to scale their workload to 0 during the migration", pods = .pods.join(", "))]
    InUse { claim: String, pods: Vec<String> },
    #[error("claim {claim} is used by pod(s) {pods} that no Deployment or StatefulSet owns: --drain cannot stop them; delete them first", pods = .pods.join(", "))]
    UnmanagedPods { claim: String, pods: Vec<String> },
    #[error("PV {0} does not exist and the journal holds no copy of it")]
    Missing(String),
    #[error(
        "PV {pv}: the journal says {done} is done, but the PV {found}; look at it (kubectl get pv {pv} -o yaml) and at the ConfigMap csi-migrate-journal, then run --rollback or fix it by hand"
    )]
    JournalMismatch { pv: String, done: &'static str, found: &'static str },
    #[error("PV {0}: a rollback did not finish; run csi-migrate --rollback --pv {0} again")]
    RollbackUnfinished(String),
}

/// Who uses the PV's claim right now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    /// `namespace/name` of the claim, if the PV is bound.
    pub claim: Option<String>,
    pub workloads: Vec<Workload>,
    /// Running Pods that mount the claim.
    pub pods: Vec<String>,
    /// Those of `pods` that no recorded workload owns.
    pub unmanaged_pods: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlanOptions {
    /// Scale workloads down instead of refusing when the claim is in use.
    pub drain: bool,
}

// ANCHOR: next-step
/// The step after the last completed one.
pub fn next_step(journal: &Journal) -> Step {
    // TODO(lab06): No step completed yet means the first one; after the
    // last completed step comes the next one in Step::ALL, and after
    // Done, Done again.
    // ANCHOR: solution
    match journal.completed {
        None => Step::ALL[0],
        Some(done) => Step::ALL.get(done.number()).copied().unwrap_or(Step::Done),
    }
    // ANCHOR_END: solution => { let _ = &journal.completed; Step::Done }
}
// ANCHOR_END: next-step

// ANCHOR: migration-plan
/// The steps left for one PV, in the order to walk them, or why not to go
/// on. `pv` is the PV as it is now (`None` between delete and create),
/// `saved` the copy of the Flex PV in the journal ConfigMap, `journal` what
/// is done. The verification steps are in the walk even with `--no-verify`
/// (the run journals them as skipped, so the numbering stays stable).
///
/// The journal says where a run stopped; what is in the cluster says
/// whether it is safe to go on from there. A resumed run (after a crash,
/// a Ctrl-C, or a rollback by an older version that left the PV's journal
/// behind) is checked as strictly as a fresh one: the PV must be what the
/// journal expects, nothing is deleted without a copy to put back, and
/// nobody may use the claim until the workload is restored.
pub fn plan(
    pv: Option<&PersistentVolume>,
    saved: Option<&PersistentVolume>,
    usage: &Usage,
    journal: &Journal,
    options: PlanOptions,
) -> Result<Vec<Step>, Refusal> {
    let name = &journal.pv;
    if journal.rolling_back {
        return Err(Refusal::RollbackUnfinished(name.clone()));
    }
    let next = next_step(journal);
    if next == Step::Done {
        return Ok(vec![]);
    }
    let flex = pv.filter(|pv| is_flex(pv));
    // The Flex PV, and nobody has started deleting it.
    let intact = flex.is_some_and(|pv| pv.metadata.deletion_timestamp.is_none());
    // A copy to rebuild the Flex PV from: of this very volume, if it is still there.
    let copy = saved.is_some_and(|s| is_flex(s) && flex.is_none_or(|pv| same_volume(pv, s)));
    let mismatch = |found| Refusal::JournalMismatch {
        pv: name.clone(),
        done: journal.completed.map_or("nothing", Step::name),
        found,
    };
    let mut start = next;
    if next <= Step::SaveOriginal {
        // Before the delete: the Flex PV must be there, untouched.
        match pv {
            None => return Err(Refusal::Missing(name.clone())),
            Some(pv) if journal.completed.is_none() => {
                to_csi_pv(pv)?;
                if !intact {
                    return Err(mismatch("is being deleted by someone else"));
                }
            }
            Some(_) if !intact => {
                return Err(mismatch(if flex.is_some() { "is being deleted" } else { "is not the Flex PV" }));
            }
            Some(_) => {}
        }
    } else if next == Step::DeleteFlexPv {
        if pv.is_some() && flex.is_none() {
            return Err(mismatch("is not the Flex PV"));
        }
        // Never delete what cannot be put back: save it (again) first.
        if !copy {
            if !intact {
                return Err(Refusal::Missing(name.clone()));
            }
            start = Step::SaveOriginal;
        }
    } else if next == Step::CreateCsiPv {
        if pv.is_some_and(|pv| !is_csi(pv)) {
            return Err(mismatch("is not a CSI PV (and should not exist yet)"));
        }
        if !copy {
            return Err(Refusal::Missing(name.clone()));
        }
    } else if !pv.is_some_and(is_csi) {
        return Err(mismatch(if pv.is_none() { "does not exist" } else { "is not the CSI PV" }));
    }
    // Nobody may use the volume from the scale-down until the workload is
    // restored: not while the PV is replaced, not while it is checksummed.
    let mut again = false;
    if !usage.pods.is_empty() && next <= Step::VerifyAfter {
        let claim = usage.claim.clone().unwrap_or_default();
        if !options.drain {
            return Err(Refusal::InUse { claim, pods: usage.pods.clone() });
        }
        if !usage.unmanaged_pods.is_empty() {
            return Err(Refusal::UnmanagedPods { claim, pods: usage.unmanaged_pods.clone() });
        }
        if next > Step::ScaleDown {
            // Resumed, but the workload is back up (scaled by hand, or by a
            // rollback that left the journal behind): scale it down again.
            // While the Flex PV is intact, the data may have changed since
            // the checksum, so take it again too.
            if intact && start <= Step::DeleteFlexPv {
                start = Step::ScaleDown;
            } else {
                again = true;
            }
        }
    }
    let mut walk = if again { vec![Step::ScaleDown] } else { vec![] };
    walk.extend(Step::ALL.into_iter().filter(|s| *s >= start && *s != Step::Done));
    Ok(walk)
}
// ANCHOR_END: migration-plan

// ANCHOR: to-csi-pv
/// The CSI PV that replaces a Flex PV: the same name, size, access modes,
/// claim, class and mount options; the backend volume named by
/// `options.volumeId` as the CSI volume handle.
///
/// No node affinity: a CSI-provisioned volume carries
/// `topology.csi.workshop.dev/backend`, but every node sees the one backend,
/// so an adopted volume can be used anywhere, as the Flex one could.
pub fn to_csi_pv(flex_pv: &PersistentVolume) -> Result<PersistentVolume, Refusal> {
    let name = flex_pv.metadata.name.clone().unwrap_or_default();
    let spec = flex_pv.spec.clone().unwrap_or_default();
    let Some(flex_source) = spec.flex_volume.as_ref().filter(|f| f.driver == flex::DRIVER_NAME) else {
        return Err(Refusal::NotFlex(name));
    };
    let options = flex_source.options.clone().unwrap_or_default();
    // TODO(lab06): Build the CSI source: driver CSI_DRIVER, volumeHandle
    // from options "volumeId" (Refusal::MissingOption if absent), fsType
    // (the Flex fsType, "ext4" by default) for block volumes only,
    // readOnly as before, volumeAttributes {"type": options "type"}
    // ("block" by default; anything else than block/file: Refusal::BadType).
    // ANCHOR: solution
    let volume_handle = options
        .get("volumeId")
        .filter(|v| !v.is_empty())
        .cloned()
        .ok_or(Refusal::MissingOption { pv: name.clone(), option: "volumeId" })?;
    let kind = options.get("type").map(String::as_str).unwrap_or("block");
    if kind != "block" && kind != "file" {
        return Err(Refusal::BadType { pv: name, value: kind.to_owned() });
    }
    let csi = CSIPersistentVolumeSource {
        driver: CSI_DRIVER.to_owned(),
        volume_handle,
        fs_type: (kind == "block")
            .then(|| flex_source.fs_type.clone().filter(|f| !f.is_empty()).unwrap_or_else(|| "ext4".into())),
        read_only: flex_source.read_only,
        volume_attributes: Some(BTreeMap::from([("type".to_owned(), kind.to_owned())])),
        ..Default::default()
    };
    // ANCHOR_END: solution => let csi = { let _ = (options, &flex_source.fs_type); CSIPersistentVolumeSource::default() };
    let mut annotations = flex_pv.metadata.annotations.clone().unwrap_or_default();
    annotations.retain(|k, _| {
        !k.starts_with("csi-migrate.workshop.dev/") && k != "kubectl.kubernetes.io/last-applied-configuration"
    });
    annotations.insert(MIGRATED_FROM_ANNOTATION.to_owned(), flex::DRIVER_NAME.to_owned());
    // Without it, nobody deletes the volume once the claim is deleted and
    // restore-policy has put Delete back: the PV controller hands a Released
    // CSI PV to the provisioner this annotation names, and neither
    // external-provisioner nor lab 05's provisioner deletes a PV without it.
    // No finalizer: each provisioner adds its own to the Delete PVs it
    // recognises, and lab 05's added here would hold the PV forever in a
    // cluster that runs the official external-provisioner (lab 04's).
    annotations.insert(PROVISIONED_BY_ANNOTATION.to_owned(), CSI_DRIVER.to_owned());
    let claim_ref = spec.claim_ref.clone().map(|mut c| {
        // The UID stays: it is what binds the PV to exactly this claim.
        c.resource_version = None;
        c
    });
    Ok(PersistentVolume {
        metadata: ObjectMeta {
            name: Some(name),
            labels: flex_pv.metadata.labels.clone(),
            annotations: Some(annotations),
            ..Default::default()
        },
        spec: Some(PersistentVolumeSpec {
            capacity: spec.capacity,
            access_modes: spec.access_modes,
            claim_ref,
            storage_class_name: spec.storage_class_name,
            mount_options: spec.mount_options,
            volume_mode: spec.volume_mode,
            persistent_volume_reclaim_policy: spec.persistent_volume_reclaim_policy,
            node_affinity: spec.node_affinity,
            csi: Some(csi),
            ..Default::default()
        }),
        status: None,
    })
}
// ANCHOR_END: to-csi-pv

/// The claim a PV is bound to, as `namespace/name`.
pub fn claim_of(pv: &PersistentVolume) -> Option<(String, String)> {
    let claim = pv.spec.as_ref()?.claim_ref.as_ref()?;
    Some((claim.namespace.clone().unwrap_or_default(), claim.name.clone()?))
}

pub fn is_flex(pv: &PersistentVolume) -> bool {
    pv.spec.as_ref().and_then(|s| s.flex_volume.as_ref()).is_some_and(|f| f.driver == flex::DRIVER_NAME)
}

pub fn is_csi(pv: &PersistentVolume) -> bool {
    pv.spec.as_ref().and_then(|s| s.csi.as_ref()).is_some_and(|c| c.driver == CSI_DRIVER)
}

/// Whether two Flex PVs name the same backend volume (`options.volumeId`).
pub fn same_volume(a: &PersistentVolume, b: &PersistentVolume) -> bool {
    let volume = |pv: &PersistentVolume| {
        pv.spec
            .as_ref()
            .and_then(|s| s.flex_volume.as_ref())
            .filter(|f| f.driver == flex::DRIVER_NAME)
            .and_then(|f| f.options.as_ref()?.get("volumeId").cloned())
    };
    volume(a).is_some() && volume(a) == volume(b)
}

/// The journal kept on a PV, if any.
pub fn journal_of(pv: &PersistentVolume) -> Option<Journal> {
    let text = pv.metadata.annotations.as_ref()?.get(JOURNAL_ANNOTATION)?;
    serde_json::from_str(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{FlexPersistentVolumeSource, ObjectReference};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn flex_pv(options: &[(&str, &str)]) -> PersistentVolume {
        PersistentVolume {
            metadata: ObjectMeta {
                name: Some("legacy-1".into()),
                annotations: Some(BTreeMap::from([
                    ("pv.kubernetes.io/bound-by-controller".into(), "yes".into()),
                    ("kubectl.kubernetes.io/last-applied-configuration".into(), "{}".into()),
                ])),
                resource_version: Some("42".into()),
                uid: Some("pv-uid".into()),
                ..Default::default()
            },
            spec: Some(PersistentVolumeSpec {
                capacity: Some(BTreeMap::from([("storage".into(), Quantity("64Mi".into()))])),
                access_modes: Some(vec!["ReadWriteOnce".into()]),
                claim_ref: Some(ObjectReference {
                    namespace: Some("legacy".into()),
                    name: Some("data".into()),
                    uid: Some("claim-uid".into()),
                    resource_version: Some("7".into()),
                    ..Default::default()
                }),
                storage_class_name: Some("legacy-flex".into()),
                mount_options: Some(vec!["noatime".into()]),
                persistent_volume_reclaim_policy: Some("Retain".into()),
                flex_volume: Some(FlexPersistentVolumeSource {
                    driver: flex::DRIVER_NAME.into(),
                    fs_type: Some("ext4".into()),
                    options: Some(options.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn journal(completed: Option<Step>) -> Journal {
        Journal { completed, ..Journal::new("legacy-1") }
    }

    #[test]
    fn a_flex_pv_becomes_a_csi_pv_with_the_same_claim_and_data() {
        let csi = to_csi_pv(&flex_pv(&[("volumeId", "vol-1"), ("type", "block")])).unwrap();
        let spec = csi.spec.unwrap();
        let source = spec.csi.unwrap();
        assert_eq!((source.driver.as_str(), source.volume_handle.as_str()), (CSI_DRIVER, "vol-1"));
        assert_eq!(source.fs_type.as_deref(), Some("ext4"));
        assert_eq!(source.volume_attributes.unwrap()["type"], "block");
        assert!(spec.flex_volume.is_none());
        let claim = spec.claim_ref.unwrap();
        assert_eq!(
            (claim.name.as_deref(), claim.uid.as_deref(), claim.resource_version),
            (Some("data"), Some("claim-uid"), None)
        );
        assert_eq!(spec.storage_class_name.as_deref(), Some("legacy-flex"));
        assert_eq!(spec.mount_options.unwrap(), vec!["noatime"]);
        assert_eq!(spec.capacity.unwrap()["storage"].0, "64Mi");
        assert_eq!(csi.metadata.resource_version, None);
        assert_eq!(csi.metadata.uid, None);
        let annotations = csi.metadata.annotations.unwrap();
        assert!(annotations.contains_key("pv.kubernetes.io/bound-by-controller"));
        assert!(!annotations.contains_key("kubectl.kubernetes.io/last-applied-configuration"));
        assert_eq!(annotations[MIGRATED_FROM_ANNOTATION], flex::DRIVER_NAME);
    }

    #[test]
    fn the_csi_pv_names_the_csi_driver_as_its_provisioner_and_adds_no_finalizer() {
        let mut flex = flex_pv(&[("volumeId", "vol-1")]);
        // A Flex PV might name some other provisioner; the CSI one is ours.
        flex.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(PROVISIONED_BY_ANNOTATION.into(), "example.com/flex".into());
        flex.metadata.finalizers = Some(vec!["kubernetes.io/pv-protection".into()]);
        let csi = to_csi_pv(&flex).unwrap();
        // The key and value external-provisioner and lab 05's on_released compare.
        assert_eq!(csi.metadata.annotations.unwrap()["pv.kubernetes.io/provisioned-by"], "csi.workshop.dev");
        assert_eq!(csi.metadata.finalizers, None);
    }

    #[test]
    fn file_volumes_carry_no_fs_type_and_block_is_the_default() {
        let file =
            to_csi_pv(&flex_pv(&[("volumeId", "v"), ("type", "file")])).unwrap().spec.unwrap().csi.unwrap();
        assert_eq!(file.fs_type, None);
        let default = to_csi_pv(&flex_pv(&[("volumeId", "v")])).unwrap().spec.unwrap().csi.unwrap();
        assert_eq!(default.volume_attributes.unwrap()["type"], "block");
    }

    #[test]
    fn pvs_that_cannot_be_mapped_are_refused() {
        assert!(matches!(
            to_csi_pv(&flex_pv(&[("type", "block")])),
            Err(Refusal::MissingOption { option: "volumeId", .. })
        ));
        assert!(matches!(
            to_csi_pv(&flex_pv(&[("volumeId", "v"), ("type", "tape")])),
            Err(Refusal::BadType { .. })
        ));
        let mut other = flex_pv(&[("volumeId", "v")]);
        other.spec.as_mut().unwrap().flex_volume.as_mut().unwrap().driver = "example.com/nfs".into();
        assert!(matches!(to_csi_pv(&other), Err(Refusal::NotFlex(_))));
    }

    #[test]
    fn the_next_step_follows_the_last_completed_one() {
        assert_eq!(next_step(&journal(None)), Step::RecordWorkload);
        for pair in Step::ALL.windows(2) {
            assert_eq!(next_step(&journal(Some(pair[0]))), pair[1]);
        }
        assert_eq!(next_step(&journal(Some(Step::Done))), Step::Done);
    }

    fn in_use() -> Usage {
        Usage {
            claim: Some("legacy/data".into()),
            workloads: vec![Workload {
                kind: WorkloadKind::Deployment,
                namespace: "legacy".into(),
                name: "writer".into(),
                replicas: 1,
            }],
            pods: vec!["legacy/writer-1".into()],
            unmanaged_pods: vec![],
        }
    }

    fn terminating(mut pv: PersistentVolume) -> PersistentVolume {
        pv.metadata.deletion_timestamp = Some(serde_json::from_str("\"2026-01-01T00:00:00Z\"").unwrap());
        pv
    }

    const DRAIN: PlanOptions = PlanOptions { drain: true };

    #[test]
    fn a_fresh_plan_walks_every_step_in_order() {
        let pv = flex_pv(&[("volumeId", "v")]);
        let all = plan(Some(&pv), None, &Usage::default(), &journal(None), PlanOptions::default()).unwrap();
        assert_eq!(all, Step::ALL[..10].to_vec());
    }

    #[test]
    fn a_resumed_plan_starts_after_the_journal() {
        let pv = flex_pv(&[("volumeId", "v")]);
        let none = Usage::default();
        let go = PlanOptions::default();
        let rest = plan(Some(&pv), None, &none, &journal(Some(Step::ScaleDown)), go).unwrap();
        assert_eq!(rest.first(), Some(&Step::VerifyBefore));
        // Between delete and create the PV is gone; the journal and the copy carry on.
        let rest = plan(None, Some(&pv), &none, &journal(Some(Step::DeleteFlexPv)), go).unwrap();
        assert_eq!(rest.first(), Some(&Step::CreateCsiPv));
        // Deleted, but the journal update was lost: finish the delete.
        let rest = plan(None, Some(&pv), &none, &journal(Some(Step::SaveOriginal)), go).unwrap();
        assert_eq!(rest.first(), Some(&Step::DeleteFlexPv));
        assert_eq!(
            plan(None, None, &none, &journal(Some(Step::RetainPolicy)), go),
            Err(Refusal::Missing("legacy-1".into()))
        );
        let csi = to_csi_pv(&pv).unwrap();
        assert!(plan(Some(&csi), Some(&pv), &none, &journal(Some(Step::Done)), go).unwrap().is_empty());
        let rest = plan(Some(&csi), Some(&pv), &none, &journal(Some(Step::CreateCsiPv)), go).unwrap();
        assert_eq!(rest, vec![Step::VerifyAfter, Step::RestoreWorkload, Step::RestorePolicy]);
    }

    #[test]
    fn nothing_is_deleted_or_created_without_a_copy_of_the_flex_pv() {
        let pv = flex_pv(&[("volumeId", "v")]);
        let none = Usage::default();
        let go = PlanOptions::default();
        let at_delete = journal(Some(Step::SaveOriginal));
        // The copy is gone (a ConfigMap deleted, an old rollback): save it again first.
        let rest = plan(Some(&pv), None, &none, &at_delete, go).unwrap();
        assert_eq!(rest.first(), Some(&Step::SaveOriginal));
        // A copy of another volume is no copy.
        let other = flex_pv(&[("volumeId", "w")]);
        assert_eq!(
            plan(Some(&pv), Some(&other), &none, &at_delete, go).unwrap().first(),
            Some(&Step::SaveOriginal)
        );
        assert_eq!(
            plan(Some(&pv), Some(&pv), &none, &at_delete, go).unwrap().first(),
            Some(&Step::DeleteFlexPv)
        );
        // Being deleted and no copy: nothing can put it back, so stop.
        assert_eq!(
            plan(Some(&terminating(pv.clone())), None, &none, &at_delete, go),
            Err(Refusal::Missing("legacy-1".into()))
        );
        assert_eq!(
            plan(None, None, &none, &journal(Some(Step::DeleteFlexPv)), go),
            Err(Refusal::Missing("legacy-1".into()))
        );
    }

    #[test]
    fn a_journal_that_does_not_match_the_pv_is_refused() {
        let pv = flex_pv(&[("volumeId", "v")]);
        let csi = to_csi_pv(&pv).unwrap();
        let none = Usage::default();
        let go = PlanOptions::default();
        let refused = |pv: Option<&PersistentVolume>, done| {
            matches!(
                plan(pv, Some(&flex_pv(&[("volumeId", "v")])), &none, &journal(done), go),
                Err(Refusal::JournalMismatch { .. })
            )
        };
        assert!(refused(Some(&csi), Some(Step::RetainPolicy)), "a CSI PV before the delete");
        assert!(refused(Some(&terminating(pv.clone())), Some(Step::ScaleDown)), "someone else deletes it");
        assert!(refused(Some(&terminating(pv.clone())), None), "a fresh start on a PV being deleted");
        assert!(
            refused(Some(&csi), Some(Step::SaveOriginal)),
            "a CSI PV where the Flex one is to be deleted"
        );
        assert!(refused(Some(&pv), Some(Step::DeleteFlexPv)), "the Flex PV back after the delete");
        assert!(refused(Some(&pv), Some(Step::VerifyAfter)), "the Flex PV where the CSI one should be");
        assert!(refused(None, Some(Step::RestoreWorkload)), "the CSI PV gone");
    }

    #[test]
    fn a_claim_in_use_is_refused_unless_draining() {
        let pv = flex_pv(&[("volumeId", "v")]);
        assert!(matches!(
            plan(Some(&pv), None, &in_use(), &journal(None), PlanOptions::default()),
            Err(Refusal::InUse { .. })
        ));
        assert!(plan(Some(&pv), None, &in_use(), &journal(None), DRAIN).is_ok());
        let bare = Usage { unmanaged_pods: in_use().pods, ..in_use() };
        assert!(matches!(
            plan(Some(&pv), None, &bare, &journal(None), DRAIN),
            Err(Refusal::UnmanagedPods { .. })
        ));
    }

    #[test]
    fn a_resumed_run_finds_the_claim_in_use_again_and_scales_down_first() {
        let pv = flex_pv(&[("volumeId", "v")]);
        let csi = to_csi_pv(&pv).unwrap();
        for done in
            [Step::ScaleDown, Step::VerifyBefore, Step::SaveOriginal, Step::DeleteFlexPv, Step::CreateCsiPv]
        {
            let current = match done {
                Step::DeleteFlexPv => None,
                Step::CreateCsiPv => Some(&csi),
                _ => Some(&pv),
            };
            let result = plan(current, Some(&pv), &in_use(), &journal(Some(done)), PlanOptions::default());
            assert!(matches!(result, Err(Refusal::InUse { .. })), "after {done:?}: {result:?}");
            let walk = plan(current, Some(&pv), &in_use(), &journal(Some(done)), DRAIN).unwrap();
            assert_eq!(walk.first(), Some(&Step::ScaleDown), "after {done:?}: {walk:?}");
            if done <= Step::SaveOriginal {
                // The Flex PV is intact: checksum and save again, the data may have changed.
                assert_eq!(walk[..3], [Step::ScaleDown, Step::VerifyBefore, Step::SaveOriginal], "{walk:?}");
            } else {
                assert_eq!(walk[1], next_step(&journal(Some(done))), "{walk:?}");
            }
        }
        // Once the workload is restored, its Pods are expected.
        let rest = plan(
            Some(&csi),
            Some(&pv),
            &in_use(),
            &journal(Some(Step::RestoreWorkload)),
            PlanOptions::default(),
        );
        assert_eq!(rest, Ok(vec![Step::RestorePolicy]));
    }

    #[test]
    fn an_unfinished_rollback_stops_a_forward_run() {
        let pv = flex_pv(&[("volumeId", "v")]);
        let j = Journal { rolling_back: true, ..journal(Some(Step::CreateCsiPv)) };
        assert_eq!(
            plan(Some(&pv), Some(&pv), &Usage::default(), &j, DRAIN),
            Err(Refusal::RollbackUnfinished("legacy-1".into()))
        );
    }

    #[test]
    fn the_newest_journal_wins() {
        let a = journal(Some(Step::SaveOriginal));
        let b = journal(Some(Step::CreateCsiPv));
        // Written before revisions existed: the one further on.
        assert_eq!(Journal::newest(Some(a.clone()), Some(b.clone())), Some(b.clone()));
        assert_eq!(Journal::newest(Some(b.clone()), Some(a.clone())), Some(b.clone()));
        // A higher revision wins even when it is not further on (a rollback).
        let rollback = Journal { revision: 9, rolling_back: true, ..a.clone() };
        let behind = Journal { revision: 8, ..b.clone() };
        assert_eq!(Journal::newest(Some(behind.clone()), Some(rollback.clone())), Some(rollback.clone()));
        assert_eq!(Journal::newest(Some(rollback.clone()), Some(behind)), Some(rollback));
        assert_eq!(Journal::newest(None, Some(a.clone())), Some(a));
        assert_eq!(Journal::newest(None, None), None);
    }

    #[test]
    fn a_journal_without_the_new_fields_still_reads() {
        let old: Journal = serde_json::from_str(r#"{"pv":"legacy-1","completed":"save-original","workloads":[],"reclaimPolicy":"Delete","checksum":null}"#).unwrap();
        assert_eq!((old.revision, old.rolling_back, old.completed), (0, false, Some(Step::SaveOriginal)));
        assert!(!serde_json::to_string(&old).unwrap().contains("rollingBack"));
    }
}
