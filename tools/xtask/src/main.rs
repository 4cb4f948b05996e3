//! Workshop chores, run as `cargo run -p xtask -- <command>`.
//!
//! - `starter NN --out DIR [--force]`: a trainee's copy of the workspace with
//!   lab NN's solution regions stripped; `starter --check` checks the markers.
//! - `book-lint [--strict]`: what mdBook lets through silently (empty anchors,
//!   broken links, line-number includes, lab chapters out of shape).

mod book_lint;
mod starter;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Workshop chores: generate trainee starters, lint the book")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Write a trainee's starter for one lab, or check the solution markers.
    Starter {
        /// The lab number, e.g. 02 (with --check: only this lab).
        lab: Option<String>,
        /// Where to write the starter workspace.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Write into a non-empty DIR (files of an earlier starter there are replaced).
        #[arg(long)]
        force: bool,
        /// Only check the markers of every lab (or LAB) and print the region counts.
        #[arg(long, conflicts_with_all = ["out", "force"])]
        check: bool,
    },
    /// Check the book's includes, links, SUMMARY.md and lab chapter sections.
    BookLint {
        /// Treat placeholder lab chapters as problems instead of warnings.
        #[arg(long)]
        strict: bool,
    },
}

fn repo_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

fn run(cli: Cli) -> Result<ExitCode> {
    let root = repo_root();
    match cli.command {
        Cmd::Starter { lab, check: true, .. } => starter::check(&root, lab.as_deref())?,
        Cmd::Starter { lab: Some(lab), out: Some(out), force, check: false } => {
            starter::generate(&root, &lab, &out, force)?
        }
        Cmd::Starter { .. } => {
            bail!("usage: xtask starter <NN> --out <DIR> [--force]  |  xtask starter [NN] --check")
        }
        Cmd::BookLint { strict } => {
            let findings = book_lint::Linter::new(&root, strict).run();
            if book_lint::print(&findings) > 0 {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}
