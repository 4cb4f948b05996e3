//! The `csi-migrate` binary against the faked API server over real HTTP
//! (see `fake::serve_http`), as the cluster check runs it: a dry run, the
//! exit codes, and `CSI_MIGRATE_CRASH`, which must kill the process with SIGKILL in the
//! middle of a step and leave a state the next run resumes from.

mod fake;

use std::os::unix::process::ExitStatusExt;
use std::process::Output;

use fake::{JOURNAL, PV, Shared};

async fn csi_migrate(state: &Shared, args: &[&str], crash: Option<&str>) -> (Output, tempfile::TempDir) {
    let addr = fake::serve_http(state.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("kubeconfig"), fake::kubeconfig(addr)).unwrap();
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_csi-migrate"));
    command
        .args(["--journal-namespace", "csi-workshop", "--no-verify", "--timeout", "1"])
        .args(args)
        .env("KUBECONFIG", dir.path().join("kubeconfig"))
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove(lab06_migration::fault::ENV);
    if let Some(crash) = crash {
        command.env(lab06_migration::fault::ENV, crash);
    }
    (command.output().await.expect("run csi-migrate"), dir)
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csi_migrate_crash_kills_the_binary_mid_step_and_the_next_run_finishes() {
    let state = fake::legacy_cluster();
    let (out, _dir) = csi_migrate(&state, &["--drain"], Some("delete-flex-pv:1")).await;
    assert_eq!(out.status.signal(), Some(9), "killed by SIGKILL (the shell says 137): {}", text(&out));
    assert!(text(&out).contains("step  5/11 save-original done"), "{}", text(&out));
    assert!(!text(&out).contains("step  6/11"), "{}", text(&out));
    {
        let s = state.lock().unwrap();
        let pv = s.get(PV).expect("the Flex PV, held by pv-protection");
        assert!(pv["metadata"]["deletionTimestamp"].is_string(), "{pv}");
        let journal = s.get(JOURNAL).unwrap()["data"]["legacy-1.journal"].as_str().unwrap().to_owned();
        assert!(journal.contains(r#""completed":"save-original""#), "{journal}");
    }
    let (out, _dir) = csi_migrate(&state, &["--drain"], None).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("migration complete: 1 PV(s) on csi.workshop.dev"), "{}", text(&out));
    let s = state.lock().unwrap();
    assert!(s.violations.is_empty(), "{:?}", s.violations);
    assert_eq!(s.get(PV).unwrap()["spec"]["csi"]["volumeHandle"], "vol-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_writes_nothing_a_stop_exits_3_a_rollback_exits_0_and_a_bad_fault_is_refused() {
    let state = fake::legacy_cluster();
    let (out, _dir) = csi_migrate(&state, &["--dry-run", "--drain"], None).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("legacy-1: plan (10 step(s) left"), "{}", text(&out));
    assert!(text(&out).ends_with("dry run: nothing was changed\n"), "{}", text(&out));
    assert!(state.lock().unwrap().writes.is_empty(), "a dry run writes nothing");

    let (out, _dir) = csi_migrate(&state, &["--drain", "--stop-after-step", "7"], None).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("stopped after step 7 (create-csi-pv) of PV legacy-1"), "{}", text(&out));
    let (out, _dir) = csi_migrate(&state, &["--rollback", "--pv", "legacy-1"], None).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("legacy-1: rolled back to csi.workshop.dev/flex"), "{}", text(&out));
    assert!(state.lock().unwrap().get(PV).unwrap()["spec"]["flexVolume"].is_object());

    let writes = state.lock().unwrap().writes.len();
    let (out, _dir) = csi_migrate(&state, &["--drain"], Some("delete-flex")).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("no step of that name"), "{}", text(&out));
    assert_eq!(state.lock().unwrap().writes.len(), writes, "nothing written");
}
