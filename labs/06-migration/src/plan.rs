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
    #[serde(default)]
    pub completed: Option<Step>,
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

    /// Of two copies (the PV's and the ConfigMap's), the one further on.
    pub fn furthest(a: Option<Journal>, b: Option<Journal>) -> Option<Journal> {
        match (a, b) {
            (Some(a), Some(b)) => Some(if b.completed > a.completed { b } else { a }),
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
    /// Skip the checksum steps.
    pub no_verify: bool,
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
/// What is left to do for one PV, or why not to start. `pv` is the PV as
/// it is now (`None` between delete and create), `journal` what is done.
pub fn plan(
    pv: Option<&PersistentVolume>,
    usage: &Usage,
    journal: &Journal,
    options: PlanOptions,
) -> Result<Vec<Step>, Refusal> {
    let next = next_step(journal);
    let started = journal.completed.is_some();
    match pv {
        // A fresh start: only Flex PVs of our driver, mappable to CSI.
        Some(pv) if !started => {
            to_csi_pv(pv)?;
        }
        Some(_) => {}
        // Gone after SaveOriginal: deleted by an interrupted DeleteFlexPv.
        None if next < Step::DeleteFlexPv => {
            return Err(Refusal::Missing(journal.pv.clone()));
        }
        None => {}
    }
    // Nobody may use the volume while its PV is replaced.
    if next <= Step::ScaleDown && !usage.pods.is_empty() {
        let claim = usage.claim.clone().unwrap_or_default();
        if !options.drain {
            return Err(Refusal::InUse { claim, pods: usage.pods.clone() });
        }
        if !usage.unmanaged_pods.is_empty() {
            return Err(Refusal::UnmanagedPods { claim, pods: usage.unmanaged_pods.clone() });
        }
    }
    Ok(Step::ALL
        .into_iter()
        .filter(|s| *s >= next && *s != Step::Done)
        .filter(|s| !(options.no_verify && s.is_verification()))
        .collect())
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

    #[test]
    fn a_fresh_plan_has_every_step_and_no_verify_drops_the_checksums() {
        let pv = flex_pv(&[("volumeId", "v")]);
        let all = plan(Some(&pv), &Usage::default(), &journal(None), PlanOptions::default()).unwrap();
        assert_eq!(all.len(), 10);
        let quick =
            plan(Some(&pv), &Usage::default(), &journal(None), PlanOptions { no_verify: true, drain: false })
                .unwrap();
        assert!(!quick.contains(&Step::VerifyBefore) && !quick.contains(&Step::VerifyAfter));
    }

    #[test]
    fn a_resumed_plan_starts_after_the_journal() {
        let pv = flex_pv(&[("volumeId", "v")]);
        let rest =
            plan(Some(&pv), &Usage::default(), &journal(Some(Step::ScaleDown)), PlanOptions::default())
                .unwrap();
        assert_eq!(rest.first(), Some(&Step::VerifyBefore));
        // Between delete and create the PV is gone; the journal carries on.
        let rest = plan(None, &Usage::default(), &journal(Some(Step::DeleteFlexPv)), PlanOptions::default())
            .unwrap();
        assert_eq!(rest.first(), Some(&Step::CreateCsiPv));
        assert!(
            plan(None, &Usage::default(), &journal(Some(Step::SaveOriginal)), PlanOptions::default()).is_ok()
        );
        assert_eq!(
            plan(None, &Usage::default(), &journal(Some(Step::RetainPolicy)), PlanOptions::default()),
            Err(Refusal::Missing("legacy-1".into()))
        );
        assert!(
            plan(Some(&pv), &Usage::default(), &journal(Some(Step::Done)), PlanOptions::default())
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn a_claim_in_use_is_refused_unless_draining() {
        let pv = flex_pv(&[("volumeId", "v")]);
        let usage = Usage {
            claim: Some("legacy/data".into()),
            workloads: vec![Workload {
                kind: WorkloadKind::Deployment,
                namespace: "legacy".into(),
                name: "writer".into(),
                replicas: 1,
            }],
            pods: vec!["legacy/writer-1".into()],
            unmanaged_pods: vec![],
        };
        assert!(matches!(
            plan(Some(&pv), &usage, &journal(None), PlanOptions::default()),
            Err(Refusal::InUse { .. })
        ));
        assert!(
            plan(Some(&pv), &usage, &journal(None), PlanOptions { drain: true, no_verify: false }).is_ok()
        );
        let bare = Usage { unmanaged_pods: usage.pods.clone(), ..usage };
        assert!(matches!(
            plan(Some(&pv), &bare, &journal(None), PlanOptions { drain: true, no_verify: false }),
            Err(Refusal::UnmanagedPods { .. })
        ));
    }

    #[test]
    fn the_furthest_journal_wins() {
        let a = journal(Some(Step::SaveOriginal));
        let b = journal(Some(Step::CreateCsiPv));
        assert_eq!(Journal::furthest(Some(a.clone()), Some(b.clone())), Some(b.clone()));
        assert_eq!(Journal::furthest(Some(b.clone()), Some(a)), Some(b));
        assert_eq!(Journal::furthest(None, None), None);
    }
}
