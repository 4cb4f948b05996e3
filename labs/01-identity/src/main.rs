//! `csi-lab01`: a CSI plugin that serves only the Identity service.

use anyhow::Context;
use clap::Parser;
use lab01_identity::args::{DriverArgs, init_tracing};
use lab01_identity::csi::identity_server::IdentityServer;
use lab01_identity::identity::{IdentityService, PluginCapabilities};
use lab01_identity::server;

// ANCHOR: lab01-main
#[derive(Debug, Parser)]
#[command(name = "csi-lab01", version, about = "CSI Identity service (lab 01)")]
struct Cli {
    #[command(flatten)]
    driver: DriverArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing(&cli.driver.log_level);
    std::fs::create_dir_all(&cli.driver.backend_dir)
        .with_context(|| format!("creating {}", cli.driver.backend_dir.display()))?;
    // Identity alone serves no volumes, so it advertises no capabilities.
    let identity = IdentityService::new(
        &cli.driver.drivername,
        env!("CARGO_PKG_VERSION"),
        PluginCapabilities::default(),
        vec![cli.driver.backend_dir.clone()],
    )
    .context("invalid driver configuration")?;
    let router = server::grpc_server().add_service(IdentityServer::new(identity));
    server::serve(router, &cli.driver.endpoint, server::shutdown_signal()).await.context("serving CSI")
}
// ANCHOR_END: lab01-main
