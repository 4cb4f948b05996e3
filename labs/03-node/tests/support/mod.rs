//! The lab 03 driver (Identity + Controller + Node) on a real unix socket,
//! over a temporary backend, with a guard that always cleans up the host.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use lab01_identity::csi::controller_client::ControllerClient;
use lab01_identity::csi::node_client::NodeClient;
use lab01_identity::csi::volume_capability::access_mode::Mode;
use lab01_identity::csi::*;
use lab01_identity::testing::TestServer;
use lab02_controller::capability::capability;
use lab03_node::driver::{Mode as ServeMode, NodeArgs, router};
use tonic::transport::Channel;

pub const MIB: i64 = 1 << 20;
pub const NODE: &str = "node-a";

pub use lab03_node::testing::cleanup_under;

/// Skips a test that needs root, saying so: it must not pass silently.
#[macro_export]
macro_rules! require_root {
    () => {
        if let Some(reason) = lab03_node::testing::root_skip_reason() {
            eprintln!("SKIP {}: {reason}", module_path!());
            return;
        }
    };
}

/// Removes every mount and loop device under a directory when dropped, also
/// when the test panicked, then removes the directory.
pub struct HostCleanup {
    pub dir: tempfile::TempDir,
}

impl Drop for HostCleanup {
    fn drop(&mut self) {
        cleanup_under(self.dir.path());
    }
}

pub struct Driver {
    pub host: HostCleanup,
    pub server: Option<TestServer>,
    pub controller: ControllerClient<Channel>,
    pub node: NodeClient<Channel>,
}

fn args(dir: &Path) -> NodeArgs {
    NodeArgs::in_dir("csi.workshop.dev", dir, NODE, ServeMode::All)
}

async fn serve(dir: &Path) -> (TestServer, ControllerClient<Channel>, NodeClient<Channel>) {
    let server = TestServer::start(router(&args(dir)).expect("driver starts"), dir).await;
    let channel = server.channel().await;
    (server, ControllerClient::new(channel.clone()), NodeClient::new(channel))
}

impl Driver {
    pub async fn start() -> Self {
        // Under /tmp, so the before-stop hook would spot anything left behind.
        let dir = tempfile::Builder::new().prefix("csi-lab03-").tempdir_in("/tmp").unwrap();
        let (server, controller, node) = serve(dir.path()).await;
        Self { host: HostCleanup { dir }, server: Some(server), controller, node }
    }

    /// Stops the plugin (as SIGTERM would) and starts a new one on the same
    /// backend and state directories. Mounts and loop devices stay.
    pub async fn restart(&mut self) {
        self.server.take().unwrap().stop().await;
        let (server, controller, node) = serve(self.host.dir.path()).await;
        self.server = Some(server);
        self.controller = controller;
        self.node = node;
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.host.dir.path().join(name)
    }

    pub fn image(&self, volume: &str) -> PathBuf {
        self.path("backend").join("volumes").join(volume).join("disk.img")
    }

    /// CreateVolume + ControllerPublishVolume, as provisioner and attacher do.
    pub async fn create_and_attach(&mut self, name: &str, kind: &str, size: i64) -> HashMap<String, String> {
        let mode = if kind == "file" { Mode::MultiNodeMultiWriter } else { Mode::SingleNodeWriter };
        self.controller
            .create_volume(CreateVolumeRequest {
                name: name.into(),
                capacity_range: Some(CapacityRange { required_bytes: size, limit_bytes: 0 }),
                volume_capabilities: vec![capability(mode, false, "ext4")],
                parameters: HashMap::from([("type".into(), kind.into())]),
                ..Default::default()
            })
            .await
            .expect("CreateVolume");
        self.controller
            .controller_publish_volume(ControllerPublishVolumeRequest {
                volume_id: name.into(),
                node_id: NODE.into(),
                volume_capability: Some(capability(mode, false, "ext4")),
                ..Default::default()
            })
            .await
            .expect("ControllerPublishVolume")
            .into_inner()
            .publish_context
    }

    pub fn stage_request(
        &self,
        volume: &str,
        mode: Mode,
        block: bool,
        fs_type: &str,
    ) -> NodeStageVolumeRequest {
        NodeStageVolumeRequest {
            volume_id: volume.into(),
            staging_target_path: self.staging(volume).display().to_string(),
            volume_capability: Some(capability(mode, block, fs_type)),
            ..Default::default()
        }
    }

    pub fn publish_request(
        &self,
        volume: &str,
        target: &str,
        mode: Mode,
        block: bool,
        readonly: bool,
    ) -> NodePublishVolumeRequest {
        NodePublishVolumeRequest {
            volume_id: volume.into(),
            staging_target_path: self.staging(volume).display().to_string(),
            target_path: self.path("pods").join(target).display().to_string(),
            volume_capability: Some(capability(mode, block, "ext4")),
            readonly,
            ..Default::default()
        }
    }

    /// Like kubelet: the staging directory exists before NodeStageVolume.
    pub fn staging(&self, volume: &str) -> PathBuf {
        let dir = self.path("staging").join(volume);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    pub fn target(&self, target: &str) -> PathBuf {
        self.path("pods").join(target)
    }

    pub async fn unpublish(&mut self, volume: &str, target: &str) -> Result<(), tonic::Status> {
        let target_path = self.target(target).display().to_string();
        self.node
            .node_unpublish_volume(NodeUnpublishVolumeRequest { volume_id: volume.into(), target_path })
            .await
            .map(drop)
    }

    pub async fn unstage(&mut self, volume: &str) -> Result<(), tonic::Status> {
        let staging_target_path = self.staging(volume).display().to_string();
        self.node
            .node_unstage_volume(NodeUnstageVolumeRequest { volume_id: volume.into(), staging_target_path })
            .await
            .map(drop)
    }
}

/// The loop device backing `image`, if any.
pub fn loop_device_of(image: &Path) -> Option<PathBuf> {
    lab03_node::loopdev::find_by_backing_file(image).ok().flatten()
}

pub fn mount_of(path: &Path) -> Option<lab03_node::mount::MountInfo> {
    lab03_node::mount::find_mount(path).ok().flatten()
}
