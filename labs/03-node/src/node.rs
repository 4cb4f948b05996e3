//! The Node service: kubelet calls it on the node where a pod runs.
//!
//! - NodeStageVolume, once per volume and node: attach the image to a loop
//!   device, create a filesystem if there is none, mount it at the staging
//!   path (file volumes: bind-mount the directory).
//! - NodePublishVolume, once per pod: bind-mount the staging path into the
//!   pod's target path.
//!
//! The unstage and unpublish calls undo them. Every call is idempotent, and
//! what is staged and published is recorded, so a restarted plugin carries on.

use std::path::Path;

use lab01_identity::csi::node_server::Node;
use lab01_identity::csi::node_service_capability::{Rpc, Type as CapType, rpc};
use lab01_identity::csi::volume_capability::access_mode::Mode;
use lab01_identity::csi::*;
use lab01_identity::server::record_volume_id;
use lab02_controller::backend::{Backend, NodeRecord, VolumeKind, VolumeRecord};
use lab02_controller::capability::{
    self, Capability, allows_several_targets, is_read_only, unsupported_reason,
};
use lab02_controller::locks::VolumeLocks;
use lab02_controller::topology::TopologyKeys;
use lab02_controller::validate;
use tonic::{Request, Response, Status};

use crate::error::{Error, Result};
use crate::paths::{host_path, lookup_path};
use crate::state::{NodeState, NodeVolume, Published, Staged};
use crate::{fs, loopdev, mount};

#[derive(Debug, Clone)]
pub struct NodeService {
    node_id: String,
    max_volumes: i64,
    backend: Backend,
    topology: TopologyKeys,
    state: NodeState,
    locks: VolumeLocks,
}

impl NodeService {
    /// Opens the node's records, reconciles them with the mounts that really
    /// exist, and joins the node to the backend (so ControllerPublish can
    /// attach volumes to it).
    pub fn new(
        node_id: &str,
        max_volumes: i64,
        backend: Backend,
        topology: TopologyKeys,
        state_dir: &Path,
    ) -> Result<Self> {
        validate::node_id(node_id)?;
        // NodeGetInfo reports the node id as a topology segment value.
        TopologyKeys::check_segment_value("node id", node_id)?;
        let service = Self {
            node_id: node_id.to_owned(),
            max_volumes,
            backend,
            topology,
            state: NodeState::open(state_dir)?,
            locks: VolumeLocks::default(),
        };
        service.reconcile()?;
        service.backend.register_node(&NodeRecord { node_id: node_id.to_owned(), max_volumes })?;
        Ok(service)
    }

    // ANCHOR: reconcile
    /// After a restart our records may describe mounts that are gone (the node
    /// rebooted). Forget those, so kubelet's next NodeStage sets them up again;
    /// keep the ones still mounted, so unpublish and unstage find them.
    fn reconcile(&self) -> Result<()> {
        let mounts = mount::read_mountinfo()?;
        let mounted = |path: &Path| mounts.iter().any(|m| m.mount_point == path);
        for mut volume in self.state.list()? {
            let before = volume.clone();
            // A target that is still there but no longer mounted stays on
            // record: kubelet publishes it again, or unpublishes it, and
            // unpublish must then remove it.
            volume.published.retain(|target, _| mounted(target) || target.exists());
            if let Some(staged) = &volume.staged {
                let alive = if staged.raw_block {
                    staged.device.as_deref().is_some_and(Path::exists)
                } else {
                    mounted(&staged.staging_path)
                };
                if !alive {
                    volume.staged = None;
                }
            }
            if volume != before {
                tracing::warn!(volume_id = %volume.volume_id, "forgetting mounts that no longer exist");
                self.state.save(&volume)?;
            } else {
                tracing::info!(volume_id = %volume.volume_id, targets = volume.published.len(), "recovered volume");
            }
        }
        Ok(())
    }
    // ANCHOR_END: reconcile

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    fn volume_record(&self, volume_id: &str) -> Result<VolumeRecord> {
        Ok(self.backend.get(volume_id)?)
    }

    fn node_volume(&self, volume_id: &str, kind: VolumeKind) -> Result<NodeVolume> {
        Ok(self.state.load(volume_id)?.unwrap_or_else(|| NodeVolume::new(volume_id, kind)))
    }

    // ANCHOR: node-stage
    fn stage(&self, volume_id: &str, staging_path: &Path, cap: &Capability) -> Result<()> {
        let record = self.volume_record(volume_id)?;
        if let Some(reason) = unsupported_reason(record.kind, cap) {
            return Err(Error::ExceedsCapabilities(reason));
        }
        // A block volume must be attached to this node first: that is what
        // ControllerPublishVolume (driven by a VolumeAttachment) did.
        let readonly = match record.kind {
            VolumeKind::Block => {
                let attachment = record.attachments.get(&self.node_id).ok_or_else(|| Error::NotAttached {
                    volume: volume_id.to_owned(),
                    node: self.node_id.clone(),
                })?;
                attachment.readonly || is_read_only(cap.mode)
            }
            VolumeKind::File => is_read_only(cap.mode),
        };
        let wanted = Staged {
            staging_path: staging_path.to_owned(),
            device: None,
            raw_block: cap.block,
            fs_type: if record.kind == VolumeKind::Block && !cap.block {
                cap.fs_type.clone()
            } else {
                String::new()
            },
            readonly,
            mount_flags: cap.mount_flags.clone(),
            access_mode: cap.mode.as_str_name().to_owned(),
        };
        let options = mount::parse_mount_options(&cap.mount_flags)?;
        let mut volume = self.node_volume(volume_id, record.kind)?;
        if let Some(staged) = &volume.staged {
            let same = Staged { device: staged.device.clone(), ..wanted.clone() };
            if *staged != same {
                return Err(Error::StagedDifferently {
                    volume: volume_id.to_owned(),
                    reason: format!(
                        "staging path {} and access mode {}",
                        staged.staging_path.display(),
                        staged.access_mode
                    ),
                });
            }
        }
        std::fs::create_dir_all(staging_path).map_err(Error::io(staging_path))?;
        let already_mounted = mount::is_mount_point(staging_path)?;

        // TODO(lab03): Set the volume up at `staging_path`:
        // - block: attach the image to a loop device (`loopdev::attach`); for
        //   filesystem access, `fs::ensure_formatted` (never when readonly and
        //   blank: `Error::ReadOnlyBlank`) and `mount::mount_device`;
        // - file: `mount::bind_mount` the backend directory.
        // Skip the mount when `already_mounted`. Record the result in
        // `volume.staged` and save it with `self.state.save`.
        // ANCHOR: solution
        let mut staged = wanted;
        match record.kind {
            VolumeKind::Block => {
                let device = loopdev::attach(&self.backend.image_path(volume_id), readonly)?;
                if !cap.block && !already_mounted {
                    if readonly && fs::probe(&device)?.is_none() {
                        return Err(Error::ReadOnlyBlank(volume_id.to_owned()));
                    }
                    if !readonly && fs::ensure_formatted(&device, &staged.fs_type)? {
                        tracing::info!(device = %device.display(), fs_type = %staged.fs_type, "formatted");
                    }
                    let mut options = options;
                    if readonly {
                        options.flags.insert(nix::mount::MsFlags::MS_RDONLY);
                    }
                    mount::mount_device(&device, staging_path, &staged.fs_type, &options)?;
                }
                staged.device = Some(device);
            }
            VolumeKind::File => {
                if !already_mounted {
                    mount::bind_mount(&self.backend.data_dir(volume_id), staging_path, readonly)?;
                }
            }
        }
        volume.staged = Some(staged);
        self.state.save(&volume)?;
        tracing::info!(staging_path = %staging_path.display(), "volume staged");
        // ANCHOR_END: solution => return Err(lab02_controller::Error::NotWritten("lab03: NodeStageVolume is not written yet (chapter 3, step 5)".into()).into());
        Ok(())
    }
    // ANCHOR_END: node-stage

    // ANCHOR: node-unstage
    fn unstage(&self, volume_id: &str, staging_path: &Path) -> Result<()> {
        let Some(mut volume) = self.state.load(volume_id)? else {
            tracing::info!("volume is not staged here: nothing to do");
            return Ok(());
        };
        // Not staged at this path is "already unstaged": the spec wants OK.
        let Some(staged) = volume.staged.clone().filter(|s| s.staging_path == staging_path) else {
            tracing::info!("volume is not staged at this path: nothing to do");
            return Ok(());
        };
        if !volume.published.is_empty() {
            return Err(Error::StillPublished {
                volume: volume_id.to_owned(),
                targets: volume.published.keys().map(|p| p.display().to_string()).collect(),
            });
        }
        // TODO(lab03): Undo NodeStage: unmount the staging path (already
        // unmounted is fine), detach the loop device of a block volume, then
        // clear `volume.staged` and save.
        // ANCHOR: solution
        mount::unmount(staging_path)?;
        if volume.kind == VolumeKind::Block {
            // The recorded device name may be stale after a reboot; the image
            // path is what identifies our loop device.
            let image = self.backend.image_path(volume_id);
            if let Some(device) = loopdev::find_by_backing_file(&image)?.or(staged.device) {
                loopdev::detach(&device)?;
            }
        }
        volume.staged = None;
        self.state.save(&volume)?;
        tracing::info!("volume unstaged");
        // ANCHOR_END: solution => return Err(lab02_controller::Error::NotWritten("lab03: NodeUnstageVolume is not written yet (chapter 3, step 6)".into()).into());
        Ok(())
    }
    // ANCHOR_END: node-unstage

    // ANCHOR: node-publish
    fn publish(
        &self,
        volume_id: &str,
        staging_path: &Path,
        target: &Path,
        cap: &Capability,
        readonly: bool,
    ) -> Result<()> {
        let record = self.volume_record(volume_id)?;
        if let Some(reason) = unsupported_reason(record.kind, cap) {
            return Err(Error::ExceedsCapabilities(reason));
        }
        mount::parse_mount_options(&cap.mount_flags)?;
        let mut volume = self.node_volume(volume_id, record.kind)?;
        let staged = match &volume.staged {
            Some(staged) if staged.staging_path == staging_path => staged.clone(),
            _ => {
                return Err(Error::NotStaged { volume: volume_id.to_owned(), path: staging_path.to_owned() });
            }
        };
        if staged.raw_block != cap.block {
            return Err(Error::ExceedsCapabilities(format!(
                "the volume was staged for {} access",
                if staged.raw_block { "raw block" } else { "filesystem" }
            )));
        }
        let wanted = Published {
            readonly: readonly || staged.readonly || is_read_only(cap.mode),
            raw_block: cap.block,
            access_mode: cap.mode.as_str_name().to_owned(),
        };
        // A read-only bind of a device node still lets writes through to the
        // device; only a read-only loop device really refuses them. So a
        // read-only raw block publish needs a read-only attachment.
        if cap.block && wanted.readonly && !staged.readonly {
            return Err(Error::ReadOnlyRawBlock(volume_id.to_owned()));
        }
        // "Published once" modes allow a single target on this node; a second
        // pod needs SINGLE_NODE_MULTI_WRITER (what kubelet sends for a
        // ReadWriteOnce claim, as we advertise it) or a multi-node mode.
        let one_target = |mode: &str| Mode::from_str_name(mode).is_none_or(|m| !allows_several_targets(m));
        if let Some((other, existing)) = volume
            .published
            .iter()
            .find(|(t, p)| *t != target && (!allows_several_targets(cap.mode) || one_target(&p.access_mode)))
        {
            return Err(Error::PublishedAtOtherTarget {
                volume: volume_id.to_owned(),
                other: other.clone(),
                mode: if one_target(&existing.access_mode) {
                    existing.access_mode.clone()
                } else {
                    cap.mode.as_str_name().to_owned()
                },
            });
        }
        if let Some(existing) = volume.published.get(target) {
            if *existing != wanted {
                return Err(Error::PublishedDifferently {
                    volume: volume_id.to_owned(),
                    target: target.to_owned(),
                    reason: format!("readonly={} access_mode={}", existing.readonly, existing.access_mode),
                });
            }
            if mount::is_mount_point(target)? {
                return Ok(()); // a retry of a call that succeeded
            }
        }
        // TODO(lab03): Create the target (a directory, or an empty file for
        // raw block access, whose source is the loop device) and bind-mount
        // the staging path onto it, read-only when `wanted.readonly`. Then
        // record `wanted` in `volume.published` and save.
        // ANCHOR: solution
        let source = if cap.block {
            let device = staged.device.clone().ok_or_else(|| Error::NotStaged {
                volume: volume_id.to_owned(),
                path: staging_path.to_owned(),
            })?;
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(Error::io(parent))?;
            }
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(target)
                .map_err(Error::io(target))?;
            device
        } else {
            std::fs::create_dir_all(target).map_err(Error::io(target))?;
            staging_path.to_owned()
        };
        if !mount::is_mount_point(target)? {
            mount::bind_mount(&source, target, wanted.readonly)?;
        }
        volume.published.insert(target.to_owned(), wanted);
        self.state.save(&volume)?;
        tracing::info!(target = %target.display(), "volume published");
        // ANCHOR_END: solution => return Err(lab02_controller::Error::NotWritten("lab03: NodePublishVolume is not written yet (chapter 3, step 7)".into()).into());
        Ok(())
    }
    // ANCHOR_END: node-publish

    // ANCHOR: node-unpublish
    fn unpublish(&self, volume_id: &str, target: &Path) -> Result<()> {
        let Some(mut volume) = self.state.load(volume_id)? else {
            tracing::info!("volume is not published here: nothing to do");
            remove_if_empty_and_unmounted(target)?;
            return Ok(());
        };
        if !volume.published.contains_key(target) {
            // Not ours on record, but a crash between creating the target and
            // saving the record leaves an empty directory or file behind; the
            // spec wants what the plugin created at the target removed.
            remove_if_empty_and_unmounted(target)?;
            return Ok(());
        }
        // TODO(lab03): Unmount the target (already unmounted is fine), remove
        // the directory or file we created there, forget the target and save.
        // ANCHOR: solution
        mount::unmount(target)?;
        let removed =
            if target.is_dir() { std::fs::remove_dir(target) } else { std::fs::remove_file(target) };
        match removed {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(target)(e)),
        }
        volume.published.remove(target);
        self.state.save(&volume)?;
        tracing::info!(target = %target.display(), "volume unpublished");
        // ANCHOR_END: solution => return Err(lab02_controller::Error::NotWritten("lab03: NodeUnpublishVolume is not written yet (chapter 3, step 8)".into()).into());
        Ok(())
    }
    // ANCHOR_END: node-unpublish

    /// The paths where this volume is staged or published on this node.
    fn where_mounted(&self, volume_id: &str, path: &Path) -> Result<(NodeVolume, bool)> {
        let not_here = || Error::NotAtPath { volume: volume_id.to_owned(), path: path.to_owned() };
        let volume = self.state.load(volume_id)?.ok_or_else(not_here)?;
        let raw_block = if let Some(p) = volume.published.get(path) {
            p.raw_block
        } else if let Some(s) = volume.staged.as_ref().filter(|s| s.staging_path == path) {
            s.raw_block
        } else {
            return Err(not_here());
        };
        Ok((volume, raw_block))
    }

    // ANCHOR: node-get-volume-stats
    fn stats(&self, volume_id: &str, path: &Path) -> Result<NodeGetVolumeStatsResponse> {
        let (volume, raw_block) = self.where_mounted(volume_id, path)?;
        let condition = |abnormal: bool, message: String| Some(VolumeCondition { abnormal, message });
        if raw_block {
            // Health is a report, not an error: a device that was detached
            // behind our back, or a target no longer bound, is abnormal.
            let device = volume.staged.as_ref().and_then(|s| s.device.clone());
            let attached = device.as_deref().filter(|d| matches!(loopdev::backing_file(d), Ok(Some(_))));
            let size = attached.and_then(|d| loopdev::size_bytes(d).ok());
            let published = volume.published.contains_key(path);
            let (abnormal, message) = match size {
                None => (true, "the loop device of this volume is gone".to_owned()),
                Some(_) if published && !mount::is_mount_point(path)? => {
                    (true, format!("{} is no longer bound to the device", path.display()))
                }
                Some(_) => (false, "raw block device".to_owned()),
            };
            return Ok(NodeGetVolumeStatsResponse {
                usage: size
                    .map(|total| VolumeUsage {
                        total: total as i64,
                        unit: volume_usage::Unit::Bytes as i32,
                        ..Default::default()
                    })
                    .into_iter()
                    .collect(),
                volume_condition: condition(abnormal, message),
            });
        }
        if !mount::is_mount_point(path)? {
            // The path is ours but nothing is mounted there any more.
            return Ok(NodeGetVolumeStatsResponse {
                usage: vec![],
                volume_condition: condition(true, format!("{} is no longer mounted", path.display())),
            });
        }
        let usage = fs::usage(path)?;
        let bytes = VolumeUsage {
            available: usage.available_bytes as i64,
            total: usage.total_bytes as i64,
            used: usage.used_bytes as i64,
            unit: volume_usage::Unit::Bytes as i32,
        };
        let inodes = VolumeUsage {
            available: usage.free_inodes as i64,
            total: usage.total_inodes as i64,
            used: usage.used_inodes as i64,
            unit: volume_usage::Unit::Inodes as i32,
        };
        Ok(NodeGetVolumeStatsResponse {
            usage: vec![bytes, inodes],
            volume_condition: condition(false, "mounted".into()),
        })
    }
    // ANCHOR_END: node-get-volume-stats

    // ANCHOR: node-expand
    fn expand(&self, volume_id: &str, path: &Path, required: i64) -> Result<i64> {
        let (volume, raw_block) = self.where_mounted(volume_id, path)?;
        let record = self.volume_record(volume_id)?;
        if record.kind == VolumeKind::File {
            return Ok(record.capacity_bytes); // a directory has nothing to grow
        }
        let staged = volume
            .staged
            .as_ref()
            .ok_or_else(|| Error::NotStaged { volume: volume_id.to_owned(), path: path.to_owned() })?;
        let image = self.backend.image_path(volume_id);
        let device = loopdev::find_by_backing_file(&image)?
            .or_else(|| staged.device.clone())
            .ok_or_else(|| Error::NotStaged { volume: volume_id.to_owned(), path: path.to_owned() })?;
        // The image grew in ControllerExpandVolume; the loop device learns
        // its new size only when asked, then the filesystem grows online.
        let size = loopdev::refresh_capacity(&device)? as i64;
        if size < required {
            return Err(Error::NotExpandedYet { have: size, want: required });
        }
        if !raw_block {
            fs::grow(&device, &staged.staging_path, &staged.fs_type)?;
        }
        tracing::info!(size, "volume expanded on the node");
        Ok(size)
    }
    // ANCHOR_END: node-expand

    /// Runs blocking work (mounts, mkfs, ioctls) off the async runtime, in
    /// the RPC's span and under the volume's lock.
    async fn blocking<T: Send + 'static>(
        &self,
        volume_id: &str,
        work: impl FnOnce(&Self) -> Result<T> + Send + 'static,
    ) -> Result<T, Status> {
        let _guard = self.locks.lock(volume_id).await;
        let this = self.clone();
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || span.in_scope(|| work(&this)))
            .await
            .map_err(|e| Status::internal(format!("node operation panicked: {e}")))?
            .map_err(Status::from)
    }
}

/// Removes `target` if it is an empty directory or an empty file with nothing
/// mounted on it: never anything that holds data or belongs to a mount.
fn remove_if_empty_and_unmounted(target: &Path) -> Result<()> {
    let Ok(meta) = std::fs::symlink_metadata(target) else { return Ok(()) };
    if mount::is_mount_point(target)? {
        tracing::warn!(target = %target.display(), "not our mount on record: left in place");
        return Ok(());
    }
    let removed = if meta.is_dir() {
        std::fs::remove_dir(target) // fails, harmlessly, when not empty
    } else if meta.is_file() && meta.len() == 0 {
        std::fs::remove_file(target)
    } else {
        return Ok(());
    };
    if let Err(e) = removed {
        tracing::warn!(target = %target.display(), error = %e, "left the target in place");
    }
    Ok(())
}

#[tonic::async_trait]
impl Node for NodeService {
    async fn node_stage_volume(
        &self,
        request: Request<NodeStageVolumeRequest>,
    ) -> Result<Response<NodeStageVolumeResponse>, Status> {
        let req = request.into_inner();
        record_volume_id(&req.volume_id);
        let id = validate::volume_id(&req.volume_id)?.to_owned();
        let staging = host_path("staging_target_path", &req.staging_target_path)?;
        let cap =
            capability::parse(validate::required("volume_capability", req.volume_capability.as_ref())?)?;
        self.blocking(&id.clone(), move |s| s.stage(&id, &staging, &cap)).await?;
        Ok(Response::new(NodeStageVolumeResponse {}))
    }

    async fn node_unstage_volume(
        &self,
        request: Request<NodeUnstageVolumeRequest>,
    ) -> Result<Response<NodeUnstageVolumeResponse>, Status> {
        let req = request.into_inner();
        record_volume_id(&req.volume_id);
        let id = validate::volume_id(&req.volume_id)?.to_owned();
        let staging = host_path("staging_target_path", &req.staging_target_path)?;
        self.blocking(&id.clone(), move |s| s.unstage(&id, &staging)).await?;
        Ok(Response::new(NodeUnstageVolumeResponse {}))
    }

    async fn node_publish_volume(
        &self,
        request: Request<NodePublishVolumeRequest>,
    ) -> Result<Response<NodePublishVolumeResponse>, Status> {
        let req = request.into_inner();
        record_volume_id(&req.volume_id);
        let id = validate::volume_id(&req.volume_id)?.to_owned();
        let target = host_path("target_path", &req.target_path)?;
        let cap =
            capability::parse(validate::required("volume_capability", req.volume_capability.as_ref())?)?;
        if req.staging_target_path.is_empty() {
            // The spec's answer when a plugin with STAGE_UNSTAGE_VOLUME gets
            // no staging path: the CO skipped NodeStageVolume.
            return Err(Status::failed_precondition(
                "staging_target_path is not set: this plugin stages volumes, so NodeStageVolume must run first",
            ));
        }
        let staging = host_path("staging_target_path", &req.staging_target_path)?;
        let readonly = req.readonly;
        self.blocking(&id.clone(), move |s| s.publish(&id, &staging, &target, &cap, readonly)).await?;
        Ok(Response::new(NodePublishVolumeResponse {}))
    }

    async fn node_unpublish_volume(
        &self,
        request: Request<NodeUnpublishVolumeRequest>,
    ) -> Result<Response<NodeUnpublishVolumeResponse>, Status> {
        let req = request.into_inner();
        record_volume_id(&req.volume_id);
        let id = validate::volume_id(&req.volume_id)?.to_owned();
        let target = host_path("target_path", &req.target_path)?;
        self.blocking(&id.clone(), move |s| s.unpublish(&id, &target)).await?;
        Ok(Response::new(NodeUnpublishVolumeResponse {}))
    }

    async fn node_get_volume_stats(
        &self,
        request: Request<NodeGetVolumeStatsRequest>,
    ) -> Result<Response<NodeGetVolumeStatsResponse>, Status> {
        let req = request.into_inner();
        record_volume_id(&req.volume_id);
        let id = validate::volume_id(&req.volume_id)?.to_owned();
        let path = lookup_path("volume_path", &req.volume_path)?;
        // Stats only read: no volume lock, so they never wait behind a mkfs.
        let this = self.clone();
        let span = tracing::Span::current();
        let response = tokio::task::spawn_blocking(move || span.in_scope(|| this.stats(&id, &path)))
            .await
            .map_err(|e| Status::internal(format!("stats panicked: {e}")))??;
        Ok(Response::new(response))
    }

    async fn node_expand_volume(
        &self,
        request: Request<NodeExpandVolumeRequest>,
    ) -> Result<Response<NodeExpandVolumeResponse>, Status> {
        let req = request.into_inner();
        record_volume_id(&req.volume_id);
        let id = validate::volume_id(&req.volume_id)?.to_owned();
        let path = lookup_path("volume_path", &req.volume_path)?;
        let required = req.capacity_range.as_ref().map(|r| r.required_bytes).unwrap_or(0);
        if required < 0 {
            return Err(Status::invalid_argument("capacity_range.required_bytes must not be negative"));
        }
        if let Some(cap) = req.volume_capability.as_ref() {
            capability::parse(cap)?;
        }
        let capacity_bytes = self.blocking(&id.clone(), move |s| s.expand(&id, &path, required)).await?;
        Ok(Response::new(NodeExpandVolumeResponse { capacity_bytes }))
    }

    // ANCHOR: node-get-capabilities
    async fn node_get_capabilities(
        &self,
        _request: Request<NodeGetCapabilitiesRequest>,
    ) -> Result<Response<NodeGetCapabilitiesResponse>, Status> {
        use rpc::Type;
        let capabilities = [
            Type::StageUnstageVolume,
            Type::GetVolumeStats,
            Type::ExpandVolume,
            Type::VolumeCondition,
            Type::SingleNodeMultiWriter,
        ]
        .into_iter()
        .map(|t| NodeServiceCapability { r#type: Some(CapType::Rpc(Rpc { r#type: t as i32 })) })
        .collect();
        Ok(Response::new(NodeGetCapabilitiesResponse { capabilities }))
    }
    // ANCHOR_END: node-get-capabilities

    // ANCHOR: node-get-info
    async fn node_get_info(
        &self,
        _request: Request<NodeGetInfoRequest>,
    ) -> Result<Response<NodeGetInfoResponse>, Status> {
        // kubelet copies these segments into node labels and the CSINode
        // object; the provisioner reads them back for topology.
        let mut topology = self.topology.volume_topology(self.backend.id());
        topology.segments.insert(self.topology.node.clone(), self.node_id.clone());
        Ok(Response::new(NodeGetInfoResponse {
            node_id: self.node_id.clone(),
            max_volumes_per_node: self.max_volumes,
            accessible_topology: Some(topology),
        }))
    }
    // ANCHOR_END: node-get-info
}
