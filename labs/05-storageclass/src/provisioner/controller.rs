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
use k8s_openapi::api::storage::v1::{CSINode, StorageClass};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
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

use super::decide::{self, ANN_STORAGE_PROVISIONER, ANN_STORAGE_PROVISIONER_BETA, FINALIZER, Reject};

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
        decide::node_topologies(&nodes, &csinodes, &self.driver)
    }
}

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
            ctx.event(&pvc, EventType::Warning, "ProvisioningFailed", format!("cannot provision: {reject}"))
                .await;
            return Ok(Requeue::requeue(RECHECK));
        }
    };
    let volume = match create_volume(&ctx, request).await {
        Ok(volume) => volume,
        Err(e) => {
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
    if policy != "Delete" && !pv.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(Requeue::await_change()); // Retain: never ours to delete, no finalizer to add
    }
    let api = Api::<PersistentVolume>::all(ctx.client.clone());
    finalizer(&api, FINALIZER, pv, |event| async {
        match event {
            // Released: delete the volume, then the PV; the PV's deletion
            // comes back to us as Cleanup, which lets the finalizer go.
            Finalizer::Apply(pv) => {
                if let decide::Action::Delete { volume_id } = decide::on_released(&pv, &ctx.driver) {
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
            // idempotent, so calling it again after Apply did is fine.
            Finalizer::Cleanup(pv) => {
                let spec = pv.spec.as_ref();
                let delete =
                    spec.and_then(|s| s.persistent_volume_reclaim_policy.as_deref()).unwrap_or("Delete")
                        == "Delete";
                if let Some(csi) = spec.and_then(|s| s.csi.as_ref()).filter(|_| delete) {
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
