//! Assembling the full driver: Identity, Controller and Node in one binary.
//!
//! In a cluster the same image runs twice: as the controller (a Deployment,
//! `--mode controller`) and as the node plugin on every node (a DaemonSet,
//! `--mode node`). Locally, `--mode all` serves everything on one socket.

use std::path::PathBuf;

use anyhow::Context;
use lab01_identity::csi::controller_server::ControllerServer;
use lab01_identity::csi::identity_server::IdentityServer;
use lab01_identity::csi::node_server::NodeServer;
use lab02_controller::backend::Backend;
use lab02_controller::driver::{ControllerArgs, controller_service, identity_service};
use lab02_controller::topology::TopologyKeys;
use tonic::transport::server::Router;

use crate::node::NodeService;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Identity + Controller + Node.
    All,
    /// Identity + Controller (the Deployment).
    Controller,
    /// Identity + Node (the DaemonSet on every node).
    Node,
}

#[derive(Debug, Clone, clap::Args)]
pub struct NodeArgs {
    #[command(flatten)]
    pub controller: ControllerArgs,

    /// Which services to serve.
    #[arg(long, value_enum, default_value = "all")]
    pub mode: Mode,

    /// This node's id; on Kubernetes, the node name (`spec.nodeName`).
    #[arg(long, env = "NODE_ID")]
    pub nodeid: Option<String>,

    /// Where the node plugin records what it staged and published.
    #[arg(long, default_value = "/var/lib/csi-workshop/node")]
    pub state_dir: PathBuf,

    /// Most volumes attachable to this node at once (0: no limit).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(i64).range(0..))]
    pub max_volumes_per_node: i64,
}

impl NodeArgs {
    /// The flags' defaults for node `nodeid` serving `mode`, with its backend
    /// and state under `dir`: for tests that start a driver in-process.
    pub fn in_dir(drivername: &str, dir: &std::path::Path, nodeid: &str, mode: Mode) -> Self {
        Self {
            controller: ControllerArgs::with_backend(drivername, dir.join("backend")),
            mode,
            nodeid: Some(nodeid.to_owned()),
            state_dir: dir.join("state"),
            max_volumes_per_node: 0,
        }
    }
}

/// Builds the router with the services `args.mode` asks for.
pub fn router(args: &NodeArgs) -> anyhow::Result<Router> {
    let serve_controller = args.mode != Mode::Node;
    // The spec wants every instance of a driver version to report the same
    // plugin capabilities, whichever services it serves: so the node plugin
    // advertises CONTROLLER_SERVICE too (kubelet ignores it).
    let identity = identity_service(&args.controller.driver, true).context("invalid driver configuration")?;
    let mut router = lab01_identity::server::grpc_server().add_service(IdentityServer::new(identity));
    if serve_controller {
        router = router.add_service(ControllerServer::new(controller_service(&args.controller)?));
    }
    if args.mode != Mode::Controller {
        let node_id = args.nodeid.as_deref().context("--nodeid is required to serve the Node service")?;
        let driver = &args.controller.driver;
        let backend = Backend::open(&driver.backend_dir)?;
        let node = NodeService::new(
            node_id,
            args.max_volumes_per_node,
            backend,
            TopologyKeys::for_driver(&driver.drivername),
            &args.state_dir,
        )?;
        router = router.add_service(NodeServer::new(node));
    }
    Ok(router)
}
