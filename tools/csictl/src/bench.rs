//! `csictl bench`: repeat the full volume lifecycle and report latency
//! percentiles per RPC and per cycle, plus the driver's peak memory.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use lab01_identity::csi::volume_capability::access_mode::Mode;
use serde_json::json;

use crate::lifecycle::{self, Features, Lifecycle, Plan, ms};
use crate::parse::CapabilitySpec;
use crate::print::{Printer, human_bytes};
use crate::rpc::Csi;
use crate::walk::describe;
use crate::{BenchArgs, BenchType, VolumeType};

const CYCLE: &str = "full cycle";

/// Step order for the table (the cycle total goes last).
const ORDER: [&str; 9] = [
    lifecycle::CREATE,
    lifecycle::CONTROLLER_PUBLISH,
    lifecycle::STAGE,
    lifecycle::PUBLISH,
    lifecycle::UNPUBLISH,
    lifecycle::UNSTAGE,
    lifecycle::CONTROLLER_UNPUBLISH,
    lifecycle::DELETE,
    CYCLE,
];

/// Nearest-rank percentile of sorted samples: always an observed value.
/// `p` is in 0..=100; returns zero for no samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Samples per step for one volume type.
#[derive(Debug, Default)]
struct Samples(BTreeMap<&'static str, Vec<Duration>>);

impl Samples {
    fn add(&mut self, step: &'static str, d: Duration) {
        self.0.entry(step).or_default().push(d);
    }
}

/// The `VmHWM` (peak resident set) line of /proc/PID/status, in KiB.
pub fn parse_vm_hwm(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

pub async fn run(csi: &Csi, out: Printer, args: &BenchArgs) -> anyhow::Result<()> {
    let pid = std::process::id();
    let work_dir = args.work_dir.clone().unwrap_or_else(|| PathBuf::from(format!("/tmp/csictl-bench-{pid}")));
    let types: &[VolumeType] = match args.volume_type {
        BenchType::Block => &[VolumeType::Block],
        BenchType::File => &[VolumeType::File],
        BenchType::Both => &[VolumeType::Block, VolumeType::File],
    };

    let (r, _) = lifecycle::node_id(csi).await;
    let node_id = r.context("NodeGetInfo failed")?;
    let (r, _) = lifecycle::capabilities(csi, node_id).await;
    let features = r.context("reading capabilities failed")?;
    // Unique per run, so a leftover from an earlier run never collides.
    let run_id = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or_default();

    let mut results: Vec<(VolumeType, Samples)> = Vec::new();
    let mut failure = None;
    for &volume_type in types {
        eprintln!("bench: {} {} cycles of {}", args.cycles, volume_type.as_str(), human_bytes(args.size));
        let mut samples = Samples::default();
        for cycle in 0..args.cycles {
            let name = format!("csictl-bench-{}-{pid}-{run_id}-{cycle}", volume_type.as_str());
            if let Err(err) =
                one_cycle(csi, &features, &work_dir, volume_type, args.size, name, &mut samples).await
            {
                eprintln!("bench: {} cycle {} failed: {}", volume_type.as_str(), cycle + 1, describe(&err));
                failure = Some(err);
                break;
            }
        }
        results.push((volume_type, samples));
        if failure.is_some() {
            break;
        }
    }
    lifecycle::remove_work_dirs(&work_dir);

    print_table(out, &results);
    if let Some(pid) = args.pid {
        print_peak_rss(out, pid);
    }
    match failure {
        Some(err) => Err(err.context("bench stopped early")),
        None => Ok(()),
    }
}

async fn one_cycle(
    csi: &Csi,
    features: &Features,
    work_dir: &std::path::Path,
    volume_type: VolumeType,
    size: i64,
    name: String,
    samples: &mut Samples,
) -> anyhow::Result<()> {
    let capability = CapabilitySpec {
        mode: Mode::SingleNodeWriter,
        block: false,
        fs_type: String::new(),
        mount_flags: vec![],
    }
    .to_message();
    let plan = Plan::new(name, volume_type, size, capability, work_dir);
    let mut lc = Lifecycle::new(csi, plan, features.clone());
    let start = Instant::now();
    let result = cycle_steps(&mut lc, samples).await;
    match result {
        Ok(()) => {
            samples.add(CYCLE, start.elapsed());
            Ok(())
        }
        Err(err) => {
            for (step, r, _) in lc.teardown().await {
                if let Err(e) = r {
                    eprintln!("bench: cleanup {step} failed: {}", describe(&e));
                }
            }
            Err(err)
        }
    }
}

async fn cycle_steps(lc: &mut Lifecycle<'_>, samples: &mut Samples) -> anyhow::Result<()> {
    // Each step: run it, record its latency, stop the cycle on error.
    macro_rules! step {
        ($name:expr, $call:expr) => {{
            let (r, d) = $call.await;
            r.with_context(|| format!("{} failed", $name))?;
            samples.add($name, d);
        }};
    }
    step!(lifecycle::CREATE, lc.create());
    if lc.features.controller_publish {
        step!(lifecycle::CONTROLLER_PUBLISH, lc.controller_publish());
    }
    if lc.features.stage {
        step!(lifecycle::STAGE, lc.stage());
    }
    step!(lifecycle::PUBLISH, lc.publish());
    step!(lifecycle::UNPUBLISH, lc.unpublish());
    if lc.features.stage {
        step!(lifecycle::UNSTAGE, lc.unstage());
    }
    if lc.features.controller_publish {
        step!(lifecycle::CONTROLLER_UNPUBLISH, lc.controller_unpublish());
    }
    step!(lifecycle::DELETE, lc.delete());
    Ok(())
}

fn print_table(out: Printer, results: &[(VolumeType, Samples)]) {
    if results.iter().all(|(_, s)| s.0.is_empty()) {
        eprintln!("bench: no step completed, nothing to report");
        return;
    }
    if !out.json {
        outln!(
            "{:<6} {:<27} {:>5} {:>11} {:>11} {:>11} {:>11}",
            "type",
            "step",
            "n",
            "median",
            "p95",
            "min",
            "max"
        );
    }
    for (volume_type, samples) in results {
        for step in ORDER {
            let Some(values) = samples.0.get(step) else { continue };
            let mut sorted = values.clone();
            sorted.sort();
            let (median, p95) = (percentile(&sorted, 50.0), percentile(&sorted, 95.0));
            let (min, max) = (sorted[0], sorted[sorted.len() - 1]);
            if out.json {
                outln!(
                    "{}",
                    json!({
                        "type": volume_type.as_str(), "step": step, "n": sorted.len(),
                        "median_ms": ms(median), "p95_ms": ms(p95), "min_ms": ms(min), "max_ms": ms(max),
                    })
                );
            } else {
                outln!(
                    "{:<6} {:<27} {:>5} {:>8.2} ms {:>8.2} ms {:>8.2} ms {:>8.2} ms",
                    volume_type.as_str(),
                    step,
                    sorted.len(),
                    ms(median),
                    ms(p95),
                    ms(min),
                    ms(max)
                );
            }
        }
    }
}

fn print_peak_rss(out: Printer, pid: u32) {
    let path = format!("/proc/{pid}/status");
    match std::fs::read_to_string(&path).ok().as_deref().and_then(parse_vm_hwm) {
        Some(kib) if out.json => outln!("{}", json!({ "pid": pid, "vm_hwm_kib": kib })),
        Some(kib) => outln!("driver pid {pid} peak RSS (VmHWM): {}", human_bytes(kib as i64 * 1024)),
        None => eprintln!("bench: cannot read VmHWM from {path} (is pid {pid} running?)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms_list(values: &[u64]) -> Vec<Duration> {
        let mut v: Vec<Duration> = values.iter().map(|&m| Duration::from_millis(m)).collect();
        v.sort();
        v
    }

    #[test]
    fn percentile_nearest_rank() {
        let v = ms_list(&(1..=100).collect::<Vec<_>>());
        assert_eq!(percentile(&v, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&v, 95.0), Duration::from_millis(95));
        assert_eq!(percentile(&v, 100.0), Duration::from_millis(100));
        assert_eq!(percentile(&v, 0.0), Duration::from_millis(1));
    }

    #[test]
    fn percentile_small_samples() {
        let v = ms_list(&[30, 10, 20]);
        assert_eq!(percentile(&v, 50.0), Duration::from_millis(20));
        assert_eq!(percentile(&v, 95.0), Duration::from_millis(30));
        let one = ms_list(&[7]);
        assert_eq!(percentile(&one, 50.0), Duration::from_millis(7));
        assert_eq!(percentile(&one, 95.0), Duration::from_millis(7));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    }

    #[test]
    fn percentile_of_ten() {
        // p95 of 10 samples is the largest: rank ceil(9.5) = 10.
        let v = ms_list(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 100]);
        assert_eq!(percentile(&v, 95.0), Duration::from_millis(100));
        assert_eq!(percentile(&v, 50.0), Duration::from_millis(5));
    }

    #[test]
    fn vm_hwm_from_proc_status() {
        let status = "Name:\tcsi-lab03\nVmPeak:\t  20000 kB\nVmHWM:\t    8544 kB\nVmRSS:\t    8000 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(8544));
        assert_eq!(parse_vm_hwm("Name:\tx\n"), None);
    }

    #[test]
    fn vm_hwm_of_this_process() {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        assert!(parse_vm_hwm(&status).unwrap() > 0);
    }
}
