//! A lab 02 driver on a real unix socket over a temporary backend.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use lab01_identity::csi::controller_client::ControllerClient;
use lab01_identity::csi::controller_server::ControllerServer;
use lab01_identity::csi::identity_server::IdentityServer;
use lab01_identity::csi::volume_capability::access_mode::Mode;
use lab01_identity::csi::*;
use lab01_identity::server;
use lab01_identity::testing::TestServer;
use lab02_controller::backend::{Backend, NodeRecord};
use lab02_controller::capability::capability;
use lab02_controller::driver::{ControllerArgs, controller_service, identity_service};
use tonic::transport::Channel;

pub const MIB: i64 = 1 << 20;

pub struct Driver {
    pub dir: tempfile::TempDir,
    pub server: TestServer,
    pub client: ControllerClient<Channel>,
}

pub fn args(dir: &std::path::Path) -> ControllerArgs {
    ControllerArgs::with_backend("csi.workshop.dev", dir.join("backend"))
}

impl Driver {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (server, client) = serve(dir.path()).await;
        Self { dir, server, client }
    }

    /// Stops the plugin and starts a new one on the same backend, like a
    /// container restart.
    pub async fn restart(self) -> Self {
        let Driver { dir, server, .. } = self;
        server.stop().await;
        let (server, client) = serve(dir.path()).await;
        Self { dir, server, client }
    }

    pub fn backend_dir(&self) -> PathBuf {
        self.dir.path().join("backend")
    }

    pub fn backend(&self) -> Backend {
        Backend::open(&self.backend_dir()).unwrap()
    }

    /// Joins a node to the backend, as the node plugin does when it starts.
    pub fn register_node(&self, node_id: &str, max_volumes: i64) {
        self.backend().register_node(&NodeRecord { node_id: node_id.into(), max_volumes }).unwrap();
    }
}

async fn serve(dir: &std::path::Path) -> (TestServer, ControllerClient<Channel>) {
    let args = args(dir);
    let controller = controller_service(&args).unwrap();
    let identity = identity_service(&args.driver, true).unwrap();
    let router = server::grpc_server()
        .add_service(IdentityServer::new(identity))
        .add_service(ControllerServer::new(controller));
    let server = TestServer::start(router, dir).await;
    let client = ControllerClient::new(server.channel().await);
    (server, client)
}

pub fn mount_cap(mode: Mode) -> VolumeCapability {
    capability(mode, false, "ext4")
}

pub fn create_request(name: &str, kind: &str, size: i64) -> CreateVolumeRequest {
    let mode = if kind == "file" { Mode::MultiNodeMultiWriter } else { Mode::SingleNodeWriter };
    CreateVolumeRequest {
        name: name.into(),
        capacity_range: Some(CapacityRange { required_bytes: size, limit_bytes: 0 }),
        volume_capabilities: vec![mount_cap(mode)],
        parameters: HashMap::from([("type".to_string(), kind.to_string())]),
        ..Default::default()
    }
}

pub fn publish_request(
    volume: &str,
    node: &str,
    mode: Mode,
    readonly: bool,
) -> ControllerPublishVolumeRequest {
    ControllerPublishVolumeRequest {
        volume_id: volume.into(),
        node_id: node.into(),
        volume_capability: Some(mount_cap(mode)),
        readonly,
        ..Default::default()
    }
}
