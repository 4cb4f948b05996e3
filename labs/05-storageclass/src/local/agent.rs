//! The API side: one sync lists our PVs on this node, plans, and carries out
//! the plan; refused entries are reported once as Events on the Node.

use std::collections::BTreeSet;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, PersistentVolume};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{DeleteParams, ListParams, PostParams, Preconditions};
use kube::{Api, Client};
use tracing::{info, warn};

use super::decide::{Action, MANAGED_BY_LABEL, MANAGER, NODE_LABEL, PvConfig, plan};
use super::scan::{Scan, clean_disk};
use super::{Error, Result};

/// The reporting component of our Events.
pub const COMPONENT: &str = "local-provisioner";
/// Node Events live in the `default` namespace, as kubelet's do.
const EVENT_NAMESPACE: &str = "default";

/// What one sync did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub created: Vec<String>,
    pub cleaned: Vec<String>,
    pub missing: Vec<String>,
    pub refused_reported: Vec<String>,
}

/// The provisioner of one node: its flags, a client and what it reported.
pub struct Agent {
    client: Client,
    config: PvConfig,
    /// Refused entries already reported with an Event (once per entry and run).
    reported: BTreeSet<PathBuf>,
}

/// The label selector of the PVs of ours on `node`.
pub fn selector(config: &PvConfig) -> String {
    let node = super::decide::label_value(&config.node_name);
    format!("{MANAGED_BY_LABEL}={MANAGER},{NODE_LABEL}={node}")
}

impl Agent {
    pub fn new(client: Client, config: PvConfig) -> Self {
        Self { client, config, reported: BTreeSet::new() }
    }

    // ANCHOR: sync
    /// One pass: list our PVs on this node, plan against `scan`, act.
    pub async fn sync(&mut self, scan: &Scan) -> Result<SyncReport> {
        let pvs: Api<PersistentVolume> = Api::all(self.client.clone());
        let existing = pvs.list(&ListParams::default().labels(&selector(&self.config))).await?;
        let mut report = SyncReport::default();
        for action in plan(&existing.items, &scan.disks, &self.config) {
            match action {
                Action::Create(pv) => {
                    let name = pv.metadata.name.clone().unwrap_or_default();
                    match pvs.create(&PostParams::default(), &pv).await {
                        Ok(_) => info!(pv = %name, "created local PV"),
                        // Another sync (or a restart) got there first.
                        Err(kube::Error::Api(status)) if status.code == 409 => continue,
                        Err(e) => return Err(e.into()),
                    }
                    report.created.push(name);
                }
                Action::Clean { pv, uid, path } => {
                    let removed = clean_disk(&path)?;
                    info!(pv = %pv, path = %path.display(), removed, "cleaned released disk");
                    // Only this PV: if it was deleted and recreated meanwhile,
                    // the uid differs and the API server refuses (409).
                    let params = DeleteParams {
                        preconditions: Some(Preconditions { uid, resource_version: None }),
                        ..Default::default()
                    };
                    match pvs.delete(&pv, &params).await {
                        Ok(_) => info!(pv = %pv, "deleted released PV; the next scan recreates it"),
                        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {}
                        Err(e) => return Err(e.into()),
                    }
                    report.cleaned.push(pv);
                }
                Action::DiskMissing { pv, path } => {
                    warn!(pv = %pv, path = %path.display(), "the PV's disk is no longer mounted; leaving the PV alone");
                    report.missing.push(pv);
                }
            }
        }
        for refused in &scan.refused {
            if self.reported.contains(&refused.path) {
                continue;
            }
            warn!(path = %refused.path.display(), reason = %refused.reason, "refused");
            self.node_event(&format!("{}: {}", refused.path.display(), refused.reason)).await?;
            self.reported.insert(refused.path.clone());
            report.refused_reported.push(refused.name.clone());
        }
        // A refused entry that is gone (or became a disk) may be reported again.
        self.reported.retain(|p| scan.refused.iter().any(|r| &r.path == p));
        Ok(report)
    }
    // ANCHOR_END: sync

    /// A Warning Event on this Node (`kubectl describe node` shows it).
    async fn node_event(&self, message: &str) -> Result<()> {
        let node = &self.config.node_name;
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let event = Event {
            metadata: ObjectMeta {
                generate_name: Some(format!("{node}.local-provisioner.")),
                namespace: Some(EVENT_NAMESPACE.to_owned()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                api_version: Some("v1".to_owned()),
                kind: Some("Node".to_owned()),
                name: Some(node.clone()),
                // kubelet uses the node name as the uid of its Node events.
                uid: Some(node.clone()),
                ..Default::default()
            },
            reason: Some("NotADisk".to_owned()),
            message: Some(message.to_owned()),
            type_: Some("Warning".to_owned()),
            source: Some(EventSource { component: Some(COMPONENT.to_owned()), host: Some(node.clone()) }),
            reporting_component: Some(COMPONENT.to_owned()),
            reporting_instance: Some(node.clone()),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            count: Some(1),
            ..Default::default()
        };
        let events: Api<Event> = Api::namespaced(self.client.clone(), EVENT_NAMESPACE);
        events.create(&PostParams::default(), &event).await.map_err(Error::from)?;
        Ok(())
    }
}
