//! csi-migrate: moves PersistentVolumes of the csi.workshop.dev/flex
//! FlexVolume driver to the csi.workshop.dev CSI driver, keeping the data
//! where it is (lab 06). See `lab06_migration::migrate`.

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use lab06_migration::fault::{self, Fault};
use lab06_migration::migrate::{Migrator, Options, Outcome};

// ANCHOR: csi-migrate-args
#[derive(Debug, Parser)]
#[command(
    name = "csi-migrate",
    about = "Move Flex PVs to the CSI driver, journaled and resumable",
    after_help = "Fault injection (to prove resume): CSI_MIGRATE_CRASH=<step>[:<n>] kills the process \
                  with SIGKILL right after the n-th API write of that step (e.g. delete-flex-pv:1)."
)]
struct Args {
    /// Print the plan and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Scale the Deployments/StatefulSets that use a claim to 0 during its
    /// migration (else a claim in use is refused).
    #[arg(long)]
    drain: bool,
    /// Skip the checksum Pods before and after.
    #[arg(long)]
    no_verify: bool,
    /// Stop after step N (1-11), cleanly, between two steps; run again to
    /// resume. (A crash in the middle of a step: CSI_MIGRATE_CRASH.)
    #[arg(long, value_name = "N")]
    stop_after_step: Option<usize>,
    /// Undo the migration of the --pv PVs from wherever it stopped: the Flex
    /// PV, the workload, the reclaim policy back, the journal cleared.
    #[arg(long, requires = "pv")]
    rollback: bool,
    /// Only this PV (repeatable); default: every Flex PV of the driver.
    #[arg(long)]
    pv: Vec<String>,
    /// The namespace of the journal ConfigMap csi-migrate-journal.
    #[arg(long, default_value = "csi-workshop")]
    journal_namespace: String,
    /// The image of the checksum Pods.
    #[arg(long, default_value = "csi-workshop:0.1.0")]
    verify_image: String,
    /// Seconds to wait for Pods to stop, PVs to go, claims to bind again,
    /// checksums to finish.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
}
// ANCHOR_END: csi-migrate-args

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    // Read before anything is done, so that a typo fails loudly at once.
    let fault = match std::env::var(fault::ENV) {
        Ok(text) if !text.is_empty() => Some(text.parse::<Fault>()?),
        _ => None,
    };
    let client = kube::Client::try_default().await.context("connecting to the Kubernetes API")?;
    let options = Options {
        dry_run: args.dry_run,
        drain: args.drain,
        no_verify: args.no_verify,
        stop_after_step: args.stop_after_step,
        fault,
        pvs: args.pv.clone(),
        namespace: args.journal_namespace,
        verify_image: args.verify_image,
        timeout: Duration::from_secs(args.timeout),
        ..Options::default()
    };
    let mut out = std::io::stdout();
    let mut migrator = Migrator::new(client, options, &mut out);
    if args.rollback {
        for pv in &args.pv {
            migrator.rollback(pv).await?;
        }
        return Ok(());
    }
    match migrator.run().await? {
        Outcome::Done { migrated } => {
            println!("migration complete: {} PV(s) on {}", migrated.len(), lab06_migration::plan::CSI_DRIVER)
        }
        Outcome::DryRun => println!("dry run: nothing was changed"),
        Outcome::Stopped { pv, step } => {
            println!("stopped after step {} ({}) of PV {pv}", step.number(), step.name());
            std::process::exit(3);
        }
    }
    Ok(())
}
