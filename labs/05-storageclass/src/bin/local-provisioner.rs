//! local-provisioner: the static local provisioner of lab 05, one pod per node
//! (a DaemonSet). Every `--resync` it scans `--discovery-dir` and keeps one
//! local PV per mount point there; see `lab05_storageclass::local`.
//!
//!   local-provisioner --node-name "$NODE_NAME" --discovery-dir /mnt/disks
//!   local-provisioner --node-name node-a --discovery-dir /tmp/disks --dry-run
//!
//! `--dry-run` needs no API server: it scans once and prints the plan as if
//! no PV existed yet. `--once` syncs once against the API server and exits.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use lab05_storageclass::local::{self, Action, Agent, PvConfig, Scan, plan, scan_host};
use tracing::{error, info};

#[derive(Debug, Parser)]
#[command(name = "local-provisioner", version, about = "Static local PV provisioner (lab 05)")]
struct Args {
    /// This node's name (from the downward API: spec.nodeName).
    #[arg(long, env = "NODE_NAME")]
    node_name: String,
    /// The directory whose mount points become PVs.
    #[arg(long, default_value = "/mnt/disks")]
    discovery_dir: PathBuf,
    /// The storageClassName of the PVs.
    #[arg(long, default_value = "local-disks")]
    storage_class: String,
    /// The PVs' reclaim policy: Delete (clean and recreate) or Retain.
    #[arg(long, default_value = "Delete", value_parser = ["Delete", "Retain"])]
    reclaim_policy: String,
    /// How often to scan, e.g. 10s.
    #[arg(long, default_value = "10s", value_parser = local::parse_duration)]
    resync: Duration,
    /// Scan once and print the plan (as if no PV existed); no API server.
    #[arg(long, conflicts_with = "once")]
    dry_run: bool,
    /// Sync once against the API server, then exit.
    #[arg(long)]
    once: bool,
    /// Log filter (tracing EnvFilter syntax), e.g. info or debug.
    #[arg(long, default_value = "info", env = "RUST_LOG")]
    log_level: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&args.log_level).context("--log-level")?)
        .with_writer(std::io::stderr)
        .init();
    let config = PvConfig {
        node_name: args.node_name.clone(),
        storage_class: args.storage_class.clone(),
        reclaim_policy: args.reclaim_policy.clone(),
    };
    if args.node_name.is_empty() {
        bail!("--node-name is empty (set NODE_NAME from spec.nodeName)");
    }

    if args.dry_run {
        let found = scan_host(&args.discovery_dir)
            .with_context(|| format!("scanning {}", args.discovery_dir.display()))?;
        print_plan(&args, &config, &found);
        return Ok(());
    }

    let client = kube::Client::try_default().await.context("connecting to the API server")?;
    let mut agent = Agent::new(client, config);
    info!(node = %args.node_name, dir = %args.discovery_dir.display(), resync = ?args.resync, "local-provisioner started");
    // ANCHOR: resync-loop
    // The disks are not Kubernetes objects, so there is nothing to watch: a
    // bounded periodic scan. A failed pass is logged and retried next tick.
    let mut tick = tokio::time::interval(args.resync);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stop = shutdown();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut stop => { info!("terminating"); return Ok(()); }
        }
        let result = match scan_host(&args.discovery_dir) {
            Ok(found) => agent.sync(&found).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(report) if args.once => {
                println!("{report:?}");
                return Ok(());
            }
            Ok(_) => {}
            Err(e) if args.once => return Err(e).context("sync"),
            Err(e) => error!(error = %e, "sync failed; retrying at the next scan"),
        }
    }
    // ANCHOR_END: resync-loop
}

/// SIGTERM (kubelet stopping the pod) or Ctrl-C.
async fn shutdown() {
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// `--dry-run`: one line per decision.
fn print_plan(args: &Args, config: &PvConfig, found: &Scan) {
    println!(
        "scan {}: {} disk(s), {} refused",
        args.discovery_dir.display(),
        found.disks.len(),
        found.refused.len()
    );
    for action in plan(&[], &found.disks, config) {
        if let Action::Create(pv) = action {
            let spec = pv.spec.unwrap_or_default();
            let capacity =
                spec.capacity.unwrap_or_default().get("storage").map(|q| q.0.clone()).unwrap_or_default();
            println!(
                "create PV {} path={} capacity={} node={} class={} reclaim={}",
                pv.metadata.name.unwrap_or_default(),
                spec.local.map(|l| l.path).unwrap_or_default(),
                capacity,
                config.node_name,
                config.storage_class,
                config.reclaim_policy
            );
        }
    }
    for refused in &found.refused {
        println!("refuse {}: {}", refused.path.display(), refused.reason);
    }
}
