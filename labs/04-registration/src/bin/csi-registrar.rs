//! `csi-registrar`: node-driver-registrar in Rust. Runs next to the node
//! plugin in the DaemonSet and registers it with kubelet.
//!
//! Exits 0 on SIGTERM/SIGINT (after removing its socket) and non-zero when
//! kubelet rejects the registration, so the container restarts.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use lab01_identity::args::init_tracing;
use lab01_identity::server::shutdown_signal;
use lab04_registration::duration::parse_duration;
use lab04_registration::registrar::{Config, DEFAULT_PLUGIN_REGISTRATION_PATH, run};

// ANCHOR: registrar-flags
#[derive(Debug, Parser)]
#[command(
    name = "csi-registrar",
    version,
    about = "Registers a CSI driver with kubelet (node-driver-registrar in Rust)"
)]
struct Cli {
    /// The driver's socket as this container sees it.
    #[arg(long, default_value = "/csi/csi.sock")]
    csi_address: String,

    /// The driver's socket as kubelet sees it: a path ON THE HOST, e.g.
    /// /var/lib/kubelet/plugins/csi.workshop.dev/csi.sock.
    #[arg(long)]
    kubelet_registration_path: PathBuf,

    /// Where the host's /var/lib/kubelet/plugins_registry is mounted.
    #[arg(long, default_value = DEFAULT_PLUGIN_REGISTRATION_PATH)]
    plugin_registration_path: PathBuf,

    /// Serve /healthz on this address, e.g. `:9809`.
    #[arg(long)]
    http_endpoint: Option<String>,

    /// How long to wait for one answer from the driver (e.g. 1s, 500ms).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    timeout: Duration,

    /// A `tracing` filter such as `info` or `lab04_registration=debug`.
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    log_level: String,
}
// ANCHOR_END: registrar-flags

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing(&cli.log_level);
    let config = Config {
        plugin_registration_path: cli.plugin_registration_path,
        http_endpoint: cli.http_endpoint,
        timeout: cli.timeout,
        ..Config::new(cli.csi_address, cli.kubelet_registration_path)
    };
    run(config, shutdown_signal()).await.context("registering the CSI driver with kubelet")
}
