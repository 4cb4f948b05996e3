//! `csi-lab03`: the complete CSI driver (Identity, Controller and Node).

use anyhow::Context;
use clap::Parser;
use lab01_identity::args::init_tracing;
use lab01_identity::server;
use lab03_node::driver::{NodeArgs, router};

#[derive(Debug, Parser)]
#[command(name = "csi-lab03", version, about = "CSI Identity, Controller and Node services (lab 03)")]
struct Cli {
    #[command(flatten)]
    node: NodeArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing(&cli.node.controller.driver.log_level);
    let router = router(&cli.node)?;
    server::serve(router, &cli.node.controller.driver.endpoint, server::shutdown_signal())
        .await
        .context("serving CSI")
}
