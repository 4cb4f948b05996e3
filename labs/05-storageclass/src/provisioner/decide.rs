//! The provisioner's decisions, as plain functions of API objects (C20–C22).
//!
//! Nothing here talks to the API server or the driver; [`super::controller`]
//! fetches the objects, asks these functions what to do, and does it. So every
//! rule is tested by a table in this file.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use k8s_openapi::api::core::v1::{
    CSIPersistentVolumeSource, Node, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm,
    ObjectReference, PersistentVolume, PersistentVolumeClaim, PersistentVolumeSpec, VolumeNodeAffinity,
};
use k8s_openapi::api::storage::v1::{CSINode, StorageClass, VolumeAttachment};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use lab01_identity::csi::volume_capability::access_mode::Mode;
use lab01_identity::csi::volume_capability::{AccessMode, AccessType, BlockVolume, MountVolume};
use lab01_identity::csi::{
    CapacityRange, CreateVolumeRequest, Topology, TopologyRequirement, Volume, VolumeCapability,
};

use super::quantity::parse_bytes;

/// Which provisioner the PV controller asks to provision a claim.
pub const ANN_STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";
/// The same, as Kubernetes before 1.23 wrote it (still set for compatibility).
pub const ANN_STORAGE_PROVISIONER_BETA: &str = "volume.beta.kubernetes.io/storage-provisioner";
/// The node the scheduler chose for a WaitForFirstConsumer claim's Pod.
pub const ANN_SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
/// Which provisioner created a PV; the PV controller and we both read it.
pub const ANN_PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
/// Holds a PV with reclaim policy Delete until DeleteVolume has succeeded.
pub const FINALIZER: &str = "csi.workshop.dev/provisioner-protection";
/// StorageClass parameters for the provisioner itself, never sent to the driver.
pub const RESERVED_PREFIX: &str = "csi.storage.k8s.io/";
/// The class parameter naming the filesystem of mount volumes.
pub const FSTYPE_PARAMETER: &str = "csi.storage.k8s.io/fstype";
pub const DEFAULT_FS_TYPE: &str = "ext4";

/// Why a claim cannot be provisioned (yet). Each becomes a Warning Event on
/// the claim, except [`Reject::WaitingForNode`], which is the normal state of
/// a WaitForFirstConsumer claim before its Pod is scheduled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Reject {
    #[error("waiting for a Pod using the claim to be scheduled (WaitForFirstConsumer)")]
    WaitingForNode,
    #[error("the claim has no spec.resources.requests.storage")]
    NoSizeRequested,
    #[error("bad storage request: {0}")]
    BadSize(String),
    #[error("the claim has no access modes")]
    NoAccessModes,
    #[error("access mode {0:?} is unknown")]
    BadAccessMode(String),
    #[error(
        "the claim has spec.selector: a provisioner makes a new volume, it cannot choose among \
         existing PVs by label (drop the selector, or bind the claim to a PV statically)"
    )]
    Selector,
    #[error(
        "the claim asks to be filled from {0}: csi-provisioner-rs implements no cloning, no \
         restore from snapshots and no volume populators, so it never makes an empty volume instead"
    )]
    DataSource(String),
    #[error("the selected node {0:?} does not run our node plugin (no CSINode entry for the driver)")]
    NodeWithoutDriver(String),
    #[error(
        "node {node:?} lacks the label(s) {} that its CSINode lists as topology keys of the driver \
         (kubelet sets them when the node plugin registers)",
        keys.join(", ")
    )]
    MissingTopologyLabels { node: String, keys: Vec<String> },
    #[error("no node runs our node plugin, so no topology to ask for")]
    NoNodesWithDriver,
}

impl Reject {
    /// Whether only a change of the claim itself can lift the refusal. A
    /// claim's selector and data source are immutable, so looking again
    /// later is pointless; the others (a class, a node, a label) may be
    /// fixed meanwhile without touching the claim.
    pub fn needs_new_claim(&self) -> bool {
        matches!(
            self,
            Reject::Selector
                | Reject::DataSource(_)
                | Reject::NoSizeRequested
                | Reject::BadSize(_)
                | Reject::NoAccessModes
                | Reject::BadAccessMode(_)
        )
    }
}

/// A node that runs our node plugin, and its topology segment: the node's
/// labels for the keys its CSINode entry lists for our driver.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeTopology {
    pub name: String,
    pub segments: BTreeMap<String, String>,
    /// Topology keys of the CSINode entry that the Node has no label for.
    /// Such a node has no complete segment: asking for the partial one
    /// would let the driver place the volume anywhere along the missing key.
    pub missing: Vec<String>,
}

/// The PV name for a claim: the same on every retry, so CreateVolume (which
/// gets it as `name`) stays idempotent and two attempts never make two volumes.
pub fn pv_name(pvc: &PersistentVolumeClaim) -> String {
    format!("pvc-{}", pvc.metadata.uid.as_deref().unwrap_or_default())
}

fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

// ANCHOR: is-ours
/// Is `pvc` a claim we must provision? The class must name our driver as its
/// provisioner, and the PV controller must have handed the claim to us (it
/// sets the storage-provisioner annotation on unbound claims of classes it
/// cannot provision itself). Bound claims are done.
pub fn is_ours(pvc: &PersistentVolumeClaim, class: &StorageClass, driver: &str) -> bool {
    // TODO(lab05): true when the class's provisioner is `driver`, the claim is
    // not bound yet (no spec.volumeName), and its ANN_STORAGE_PROVISIONER
    // annotation (or, missing that, ANN_STORAGE_PROVISIONER_BETA) is `driver`.
    // ANCHOR: solution
    let bound = pvc.spec.as_ref().and_then(|s| s.volume_name.as_deref()).is_some_and(|v| !v.is_empty());
    let asked = annotation(&pvc.metadata, ANN_STORAGE_PROVISIONER)
        .or_else(|| annotation(&pvc.metadata, ANN_STORAGE_PROVISIONER_BETA));
    class.provisioner == driver && !bound && asked == Some(driver)
    // ANCHOR_END: solution => { let _ = (pvc, class, driver, annotation(&pvc.metadata, ANN_STORAGE_PROVISIONER)); false }
}
// ANCHOR_END: is-ours

/// The nodes that run our node plugin, with their topology segments (and
/// the keys whose label a node lacks, in [`NodeTopology::missing`]).
pub fn node_topologies(nodes: &[Node], csinodes: &[CSINode], driver: &str) -> Vec<NodeTopology> {
    let mut out: Vec<NodeTopology> = csinodes
        .iter()
        .filter_map(|csinode| {
            let name = csinode.metadata.name.clone()?;
            let entry = csinode.spec.drivers.iter().find(|d| d.name == driver)?;
            let labels = nodes
                .iter()
                .find(|n| n.metadata.name.as_deref() == Some(&name))
                .and_then(|n| n.metadata.labels.clone())
                .unwrap_or_default();
            let mut segments = BTreeMap::new();
            let mut missing = Vec::new();
            for key in entry.topology_keys.iter().flatten() {
                match labels.get(key) {
                    Some(value) => {
                        segments.insert(key.clone(), value.clone());
                    }
                    None => missing.push(key.clone()),
                }
            }
            Some(NodeTopology { name, segments, missing })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// What the claim's `dataSourceRef` (or the older `dataSource`) names, as
/// `group/Kind name` (`PersistentVolumeClaim name` for the core group).
pub fn data_source(pvc: &PersistentVolumeClaim) -> Option<String> {
    let spec = pvc.spec.as_ref()?;
    let (group, kind, name) = match (&spec.data_source_ref, &spec.data_source) {
        (Some(r), _) => (r.api_group.as_deref(), r.kind.as_str(), r.name.as_str()),
        (None, Some(r)) => (r.api_group.as_deref(), r.kind.as_str(), r.name.as_str()),
        (None, None) => return None,
    };
    Some(match group.filter(|g| !g.is_empty()) {
        Some(group) => format!("{group}/{kind} {name}"),
        None => format!("{kind} {name}"),
    })
}

/// The CSI access mode for a Kubernetes one.
pub fn access_mode(k8s: &str) -> Result<Mode, Reject> {
    match k8s {
        "ReadWriteOnce" => Ok(Mode::SingleNodeWriter),
        "ReadWriteOncePod" => Ok(Mode::SingleNodeSingleWriter),
        "ReadOnlyMany" => Ok(Mode::MultiNodeReaderOnly),
        "ReadWriteMany" => Ok(Mode::MultiNodeMultiWriter),
        other => Err(Reject::BadAccessMode(other.to_owned())),
    }
}

/// The bytes a claim asks for.
pub fn requested_bytes(pvc: &PersistentVolumeClaim) -> Result<i64, Reject> {
    let quantity = pvc
        .spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .ok_or(Reject::NoSizeRequested)?;
    parse_bytes(&quantity.0).map_err(Reject::BadSize)
}

fn is_block(pvc: &PersistentVolumeClaim) -> bool {
    pvc.spec.as_ref().and_then(|s| s.volume_mode.as_deref()) == Some("Block")
}

fn fs_type(class: &StorageClass) -> String {
    class
        .parameters
        .as_ref()
        .and_then(|p| p.get(FSTYPE_PARAMETER))
        .filter(|v| !v.is_empty())
        .cloned()
        .unwrap_or_else(|| DEFAULT_FS_TYPE.to_owned())
}

fn wait_for_first_consumer(class: &StorageClass) -> bool {
    class.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer")
}

// ANCHOR: plan-create
/// The CreateVolume request for a claim of ours.
pub fn plan_create(
    pvc: &PersistentVolumeClaim,
    class: &StorageClass,
    nodes: &[NodeTopology],
) -> Result<CreateVolumeRequest, Reject> {
    // Two things a claim may ask that we cannot give. Provisioning anyway
    // would hand the user an empty volume where they asked for a PV chosen
    // by label, or for a copy of their data.
    let claim_spec = pvc.spec.as_ref();
    if claim_spec.and_then(|s| s.selector.as_ref()).is_some() {
        return Err(Reject::Selector);
    }
    if let Some(source) = data_source(pvc) {
        return Err(Reject::DataSource(source));
    }
    let required_bytes = requested_bytes(pvc)?;
    let k8s_modes = pvc.spec.as_ref().and_then(|s| s.access_modes.clone()).unwrap_or_default();
    if k8s_modes.is_empty() {
        return Err(Reject::NoAccessModes);
    }
    let access_type = if is_block(pvc) {
        AccessType::Block(BlockVolume {})
    } else {
        let mount_flags = class.mount_options.clone().unwrap_or_default();
        AccessType::Mount(MountVolume { fs_type: fs_type(class), mount_flags, ..Default::default() })
    };
    let volume_capabilities = k8s_modes
        .iter()
        .map(|m| {
            Ok(VolumeCapability {
                access_type: Some(access_type.clone()),
                access_mode: Some(AccessMode { mode: access_mode(m)? as i32 }),
            })
        })
        .collect::<Result<Vec<_>, Reject>>()?;
    // Kubernetes' own keys (fstype, secrets...) are for us, not the driver.
    let parameters: HashMap<String, String> = class
        .parameters
        .iter()
        .flatten()
        .filter(|(k, _)| !k.starts_with(RESERVED_PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();

    // TODO(lab05): the topology requirement. WaitForFirstConsumer: the
    // ANN_SELECTED_NODE's segment as requisite and preferred (no annotation
    // yet: Reject::WaitingForNode; a node not in `nodes`:
    // Reject::NodeWithoutDriver; one with `missing` labels:
    // Reject::MissingTopologyLabels). Immediate: the segment of every node
    // with no `missing` label (no duplicates) as requisite and preferred
    // (none: Reject::NoNodesWithDriver, or MissingTopologyLabels for the
    // first incomplete node when that is why).
    // ANCHOR: solution
    let topology = |segments: &BTreeMap<String, String>| Topology {
        segments: segments.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    };
    let incomplete =
        |n: &NodeTopology| Reject::MissingTopologyLabels { node: n.name.clone(), keys: n.missing.clone() };
    let segments: Vec<Topology> = if wait_for_first_consumer(class) {
        let selected = annotation(&pvc.metadata, ANN_SELECTED_NODE).ok_or(Reject::WaitingForNode)?;
        let node = nodes
            .iter()
            .find(|n| n.name == selected)
            .ok_or_else(|| Reject::NodeWithoutDriver(selected.to_owned()))?;
        if !node.missing.is_empty() {
            return Err(incomplete(node));
        }
        vec![topology(&node.segments)]
    } else {
        // A node with an incomplete segment is left out, not asked for by
        // its partial segment; the controller logs it.
        let unique: BTreeSet<&BTreeMap<String, String>> =
            nodes.iter().filter(|n| n.missing.is_empty()).map(|n| &n.segments).collect();
        if unique.is_empty() {
            return Err(nodes.first().map_or(Reject::NoNodesWithDriver, incomplete));
        }
        unique.into_iter().map(topology).collect()
    };
    let accessibility_requirements =
        Some(TopologyRequirement { requisite: segments.clone(), preferred: segments });
    // ANCHOR_END: solution => let accessibility_requirements: Option<TopologyRequirement> = { let _ = (nodes, wait_for_first_consumer(class), BTreeSet::<u8>::new(), Topology::default()); None };

    Ok(CreateVolumeRequest {
        name: pv_name(pvc),
        capacity_range: Some(CapacityRange { required_bytes, limit_bytes: 0 }),
        volume_capabilities,
        parameters,
        accessibility_requirements,
        ..Default::default()
    })
}
// ANCHOR_END: plan-create

// ANCHOR: build-pv
/// The PV for a claim whose volume the driver has created.
pub fn build_pv(pvc: &PersistentVolumeClaim, class: &StorageClass, volume: &Volume) -> PersistentVolume {
    let spec = pvc.spec.clone().unwrap_or_default();
    let policy = class.reclaim_policy.clone().unwrap_or_else(|| "Delete".to_owned());
    let finalizers = (policy == "Delete").then(|| vec![FINALIZER.to_owned()]);
    let fs_type = (!is_block(pvc)).then(|| fs_type(class));
    // TODO(lab05): node affinity from `volume.accessible_topology`: one
    // NodeSelectorTerm per segment (terms are ORed), each with one
    // NodeSelectorRequirement `key In [value]` per key (ANDed), keys sorted.
    // No topology: no node affinity.
    // ANCHOR: solution
    let terms: Vec<NodeSelectorTerm> = volume
        .accessible_topology
        .iter()
        .map(|segment| {
            let mut keys: Vec<_> = segment.segments.iter().collect();
            keys.sort();
            NodeSelectorTerm {
                match_expressions: Some(
                    keys.into_iter()
                        .map(|(key, value)| NodeSelectorRequirement {
                            key: key.clone(),
                            operator: "In".to_owned(),
                            values: Some(vec![value.clone()]),
                        })
                        .collect(),
                ),
                match_fields: None,
            }
        })
        .collect();
    let node_affinity = (!terms.is_empty())
        .then_some(VolumeNodeAffinity { required: Some(NodeSelector { node_selector_terms: terms }) });
    // ANCHOR_END: solution => let node_affinity: Option<VolumeNodeAffinity> = { let _ = (NodeSelectorTerm::default(), NodeSelector::default(), NodeSelectorRequirement::default()); None };
    PersistentVolume {
        metadata: ObjectMeta {
            name: Some(pv_name(pvc)),
            annotations: Some(BTreeMap::from([(ANN_PROVISIONED_BY.to_owned(), class.provisioner.clone())])),
            finalizers,
            ..Default::default()
        },
        spec: Some(PersistentVolumeSpec {
            access_modes: spec.access_modes,
            capacity: Some(BTreeMap::from([(
                "storage".to_owned(),
                Quantity(volume.capacity_bytes.to_string()),
            )])),
            claim_ref: Some(ObjectReference {
                api_version: Some("v1".to_owned()),
                kind: Some("PersistentVolumeClaim".to_owned()),
                namespace: pvc.metadata.namespace.clone(),
                name: pvc.metadata.name.clone(),
                uid: pvc.metadata.uid.clone(),
                resource_version: pvc.metadata.resource_version.clone(),
                ..Default::default()
            }),
            csi: Some(CSIPersistentVolumeSource {
                driver: class.provisioner.clone(),
                volume_handle: volume.volume_id.clone(),
                volume_attributes: Some(
                    volume.volume_context.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                ),
                fs_type,
                ..Default::default()
            }),
            mount_options: class.mount_options.clone(),
            node_affinity,
            persistent_volume_reclaim_policy: Some(policy),
            storage_class_name: class.metadata.name.clone(),
            volume_mode: Some(spec.volume_mode.unwrap_or_else(|| "Filesystem".to_owned())),
            ..Default::default()
        }),
        status: None,
    }
}
// ANCHOR_END: build-pv

/// What to do with a PV.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Not provisioned by us: none of our business.
    NotOurs,
    /// Ours and in use (or not yet released): nothing to do.
    Keep,
    /// Released, reclaim policy Retain: the volume and PV stay for an admin.
    Retain,
    /// Released, reclaim policy Delete: DeleteVolume, then delete the PV.
    Delete { volume_id: String },
}

// ANCHOR: on-released
/// What a PV's state asks of us. The PV controller sets phase Released when
/// the claim bound to the PV is deleted.
pub fn on_released(pv: &PersistentVolume, driver: &str) -> Action {
    // TODO(lab05): NotOurs unless ANN_PROVISIONED_BY is `driver`; Keep unless
    // status.phase is "Released"; then by spec.persistentVolumeReclaimPolicy:
    // "Delete" (the default) → Delete with the CSI volume handle, otherwise Retain.
    // ANCHOR: solution
    if annotation(&pv.metadata, ANN_PROVISIONED_BY) != Some(driver) {
        return Action::NotOurs;
    }
    if pv.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Released") {
        return Action::Keep;
    }
    let spec = pv.spec.as_ref();
    match spec.and_then(|s| s.persistent_volume_reclaim_policy.as_deref()).unwrap_or("Delete") {
        "Delete" => match spec.and_then(|s| s.csi.as_ref()) {
            Some(csi) => Action::Delete { volume_id: csi.volume_handle.clone() },
            None => Action::Retain, // not a CSI PV after all: leave it to an admin
        },
        _ => Action::Retain,
    }
    // ANCHOR_END: solution => { let _ = (pv, driver); Action::Keep }
}
// ANCHOR_END: on-released

/// The new size for a bound claim whose request grew beyond its PV, when the
/// class allows expansion. `None`: nothing to expand.
pub fn plan_expand(pvc: &PersistentVolumeClaim, pv: &PersistentVolume, class: &StorageClass) -> Option<i64> {
    if class.allow_volume_expansion != Some(true) {
        return None;
    }
    let wanted = requested_bytes(pvc).ok()?;
    let current = pv_capacity(pv)?;
    (wanted > current).then_some(wanted)
}

/// A PV's `spec.capacity.storage` in bytes.
pub fn pv_capacity(pv: &PersistentVolume) -> Option<i64> {
    let quantity = pv.spec.as_ref()?.capacity.as_ref()?.get("storage")?;
    parse_bytes(&quantity.0).ok()
}

/// What went wrong for a claim, as [`should_reschedule`] sees it.
#[derive(Debug, Clone, Copy)]
pub enum Failure<'a> {
    /// [`plan_create`] refused the claim.
    Rejected(&'a Reject),
    /// CreateVolume answered with this code.
    CreateVolume(tonic::Code),
}

// ANCHOR: should-reschedule
/// The node to hand back to the scheduler: for a WaitForFirstConsumer claim
/// whose selected node cannot get the volume. The scheduler chose the node
/// before anyone asked the driver; if the node has no plugin (or an
/// incomplete topology) or the driver answers RESOURCE_EXHAUSTED for it (no
/// room there), waiting does not help. Removing `selected-node` makes the
/// scheduler pick again, perhaps another node, as upstream's
/// sig-storage-lib-external-provisioner does (`ProvisioningReschedule`).
pub fn should_reschedule<'a>(
    pvc: &'a PersistentVolumeClaim,
    class: &StorageClass,
    failure: Failure<'_>,
) -> Option<&'a str> {
    if !wait_for_first_consumer(class) {
        return None; // Immediate: nobody selected a node
    }
    let retry_elsewhere = match failure {
        Failure::Rejected(Reject::NodeWithoutDriver(_) | Reject::MissingTopologyLabels { .. }) => true,
        Failure::Rejected(_) => false,
        Failure::CreateVolume(code) => code == tonic::Code::ResourceExhausted,
    };
    annotation(&pvc.metadata, ANN_SELECTED_NODE).filter(|_| retry_elsewhere)
}
// ANCHOR_END: should-reschedule

/// The merge patch that takes the selected node back. It carries the
/// claim's resourceVersion, so it fails (409 Conflict) if the claim changed
/// since we read it: a node the scheduler selected meanwhile is never
/// removed by mistake.
pub fn unselect_node_patch(pvc: &PersistentVolumeClaim) -> serde_json::Value {
    serde_json::json!({"metadata": {
        "resourceVersion": pvc.metadata.resource_version,
        "annotations": {ANN_SELECTED_NODE: null},
    }})
}

// ANCHOR: attached-nodes
/// The nodes whose VolumeAttachment still names the PV. DeleteVolume must
/// wait until there are none: deleting a volume still attached (or being
/// detached) would pull it from under a node, and external-attacher could
/// no longer ControllerUnpublish it. Upstream external-provisioner checks
/// the same before it deletes.
pub fn attached_nodes(pv_name: &str, attachments: &[VolumeAttachment]) -> Vec<String> {
    let mut nodes: Vec<String> = attachments
        .iter()
        .filter(|va| va.spec.source.persistent_volume_name.as_deref() == Some(pv_name))
        .map(|va| va.spec.node_name.clone())
        .collect();
    nodes.sort();
    nodes.dedup();
    nodes
}
// ANCHOR_END: attached-nodes

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{
        PersistentVolumeClaimSpec, PersistentVolumeStatus, VolumeResourceRequirements,
    };
    use k8s_openapi::api::storage::v1::{CSINodeDriver, CSINodeSpec};
    use serde_json::json;

    use super::*;

    const DRIVER: &str = "csi.workshop.dev";
    const BACKEND: &str = "topology.csi.workshop.dev/backend";
    const NODE: &str = "topology.csi.workshop.dev/node";

    fn class(binding: &str, params: serde_json::Value) -> StorageClass {
        serde_json::from_value(json!({
            "metadata": {"name": "fast"},
            "provisioner": DRIVER,
            "parameters": params,
            "reclaimPolicy": "Delete",
            "volumeBindingMode": binding,
            "mountOptions": ["noatime"],
        }))
        .unwrap()
    }

    fn claim(annotations: serde_json::Value, modes: &[&str], size: &str) -> PersistentVolumeClaim {
        let mut pvc: PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": {"name": "data", "namespace": "apps", "uid": "1234-abcd", "annotations": annotations},
        }))
        .unwrap();
        pvc.spec = Some(PersistentVolumeClaimSpec {
            access_modes: Some(modes.iter().map(|m| m.to_string()).collect()),
            storage_class_name: Some("fast".into()),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".to_owned(), Quantity(size.into()))])),
                ..Default::default()
            }),
            ..Default::default()
        });
        pvc
    }

    fn ours() -> serde_json::Value {
        json!({ANN_STORAGE_PROVISIONER: DRIVER})
    }

    fn topo(name: &str, backend: &str) -> NodeTopology {
        NodeTopology {
            name: name.into(),
            segments: BTreeMap::from([(BACKEND.into(), backend.into()), (NODE.into(), name.into())]),
            missing: vec![],
        }
    }

    /// A node whose Node object lacks the backend label its CSINode lists.
    fn unlabelled(name: &str) -> NodeTopology {
        NodeTopology {
            name: name.into(),
            segments: BTreeMap::from([(NODE.into(), name.into())]),
            missing: vec![BACKEND.into()],
        }
    }

    #[test]
    fn is_ours_needs_our_class_our_annotation_and_no_binding() {
        let mut bound = claim(ours(), &["ReadWriteOnce"], "1Gi");
        bound.spec.as_mut().unwrap().volume_name = Some("pvc-old".into());
        let mut other_class = class("Immediate", json!({}));
        other_class.provisioner = "ebs.csi.aws.com".into();
        let cases = [
            (
                "annotated for us",
                claim(ours(), &["ReadWriteOnce"], "1Gi"),
                class("Immediate", json!({})),
                true,
            ),
            (
                "beta annotation only",
                claim(json!({ANN_STORAGE_PROVISIONER_BETA: DRIVER}), &["ReadWriteOnce"], "1Gi"),
                class("Immediate", json!({})),
                true,
            ),
            (
                "annotated for another provisioner",
                claim(json!({ANN_STORAGE_PROVISIONER: "other"}), &["ReadWriteOnce"], "1Gi"),
                class("Immediate", json!({})),
                false,
            ),
            (
                "no annotation yet",
                claim(json!({}), &["ReadWriteOnce"], "1Gi"),
                class("Immediate", json!({})),
                false,
            ),
            ("already bound", bound, class("Immediate", json!({})), false),
            ("class of another driver", claim(ours(), &["ReadWriteOnce"], "1Gi"), other_class, false),
        ];
        for (what, pvc, class, want) in cases {
            assert_eq!(is_ours(&pvc, &class, DRIVER), want, "is_ours: {what}");
        }
    }

    #[test]
    fn access_modes_map_to_csi_modes() {
        for (k8s, csi) in [
            ("ReadWriteOnce", Mode::SingleNodeWriter),
            ("ReadWriteOncePod", Mode::SingleNodeSingleWriter),
            ("ReadOnlyMany", Mode::MultiNodeReaderOnly),
            ("ReadWriteMany", Mode::MultiNodeMultiWriter),
        ] {
            assert_eq!(access_mode(k8s), Ok(csi), "{k8s}");
        }
        assert_eq!(
            access_mode("ReadWriteSometimes"),
            Err(Reject::BadAccessMode("ReadWriteSometimes".into()))
        );
    }

    #[test]
    fn plan_create_names_sizes_and_filters_parameters() {
        let class = class("Immediate", json!({"type": "file", "csi.storage.k8s.io/fstype": "xfs"}));
        let pvc = claim(ours(), &["ReadWriteMany"], "64Mi");
        let req = plan_create(&pvc, &class, &[topo("w1", "san-1")]).unwrap();
        assert_eq!(req.name, "pvc-1234-abcd", "the name is pvc-<claim uid>, so retries are idempotent");
        assert_eq!(req.capacity_range.unwrap().required_bytes, 64 << 20);
        assert_eq!(
            req.parameters,
            HashMap::from([("type".to_owned(), "file".to_owned())]),
            "reserved keys dropped"
        );
        let cap = &req.volume_capabilities[0];
        assert_eq!(cap.access_mode.unwrap().mode, Mode::MultiNodeMultiWriter as i32);
        match cap.access_type.as_ref().unwrap() {
            AccessType::Mount(m) => {
                assert_eq!(m.fs_type, "xfs");
                assert_eq!(m.mount_flags, ["noatime"]);
            }
            other => panic!("expected a mount volume, got {other:?}"),
        }
    }

    #[test]
    fn block_claims_ask_for_block_access_and_mount_ones_default_to_ext4() {
        let mut pvc = claim(ours(), &["ReadWriteOnce"], "1Gi");
        let c = class("Immediate", json!({"type": "block"}));
        let req = plan_create(&pvc, &c, &[topo("w1", "san-1")]).unwrap();
        assert!(
            matches!(&req.volume_capabilities[0].access_type, Some(AccessType::Mount(m)) if m.fs_type == "ext4")
        );
        pvc.spec.as_mut().unwrap().volume_mode = Some("Block".into());
        let req = plan_create(&pvc, &c, &[topo("w1", "san-1")]).unwrap();
        assert!(matches!(req.volume_capabilities[0].access_type, Some(AccessType::Block(_))));
    }

    #[test]
    fn plan_create_refuses_claims_it_cannot_serve() {
        let c = class("Immediate", json!({}));
        let nodes = [topo("w1", "san-1")];
        let mut no_size = claim(ours(), &["ReadWriteOnce"], "1Gi");
        no_size.spec.as_mut().unwrap().resources = None;
        let cases = [
            (claim(ours(), &["ReadWriteOnce"], "lots"), Reject::BadSize("x".into())),
            (claim(ours(), &[], "1Gi"), Reject::NoAccessModes),
            (claim(ours(), &["Sometimes"], "1Gi"), Reject::BadAccessMode("Sometimes".into())),
            (no_size, Reject::NoSizeRequested),
        ];
        for (pvc, want) in cases {
            let got = plan_create(&pvc, &c, &nodes).unwrap_err();
            assert_eq!(std::mem::discriminant(&got), std::mem::discriminant(&want), "{got}");
        }
    }

    fn requisite(req: &CreateVolumeRequest) -> Vec<BTreeMap<String, String>> {
        let Some(t) = req.accessibility_requirements.as_ref() else {
            panic!(
                "plan_create sent no accessibility_requirements: the driver must learn where the volume may live"
            )
        };
        assert_eq!(t.requisite, t.preferred, "preferred should be the same segments as requisite");
        t.requisite.iter().map(|s| s.segments.clone().into_iter().collect()).collect()
    }

    #[test]
    fn wait_for_first_consumer_waits_for_the_selected_node_and_asks_for_its_topology() {
        let c = class("WaitForFirstConsumer", json!({}));
        let nodes = [topo("w1", "san-1"), topo("w2", "san-1")];
        let waiting = claim(ours(), &["ReadWriteOnce"], "1Gi");
        assert_eq!(
            plan_create(&waiting, &c, &nodes),
            Err(Reject::WaitingForNode),
            "no selected-node yet: wait"
        );

        let selected = claim(
            json!({ANN_STORAGE_PROVISIONER: DRIVER, ANN_SELECTED_NODE: "w2"}),
            &["ReadWriteOnce"],
            "1Gi",
        );
        let req = plan_create(&selected, &c, &nodes).expect("the selected node runs our plugin");
        assert_eq!(requisite(&req), [topo("w2", "san-1").segments], "only the selected node's segment");

        let elsewhere = claim(
            json!({ANN_STORAGE_PROVISIONER: DRIVER, ANN_SELECTED_NODE: "cp"}),
            &["ReadWriteOnce"],
            "1Gi",
        );
        assert_eq!(plan_create(&elsewhere, &c, &nodes), Err(Reject::NodeWithoutDriver("cp".into())));
    }

    #[test]
    fn immediate_asks_for_every_node_with_our_driver() {
        let c = class("Immediate", json!({}));
        let pvc = claim(ours(), &["ReadWriteOnce"], "1Gi");
        let nodes = [topo("w1", "san-1"), topo("w2", "san-1"), topo("w2", "san-1")];
        let req = plan_create(&pvc, &c, &nodes).unwrap();
        assert_eq!(
            requisite(&req),
            [topo("w1", "san-1").segments, topo("w2", "san-1").segments],
            "each segment once"
        );
        assert_eq!(plan_create(&pvc, &c, &[]), Err(Reject::NoNodesWithDriver));
    }

    #[test]
    fn node_topologies_read_the_csinode_keys_from_the_node_labels() {
        let node = |name: &str| -> Node {
            serde_json::from_value(
                json!({"metadata": {"name": name, "labels": {BACKEND: "san-1", NODE: name, "zone": "a"}}}),
            )
            .unwrap()
        };
        let csinode = |name: &str, driver: &str| CSINode {
            metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
            spec: CSINodeSpec {
                drivers: vec![CSINodeDriver {
                    name: driver.into(),
                    node_id: name.into(),
                    topology_keys: Some(vec![BACKEND.into(), NODE.into()]),
                    ..Default::default()
                }],
            },
        };
        let got = node_topologies(
            &[node("w2"), node("w1"), node("cp")],
            &[csinode("w2", DRIVER), csinode("w1", DRIVER), csinode("cp", "other.csi")],
            DRIVER,
        );
        assert_eq!(
            got,
            [topo("w1", "san-1"), topo("w2", "san-1")],
            "zone is not one of our keys; cp has no plugin"
        );

        let bare: Node =
            serde_json::from_value(json!({"metadata": {"name": "w3", "labels": {NODE: "w3"}}})).unwrap();
        assert_eq!(
            node_topologies(&[bare], &[csinode("w3", DRIVER)], DRIVER),
            [unlabelled("w3")],
            "a key without a label is reported missing, not silently dropped"
        );
    }

    #[test]
    fn a_node_missing_a_topology_label_is_refused_when_selected_and_skipped_otherwise() {
        let wffc = class("WaitForFirstConsumer", json!({}));
        let on_w3 = claim(
            json!({ANN_STORAGE_PROVISIONER: DRIVER, ANN_SELECTED_NODE: "w3"}),
            &["ReadWriteOnce"],
            "1Gi",
        );
        assert_eq!(
            plan_create(&on_w3, &wffc, &[topo("w1", "san-1"), unlabelled("w3")]),
            Err(Reject::MissingTopologyLabels { node: "w3".into(), keys: vec![BACKEND.into()] }),
            "the selected node has no complete segment"
        );

        let immediate = class("Immediate", json!({}));
        let pvc = claim(ours(), &["ReadWriteOnce"], "1Gi");
        let req = plan_create(&pvc, &immediate, &[topo("w1", "san-1"), unlabelled("w3")]).unwrap();
        assert_eq!(requisite(&req), [topo("w1", "san-1").segments], "w3's partial segment is not asked for");
        assert_eq!(
            plan_create(&pvc, &immediate, &[unlabelled("w3")]),
            Err(Reject::MissingTopologyLabels { node: "w3".into(), keys: vec![BACKEND.into()] }),
            "when no node is complete, say why"
        );
    }

    #[test]
    fn claims_with_a_selector_or_a_data_source_are_refused() {
        let c = class("Immediate", json!({}));
        let nodes = [topo("w1", "san-1")];
        let with = |spec: serde_json::Value| {
            let mut pvc = claim(ours(), &["ReadWriteOnce"], "1Gi");
            let mut merged = serde_json::to_value(pvc.spec.take().unwrap()).unwrap();
            merged.as_object_mut().unwrap().extend(spec.as_object().unwrap().clone());
            pvc.spec = Some(serde_json::from_value(merged).unwrap());
            pvc
        };
        let cases = [
            (
                "a label selector",
                with(json!({"selector": {"matchLabels": {"disk": "ssd"}}})),
                Err(Reject::Selector),
            ),
            (
                "a clone of another claim",
                with(json!({"dataSource": {"kind": "PersistentVolumeClaim", "name": "old"}})),
                Err(Reject::DataSource("PersistentVolumeClaim old".into())),
            ),
            (
                "a snapshot to restore",
                with(
                    json!({"dataSourceRef": {"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": "snap-1"}}),
                ),
                Err(Reject::DataSource("snapshot.storage.k8s.io/VolumeSnapshot snap-1".into())),
            ),
            (
                "a volume populator (dataSourceRef only)",
                with(
                    json!({"dataSourceRef": {"apiGroup": "hello.example.com", "kind": "Hello", "name": "h"}}),
                ),
                Err(Reject::DataSource("hello.example.com/Hello h".into())),
            ),
        ];
        for (what, pvc, want) in cases {
            assert_eq!(plan_create(&pvc, &c, &nodes).map(|_| ()), want, "{what}");
        }
        assert!(Reject::Selector.needs_new_claim() && Reject::DataSource(String::new()).needs_new_claim());
        assert!(!Reject::NoNodesWithDriver.needs_new_claim(), "a node may come");
        assert!(
            plan_create(&claim(ours(), &["ReadWriteOnce"], "1Gi"), &c, &nodes).is_ok(),
            "neither: provisioned"
        );
    }

    fn created(topology: &[(&str, &str)]) -> Volume {
        Volume {
            capacity_bytes: 1 << 30,
            volume_id: "pvc-1234-abcd".into(),
            volume_context: HashMap::from([("type".to_owned(), "block".to_owned())]),
            accessible_topology: vec![Topology {
                segments: topology.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            }],
            content_source: None,
        }
    }

    #[test]
    fn build_pv_writes_the_volume_claim_ref_class_and_policy() {
        let pvc = claim(ours(), &["ReadWriteOnce"], "1000Mi");
        let c = class("Immediate", json!({"type": "block"}));
        let pv = build_pv(&pvc, &c, &created(&[(BACKEND, "san-1")]));
        assert_eq!(pv.metadata.name.as_deref(), Some("pvc-1234-abcd"));
        assert_eq!(annotation(&pv.metadata, ANN_PROVISIONED_BY), Some(DRIVER));
        assert_eq!(
            pv.metadata.finalizers,
            Some(vec![FINALIZER.to_owned()]),
            "Delete policy: hold the PV until DeleteVolume"
        );
        let spec = pv.spec.unwrap();
        let csi = spec.csi.unwrap();
        assert_eq!((csi.driver.as_str(), csi.volume_handle.as_str()), (DRIVER, "pvc-1234-abcd"));
        assert_eq!(csi.volume_attributes.unwrap()["type"], "block");
        assert_eq!(csi.fs_type.as_deref(), Some("ext4"));
        assert_eq!(spec.capacity.unwrap()["storage"].0, (1i64 << 30).to_string(), "the size the driver made");
        let claim_ref = spec.claim_ref.unwrap();
        assert_eq!(
            (claim_ref.namespace.as_deref(), claim_ref.name.as_deref(), claim_ref.uid.as_deref()),
            (Some("apps"), Some("data"), Some("1234-abcd"))
        );
        assert_eq!(spec.storage_class_name.as_deref(), Some("fast"));
        assert_eq!(spec.persistent_volume_reclaim_policy.as_deref(), Some("Delete"));
        assert_eq!(spec.mount_options, Some(vec!["noatime".to_owned()]));
        assert_eq!(spec.access_modes, Some(vec!["ReadWriteOnce".to_owned()]));
    }

    #[test]
    fn build_pv_pins_the_pv_to_the_volume_topology() {
        let pvc = claim(ours(), &["ReadWriteOnce"], "1Gi");
        let pv =
            build_pv(&pvc, &class("Immediate", json!({})), &created(&[(NODE, "w1"), (BACKEND, "san-1")]));
        let affinity = pv.spec.unwrap().node_affinity.expect("a PV with topology needs spec.nodeAffinity");
        let terms = affinity.required.unwrap().node_selector_terms;
        assert_eq!(terms.len(), 1, "one NodeSelectorTerm per topology segment");
        let exprs: Vec<_> = terms[0]
            .match_expressions
            .iter()
            .flatten()
            .map(|e| (e.key.as_str(), e.operator.as_str(), e.values.clone().unwrap_or_default()))
            .collect();
        assert_eq!(exprs, [(BACKEND, "In", vec!["san-1".to_owned()]), (NODE, "In", vec!["w1".to_owned()])]);

        let mut unpinned = created(&[]);
        unpinned.accessible_topology.clear();
        assert_eq!(
            build_pv(&pvc, &class("Immediate", json!({})), &unpinned).spec.unwrap().node_affinity,
            None
        );
    }

    #[test]
    fn retain_pvs_get_no_finalizer_and_block_pvs_no_fs_type() {
        let mut pvc = claim(ours(), &["ReadWriteOnce"], "1Gi");
        pvc.spec.as_mut().unwrap().volume_mode = Some("Block".into());
        let mut c = class("Immediate", json!({}));
        c.reclaim_policy = Some("Retain".into());
        let pv = build_pv(&pvc, &c, &created(&[(BACKEND, "san-1")]));
        assert_eq!(pv.metadata.finalizers, None);
        let spec = pv.spec.unwrap();
        assert_eq!(spec.persistent_volume_reclaim_policy.as_deref(), Some("Retain"));
        assert_eq!(spec.volume_mode.as_deref(), Some("Block"));
        assert_eq!(spec.csi.unwrap().fs_type, None);
    }

    fn pv(provisioner: &str, phase: &str, policy: &str) -> PersistentVolume {
        let pvc = claim(ours(), &["ReadWriteOnce"], "1Gi");
        let mut c = class("Immediate", json!({}));
        c.provisioner = provisioner.into();
        c.reclaim_policy = Some(policy.into());
        let mut pv = build_pv(&pvc, &c, &created(&[]));
        pv.status = Some(PersistentVolumeStatus { phase: Some(phase.into()), ..Default::default() });
        pv
    }

    #[test]
    fn on_released_deletes_only_our_released_delete_pvs() {
        let delete = Action::Delete { volume_id: "pvc-1234-abcd".into() };
        for (what, pv, want) in [
            ("released, Delete", pv(DRIVER, "Released", "Delete"), delete),
            ("released, Retain", pv(DRIVER, "Released", "Retain"), Action::Retain),
            ("still bound", pv(DRIVER, "Bound", "Delete"), Action::Keep),
            ("available", pv(DRIVER, "Available", "Delete"), Action::Keep),
            ("another provisioner's", pv("other.csi", "Released", "Delete"), Action::NotOurs),
        ] {
            assert_eq!(on_released(&pv, DRIVER), want, "on_released: {what}");
        }
    }

    #[test]
    fn plan_expand_grows_only_when_asked_more_and_allowed() {
        let mut c = class("Immediate", json!({}));
        let pvc = claim(ours(), &["ReadWriteOnce"], "2Gi");
        let volume = pv(DRIVER, "Bound", "Delete"); // 1Gi
        assert_eq!(plan_expand(&pvc, &volume, &c), None, "allowVolumeExpansion is not set");
        c.allow_volume_expansion = Some(true);
        assert_eq!(plan_expand(&pvc, &volume, &c), Some(2 << 30));
        assert_eq!(plan_expand(&claim(ours(), &["ReadWriteOnce"], "1Gi"), &volume, &c), None, "same size");
    }

    #[test]
    fn a_selected_node_that_cannot_get_the_volume_is_handed_back_to_the_scheduler() {
        let wffc = class("WaitForFirstConsumer", json!({}));
        let immediate = class("Immediate", json!({}));
        let on_w2 = claim(
            json!({ANN_STORAGE_PROVISIONER: DRIVER, ANN_SELECTED_NODE: "w2"}),
            &["ReadWriteOnce"],
            "1Gi",
        );
        let no_node = claim(ours(), &["ReadWriteOnce"], "1Gi");
        let without_driver = Reject::NodeWithoutDriver("w2".into());
        let unlabelled = Reject::MissingTopologyLabels { node: "w2".into(), keys: vec![BACKEND.into()] };
        let bad_size = Reject::BadSize("x".into());
        let cases = [
            ("node without our plugin", &on_w2, &wffc, Failure::Rejected(&without_driver), Some("w2")),
            ("node without our labels", &on_w2, &wffc, Failure::Rejected(&unlabelled), Some("w2")),
            (
                "no room there (RESOURCE_EXHAUSTED)",
                &on_w2,
                &wffc,
                Failure::CreateVolume(tonic::Code::ResourceExhausted),
                Some("w2"),
            ),
            ("another CreateVolume error", &on_w2, &wffc, Failure::CreateVolume(tonic::Code::Internal), None),
            ("a claim no node can fix", &on_w2, &wffc, Failure::Rejected(&bad_size), None),
            (
                "Immediate: no node was selected",
                &on_w2,
                &immediate,
                Failure::CreateVolume(tonic::Code::ResourceExhausted),
                None,
            ),
            (
                "no selected-node annotation",
                &no_node,
                &wffc,
                Failure::CreateVolume(tonic::Code::ResourceExhausted),
                None,
            ),
        ];
        for (what, pvc, class, failure, want) in cases {
            assert_eq!(should_reschedule(pvc, class, failure), want, "{what}");
        }
    }

    #[test]
    fn unselecting_a_node_removes_only_that_annotation_and_carries_the_resource_version() {
        let mut pvc = claim(json!({ANN_SELECTED_NODE: "w2"}), &["ReadWriteOnce"], "1Gi");
        pvc.metadata.resource_version = Some("41".into());
        assert_eq!(
            unselect_node_patch(&pvc),
            json!({"metadata": {"resourceVersion": "41", "annotations": {ANN_SELECTED_NODE: null}}})
        );
    }

    #[test]
    fn attached_nodes_lists_every_attachment_of_the_pv() {
        let va = |pv: &str, node: &str| -> VolumeAttachment {
            serde_json::from_value(json!({
                "metadata": {"name": format!("csi-{pv}-{node}")},
                "spec": {"attacher": DRIVER, "nodeName": node, "source": {"persistentVolumeName": pv}},
            }))
            .unwrap()
        };
        let all = [va("pvc-1", "w2"), va("pvc-2", "w1"), va("pvc-1", "w1")];
        for (what, pv, want) in [
            ("attached twice (moving between nodes)", "pvc-1", vec!["w1", "w2"]),
            ("attached once", "pvc-2", vec!["w1"]),
            ("not attached", "pvc-3", vec![]),
        ] {
            assert_eq!(attached_nodes(pv, &all), want, "{what}");
        }
    }
}
