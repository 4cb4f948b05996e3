//! `csi-lab02`: a CSI plugin serving Identity and Controller.

use anyhow::Context;
use clap::{Parser, Subcommand};
use lab01_identity::args::init_tracing;
use lab01_identity::csi::controller_server::ControllerServer;
use lab01_identity::csi::identity_server::IdentityServer;
use lab01_identity::server;
use lab02_controller::backend::{Backend, NodeRecord};
use lab02_controller::driver::{ControllerArgs, controller_service, identity_service};

#[derive(Debug, Parser)]
#[command(name = "csi-lab02", version, about = "CSI Identity and Controller services (lab 02)")]
struct Cli {
    #[command(flatten)]
    controller: ControllerArgs,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Join a host to the backend, as the lab 03 node plugin does when it
    /// starts. Lab 02 has no node plugin yet, so tests and checks use this.
    RegisterNode {
        #[arg(long)]
        nodeid: String,
        /// Most volumes attachable at once (0: no limit).
        #[arg(long, default_value_t = 0)]
        max_volumes: i64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing(&cli.controller.driver.log_level);
    if let Some(Command::RegisterNode { nodeid, max_volumes }) = cli.command {
        lab02_controller::validate::node_id(&nodeid)?;
        let backend = Backend::open(&cli.controller.driver.backend_dir)?;
        backend.register_node(&NodeRecord { node_id: nodeid.clone(), max_volumes })?;
        println!("node {nodeid} registered with backend {}", backend.id());
        return Ok(());
    }
    let controller = controller_service(&cli.controller).context("opening the backend")?;
    let identity = identity_service(&cli.controller.driver, true).context("invalid driver configuration")?;
    let router = server::grpc_server()
        .add_service(IdentityServer::new(identity))
        .add_service(ControllerServer::new(controller));
    server::serve(router, &cli.controller.driver.endpoint, server::shutdown_signal())
        .await
        .context("serving CSI")
}
