//! flex-workshop: the FlexVolume driver of the workshop (lab 06).
//!
//! kubelet calls it as `flex <command> <args>` and reads one JSON reply from
//! stdout; see `lab06_migration::flex`. One admin command is ours, not
//! kubelet's: `create-volume`, because Flex volumes are pre-provisioned.

use std::path::PathBuf;

use clap::Parser;
use lab02_controller::backend::{Backend, VolumeKind, VolumeRecord};
use lab06_migration::flex::{self, Driver};

// ANCHOR: flex-create-volume
/// Create a backend volume for a Flex PV to name (an admin's job: FlexVolume
/// has no provisioner).
#[derive(Debug, Parser)]
#[command(name = "flex-workshop create-volume")]
struct CreateVolume {
    /// The volume id (the PV's `options.volumeId`).
    #[arg(long)]
    id: String,
    /// `block` (an image, formatted at first mount) or `file` (a directory).
    #[arg(long, default_value = "block")]
    r#type: String,
    #[arg(long, default_value = "64Mi", value_parser = flex::parse_size)]
    size: i64,
    #[arg(long, default_value = flex::DEFAULT_BACKEND_DIR)]
    backend_dir: PathBuf,
}

fn create_volume(args: CreateVolume) -> anyhow::Result<String> {
    let kind = VolumeKind::parse(&args.r#type)?;
    let backend = Backend::open(&args.backend_dir)?;
    if let Some(existing) = backend.load(&args.id)? {
        anyhow::ensure!(
            existing.kind == kind && existing.capacity_bytes == args.size,
            "volume {} exists as a {} volume of {} bytes",
            args.id,
            existing.kind.as_str(),
            existing.capacity_bytes
        );
        return Ok(format!("volume {} already exists", args.id));
    }
    backend.create(&VolumeRecord {
        id: args.id.clone(),
        name: args.id.clone(),
        kind,
        capacity_bytes: args.size,
        parameters: [("type".to_owned(), kind.as_str().to_owned())].into(),
        attachments: Default::default(),
    })?;
    Ok(format!("volume {} created ({}, {} bytes)", args.id, kind.as_str(), args.size))
}
// ANCHOR_END: flex-create-volume

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("create-volume") {
        let parsed = CreateVolume::parse_from(
            std::iter::once("flex-workshop create-volume".to_owned()).chain(args[1..].iter().cloned()),
        );
        match create_volume(parsed) {
            Ok(message) => println!("{message}"),
            Err(e) => {
                eprintln!("flex-workshop create-volume: {e:#}");
                std::process::exit(1);
            }
        }
        return;
    }
    // kubelet reads stdout as JSON: logs go to stderr only, and only when asked.
    if let Ok(filter) = std::env::var("RUST_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    let reply = Driver::from_env().call(&args);
    println!("{}", serde_json::to_string(&reply).expect("a reply always serialises"));
    std::process::exit(reply.exit_code());
}
