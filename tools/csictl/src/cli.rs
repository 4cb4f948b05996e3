//! The command line: flags, subcommands, dispatch and exit status.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use lab01_identity::csi::volume_capability::access_mode::Mode;

use crate::parse::{CapabilitySpec, parse_access_mode, parse_kv, parse_size};
use crate::print::Printer;
use crate::rpc::{self, Csi};
use crate::{bench, commands, walk};

#[derive(Debug, Parser)]
#[command(
    name = "csictl",
    version,
    about = "Call CSI Identity, Controller and Node RPCs on a plugin's unix socket",
    after_help = "Exit status: 0 ok, 2 gRPC error from the plugin (stderr: `error: code=<Code> message=<msg>`), 1 other failure."
)]
pub struct Cli {
    /// Plugin endpoint: unix:///path/to.sock, unix:/path or /path.
    #[arg(long, env = "CSI_ENDPOINT", default_value = "unix:///tmp/csi.sock", global = true)]
    pub endpoint: String,

    /// Deadline for connecting and for each RPC, in seconds.
    #[arg(long, default_value = "30", value_parser = parse_seconds, global = true)]
    pub timeout: Duration,

    /// Print one JSON object per response instead of `key: value` lines.
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Identity service: who is the plugin, what can it do, is it ready.
    #[command(subcommand)]
    Identity(IdentityCmd),
    /// Controller service: volumes, attachments, snapshots, capacity.
    #[command(subcommand)]
    Controller(ControllerCmd),
    /// Node service: stage/publish volumes on this machine.
    #[command(subcommand)]
    Node(NodeCmd),
    /// Walk one volume through its whole lifecycle, step by step, like a CO.
    Walk(WalkArgs),
    /// Time full volume lifecycles and report per-RPC latency percentiles.
    Bench(BenchArgs),
}

#[derive(Debug, Subcommand)]
pub enum IdentityCmd {
    /// GetPluginInfo: name, version, manifest.
    Info,
    /// GetPluginCapabilities.
    Caps,
    /// Probe: is the plugin ready?
    Probe,
}

/// How the volume will be used (VolumeCapability).
#[derive(Debug, Clone, Args)]
pub struct CapArgs {
    /// Access mode (spec name in kebab case).
    #[arg(long, default_value = "single-node-writer", value_parser = parse_access_mode,
          long_help = "Access mode: single-node-writer, single-node-reader-only, multi-node-reader-only, \
                       multi-node-single-writer, multi-node-multi-writer, single-node-single-writer, \
                       single-node-multi-writer")]
    pub access_mode: Mode,
    /// Raw block access instead of a mounted filesystem.
    #[arg(long)]
    pub block: bool,
    /// Filesystem type for mount access (empty: plugin default).
    #[arg(long, default_value = "")]
    pub fs_type: String,
    /// Mount option for mount access (repeatable).
    #[arg(long = "mount-flag")]
    pub mount_flags: Vec<String>,
}

impl CapArgs {
    pub fn spec(&self) -> CapabilitySpec {
        CapabilitySpec {
            mode: self.access_mode,
            block: self.block,
            fs_type: self.fs_type.clone(),
            mount_flags: self.mount_flags.clone(),
        }
    }
}

/// The `type` parameter of the workshop driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum VolumeType {
    /// A sparse image file, attached and formatted (single node).
    Block,
    /// A shared directory (many nodes, no attach).
    File,
}

impl VolumeType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Block => "block",
            Self::File => "file",
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum ControllerCmd {
    /// CreateVolume.
    Create {
        /// Volume name (the idempotency key).
        #[arg(long)]
        name: String,
        /// Requested size (required_bytes), e.g. 1Gi, 512Mi, 10M, 4096.
        #[arg(long, value_parser = parse_size)]
        size: i64,
        /// Maximum size (limit_bytes).
        #[arg(long, value_parser = parse_size)]
        limit: Option<i64>,
        /// Shorthand for --param type=block|file.
        #[arg(long = "type", value_enum)]
        volume_type: Option<VolumeType>,
        /// Plugin parameter key=value (repeatable).
        #[arg(long = "param", value_parser = parse_kv)]
        params: Vec<(String, String)>,
        /// Mutable parameter key=value (repeatable).
        #[arg(long = "mutable-param", value_parser = parse_kv)]
        mutable_params: Vec<(String, String)>,
        #[command(flatten)]
        cap: CapArgs,
        /// Requisite topology segment key=value (repeatable, one topology).
        #[arg(long, value_parser = parse_kv)]
        requisite_topology: Vec<(String, String)>,
        /// Preferred topology segment key=value (repeatable, one topology).
        #[arg(long, value_parser = parse_kv)]
        preferred_topology: Vec<(String, String)>,
        /// Pre-fill from this snapshot.
        #[arg(long, conflicts_with = "source_volume")]
        source_snapshot: Option<String>,
        /// Clone this volume.
        #[arg(long)]
        source_volume: Option<String>,
    },
    /// DeleteVolume.
    Delete {
        #[arg(long = "id")]
        volume_id: String,
    },
    /// ControllerPublishVolume (attach to a node).
    Publish {
        #[arg(long = "id")]
        volume_id: String,
        /// Node id from `csictl node info`.
        #[arg(long)]
        node_id: String,
        #[arg(long)]
        readonly: bool,
        #[command(flatten)]
        cap: CapArgs,
        /// Volume context key=value from CreateVolume (repeatable).
        #[arg(long, value_parser = parse_kv)]
        volume_context: Vec<(String, String)>,
    },
    /// ControllerUnpublishVolume (detach).
    Unpublish {
        #[arg(long = "id")]
        volume_id: String,
        /// Node to detach from; omitted: from every node.
        #[arg(long, default_value = "")]
        node_id: String,
    },
    /// ValidateVolumeCapabilities.
    Validate {
        #[arg(long = "id")]
        volume_id: String,
        #[command(flatten)]
        cap: CapArgs,
        #[arg(long, value_parser = parse_kv)]
        volume_context: Vec<(String, String)>,
        #[arg(long = "param", value_parser = parse_kv)]
        params: Vec<(String, String)>,
    },
    /// ListVolumes (one page).
    List {
        /// Page size; 0: no limit.
        #[arg(long, default_value_t = 0)]
        max_entries: i32,
        /// next_token of the previous page.
        #[arg(long, default_value = "")]
        starting_token: String,
    },
    /// GetCapacity.
    Capacity {
        #[arg(long = "param", value_parser = parse_kv)]
        params: Vec<(String, String)>,
        /// Only count capacity usable with this access mode (and --block).
        #[arg(long, value_parser = parse_access_mode)]
        access_mode: Option<Mode>,
        #[arg(long, requires = "access_mode")]
        block: bool,
    },
    /// ControllerGetVolume.
    Get {
        #[arg(long = "id")]
        volume_id: String,
    },
    /// ControllerExpandVolume.
    Expand {
        #[arg(long = "id")]
        volume_id: String,
        #[arg(long, value_parser = parse_size)]
        size: i64,
        #[arg(long, value_parser = parse_size)]
        limit: Option<i64>,
    },
    /// ControllerModifyVolume.
    Modify {
        #[arg(long = "id")]
        volume_id: String,
        /// Mutable parameter key=value (repeatable, at least one).
        #[arg(long = "param", value_parser = parse_kv, required = true)]
        params: Vec<(String, String)>,
    },
    /// ControllerGetCapabilities.
    Caps,
    /// CreateSnapshot.
    CreateSnapshot {
        #[arg(long)]
        source_id: String,
        #[arg(long)]
        name: String,
        #[arg(long = "param", value_parser = parse_kv)]
        params: Vec<(String, String)>,
    },
    /// DeleteSnapshot.
    DeleteSnapshot {
        #[arg(long = "id")]
        snapshot_id: String,
    },
    /// ListSnapshots (one page).
    ListSnapshots {
        #[arg(long, default_value = "")]
        source_id: String,
        #[arg(long = "id", default_value = "")]
        snapshot_id: String,
        #[arg(long, default_value_t = 0)]
        max_entries: i32,
        #[arg(long, default_value = "")]
        starting_token: String,
    },
    /// GetSnapshot.
    GetSnapshot {
        #[arg(long = "id")]
        snapshot_id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum NodeCmd {
    /// NodeStageVolume. The staging directory must exist (csictl creates it).
    Stage {
        #[arg(long = "id")]
        volume_id: String,
        #[arg(long)]
        staging_path: PathBuf,
        #[arg(long, value_parser = parse_kv)]
        publish_context: Vec<(String, String)>,
        #[arg(long, value_parser = parse_kv)]
        volume_context: Vec<(String, String)>,
        #[command(flatten)]
        cap: CapArgs,
    },
    /// NodeUnstageVolume.
    Unstage {
        #[arg(long = "id")]
        volume_id: String,
        #[arg(long)]
        staging_path: PathBuf,
    },
    /// NodePublishVolume. csictl creates only the target's parent directory.
    Publish {
        #[arg(long = "id")]
        volume_id: String,
        #[arg(long)]
        target_path: PathBuf,
        #[arg(long)]
        staging_path: Option<PathBuf>,
        #[arg(long)]
        readonly: bool,
        #[arg(long, value_parser = parse_kv)]
        publish_context: Vec<(String, String)>,
        #[arg(long, value_parser = parse_kv)]
        volume_context: Vec<(String, String)>,
        #[command(flatten)]
        cap: CapArgs,
    },
    /// NodeUnpublishVolume.
    Unpublish {
        #[arg(long = "id")]
        volume_id: String,
        #[arg(long)]
        target_path: PathBuf,
    },
    /// NodeGetInfo.
    Info,
    /// NodeGetCapabilities.
    Caps,
    /// NodeGetVolumeStats.
    Stats {
        #[arg(long = "id")]
        volume_id: String,
        /// Where the volume is published (or staged).
        #[arg(long)]
        path: PathBuf,
        #[arg(long)]
        staging_path: Option<PathBuf>,
    },
    /// NodeExpandVolume.
    Expand {
        #[arg(long = "id")]
        volume_id: String,
        #[arg(long)]
        path: PathBuf,
        #[arg(long, value_parser = parse_size)]
        size: i64,
        #[arg(long)]
        staging_path: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Args)]
pub struct WalkArgs {
    /// Volume type (the `type` parameter).
    #[arg(long = "type", value_enum)]
    pub volume_type: VolumeType,
    #[arg(long, default_value = "64Mi", value_parser = parse_size)]
    pub size: i64,
    /// Where csictl creates staging and target directories
    /// (default: /tmp/csictl-walk-<pid>).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Volume name (default: csictl-walk-<type>-<pid>).
    #[arg(long)]
    pub name: Option<String>,
    /// Filesystem type (empty: plugin default).
    #[arg(long, default_value = "")]
    pub fs_type: String,
}

/// Which volume types `bench` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchType {
    Block,
    File,
    Both,
}

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Full lifecycles per volume type.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub cycles: u32,
    #[arg(long = "type", value_enum, default_value = "both")]
    pub volume_type: BenchType,
    #[arg(long, default_value = "64Mi", value_parser = parse_size)]
    pub size: i64,
    /// Driver process id: report its peak RSS (VmHWM) at the end.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Where csictl creates staging and target directories
    /// (default: /tmp/csictl-bench-<pid>).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
}

fn parse_seconds(input: &str) -> Result<Duration, String> {
    let secs: f64 =
        input.trim().parse().map_err(|_| format!("invalid timeout {input:?}: expected seconds"))?;
    if !(secs.is_finite() && secs > 0.0) {
        return Err(format!("invalid timeout {input:?}: must be positive"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses the command line, runs it, and maps the outcome to an exit status.
pub fn main() -> ExitCode {
    // Usage errors exit 1, not clap's 2: status 2 means "the plugin said no".
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return ExitCode::from(if err.use_stderr() { 1 } else { 0 });
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            if let Some(status) = err.downcast_ref::<tonic::Status>() {
                eprintln!("error: {}", rpc::status_line(status));
                ExitCode::from(2)
            } else {
                eprintln!("error: {err:#}");
                ExitCode::from(1)
            }
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let out = Printer { json: cli.json };
    let csi = Csi::connect(&cli.endpoint, cli.timeout).await?;
    match cli.command {
        Command::Identity(cmd) => commands::identity(&csi, out, cmd).await,
        Command::Controller(cmd) => commands::controller(&csi, out, cmd).await,
        Command::Node(cmd) => commands::node(&csi, out, cmd).await,
        Command::Walk(args) => walk::run(&csi, out, &args).await,
        Command::Bench(args) => bench::run(&csi, out, &args).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_a_create_command() {
        let cli = Cli::try_parse_from([
            "csictl",
            "--json",
            "controller",
            "create",
            "--name",
            "v1",
            "--size",
            "1Gi",
            "--type",
            "file",
            "--param",
            "a=b",
            "--access-mode",
            "multi-node-multi-writer",
        ])
        .unwrap();
        assert!(cli.json);
        match cli.command {
            Command::Controller(ControllerCmd::Create { size, volume_type, params, cap, .. }) => {
                assert_eq!(size, 1 << 30);
                assert_eq!(volume_type, Some(VolumeType::File));
                assert_eq!(params, vec![("a".to_string(), "b".to_string())]);
                assert_eq!(cap.access_mode, Mode::MultiNodeMultiWriter);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn global_flags_after_subcommand() {
        let cli =
            Cli::try_parse_from(["csictl", "node", "info", "--endpoint", "/run/x.sock", "--timeout", "2.5"])
                .unwrap();
        assert_eq!(cli.endpoint, "/run/x.sock");
        assert_eq!(cli.timeout, Duration::from_millis(2500));
    }

    #[test]
    fn bad_values_are_rejected() {
        assert!(
            Cli::try_parse_from(["csictl", "controller", "create", "--name", "v", "--size", "1Q"]).is_err()
        );
        assert!(Cli::try_parse_from(["csictl", "bench", "--cycles", "0"]).is_err());
        assert!(Cli::try_parse_from(["csictl", "--timeout", "0", "node", "info"]).is_err());
    }
}
