//! csi-migrate against a Kubernetes API faked at the HTTP level (see
//! `fake/mod.rs`): dry run, a full run, resuming after an interruption at
//! every step, refusing a claim in use, rollback, the checksums, a
//! StatefulSet's claim, and claims that go Lost, vanish or are replaced while
//! the PV is away.

mod fake;

use std::time::Duration;

use fake::{CLAIM, DEPLOYMENT, JOURNAL, PV, PvController, STATEFULSET, STS_CLAIM, SUM, Shared};
use lab06_migration::migrate::{Migrator, Options, Outcome};
use lab06_migration::plan::Step;
use serde_json::json;

fn options() -> Options {
    Options {
        drain: true,
        no_verify: true,
        poll: Duration::from_millis(1),
        timeout: Duration::from_millis(300),
        ..Options::default()
    }
}

async fn run(state: &Shared, options: Options) -> (anyhow::Result<Outcome>, String) {
    let mut out = Vec::new();
    let result = Migrator::new(fake::client(state.clone()), options, &mut out).run().await;
    (result, String::from_utf8(out).unwrap())
}

/// The end state every successful migration must reach, for the claim at
/// `claim` used by the workload at `workload`.
fn assert_migrated_with(state: &Shared, claim: &str, workload: &str) {
    let s = state.lock().unwrap();
    assert!(s.violations.is_empty(), "{:?}", s.violations);
    let pv = s.get(PV).expect("the PV exists under the same name");
    assert!(pv["spec"]["flexVolume"].is_null(), "no Flex source any more: {pv}");
    assert_eq!(pv["spec"]["csi"]["driver"], "csi.workshop.dev");
    assert_eq!(pv["spec"]["csi"]["volumeHandle"], "vol-1", "the same backend volume");
    assert_eq!(pv["spec"]["csi"]["fsType"], "ext4");
    assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Delete", "the policy is restored");
    assert_eq!(pv["spec"]["storageClassName"], "legacy-flex");
    // So that a Delete policy means what it says once the claim is gone.
    assert_eq!(pv["metadata"]["annotations"]["pv.kubernetes.io/provisioned-by"], "csi.workshop.dev");
    assert_eq!(pv["metadata"]["finalizers"], json!(["kubernetes.io/pv-protection"]), "no finalizer of ours");
    assert!(
        pv["metadata"]["annotations"]["csi-migrate.workshop.dev/journal"]
            .as_str()
            .unwrap()
            .contains("\"done\"")
    );
    let pvc = s.get(claim).expect("the claim");
    assert_eq!(pv["spec"]["claimRef"]["uid"], pvc["metadata"]["uid"], "the PV is bound to the claim");
    assert_eq!(pvc["status"]["phase"], "Bound", "{pvc}");
    assert_eq!(pvc["spec"]["volumeName"], "legacy-1");
    assert_eq!(pvc["spec"]["storageClassName"], "legacy-flex");
    assert_eq!(s.get(workload).unwrap()["spec"]["replicas"], 1, "the workload is back");
    let cm = s.get(JOURNAL).expect("the journal ConfigMap");
    assert!(cm["data"]["legacy-1.pv"].as_str().unwrap().contains("flexVolume"), "the original PV is kept");
}

/// As above, for the Deployment's claim, which must be the very same claim.
fn assert_migrated(state: &Shared) {
    assert_migrated_with(state, CLAIM, DEPLOYMENT);
    assert_eq!(
        state.lock().unwrap().get(CLAIM).unwrap()["metadata"]["uid"],
        "claim-uid",
        "the claim was never replaced"
    );
}

#[tokio::test]
async fn a_dry_run_prints_the_plan_and_writes_nothing() {
    let state = fake::legacy_cluster();
    let (result, out) = run(&state, Options { dry_run: true, ..options() }).await;
    assert_eq!(result.unwrap(), Outcome::DryRun);
    assert!(state.lock().unwrap().writes.is_empty(), "{:?}", state.lock().unwrap().writes);
    assert!(out.contains("delete-flex-pv") && out.contains("\"volumeHandle\":\"vol-1\""), "{out}");
    assert!(out.contains("Deployment legacy/writer (replicas 1)"), "{out}");
}

#[tokio::test]
async fn a_full_run_moves_the_pv_to_csi_and_restores_everything() {
    let state = fake::legacy_cluster();
    let (result, out) = run(&state, options()).await;
    assert_eq!(result.unwrap(), Outcome::Done { migrated: vec!["legacy-1".into()] }, "{out}");
    assert_migrated(&state);
    // Running again finds nothing to do and writes nothing.
    let before = state.lock().unwrap().writes.len();
    let (result, out) = run(&state, options()).await;
    assert_eq!(result.unwrap(), Outcome::Done { migrated: vec![] }, "{out}");
    assert_eq!(state.lock().unwrap().writes.len(), before);
}

#[tokio::test]
async fn a_claim_in_use_is_refused_without_drain_and_nothing_changes() {
    let state = fake::legacy_cluster();
    let (result, _) = run(&state, Options { drain: false, ..options() }).await;
    let message = format!("{:#}", result.unwrap_err());
    assert!(message.contains("in use by pod(s) legacy/writer-0") && message.contains("--drain"), "{message}");
    assert!(state.lock().unwrap().writes.is_empty());
}

#[tokio::test]
async fn a_run_stopped_after_any_step_resumes_to_the_same_end() {
    for n in 1..Step::ALL.len() {
        let state = fake::legacy_cluster();
        let (result, out) = run(&state, Options { stop_after_step: Some(n), ..options() }).await;
        assert_eq!(
            result.unwrap(),
            Outcome::Stopped { pv: "legacy-1".into(), step: Step::ALL[n - 1] },
            "{out}"
        );
        // A dry run in between shows what is left and changes nothing.
        let writes = state.lock().unwrap().writes.len();
        let (result, out) = run(&state, Options { dry_run: true, ..options() }).await;
        assert_eq!(result.unwrap(), Outcome::DryRun, "after step {n}: {out}");
        assert_eq!(state.lock().unwrap().writes.len(), writes);
        let (result, out) = run(&state, options()).await;
        assert!(result.is_ok(), "resume after step {n}: {result:?}\n{out}");
        assert!(!out.contains(&format!("step {:>2}/", n)), "step {n} must not run twice:\n{out}");
        assert_migrated(&state);
    }
}

#[tokio::test]
async fn a_run_interrupted_by_a_failing_api_call_anywhere_resumes() {
    // LosesForGood makes the run recreate the claim, so its writes are interrupted too.
    for mode in [PvController::Idle, PvController::LosesForGood] {
        let cluster = || {
            let state = fake::legacy_cluster();
            state.lock().unwrap().pv_controller = mode;
            state
        };
        let options = || Options { timeout: Duration::from_millis(60), ..options() };
        let total = {
            let state = cluster();
            run(&state, options()).await.0.unwrap();
            state.lock().unwrap().writes.len()
        };
        assert!(total > 10, "a full run makes {total} writes");
        for k in 1..=total {
            let state = cluster();
            state.lock().unwrap().fail_write = Some(k);
            let (result, out) = run(&state, options()).await;
            assert!(result.is_err(), "{mode:?}: write {k} failed, the run must report it:\n{out}");
            state.lock().unwrap().fail_write = None;
            let (result, out) = run(&state, options()).await;
            assert!(result.is_ok(), "{mode:?}: resume after failed write {k}: {result:?}\n{out}");
            match mode {
                PvController::Idle => assert_migrated(&state),
                _ => assert_migrated_with(&state, CLAIM, DEPLOYMENT),
            }
        }
    }
}

#[tokio::test]
async fn rollback_puts_the_flex_pv_back() {
    let state = fake::legacy_cluster();
    run(&state, options()).await.0.unwrap();
    let mut out = Vec::new();
    Migrator::new(fake::client(state.clone()), options(), &mut out).rollback("legacy-1").await.unwrap();
    let s = state.lock().unwrap();
    assert!(s.violations.is_empty(), "{:?}", s.violations);
    let pv = s.get(PV).unwrap();
    assert_eq!(pv["spec"]["flexVolume"]["options"]["volumeId"], "vol-1");
    assert!(pv["spec"]["csi"].is_null());
    assert_eq!(pv["spec"]["claimRef"]["uid"], "claim-uid");
    assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Delete");
    assert!(pv["metadata"]["annotations"].get("csi-migrate.workshop.dev/journal").is_none());
    assert_eq!(s.get(DEPLOYMENT).unwrap()["spec"]["replicas"], 1);
    assert!(s.get(JOURNAL).unwrap()["data"].get("legacy-1.pv").is_none(), "the journal entry is cleared");
}

#[tokio::test]
async fn the_data_is_checksummed_before_and_after() {
    let state = fake::legacy_cluster();
    let (result, out) = run(&state, Options { no_verify: false, ..options() }).await;
    assert!(result.is_ok(), "{result:?}\n{out}");
    assert!(out.contains(&format!("checksum {SUM} identical before and after")), "{out}");
    assert_migrated(&state);
    let s = state.lock().unwrap();
    assert_eq!(
        s.writes.iter().filter(|w| w.starts_with("POST /api/v1/namespaces/legacy/pods")).count(),
        2,
        "{:?}",
        s.writes
    );
}

#[tokio::test]
async fn a_checksum_mismatch_stops_before_the_workload_comes_back() {
    let state = fake::legacy_cluster();
    state.lock().unwrap().checksums = vec![SUM.into(), SUM.replace('5', "6")];
    let (result, out) = run(&state, Options { no_verify: false, ..options() }).await;
    let message = format!("{:#}", result.unwrap_err());
    assert!(message.contains("differs"), "{message}\n{out}");
    assert_eq!(
        state.lock().unwrap().get(DEPLOYMENT).unwrap()["spec"]["replicas"],
        0,
        "the workload stays down"
    );
}

#[tokio::test]
async fn a_statefulset_claim_is_migrated_with_the_statefulset_scaled_down_and_back() {
    let state = fake::legacy_statefulset_cluster();
    let (result, out) = run(&state, Options { dry_run: true, ..options() }).await;
    assert_eq!(result.unwrap(), Outcome::DryRun);
    assert!(out.contains("StatefulSet legacy/db (replicas 1)"), "{out}");
    let (result, out) = run(&state, Options { drain: false, ..options() }).await;
    assert!(format!("{:#}", result.unwrap_err()).contains("legacy/db-0"), "in use by db-0:\n{out}");
    let (result, out) = run(&state, options()).await;
    assert_eq!(result.unwrap(), Outcome::Done { migrated: vec!["legacy-1".into()] }, "{out}");
    assert_migrated_with(&state, STS_CLAIM, STATEFULSET);
    let s = state.lock().unwrap();
    assert_eq!(s.get(STS_CLAIM).unwrap()["metadata"]["uid"], "claim-uid", "the template's claim is kept");
    let scaled: Vec<&String> = s.writes.iter().filter(|w| w.contains("/statefulsets/db")).collect();
    assert_eq!(scaled.len(), 2, "scaled to 0 and back: {scaled:?}");
}

#[tokio::test]
async fn a_claim_marked_lost_while_its_pv_was_away_binds_again_by_itself() {
    let state = fake::legacy_cluster();
    state.lock().unwrap().pv_controller = PvController::LosesAndRebinds;
    let (result, out) = run(&state, options()).await;
    assert!(result.is_ok(), "{result:?}\n{out}");
    assert_migrated(&state);
    let s = state.lock().unwrap();
    assert!(
        !s.writes.iter().any(|w| w.contains("/persistentvolumeclaims/")),
        "the claim is left alone: {:?}",
        s.writes
    );
}

#[tokio::test]
async fn a_claim_that_stays_lost_is_recreated_bound_to_the_same_pv() {
    let state = fake::legacy_cluster();
    state.lock().unwrap().pv_controller = PvController::LosesForGood;
    let (result, out) = run(&state, options()).await;
    assert!(result.is_ok(), "{result:?}\n{out}");
    assert!(out.contains("claim legacy/data is still Lost"), "{out}");
    assert_migrated_with(&state, CLAIM, DEPLOYMENT);
    let s = state.lock().unwrap();
    assert_ne!(s.get(CLAIM).unwrap()["metadata"]["uid"], "claim-uid", "a new claim");
    assert_eq!(s.get(CLAIM).unwrap()["spec"]["resources"]["requests"]["storage"], "64Mi");
}

#[tokio::test]
async fn a_claim_deleted_while_its_pv_was_away_is_recreated_from_the_journal() {
    let state = fake::legacy_cluster();
    let step = Step::DeleteFlexPv.number();
    run(&state, Options { stop_after_step: Some(step), ..options() }).await.0.unwrap();
    state.lock().unwrap().objects.remove(CLAIM).expect("somebody deletes the claim");
    let (result, out) = run(&state, options()).await;
    assert!(result.is_ok(), "{result:?}\n{out}");
    assert_migrated_with(&state, CLAIM, DEPLOYMENT);
}

#[tokio::test]
async fn a_different_claim_under_the_same_name_is_never_touched() {
    let state = fake::legacy_cluster();
    let step = Step::DeleteFlexPv.number();
    run(&state, Options { stop_after_step: Some(step), ..options() }).await.0.unwrap();
    let stranger = serde_json::json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data", "namespace": "legacy", "uid": "stranger-uid"},
        "spec": {"volumeName": "pvc-stranger", "storageClassName": "standard"},
        "status": {"phase": "Bound"}
    });
    state.lock().unwrap().objects.insert(CLAIM.into(), stranger.clone());
    let (result, out) = run(&state, options()).await;
    let message = format!("{:#}", result.unwrap_err());
    assert!(message.contains("refusing to touch it"), "{message}\n{out}");
    let s = state.lock().unwrap();
    assert_eq!(s.get(CLAIM).unwrap(), &stranger, "the stranger's claim is unchanged");
    assert!(s.get(PV).unwrap()["spec"]["csi"].is_object(), "the CSI PV is there, waiting for its claim");
    assert!(s.violations.is_empty(), "{:?}", s.violations);
}
