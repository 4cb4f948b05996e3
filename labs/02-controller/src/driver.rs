//! Assembling the lab 02 driver from its parts; lab 03 reuses this.

use std::path::PathBuf;

use lab01_identity::args::{DriverArgs, parse_size};
use lab01_identity::identity::{IdentityService, PluginCapabilities};

use crate::backend::{Backend, VolumeKind};
use crate::controller::ControllerService;
use crate::topology::TopologyKeys;

/// Flags of a driver that serves the Controller service.
#[derive(Debug, Clone, clap::Args)]
pub struct ControllerArgs {
    #[command(flatten)]
    pub driver: DriverArgs,

    /// The largest volume CreateVolume accepts (images are sparse, so this
    /// is a policy, not the backend's free space).
    #[arg(long, default_value = "1Ti", value_parser = parse_size)]
    pub max_volume_size: i64,

    /// The volume types CreateVolume creates: `block`, `file`, or both. A
    /// file-only driver (`file`) advertises no ControllerPublish.
    #[arg(long, value_delimiter = ',', default_value = "block,file", value_parser = parse_volume_type)]
    pub volume_types: Vec<VolumeKind>,
}

impl ControllerArgs {
    /// The flags' defaults for a driver named `drivername` on `backend_dir`:
    /// for tests and tools that start a driver in-process.
    pub fn with_backend(drivername: &str, backend_dir: PathBuf) -> Self {
        Self {
            driver: DriverArgs {
                endpoint: String::new(),
                drivername: drivername.to_owned(),
                backend_dir,
                log_level: "info".into(),
            },
            max_volume_size: 1 << 40,
            volume_types: vec![VolumeKind::Block, VolumeKind::File],
        }
    }
}

fn parse_volume_type(value: &str) -> Result<VolumeKind, String> {
    match value {
        "block" | "file" => VolumeKind::parse(value).map_err(|e| e.to_string()),
        other => Err(format!("unknown volume type {other:?}: use block, file or block,file")),
    }
}

/// The Controller service over the backend named by the flags.
pub fn controller_service(args: &ControllerArgs) -> anyhow::Result<ControllerService> {
    let backend = Backend::open(&args.driver.backend_dir)?;
    tracing::info!(backend = %args.driver.backend_dir.display(), backend_id = backend.id(), "backend opened");
    Ok(ControllerService::new(
        backend,
        TopologyKeys::for_driver(&args.driver.drivername),
        args.max_volume_size,
    )
    .with_volume_kinds(args.volume_types.clone()))
}

/// Identity for a driver that serves the Controller service. Online expansion
/// is advertised because ControllerExpandVolume grows a published volume and
/// the node grows the filesystem while it stays mounted.
pub fn identity_service(args: &DriverArgs, controller: bool) -> anyhow::Result<IdentityService> {
    let capabilities = PluginCapabilities {
        controller_service: controller,
        accessibility_constraints: true,
        online_expansion: true,
    };
    Ok(IdentityService::new(
        &args.drivername,
        env!("CARGO_PKG_VERSION"),
        capabilities,
        vec![args.backend_dir.clone()],
    )?)
}
