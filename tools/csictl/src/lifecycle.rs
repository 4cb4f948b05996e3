//! One volume's trip through the plugin, the way a CO drives it:
//! Create → ControllerPublish → NodeStage → NodePublish and back.
//!
//! [`Lifecycle`] remembers what has been set up, so that after a failure
//! [`Lifecycle::teardown`] undoes exactly that, in reverse order. `walk` and
//! `bench` both build on it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use lab01_identity::csi::controller_service_capability as ccap;
use lab01_identity::csi::node_service_capability as ncap;
use lab01_identity::csi::{self, VolumeCapability};

use crate::VolumeType;
use crate::rpc::Csi;

pub const NODE_GET_INFO: &str = "NodeGetInfo";
pub const GET_CAPABILITIES: &str = "GetCapabilities";
pub const CREATE: &str = "CreateVolume";
pub const CONTROLLER_PUBLISH: &str = "ControllerPublishVolume";
pub const STAGE: &str = "NodeStageVolume";
pub const PUBLISH: &str = "NodePublishVolume";
pub const STATS: &str = "NodeGetVolumeStats";
pub const UNPUBLISH: &str = "NodeUnpublishVolume";
pub const UNSTAGE: &str = "NodeUnstageVolume";
pub const CONTROLLER_UNPUBLISH: &str = "ControllerUnpublishVolume";
pub const DELETE: &str = "DeleteVolume";

/// What the plugin said about itself; decides which optional steps run.
#[derive(Debug, Clone)]
pub struct Features {
    pub node_id: String,
    /// Controller has PUBLISH_UNPUBLISH_VOLUME.
    pub controller_publish: bool,
    /// Node has STAGE_UNSTAGE_VOLUME.
    pub stage: bool,
    /// Node has GET_VOLUME_STATS.
    pub stats: bool,
}

/// Asks the plugin for its node id and capabilities (two timed steps).
pub async fn node_id(csi: &Csi) -> (anyhow::Result<String>, Duration) {
    let (r, d) = csi.timed(csi.node.clone().node_get_info(csi.req(csi::NodeGetInfoRequest {}))).await;
    (r.map(|info| info.node_id).map_err(anyhow::Error::from), d)
}

pub async fn capabilities(csi: &Csi, node_id: String) -> (anyhow::Result<Features>, Duration) {
    let start = std::time::Instant::now();
    let result = async {
        let controller = csi
            .call(
                csi.controller
                    .clone()
                    .controller_get_capabilities(csi.req(csi::ControllerGetCapabilitiesRequest {})),
            )
            .await?;
        let node = csi
            .call(csi.node.clone().node_get_capabilities(csi.req(csi::NodeGetCapabilitiesRequest {})))
            .await?;
        let has_controller = |t: ccap::rpc::Type| {
            controller
                .capabilities
                .iter()
                .any(|c| matches!(&c.r#type, Some(ccap::Type::Rpc(r)) if r.r#type == t as i32))
        };
        let has_node = |t: ncap::rpc::Type| {
            node.capabilities
                .iter()
                .any(|c| matches!(&c.r#type, Some(ncap::Type::Rpc(r)) if r.r#type == t as i32))
        };
        Ok(Features {
            node_id,
            controller_publish: has_controller(ccap::rpc::Type::PublishUnpublishVolume),
            stage: has_node(ncap::rpc::Type::StageUnstageVolume),
            stats: has_node(ncap::rpc::Type::GetVolumeStats),
        })
    }
    .await;
    (result, start.elapsed())
}

/// The volume to create and where it goes on this machine.
#[derive(Debug, Clone)]
pub struct Plan {
    pub name: String,
    pub volume_type: VolumeType,
    pub size: i64,
    pub capability: VolumeCapability,
    /// The CO creates this directory before NodeStageVolume.
    pub staging_path: PathBuf,
    /// The plugin creates this; the CO creates only its parent.
    pub target_path: PathBuf,
}

impl Plan {
    /// Paths under `work_dir`, laid out like kubelet's (one dir per volume).
    pub fn new(
        name: String,
        volume_type: VolumeType,
        size: i64,
        capability: VolumeCapability,
        work_dir: &Path,
    ) -> Self {
        let staging_path = work_dir.join("staging").join(&name);
        let target_path = work_dir.join("pods").join(&name).join("mount");
        Self { name, volume_type, size, capability, staging_path, target_path }
    }
}

/// What is currently set up for the volume.
#[derive(Debug, Default)]
pub struct State {
    pub volume: Option<csi::Volume>,
    pub publish_context: HashMap<String, String>,
    pub controller_published: bool,
    pub staged: bool,
    pub published: bool,
}

pub struct Lifecycle<'a> {
    csi: &'a Csi,
    pub plan: Plan,
    pub features: Features,
    pub state: State,
}

fn path_string(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

impl<'a> Lifecycle<'a> {
    pub fn new(csi: &'a Csi, plan: Plan, features: Features) -> Self {
        Self { csi, plan, features, state: State::default() }
    }

    pub fn volume_id(&self) -> &str {
        self.state.volume.as_ref().map(|v| v.volume_id.as_str()).unwrap_or_default()
    }

    fn volume_context(&self) -> HashMap<String, String> {
        self.state.volume.as_ref().map(|v| v.volume_context.clone()).unwrap_or_default()
    }

    pub async fn create(&mut self) -> (anyhow::Result<()>, Duration) {
        let request = csi::CreateVolumeRequest {
            name: self.plan.name.clone(),
            capacity_range: Some(csi::CapacityRange { required_bytes: self.plan.size, limit_bytes: 0 }),
            volume_capabilities: vec![self.plan.capability.clone()],
            parameters: HashMap::from([("type".to_string(), self.plan.volume_type.as_str().to_string())]),
            ..Default::default()
        };
        let (r, d) = self.csi.timed(self.csi.controller.clone().create_volume(self.csi.req(request))).await;
        let result = r.map_err(anyhow::Error::from).and_then(|resp| {
            let volume = resp.volume.context("CreateVolume answered without a volume")?;
            anyhow::ensure!(!volume.volume_id.is_empty(), "CreateVolume answered with an empty volume_id");
            self.state.volume = Some(volume);
            Ok(())
        });
        (result, d)
    }

    pub async fn controller_publish(&mut self) -> (anyhow::Result<()>, Duration) {
        let request = csi::ControllerPublishVolumeRequest {
            volume_id: self.volume_id().to_string(),
            node_id: self.features.node_id.clone(),
            volume_capability: Some(self.plan.capability.clone()),
            readonly: false,
            secrets: Default::default(),
            volume_context: self.volume_context(),
        };
        let (r, d) = self
            .csi
            .timed(self.csi.controller.clone().controller_publish_volume(self.csi.req(request)))
            .await;
        let result = r.map(|resp| {
            self.state.publish_context = resp.publish_context;
            self.state.controller_published = true;
        });
        (result.map_err(anyhow::Error::from), d)
    }

    pub async fn stage(&mut self) -> (anyhow::Result<()>, Duration) {
        // Creating the staging directory is the CO's job, so it is not timed.
        if let Err(e) = std::fs::create_dir_all(&self.plan.staging_path) {
            let err =
                anyhow::Error::from(e).context(format!("creating {}", self.plan.staging_path.display()));
            return (Err(err), Duration::ZERO);
        }
        let request = csi::NodeStageVolumeRequest {
            volume_id: self.volume_id().to_string(),
            publish_context: self.state.publish_context.clone(),
            staging_target_path: path_string(&self.plan.staging_path),
            volume_capability: Some(self.plan.capability.clone()),
            secrets: Default::default(),
            volume_context: self.volume_context(),
        };
        let (r, d) = self.csi.timed(self.csi.node.clone().node_stage_volume(self.csi.req(request))).await;
        // Even a failed stage may have left a mount behind: unstage is idempotent,
        // so always try it during teardown.
        self.state.staged = true;
        (r.map(drop).map_err(anyhow::Error::from), d)
    }

    pub async fn publish(&mut self) -> (anyhow::Result<()>, Duration) {
        if let Some(parent) = self.plan.target_path.parent()
            && let Err(e) = std::fs::create_dir_all(parent)
        {
            return (
                Err(anyhow::Error::from(e).context(format!("creating {}", parent.display()))),
                Duration::ZERO,
            );
        }
        let request = csi::NodePublishVolumeRequest {
            volume_id: self.volume_id().to_string(),
            publish_context: self.state.publish_context.clone(),
            staging_target_path: if self.features.stage {
                path_string(&self.plan.staging_path)
            } else {
                String::new()
            },
            target_path: path_string(&self.plan.target_path),
            volume_capability: Some(self.plan.capability.clone()),
            readonly: false,
            secrets: Default::default(),
            volume_context: self.volume_context(),
        };
        let (r, d) = self.csi.timed(self.csi.node.clone().node_publish_volume(self.csi.req(request))).await;
        self.state.published = true; // as for stage: unpublish is safe to retry
        (r.map(drop).map_err(anyhow::Error::from), d)
    }

    pub async fn stats(&self) -> (anyhow::Result<csi::NodeGetVolumeStatsResponse>, Duration) {
        let request = csi::NodeGetVolumeStatsRequest {
            volume_id: self.volume_id().to_string(),
            volume_path: path_string(&self.plan.target_path),
            staging_target_path: if self.features.stage {
                path_string(&self.plan.staging_path)
            } else {
                String::new()
            },
        };
        let (r, d) = self.csi.timed(self.csi.node.clone().node_get_volume_stats(self.csi.req(request))).await;
        (r.map_err(anyhow::Error::from), d)
    }

    pub async fn unpublish(&mut self) -> (anyhow::Result<()>, Duration) {
        let request = csi::NodeUnpublishVolumeRequest {
            volume_id: self.volume_id().to_string(),
            target_path: path_string(&self.plan.target_path),
        };
        let (r, d) = self.csi.timed(self.csi.node.clone().node_unpublish_volume(self.csi.req(request))).await;
        if r.is_ok() {
            self.state.published = false;
            // The plugin should have removed the target; remove_dir only
            // deletes empty directories, so nothing mounted can be lost.
            let _ = std::fs::remove_dir(&self.plan.target_path);
            if let Some(parent) = self.plan.target_path.parent() {
                let _ = std::fs::remove_dir(parent);
            }
        }
        (r.map(drop).map_err(anyhow::Error::from), d)
    }

    pub async fn unstage(&mut self) -> (anyhow::Result<()>, Duration) {
        let request = csi::NodeUnstageVolumeRequest {
            volume_id: self.volume_id().to_string(),
            staging_target_path: path_string(&self.plan.staging_path),
        };
        let (r, d) = self.csi.timed(self.csi.node.clone().node_unstage_volume(self.csi.req(request))).await;
        if r.is_ok() {
            self.state.staged = false;
            let _ = std::fs::remove_dir(&self.plan.staging_path);
        }
        (r.map(drop).map_err(anyhow::Error::from), d)
    }

    pub async fn controller_unpublish(&mut self) -> (anyhow::Result<()>, Duration) {
        let request = csi::ControllerUnpublishVolumeRequest {
            volume_id: self.volume_id().to_string(),
            node_id: self.features.node_id.clone(),
            secrets: Default::default(),
        };
        let (r, d) = self
            .csi
            .timed(self.csi.controller.clone().controller_unpublish_volume(self.csi.req(request)))
            .await;
        if r.is_ok() {
            self.state.controller_published = false;
        }
        (r.map(drop).map_err(anyhow::Error::from), d)
    }

    pub async fn delete(&mut self) -> (anyhow::Result<()>, Duration) {
        let request =
            csi::DeleteVolumeRequest { volume_id: self.volume_id().to_string(), secrets: Default::default() };
        let (r, d) = self.csi.timed(self.csi.controller.clone().delete_volume(self.csi.req(request))).await;
        if r.is_ok() {
            self.state.volume = None;
        }
        (r.map(drop).map_err(anyhow::Error::from), d)
    }

    /// Undoes whatever is still set up, in reverse order. Keeps going after a
    /// failed step, but skips steps that depend on it (no detach while the
    /// volume may still be mounted).
    pub async fn teardown(&mut self) -> Vec<(&'static str, anyhow::Result<()>, Duration)> {
        let mut done = Vec::new();
        if self.state.published {
            let (r, d) = self.unpublish().await;
            done.push((UNPUBLISH, r, d));
        }
        if self.state.staged && !self.state.published {
            let (r, d) = self.unstage().await;
            done.push((UNSTAGE, r, d));
        }
        let node_clean = !self.state.published && !self.state.staged;
        if self.state.controller_published && node_clean {
            let (r, d) = self.controller_unpublish().await;
            done.push((CONTROLLER_UNPUBLISH, r, d));
        }
        if self.state.volume.is_some() && node_clean && !self.state.controller_published {
            let (r, d) = self.delete().await;
            done.push((DELETE, r, d));
        }
        done
    }

    /// True when nothing is left on the plugin's side.
    pub fn is_clean(&self) -> bool {
        let s = &self.state;
        s.volume.is_none() && !s.controller_published && !s.staged && !s.published
    }
}

/// Removes csictl's own (empty) directories under `work_dir`.
pub fn remove_work_dirs(work_dir: &Path) {
    for dir in [work_dir.join("staging"), work_dir.join("pods"), work_dir.to_path_buf()] {
        let _ = std::fs::remove_dir(dir);
    }
}

/// Milliseconds with a fraction, for tables and JSON.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
