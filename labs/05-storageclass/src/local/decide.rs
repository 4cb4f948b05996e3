//! The static local provisioner's decisions, as plain functions:
//!
//! - [`classify`]: is a discovery-directory entry a disk (a mount point) or not;
//! - [`desired_pv`]: the PersistentVolume that represents one disk;
//! - [`plan`]: what to do, given the PVs of ours that exist and the disks found.
//!
//! Nothing here touches the filesystem or the API server; `scan` and `agent`
//! do, and feed these functions.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{
    LocalVolumeSource, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, PersistentVolume,
    PersistentVolumeSpec, VolumeNodeAffinity,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use lab03_node::mount::MountInfo;

/// Label on every PV we create: which program owns it.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`] (and of [`PROVISIONED_BY_ANNOTATION`]).
pub const MANAGER: &str = "local-provisioner.csi.workshop.dev";
/// Label: the node whose disk the PV is. Each DaemonSet pod lists only its own.
pub const NODE_LABEL: &str = "local.csi.workshop.dev/node";
/// Who provisioned the PV. The PV controller reads it when a PV with reclaim
/// policy Delete is released: a value outside `kubernetes.io/` means "an
/// external deleter does it", so it leaves the PV Released for us instead of
/// marking it Failed (it has no deleter for local volumes).
pub const PROVISIONED_BY_ANNOTATION: &str = "pv.kubernetes.io/provisioned-by";
/// The node label the scheduler matches a local PV's node affinity against.
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";

/// Why an entry of the discovery directory does not become a PV.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A plain directory: it would share the root disk's capacity and I/O.
    NotAMountPoint,
    /// A file, symlink, device...: we only publish mounted filesystems.
    NotADirectory,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::NotAMountPoint => "not a mount point: one PV per disk, so capacity and I/O are isolated",
            Refusal::NotADirectory => "not a directory: mount a filesystem at this path",
        })
    }
}

/// One entry of the discovery directory, as `scan` found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The file name inside the discovery directory (`disk1`).
    pub name: String,
    /// The absolute, canonical path (`/mnt/disks/disk1`).
    pub path: PathBuf,
    /// `false` for files, symlinks and other non-directories.
    pub is_dir: bool,
}

/// What [`classify`] made of an entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Discovered {
    /// A mount point: one disk, one PV.
    Disk { name: String, path: PathBuf },
    /// Not published, for this reason.
    Refused { name: String, path: PathBuf, reason: Refusal },
}

/// A disk with its capacity, ready to become a PV.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disk {
    pub name: String,
    pub path: PathBuf,
    /// The filesystem's size (statvfs), which becomes the PV's capacity.
    pub capacity_bytes: u64,
}

// ANCHOR: classify
/// A directory is a disk only when something is mounted exactly on it;
/// `mounts` is the mount table (`/proc/self/mountinfo`).
pub fn classify(entry: &Entry, mounts: &[MountInfo]) -> Discovered {
    let name = entry.name.clone();
    let path = entry.path.clone();
    if !entry.is_dir {
        return Discovered::Refused { name, path, reason: Refusal::NotADirectory };
    }
    // TODO(lab05): A directory is a disk when the mount table has a mount
    // exactly at its path; otherwise refuse it with Refusal::NotAMountPoint.
    // ANCHOR: solution
    if mounts.iter().any(|m| m.mount_point == entry.path) {
        Discovered::Disk { name, path }
    } else {
        Discovered::Refused { name, path, reason: Refusal::NotAMountPoint }
    }
    // ANCHOR_END: solution => Discovered::Refused { name, path, reason: Refusal::NotAMountPoint }
}
// ANCHOR_END: classify

/// How the PVs of one node look: the provisioner's flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PvConfig {
    /// The node this provisioner runs on (`--node-name`).
    pub node_name: String,
    /// `--storage-class`, e.g. `local-disks`.
    pub storage_class: String,
    /// `--reclaim-policy`: `Delete` (cleaned and recreated) or `Retain`.
    pub reclaim_policy: String,
}

/// `local-<node>-<entry>`, made a valid object name (DNS-1123 subdomain):
/// lowercase, `[a-z0-9.-]` only, no dots or dashes at the ends, at most 253.
pub fn pv_name(node: &str, entry: &str) -> String {
    let raw = format!("local-{node}-{entry}").to_lowercase();
    let mut name: String = raw
        .chars()
        .map(|c| if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-' { c } else { '-' })
        .collect();
    name.truncate(253);
    name.trim_matches(|c| c == '-' || c == '.').to_owned()
}

// ANCHOR: desired-pv
/// The PV for one disk of this node.
pub fn desired_pv(disk: &Disk, config: &PvConfig) -> PersistentVolume {
    let labels = BTreeMap::from([
        (MANAGED_BY_LABEL.to_owned(), MANAGER.to_owned()),
        (NODE_LABEL.to_owned(), label_value(&config.node_name)),
    ]);
    let annotations = BTreeMap::from([(PROVISIONED_BY_ANNOTATION.to_owned(), MANAGER.to_owned())]);
    // TODO(lab05): Pin the PV to this node: a required node affinity term
    // `kubernetes.io/hostname In [node]`. Without it the scheduler may put
    // the Pod on a node that does not have the disk.
    // ANCHOR: solution
    let node_affinity = Some(VolumeNodeAffinity {
        required: Some(NodeSelector {
            node_selector_terms: vec![NodeSelectorTerm {
                match_expressions: Some(vec![NodeSelectorRequirement {
                    key: HOSTNAME_LABEL.to_owned(),
                    operator: "In".to_owned(),
                    values: Some(vec![config.node_name.clone()]),
                }]),
                ..Default::default()
            }],
        }),
    });
    // ANCHOR_END: solution => let node_affinity: Option<VolumeNodeAffinity> = None;
    PersistentVolume {
        metadata: ObjectMeta {
            name: Some(pv_name(&config.node_name, &disk.name)),
            labels: Some(labels),
            annotations: Some(annotations),
            ..Default::default()
        },
        spec: Some(PersistentVolumeSpec {
            capacity: Some(BTreeMap::from([(
                "storage".to_owned(),
                Quantity(disk.capacity_bytes.to_string()),
            )])),
            local: Some(LocalVolumeSource { path: disk.path.display().to_string(), fs_type: None }),
            node_affinity,
            storage_class_name: Some(config.storage_class.clone()),
            persistent_volume_reclaim_policy: Some(config.reclaim_policy.clone()),
            volume_mode: Some("Filesystem".to_owned()),
            access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
            ..Default::default()
        }),
        status: None,
    }
}
// ANCHOR_END: desired-pv

/// A label value: at most 63 characters of `[A-Za-z0-9._-]`.
pub fn label_value(text: &str) -> String {
    let mut value: String = text
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '-' })
        .collect();
    value.truncate(63);
    value.trim_matches(|c: char| !c.is_ascii_alphanumeric()).to_owned()
}

/// One step of a sync.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// A disk without a PV: create this PV.
    Create(Box<PersistentVolume>),
    /// A Released PV (reclaim policy Delete) of a disk that is still mounted:
    /// remove the disk's contents, then delete the PV (only if its uid is
    /// still `uid`). The next sync creates it again, Available.
    Clean { pv: String, uid: Option<String>, path: PathBuf },
    /// A PV whose disk is no longer mounted: nothing is touched, it is logged.
    DiskMissing { pv: String, path: PathBuf },
}

/// The phase of a PV (`Pending` when the status is not written yet).
pub fn phase(pv: &PersistentVolume) -> &str {
    pv.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending")
}

fn local_path(pv: &PersistentVolume) -> Option<&Path> {
    pv.spec.as_ref()?.local.as_ref().map(|l| Path::new(&l.path))
}

fn reclaim_policy(pv: &PersistentVolume) -> &str {
    pv.spec.as_ref().and_then(|s| s.persistent_volume_reclaim_policy.as_deref()).unwrap_or("Retain")
}

// ANCHOR: plan
/// What a sync must do. `existing` are the PVs of ours on this node (the
/// agent lists them by label), `disks` what the scan found.
pub fn plan(existing: &[PersistentVolume], disks: &[Disk], config: &PvConfig) -> Vec<Action> {
    let mut actions = Vec::new();
    let mounted: BTreeMap<&Path, &Disk> = disks.iter().map(|d| (d.path.as_path(), d)).collect();
    let mut has_pv: BTreeSet<String> = BTreeSet::new();
    for pv in existing {
        let Some(name) = pv.metadata.name.clone() else { continue };
        has_pv.insert(name.clone());
        // A PV on its way out is left alone; the next sync recreates it.
        if pv.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(path) = local_path(pv) else { continue };
        if !mounted.contains_key(path) {
            actions.push(Action::DiskMissing { pv: name, path: path.to_path_buf() });
            continue;
        }
        // TODO(lab05): A Released PV with reclaim policy Delete, whose disk is
        // still mounted, is cleaned and deleted: push Action::Clean with its
        // name, uid and path. (Retain: an administrator decides; do nothing.)
        // ANCHOR: solution
        if phase(pv) == "Released" && reclaim_policy(pv) == "Delete" {
            actions.push(Action::Clean { pv: name, uid: pv.metadata.uid.clone(), path: path.to_path_buf() });
        }
        // ANCHOR_END: solution
    }
    for disk in disks {
        let pv = desired_pv(disk, config);
        if !has_pv.contains(pv.metadata.name.as_deref().unwrap_or_default()) {
            actions.push(Action::Create(Box::new(pv)));
        }
    }
    actions
}
// ANCHOR_END: plan

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::PersistentVolumeStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;

    fn mount_at(path: &str) -> MountInfo {
        lab03_node::mount::parse_mountinfo(&format!("99 1 7:3 / {path} rw,relatime - ext4 /dev/loop3 rw\n"))
            .pop()
            .unwrap()
    }

    fn entry(name: &str, is_dir: bool) -> Entry {
        Entry { name: name.into(), path: PathBuf::from("/mnt/disks").join(name), is_dir }
    }

    fn config() -> PvConfig {
        PvConfig {
            node_name: "worker1".into(),
            storage_class: "local-disks".into(),
            reclaim_policy: "Delete".into(),
        }
    }

    fn disk(name: &str) -> Disk {
        Disk { name: name.into(), path: PathBuf::from("/mnt/disks").join(name), capacity_bytes: 60 << 20 }
    }

    fn existing(name: &str, phase: &str, policy: &str) -> PersistentVolume {
        let mut pv = desired_pv(&disk(name), &PvConfig { reclaim_policy: policy.into(), ..config() });
        pv.metadata.uid = Some(format!("uid-{name}"));
        pv.status = Some(PersistentVolumeStatus { phase: Some(phase.into()), ..Default::default() });
        pv
    }

    #[test]
    fn classify_table() {
        let mounts = [mount_at("/mnt/disks/disk1"), mount_at("/mnt/disks/disk2/inner")];
        let cases = [
            (entry("disk1", true), None),
            (entry("disk2", true), Some(Refusal::NotAMountPoint)),
            (entry("plain", true), Some(Refusal::NotAMountPoint)),
            (entry("image.img", false), Some(Refusal::NotADirectory)),
        ];
        for (entry, refusal) in cases {
            let got = classify(&entry, &mounts);
            let want = match refusal {
                None => Discovered::Disk { name: entry.name.clone(), path: entry.path.clone() },
                Some(reason) => {
                    Discovered::Refused { name: entry.name.clone(), path: entry.path.clone(), reason }
                }
            };
            assert_eq!(got, want, "{}", entry.name);
        }
    }

    #[test]
    fn a_plain_directory_is_refused_with_the_reason() {
        let got = classify(&entry("plain", true), &[]);
        let Discovered::Refused { reason, .. } = got else { panic!("{got:?}") };
        assert_eq!(
            reason.to_string(),
            "not a mount point: one PV per disk, so capacity and I/O are isolated"
        );
    }

    #[test]
    fn pv_names_are_valid_object_names() {
        let cases = [
            ("worker1", "disk1", "local-worker1-disk1"),
            ("csi-workshop-worker", "Disk_A", "local-csi-workshop-worker-disk-a"),
            ("node.example.com", "ssd 0", "local-node.example.com-ssd-0"),
            ("n", "x-", "local-n-x"),
        ];
        for (node, entry, want) in cases {
            assert_eq!(pv_name(node, entry), want);
        }
        assert_eq!(pv_name("n", &"a".repeat(300)).len(), 253);
    }

    #[test]
    fn desired_pv_is_a_node_pinned_local_volume() {
        let pv = desired_pv(&disk("disk1"), &config());
        assert_eq!(pv.metadata.name.as_deref(), Some("local-worker1-disk1"));
        let labels = pv.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[MANAGED_BY_LABEL], MANAGER);
        assert_eq!(labels[NODE_LABEL], "worker1");
        let spec = pv.spec.as_ref().unwrap();
        assert_eq!(spec.local.as_ref().unwrap().path, "/mnt/disks/disk1");
        assert_eq!(spec.capacity.as_ref().unwrap()["storage"], Quantity((60u64 << 20).to_string()));
        assert_eq!(spec.storage_class_name.as_deref(), Some("local-disks"));
        assert_eq!(spec.persistent_volume_reclaim_policy.as_deref(), Some("Delete"));
        assert_eq!(spec.volume_mode.as_deref(), Some("Filesystem"));
        assert_eq!(spec.access_modes.as_deref(), Some(&["ReadWriteOnce".to_owned()][..]));
        let affinity = spec.node_affinity.as_ref().expect("a local PV must carry node affinity");
        let terms = &affinity.required.as_ref().unwrap().node_selector_terms;
        let expr = &terms[0].match_expressions.as_ref().unwrap()[0];
        assert_eq!((expr.key.as_str(), expr.operator.as_str()), (HOSTNAME_LABEL, "In"));
        assert_eq!(expr.values.as_deref(), Some(&["worker1".to_owned()][..]));
    }

    /// (existing PVs, disks found) -> the actions, as short strings.
    #[test]
    fn plan_table() {
        let deleting = {
            let mut pv = existing("disk1", "Released", "Delete");
            pv.metadata.deletion_timestamp = Some(Time(Default::default()));
            pv
        };
        type Case<'a> = (&'a str, Vec<PersistentVolume>, Vec<Disk>, Vec<&'a str>);
        let cases: Vec<Case> = vec![
            ("nothing at all", vec![], vec![], vec![]),
            ("a new disk gets a PV", vec![], vec![disk("disk1")], vec!["create local-worker1-disk1"]),
            (
                "two new disks",
                vec![],
                vec![disk("a"), disk("b")],
                vec!["create local-worker1-a", "create local-worker1-b"],
            ),
            (
                "an Available PV stays",
                vec![existing("disk1", "Available", "Delete")],
                vec![disk("disk1")],
                vec![],
            ),
            ("a Bound PV stays", vec![existing("disk1", "Bound", "Delete")], vec![disk("disk1")], vec![]),
            (
                "Released + Delete is cleaned",
                vec![existing("disk1", "Released", "Delete")],
                vec![disk("disk1")],
                vec!["clean local-worker1-disk1 uid-disk1 /mnt/disks/disk1"],
            ),
            (
                "Released + Retain stays",
                vec![existing("disk1", "Released", "Retain")],
                vec![disk("disk1")],
                vec![],
            ),
            (
                "a Released PV whose disk is gone is not cleaned",
                vec![existing("disk1", "Released", "Delete")],
                vec![],
                vec!["missing local-worker1-disk1"],
            ),
            ("a PV being deleted is left alone", vec![deleting], vec![disk("disk1")], vec![]),
            (
                "new and existing together",
                vec![existing("disk1", "Bound", "Delete")],
                vec![disk("disk1"), disk("disk2")],
                vec!["create local-worker1-disk2"],
            ),
        ];
        for (what, pvs, disks, want) in cases {
            let got: Vec<String> = plan(&pvs, &disks, &config())
                .into_iter()
                .map(|a| match a {
                    Action::Create(pv) => format!("create {}", pv.metadata.name.unwrap()),
                    Action::Clean { pv, uid, path } => {
                        format!("clean {pv} {} {}", uid.unwrap(), path.display())
                    }
                    Action::DiskMissing { pv, .. } => format!("missing {pv}"),
                })
                .collect();
            assert_eq!(got, want, "{what}");
        }
    }
}
