//! Command-line flags shared by every lab's driver binary.
//!
//! The names follow the Go CSI drivers (`--endpoint`, `--drivername`,
//! `--nodeid`), so our manifests read like everybody else's.

use std::path::PathBuf;

/// Flags every driver binary accepts. Later labs `#[command(flatten)]` this.
#[derive(Debug, Clone, clap::Args)]
pub struct DriverArgs {
    /// Where to serve CSI: `unix:///csi/csi.sock`.
    #[arg(long, env = "CSI_ENDPOINT", default_value = "unix:///tmp/csi.sock")]
    pub endpoint: String,

    /// The CSI driver name, in domain-name notation.
    #[arg(long, default_value = "csi.workshop.dev")]
    pub drivername: String,

    /// The directory that stands for remote storage (a SAN or NFS server).
    #[arg(long, env = "CSI_BACKEND_DIR", default_value = "/var/lib/csi-workshop/backend")]
    pub backend_dir: PathBuf,

    /// A `tracing` filter such as `info` or `lab03_node=debug,info`.
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log_level: String,
}

/// Installs the global `tracing` subscriber. Call once, from `main`.
pub fn init_tracing(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .init();
}
