//! `csictl walk`: one volume through its whole lifecycle, one numbered,
//! timed step at a time, so trainees see what a CO does and in which order.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use lab01_identity::csi::volume_capability::access_mode::Mode;
use serde_json::{Value, json};

use crate::WalkArgs;
use crate::lifecycle::{self, Lifecycle, Plan, ms};
use crate::parse::CapabilitySpec;
use crate::print::{self, Printer};
use crate::rpc::{Csi, status_line};

/// Prints numbered steps as they complete.
struct Steps {
    out: Printer,
    next: usize,
}

impl Steps {
    fn line(&mut self, name: &str, outcome: &str, took: Option<Duration>, detail: &str) {
        let n = self.next;
        self.next += 1;
        if self.out.json {
            return;
        }
        let took = took.map(|d| format!("{:>9.2} ms", ms(d))).unwrap_or_default();
        let detail = if detail.is_empty() { String::new() } else { format!("  {detail}") };
        outln!("[{n:>2}] {name:<27} {outcome:<7}{took:>12}{detail}");
    }

    fn json(&self, n: usize, name: &str, outcome: &str, took: Option<Duration>, detail: Value) {
        if self.out.json {
            let took = took.map(|d| json!(ms(d))).unwrap_or(Value::Null);
            outln!("{}", json!({ "step": n, "name": name, "result": outcome, "ms": took, "detail": detail }));
        }
    }

    /// Records a finished step; on failure the error is returned for `?`.
    fn done<T>(
        &mut self,
        name: &str,
        took: Duration,
        result: anyhow::Result<T>,
        detail: impl FnOnce(&T) -> (String, Value),
    ) -> anyhow::Result<T> {
        let n = self.next;
        match result {
            Ok(value) => {
                let (text, data) = detail(&value);
                self.json(n, name, "ok", Some(took), data);
                self.line(name, "ok", Some(took), &text);
                Ok(value)
            }
            Err(err) => {
                let why = describe(&err);
                self.json(n, name, "failed", Some(took), json!({ "error": why }));
                self.line(name, "FAILED", Some(took), &why);
                Err(err.context(format!("step {n} ({name}) failed")))
            }
        }
    }

    fn skipped(&mut self, name: &str, why: &str) {
        let n = self.next;
        self.json(n, name, "skipped", None, json!({ "reason": why }));
        self.line(name, "skipped", None, why);
    }
}

/// `code=NotFound message=...` for gRPC errors, the error chain otherwise.
pub fn describe(err: &anyhow::Error) -> String {
    match err.downcast_ref::<tonic::Status>() {
        Some(status) => status_line(status),
        None => format!("{err:#}"),
    }
}

pub async fn run(csi: &Csi, out: Printer, args: &WalkArgs) -> anyhow::Result<()> {
    let pid = std::process::id();
    let kind = args.volume_type.as_str();
    let name = args.name.clone().unwrap_or_else(|| format!("csictl-walk-{kind}-{pid}"));
    let work_dir = args.work_dir.clone().unwrap_or_else(|| PathBuf::from(format!("/tmp/csictl-walk-{pid}")));
    let mut steps = Steps { out, next: 1 };
    if !out.json {
        outln!("walking a {kind} volume {name:?} ({}) through its lifecycle", print::human_bytes(args.size));
        outln!("csictl work dir: {}", work_dir.display());
    }

    let (r, d) = lifecycle::node_id(csi).await;
    let node_id = steps
        .done(lifecycle::NODE_GET_INFO, d, r, |id| (format!("node_id={id}"), json!({ "node_id": id })))?;
    let (r, d) = lifecycle::capabilities(csi, node_id).await;
    let features = steps.done(lifecycle::GET_CAPABILITIES, d, r, |f| {
        (
            format!(
                "controller publish: {}, node stage: {}, volume stats: {}",
                yes(f.controller_publish),
                yes(f.stage),
                yes(f.stats)
            ),
            json!({ "controller_publish": f.controller_publish, "stage": f.stage, "stats": f.stats }),
        )
    })?;

    let capability = CapabilitySpec {
        mode: Mode::SingleNodeWriter,
        block: false,
        fs_type: args.fs_type.clone(),
        mount_flags: vec![],
    }
    .to_message();
    let plan = Plan::new(name, args.volume_type, args.size, capability, &work_dir);
    let mut lc = Lifecycle::new(csi, plan, features);

    let result = walk_volume(&mut lc, &mut steps).await;
    if result.is_err() {
        if !out.json {
            outln!("-- cleaning up what was set up --");
        }
        for (name, r, d) in lc.teardown().await {
            let _ = steps.done(name, d, r, |_| (String::new(), Value::Null));
        }
        if !lc.is_clean() && !out.json {
            outln!(
                "warning: cleanup is incomplete: volume {:?} (staged: {}, published: {}, attached: {})",
                lc.volume_id(),
                lc.state.staged,
                lc.state.published,
                lc.state.controller_published
            );
        }
    }
    lifecycle::remove_work_dirs(&work_dir);
    if result.is_ok() && !out.json {
        outln!("walk complete: volume created, used and removed again");
    }
    result
}

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

async fn walk_volume(lc: &mut Lifecycle<'_>, steps: &mut Steps) -> anyhow::Result<()> {
    let (r, d) = lc.create().await;
    steps.done(lifecycle::CREATE, d, r, |_| {
        let v = lc_volume(lc);
        (
            format!("volume_id={} capacity={}", v.0, print::human_bytes(v.1)),
            json!({ "volume_id": v.0, "capacity_bytes": v.1 }),
        )
    })?;

    if lc.features.controller_publish {
        let (r, d) = lc.controller_publish().await;
        let ctx = print::map_json(&lc.state.publish_context);
        steps.done(lifecycle::CONTROLLER_PUBLISH, d, r, |_| {
            (format!("publish_context={ctx}"), json!({ "publish_context": ctx }))
        })?;
    } else {
        steps.skipped(lifecycle::CONTROLLER_PUBLISH, "no PUBLISH_UNPUBLISH_VOLUME capability");
    }

    if lc.features.stage {
        let (r, d) = lc.stage().await;
        let path = lc.plan.staging_path.display().to_string();
        steps.done(lifecycle::STAGE, d, r, |_| {
            (format!("staged at {path}"), json!({ "staging_path": path }))
        })?;
    } else {
        steps.skipped(lifecycle::STAGE, "no STAGE_UNSTAGE_VOLUME capability");
    }

    let (r, d) = lc.publish().await;
    let target = lc.plan.target_path.clone();
    steps.done(lifecycle::PUBLISH, d, r, |_| {
        let t = target.display().to_string();
        (format!("published at {t}"), json!({ "target_path": t }))
    })?;

    let (r, d) = hello(&target);
    steps.done("write+read hello.txt", d, r, |n| {
        (format!("{n} bytes written and read back"), json!({ "bytes": n }))
    })?;

    if lc.features.stats {
        let (r, d) = lc.stats().await;
        let stats = steps.done(lifecycle::STATS, d, r, |s| {
            let usage: Vec<Value> = s.usage.iter().map(print::usage_json).collect();
            (
                String::new(),
                json!({ "usage": usage, "volume_condition": print::condition_json(&s.volume_condition) }),
            )
        })?;
        if !steps.out.json {
            for line in print::df_table(&stats).lines() {
                outln!("       {line}");
            }
        }
    } else {
        steps.skipped(lifecycle::STATS, "no GET_VOLUME_STATS capability");
    }

    let (r, d) = lc.unpublish().await;
    steps.done(lifecycle::UNPUBLISH, d, r, |_| (String::new(), Value::Null))?;
    if lc.features.stage {
        let (r, d) = lc.unstage().await;
        steps.done(lifecycle::UNSTAGE, d, r, |_| (String::new(), Value::Null))?;
    } else {
        steps.skipped(lifecycle::UNSTAGE, "no STAGE_UNSTAGE_VOLUME capability");
    }
    if lc.features.controller_publish {
        let (r, d) = lc.controller_unpublish().await;
        steps.done(lifecycle::CONTROLLER_UNPUBLISH, d, r, |_| (String::new(), Value::Null))?;
    } else {
        steps.skipped(lifecycle::CONTROLLER_UNPUBLISH, "no PUBLISH_UNPUBLISH_VOLUME capability");
    }
    let (r, d) = lc.delete().await;
    steps.done(lifecycle::DELETE, d, r, |_| (String::new(), Value::Null))?;
    Ok(())
}

fn lc_volume(lc: &Lifecycle<'_>) -> (String, i64) {
    lc.state.volume.as_ref().map(|v| (v.volume_id.clone(), v.capacity_bytes)).unwrap_or_default()
}

/// What a workload would do: write a file into the volume and read it back.
fn hello(target: &std::path::Path) -> (anyhow::Result<usize>, Duration) {
    let start = std::time::Instant::now();
    let result = (|| {
        let file = target.join("hello.txt");
        let text = format!("hello from csictl walk (pid {})\n", std::process::id());
        std::fs::write(&file, &text).with_context(|| format!("writing {}", file.display()))?;
        let back = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
        anyhow::ensure!(back == text, "read back {back:?}, wrote {text:?}");
        Ok(text.len())
    })();
    (result, start.elapsed())
}
