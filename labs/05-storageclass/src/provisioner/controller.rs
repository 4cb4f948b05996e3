//! The glue: kube-rs controllers that fetch objects, ask [`super::decide`]
//! what to do, call the driver over the CSI socket and write the answer.
//!
//! Two `kube::runtime::Controller`s share one [`Context`]:
//!
//! - **claims** ([`reconcile_claim`]): an unbound claim handed to our driver
//!   becomes CreateVolume and a PV (the PV controller then binds the two, C21);
//!   a bound claim that asks for more than its PV becomes
//!   ControllerExpandVolume (only with `--enable-expansion`, see [`expand`]);
//! - **volumes** ([`reconcile_volume`]): a Released PV of ours with policy
//!   Delete becomes DeleteVolume and a deleted PV. The finalizer
//!   [`decide::FINALIZER`] (managed by kube's `finalizer` helper) keeps the PV
//!   object until DeleteVolume has succeeded, so no volume is ever orphaned.
//!
//! Nodes and CSINodes come from reflector stores (watched caches), because
//! every claim needs them. Everything is level-triggered and idempotent: a
//! failed step returns an error, the controller retries it after a pause,
//! and the retry finds what the first attempt already did.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::{CSINode, StorageClass, VolumeAttachment};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action as Requeue, Controller};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use lab01_identity::csi::controller_client::ControllerClient;
use lab01_identity::csi::volume_capability::{AccessMode, AccessType, BlockVolume, MountVolume};
use lab01_identity::csi::{
    CapacityRange, ControllerExpandVolumeRequest, CreateVolumeRequest, DeleteVolumeRequest, Volume,
    VolumeCapability,
};
use serde_json::json;
use tonic::transport::Channel;

use super::decide::{
    self, ANN_SELECTED_NODE, ANN_STORAGE_PROVISIONER, ANN_STORAGE_PROVISIONER_BETA, FINALIZER, Reject,
};

/// Errors of one reconciliation; the controller logs them and retries.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{rpc} failed: {code:?}: {message}")]
    Csi { rpc: &'static str, code: tonic::Code, message: String },
    #[error("{rpc} timed out after {timeout:?}")]
    Timeout { rpc: &'static str, timeout: Duration },
    #[error("CreateVolume returned no volume")]
    NoVolume,
    #[error("PV {pv} is still attached to node(s) {}: DeleteVolume waits for the detach", nodes.join(", "))]
    StillAttached { pv: String, nodes: Vec<String> },
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

/// What both controllers share.
#[derive(Clone)]
pub struct Context {
    pub client: kube::Client,
    pub csi: ControllerClient<Channel>,
    /// Our driver name: the StorageClasses' `provisioner`, the PVs' `spec.csi.driver`.
    pub driver: String,
    pub recorder: Recorder,
    pub nodes: Store<Node>,
    pub csinodes: Store<CSINode>,
    /// The limit for each CSI call.
    pub timeout: Duration,
    /// Expand bound claims ourselves (otherwise csi-resizer does it).
    pub expansion: bool,
}

/// How long to wait before looking again at a claim we could not serve
/// (its class may be created or fixed meanwhile; those changes don't
/// trigger the claim).
const RECHECK: Duration = Duration::from_secs(60);

/// How long to wait before looking again at a Released PV whose volume is
/// still attached somewhere (detaching takes external-attacher a moment;
/// the VolumeAttachment's deletion does not trigger the PV).
const ATTACHED_RECHECK: Duration = Duration::from_secs(10);

impl Context {
    async fn call<T>(
        &self,
        rpc: &'static str,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, Error> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => {
                Err(Error::Csi { rpc, code: status.code(), message: status.message().to_owned() })
            }
            Err(_) => Err(Error::Timeout { rpc, timeout: self.timeout }),
        }
    }

    /// Records an Event on a claim. An Event that cannot be written is
    /// logged, never a reason to fail the reconciliation.
    async fn event(&self, pvc: &PersistentVolumeClaim, type_: EventType, reason: &str, note: String) {
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(note),
            action: "Provisioning".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &pvc.object_ref(&())).await {
            tracing::warn!(error = %e, reason, "cannot record an Event on the claim");
        }
    }

    fn topologies(&self) -> Vec<decide::NodeTopology> {
        let nodes: Vec<Node> = self.nodes.state().iter().map(|n| (**n).clone()).collect();
        let csinodes: Vec<CSINode> = self.csinodes.state().iter().map(|n| (**n).clone()).collect();
        let topologies = decide::node_topologies(&nodes, &csinodes, &self.driver);
        // plan_create leaves such nodes out of an Immediate claim's topology
        // (or refuses a claim that selected one): say why, once per claim.
        for node in topologies.iter().filter(|n| !n.missing.is_empty()) {
            tracing::warn!(node = %node.name, missing = ?node.missing, "node lacks topology labels its CSINode lists; not offered to the driver");
        }
        topologies
    }

    /// The nodes whose VolumeAttachments still name `pv`. Read from the API
    /// each time, not from a cache: a stale cache could let DeleteVolume
    /// through while a node still has the volume.
    async fn attached_nodes(&self, pv: &str) -> Result<Vec<String>, Error> {
        let attachments =
            Api::<VolumeAttachment>::all(self.client.clone()).list(&ListParams::default()).await?;
        Ok(decide::attached_nodes(pv, &attachments.items))
    }
}

// ANCHOR: reschedule
/// Takes the selected node back from a WaitForFirstConsumer claim, so that
/// the scheduler picks a node again (see [`decide::should_reschedule`]).
async fn reschedule(
    ctx: &Context,
    pvc: &PersistentVolumeClaim,
    node: &str,
    why: &str,
) -> Result<Requeue, Error> {
    let note = format!("{why}; removing {ANN_SELECTED_NODE}={node} so the scheduler can pick another node");
    ctx.event(pvc, EventType::Warning, "ProvisioningFailed", note).await;
    let namespace = pvc.namespace().unwrap_or_default();
    let claims = Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), &namespace);
    let patch = Patch::Merge(decide::unselect_node_patch(pvc));
    match claims.patch(&pvc.name_any(), &PatchParams::default(), &patch).await {
        Ok(_) => tracing::info!(claim = %pvc.name_any(), %node, "rescheduling: selected node removed"),
        // The claim changed since we read it (perhaps a new node): the
        // change brings it back to us anyway.
        Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Requeue::await_change())
}
// ANCHOR_END: reschedule

fn asked_provisioner(pvc: &PersistentVolumeClaim) -> Option<&str> {
    let annotations = pvc.metadata.annotations.as_ref()?;
    annotations
        .get(ANN_STORAGE_PROVISIONER)
        .or_else(|| annotations.get(ANN_STORAGE_PROVISIONER_BETA))
        .map(String::as_str)
}

// ANCHOR: reconcile-claim
/// One claim: provision it, expand it, or leave it alone.
pub async fn reconcile_claim(pvc: Arc<PersistentVolumeClaim>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let spec = pvc.spec.clone().unwrap_or_default();
    if spec.volume_name.as_deref().is_some_and(|v| !v.is_empty()) {
        return if ctx.expansion { expand(&pvc, &ctx).await } else { Ok(Requeue::await_change()) };
    }
    // Cheap first filter: the PV controller hands claims to us by annotation.
    if asked_provisioner(&pvc) != Some(ctx.driver.as_str()) {
        return Ok(Requeue::await_change());
    }
    let Some(class_name) = spec.storage_class_name.filter(|c| !c.is_empty()) else {
        ctx.event(&pvc, EventType::Warning, "ProvisioningFailed", "the claim names no StorageClass".into())
            .await;
        return Ok(Requeue::await_change());
    };
    let Some(class) = Api::<StorageClass>::all(ctx.client.clone()).get_opt(&class_name).await? else {
        let note = format!("StorageClass {class_name:?} not found");
        ctx.event(&pvc, EventType::Warning, "ProvisioningFailed", note).await;
        return Ok(Requeue::requeue(RECHECK));
    };
    if !decide::is_ours(&pvc, &class, &ctx.driver) {
        return Ok(Requeue::await_change());
    }
    let pvs = Api::<PersistentVolume>::all(ctx.client.clone());
    let name = decide::pv_name(&pvc);
    if pvs.get_opt(&name).await?.is_some() {
        return Ok(Requeue::await_change()); // provisioned before; the PV controller binds it
    }
    let request = match decide::plan_create(&pvc, &class, &ctx.topologies()) {
        Ok(request) => request,
        Err(Reject::WaitingForNode) => {
            tracing::debug!(claim = %pvc.name_any(), "waiting for the scheduler to select a node");
            return Ok(Requeue::await_change());
        }
        Err(reject) => {
            let why = format!("cannot provision: {reject}");
            if let Some(node) = decide::should_reschedule(&pvc, &class, decide::Failure::Rejected(&reject)) {
                return reschedule(&ctx, &pvc, node, &why).await;
            }
            ctx.event(&pvc, EventType::Warning, "ProvisioningFailed", why).await;
            // A selector or data source never goes away by itself: only a
            // change of the claim (which triggers us) can help.
            let later =
                if reject.needs_new_claim() { Requeue::await_change() } else { Requeue::requeue(RECHECK) };
            return Ok(later);
        }
    };
    let volume = match create_volume(&ctx, request).await {
        Ok(volume) => volume,
        Err(e) => {
            if let Error::Csi { code, .. } = &e
                && let Some(node) =
                    decide::should_reschedule(&pvc, &class, decide::Failure::CreateVolume(*code))
            {
                return reschedule(&ctx, &pvc, node, &e.to_string()).await;
            }
            ctx.event(&pvc, EventType::Warning, "ProvisioningFailed", e.to_string()).await;
            return Err(e);
        }
    };
    let pv = decide::build_pv(&pvc, &class, &volume);
    match pvs.create(&PostParams::default(), &pv).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {} // a retry after a lost reply
        Err(e) => return Err(e.into()),
    }
    tracing::info!(claim = %pvc.name_any(), pv = %name, "provisioned");
    let note = format!("Successfully provisioned volume {name}");
    ctx.event(&pvc, EventType::Normal, "ProvisioningSucceeded", note).await;
    Ok(Requeue::await_change())
}
// ANCHOR_END: reconcile-claim

async fn create_volume(ctx: &Context, request: CreateVolumeRequest) -> Result<Volume, Error> {
    let mut csi = ctx.csi.clone();
    ctx.call("CreateVolume", csi.create_volume(request)).await?.volume.ok_or(Error::NoVolume)
}

async fn delete_volume(ctx: &Context, volume_id: &str) -> Result<(), Error> {
    let mut csi = ctx.csi.clone();
    let request = DeleteVolumeRequest { volume_id: volume_id.to_owned(), ..Default::default() };
    ctx.call("DeleteVolume", csi.delete_volume(request)).await?;
    tracing::info!(volume_id, "volume deleted");
    Ok(())
}

// ANCHOR: expand
/// Controller-side expansion of a bound claim whose request grew, when its
/// class has `allowVolumeExpansion: true` (the API server refuses the claim
/// update otherwise).
///
/// ControllerExpandVolume grows the volume on the backend; then the PV's
/// `spec.capacity` gets the new size. The filesystem (or a block volume's
/// loop device) lives on the node, so the node must grow too: the driver says
/// so with `node_expansion_required`. kubelet then calls NodeExpandVolume
/// (the node plugin must advertise the EXPAND_VOLUME node capability) the
/// next time it syncs a Pod using the volume, when it sees the PV larger than
/// the claim's `status.capacity` and the claim marked
/// `allocatedResourceStatuses.storage: NodeResizePending` (plus, for older
/// kubelets, the `FileSystemResizePending` condition). After
/// NodeExpandVolume kubelet writes the new `status.capacity` itself. Without
/// node expansion we set `status.capacity` here. This is what csi-resizer
/// does; the deploy overlay still runs csi-resizer by default (see the
/// overlay's comment), so this path is behind `--enable-expansion`.
pub async fn expand(pvc: &PersistentVolumeClaim, ctx: &Context) -> Result<Requeue, Error> {
    let Some(pv_name) = pvc.spec.as_ref().and_then(|s| s.volume_name.clone()) else {
        return Ok(Requeue::await_change());
    };
    let Some(pv) = Api::<PersistentVolume>::all(ctx.client.clone()).get_opt(&pv_name).await? else {
        return Ok(Requeue::await_change());
    };
    let Some(csi) = pv.spec.as_ref().and_then(|s| s.csi.clone()).filter(|c| c.driver == ctx.driver) else {
        return Ok(Requeue::await_change());
    };
    let class_name = pv.spec.as_ref().and_then(|s| s.storage_class_name.clone()).unwrap_or_default();
    let Some(class) = Api::<StorageClass>::all(ctx.client.clone()).get_opt(&class_name).await? else {
        return Ok(Requeue::await_change());
    };
    let Some(new_size) = decide::plan_expand(pvc, &pv, &class) else { return Ok(Requeue::await_change()) };

    let spec = pv.spec.clone().unwrap_or_default();
    let access_type = if spec.volume_mode.as_deref() == Some("Block") {
        AccessType::Block(BlockVolume {})
    } else {
        AccessType::Mount(MountVolume {
            fs_type: csi.fs_type.clone().unwrap_or_default(),
            ..Default::default()
        })
    };
    let mode = spec.access_modes.iter().flatten().find_map(|m| decide::access_mode(m).ok());
    let request = ControllerExpandVolumeRequest {
        volume_id: csi.volume_handle.clone(),
        capacity_range: Some(CapacityRange { required_bytes: new_size, limit_bytes: 0 }),
        volume_capability: Some(VolumeCapability {
            access_type: Some(access_type),
            access_mode: mode.map(|m| AccessMode { mode: m as i32 }),
        }),
        ..Default::default()
    };
    let mut client = ctx.csi.clone();
    let response = match ctx.call("ControllerExpandVolume", client.controller_expand_volume(request)).await {
        Ok(response) => response,
        Err(e) => {
            ctx.event(pvc, EventType::Warning, "VolumeResizeFailed", e.to_string()).await;
            return Err(e);
        }
    };
    let size = response.capacity_bytes.max(new_size).to_string();
    let merge = PatchParams::default();
    Api::<PersistentVolume>::all(ctx.client.clone())
        .patch(&pv_name, &merge, &Patch::Merge(json!({"spec": {"capacity": {"storage": size}}})))
        .await?;
    let status = if response.node_expansion_required {
        json!({"status": {
            "allocatedResources": {"storage": size},
            "allocatedResourceStatuses": {"storage": "NodeResizePending"},
            "conditions": [{"type": "FileSystemResizePending", "status": "True",
                            "message": "Waiting for user to (re-)start a pod to finish file system resize of volume on node."}],
        }})
    } else {
        json!({"status": {"capacity": {"storage": size}, "allocatedResources": {"storage": size},
                          "allocatedResourceStatuses": null, "conditions": null}})
    };
    let namespace = pvc.namespace().unwrap_or_default();
    Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), &namespace)
        .patch_status(&pvc.name_any(), &merge, &Patch::Merge(status))
        .await?;
    let note = format!("ControllerExpandVolume grew volume {} to {size} bytes", csi.volume_handle);
    ctx.event(pvc, EventType::Normal, "VolumeResizeSuccessful", note).await;
    Ok(Requeue::await_change())
}
// ANCHOR_END: expand

// ANCHOR: reconcile-volume
/// One PV: delete the volume behind a Released PV of ours with policy Delete.
pub async fn reconcile_volume(pv: Arc<PersistentVolume>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    if decide::on_released(&pv, &ctx.driver) == decide::Action::NotOurs {
        return Ok(Requeue::await_change());
    }
    let policy =
        pv.spec.as_ref().and_then(|s| s.persistent_volume_reclaim_policy.as_deref()).unwrap_or("Delete");
    let has_finalizer = pv.finalizers().iter().any(|f| f == FINALIZER);
    if policy != "Delete" && !has_finalizer {
        return Ok(Requeue::await_change()); // Retain: never ours to delete, no finalizer to add
    }
    let api = Api::<PersistentVolume>::all(ctx.client.clone());
    if policy != "Delete" && pv.metadata.deletion_timestamp.is_none() {
        // Provisioned with Delete, switched to Retain since (the policy is
        // mutable): we will never delete this volume, so nothing is left
        // for the finalizer to guard. Letting it go now means the PV does
        // not depend on this provisioner still running when it is deleted.
        return release_finalizer(&api, &pv).await;
    }
    finalizer(&api, FINALIZER, pv, |event| async {
        match event {
            // Released: delete the volume, then the PV; the PV's deletion
            // comes back to us as Cleanup, which lets the finalizer go.
            Finalizer::Apply(pv) => {
                if let decide::Action::Delete { volume_id } = decide::on_released(&pv, &ctx.driver) {
                    let attached = ctx.attached_nodes(&pv.name_any()).await?;
                    if !attached.is_empty() {
                        // external-attacher has not detached it yet; look again soon.
                        tracing::info!(pv = %pv.name_any(), nodes = ?attached, "released but still attached; waiting for the detach");
                        return Ok(Requeue::requeue(ATTACHED_RECHECK));
                    }
                    delete_volume(&ctx, &volume_id).await?;
                    match api.delete(&pv.name_any(), &DeleteParams::default()).await {
                        Ok(_) => {}
                        Err(kube::Error::Api(e)) if e.code == 404 => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                Ok(Requeue::await_change())
            }
            // The PV is being deleted (by us above, or by someone else while
            // still bound): with policy Delete the volume goes too, as
            // Kubernetes' HonorPVReclaimPolicy asks. DeleteVolume is
            // idempotent, so calling it again after Apply did is fine. With
            // Retain the volume stays, and the finalizer simply goes.
            Finalizer::Cleanup(pv) => {
                let spec = pv.spec.as_ref();
                let delete =
                    spec.and_then(|s| s.persistent_volume_reclaim_policy.as_deref()).unwrap_or("Delete")
                        == "Delete";
                if let Some(csi) = spec.and_then(|s| s.csi.as_ref()).filter(|_| delete) {
                    // An error keeps the finalizer (and so the PV) until the
                    // detach is done; error_policy retries.
                    let nodes = ctx.attached_nodes(&pv.name_any()).await?;
                    if !nodes.is_empty() {
                        return Err(Error::StillAttached { pv: pv.name_any(), nodes });
                    }
                    delete_volume(&ctx, &csi.volume_handle).await?;
                }
                Ok(Requeue::await_change())
            }
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}
// ANCHOR_END: reconcile-volume

/// Removes our finalizer from a PV that is not being deleted. A merge patch
/// replaces the whole list, so it carries the resourceVersion we read: if
/// the PV changed meanwhile (another finalizer added, say) the API server
/// answers 409 and the next reconcile, on the new version, tries again.
async fn release_finalizer(api: &Api<PersistentVolume>, pv: &PersistentVolume) -> Result<Requeue, Error> {
    let others: Vec<&String> = pv.finalizers().iter().filter(|f| *f != FINALIZER).collect();
    let patch = json!({"metadata": {"finalizers": others, "resourceVersion": pv.metadata.resource_version}});
    match api.patch(&pv.name_any(), &PatchParams::default(), &Patch::Merge(patch)).await {
        Ok(_) => {
            tracing::info!(pv = %pv.name_any(), "reclaim policy Retain: finalizer removed, the volume stays")
        }
        Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Requeue::await_change())
}

/// Failed reconciliations are logged and retried after a pause.
pub fn error_policy<K: Resource<DynamicType = ()>>(
    object: Arc<K>,
    error: &Error,
    _: Arc<Context>,
) -> Requeue {
    tracing::warn!(object = %object.meta().name.as_deref().unwrap_or_default(), error = %error, "reconcile failed; retrying");
    Requeue::requeue(Duration::from_secs(15))
}

/// Starts reflectors for Nodes and CSINodes. The returned future drives them
/// and must be polled for the stores to fill.
pub fn node_stores(
    client: &kube::Client,
) -> (Store<Node>, Store<CSINode>, impl Future<Output = ()> + Send + 'static) {
    let (nodes, nodes_writer) = reflector::store();
    let (csinodes, csinodes_writer) = reflector::store();
    let nodes_stream =
        reflector::reflector(nodes_writer, watcher(Api::<Node>::all(client.clone()), Default::default()))
            .default_backoff()
            .touched_objects()
            .for_each(|_| std::future::ready(()));
    let csinodes_stream = reflector::reflector(
        csinodes_writer,
        watcher(Api::<CSINode>::all(client.clone()), Default::default()),
    )
    .default_backoff()
    .touched_objects()
    .for_each(|_| std::future::ready(()));
    let drive = async move {
        futures::join!(nodes_stream, csinodes_stream);
    };
    (nodes, csinodes, drive)
}

// ANCHOR: run-controllers
/// Runs both controllers until `shutdown` resolves, then lets running
/// reconciliations finish.
pub async fn run(ctx: Arc<Context>, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let claims =
        Controller::new(Api::<PersistentVolumeClaim>::all(ctx.client.clone()), watcher::Config::default())
            .graceful_shutdown_on(stopped(stop_rx.clone()))
            .run(reconcile_claim, error_policy, ctx.clone())
            .for_each(|result| async move {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "claim controller");
                }
            });
    let volumes =
        Controller::new(Api::<PersistentVolume>::all(ctx.client.clone()), watcher::Config::default())
            .graceful_shutdown_on(stopped(stop_rx))
            .run(reconcile_volume, error_policy, ctx.clone())
            .for_each(|result| async move {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "volume controller");
                }
            });
    let trigger = async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    };
    futures::join!(claims, volumes, trigger);
}
// ANCHOR_END: run-controllers
