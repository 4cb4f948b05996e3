//! csi-migrate against a Kubernetes API faked at the HTTP level (see
//! `fake/mod.rs`): dry run, a full run, resuming after a clean stop at every
//! step, after a failed write and after a crash in the middle of any step,
//! refusing a claim in use, rollback from every one of those places (and
//! running again afterwards), the checksums, a StatefulSet's claim, and
//! claims that go Lost, vanish or are replaced while the PV is away.

mod fake;

use std::time::Duration;

use fake::{CLAIM, DEPLOYMENT, JOURNAL, PV, PvController, STATEFULSET, STS_CLAIM, SUM, Shared, WRITER_POD};
use lab06_migration::fault::{Crash, Crashed, Fault};
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

async fn rollback(state: &Shared) -> (anyhow::Result<()>, String) {
    let mut out = Vec::new();
    let result = Migrator::new(fake::client(state.clone()), options(), &mut out).rollback("legacy-1").await;
    (result, String::from_utf8(out).unwrap())
}

/// A run that dies right after write `write` of `step`, as
/// `CSI_MIGRATE_CRASH=<step>:<write>` makes the binary do. `None`: the step
/// makes fewer writes, so the run went through.
async fn crash(state: &Shared, options: Options, step: Step, write: usize) -> Option<String> {
    let mut out = Vec::new();
    let fault = Fault { step, write, crash: Crash::Return };
    let mut migrator =
        Migrator::new(fake::client(state.clone()), Options { fault: Some(fault), ..options }, &mut out);
    let result = migrator.run().await;
    if !migrator.fault_fired() {
        assert!(result.is_ok(), "{step:?}:{write}: no crash, so the run must succeed: {result:?}");
        return None;
    }
    let err = result.expect_err("a crashed run fails");
    assert!(err.downcast_ref::<Crashed>().is_some(), "{step:?}:{write}: {err:#}");
    drop(migrator);
    Some(String::from_utf8(out).unwrap())
}

/// Every (step, write) a run can crash at, with a PV controller that leaves
/// the claim alone and with one that loses it for good (so the run also
/// recreates the claim): each step's writes, counted until a crash no longer
/// fires. `each` gets the state the crash left behind.
async fn for_every_crash_point<F, Fut>(mut each: F)
where
    F: FnMut(Shared, Options, Step, usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for mode in [PvController::Idle, PvController::LosesForGood] {
        let options = Options { timeout: Duration::from_millis(60), ..options() };
        let mut points = 0;
        for step in Step::ALL {
            for write in 1.. {
                let state = fake::legacy_cluster();
                state.lock().unwrap().pv_controller = mode;
                if crash(&state, options.clone(), step, write).await.is_none() {
                    break;
                }
                each(state, options.clone(), step, write).await;
                points += 1;
            }
        }
        assert!(points > 15, "{mode:?}: a run has {points} crash points");
    }
}

/// The state after a rollback: the Flex PV as it was, bound to its claim,
/// the writer back, the old policy, and no journal anywhere.
fn assert_rolled_back(state: &Shared, when: &str) {
    let s = state.lock().unwrap();
    assert!(s.violations.is_empty(), "{when}: {:?}", s.violations);
    let pv = s.get(PV).unwrap_or_else(|| panic!("{when}: the PV exists"));
    assert_eq!(pv["spec"]["flexVolume"]["options"]["volumeId"], "vol-1", "{when}: the Flex PV: {pv}");
    assert!(pv["spec"]["csi"].is_null() && pv["metadata"]["deletionTimestamp"].is_null(), "{when}: {pv}");
    assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Delete", "{when}: the policy is restored");
    let ours = |o: &serde_json::Value| {
        o["metadata"]["annotations"]
            .as_object()
            .is_some_and(|a| a.keys().any(|k| k.starts_with("csi-migrate.workshop.dev/")))
    };
    assert!(!ours(pv), "{when}: no journal on the PV: {pv}");
    let pvc = s.get(CLAIM).unwrap_or_else(|| panic!("{when}: the claim exists"));
    assert!(!ours(pvc), "{when}: no journal on the claim: {pvc}");
    assert_eq!(pv["spec"]["claimRef"]["uid"], pvc["metadata"]["uid"], "{when}: bound to the claim");
    assert_eq!(
        (pvc["status"]["phase"].as_str(), pvc["spec"]["volumeName"].as_str()),
        (Some("Bound"), Some("legacy-1")),
        "{when}: {pvc}"
    );
    assert_eq!(s.get(DEPLOYMENT).unwrap()["spec"]["replicas"], 1, "{when}: the workload is back");
    assert!(s.get(WRITER_POD).is_some(), "{when}: the writer runs");
    let left: Vec<&String> = s.objects.keys().filter(|k| k.contains("/pods/csi-migrate-verify-")).collect();
    assert!(left.is_empty(), "{when}: checksum pods left: {left:?}");
    if let Some(cm) = s.get(JOURNAL) {
        let data = cm["data"].as_object().cloned().unwrap_or_default();
        assert!(
            !data.keys().any(|k| k.starts_with("legacy-1.")),
            "{when}: the journal ConfigMap is cleared: {data:?}"
        );
    }
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
    assert!(pv["metadata"]["deletionTimestamp"].is_null());
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
async fn rollback_after_a_finished_run_puts_the_flex_pv_back() {
    let state = fake::legacy_cluster();
    run(&state, options()).await.0.unwrap();
    let (result, out) = rollback(&state).await;
    result.unwrap();
    assert!(out.contains("legacy-1: rolled back to csi.workshop.dev/flex"), "{out}");
    assert_rolled_back(&state, "after done");
    assert_eq!(state.lock().unwrap().get(PV).unwrap()["spec"]["claimRef"]["uid"], "claim-uid");
}

#[tokio::test]
async fn rollback_after_any_step_puts_everything_back_and_a_new_run_then_migrates() {
    for n in 1..Step::ALL.len() {
        let state = fake::legacy_cluster();
        run(&state, Options { stop_after_step: Some(n), ..options() }).await.0.unwrap();
        let (result, out) = rollback(&state).await;
        assert!(result.is_ok(), "rollback after step {n}: {result:?}\n{out}");
        assert_rolled_back(&state, &format!("rolled back after step {n}"));
        // A second rollback finds nothing to do.
        let writes = state.lock().unwrap().writes.len();
        let (result, out) = rollback(&state).await;
        assert!(result.is_ok() && out.contains("nothing to roll back"), "{result:?} {out}");
        assert_eq!(state.lock().unwrap().writes.len(), writes);
        // And the next run starts from scratch and gets to the end.
        let (result, out) = run(&state, options()).await;
        assert!(result.is_ok(), "run after the rollback after step {n}: {result:?}\n{out}");
        assert!(out.contains("step  1/11 record-workload done"), "from the start:\n{out}");
        assert_migrated(&state);
    }
}

#[tokio::test]
async fn a_run_that_dies_in_the_middle_of_any_step_resumes_to_the_same_end() {
    for_every_crash_point(|state, options, step, write| async move {
        let (result, out) = run(&state, options).await;
        assert!(result.is_ok(), "resume after a crash at {step:?}:{write}: {result:?}\n{out}");
        assert_migrated_with(&state, CLAIM, DEPLOYMENT);
    })
    .await;
}

#[tokio::test]
async fn a_run_that_dies_in_the_middle_of_any_step_rolls_back_and_then_migrates() {
    for_every_crash_point(|state, options, step, write| async move {
        let mut out = Vec::new();
        let result =
            Migrator::new(fake::client(state.clone()), options.clone(), &mut out).rollback("legacy-1").await;
        let out = String::from_utf8(out).unwrap();
        assert!(result.is_ok(), "rollback after a crash at {step:?}:{write}: {result:?}\n{out}");
        assert_rolled_back(&state, &format!("rolled back after a crash at {step:?}:{write}"));
        let (result, out) = run(&state, options).await;
        assert!(result.is_ok(), "run after that rollback ({step:?}:{write}): {result:?}\n{out}");
        assert_migrated_with(&state, CLAIM, DEPLOYMENT);
    })
    .await;
}

#[tokio::test]
async fn a_crash_just_after_the_flex_pv_delete_leaves_it_terminating_and_the_resume_finishes() {
    // The cluster check's interruption: CSI_MIGRATE_CRASH=delete-flex-pv:1.
    let state = fake::legacy_cluster();
    let fault: Fault = "delete-flex-pv:1".parse().unwrap();
    let out = crash(&state, options(), fault.step, fault.write).await.expect("the fault fires");
    assert!(out.contains("step  5/11 save-original done") && !out.contains("step  6/11"), "{out}");
    {
        let s = state.lock().unwrap();
        let pv = s.get(PV).expect("held by pv-protection");
        assert!(
            pv["metadata"]["deletionTimestamp"].is_string() && pv["spec"]["flexVolume"].is_object(),
            "{pv}"
        );
        let journal = s.get(JOURNAL).unwrap()["data"]["legacy-1.journal"].as_str().unwrap().to_owned();
        assert!(
            journal.contains(r#""completed":"save-original""#),
            "the journal is one step behind: {journal}"
        );
    }
    let (result, out) = run(&state, options()).await;
    assert!(result.is_ok(), "{result:?}\n{out}");
    assert!(out.starts_with("legacy-1: step  6/11 delete-flex-pv done"), "{out}");
    assert_migrated(&state);
}

#[tokio::test]
async fn a_rollback_interrupted_anywhere_blocks_forward_runs_until_it_is_run_again() {
    let migrated = || async {
        let state = fake::legacy_cluster();
        run(&state, options()).await.0.unwrap();
        state
    };
    let total = {
        let state = migrated().await;
        let before = state.lock().unwrap().writes.len();
        rollback(&state).await.0.unwrap();
        state.lock().unwrap().writes.len() - before
    };
    assert!(total > 5, "a rollback makes {total} writes");
    for k in 1..=total {
        let state = migrated().await;
        let at = state.lock().unwrap().writes.len() + k;
        state.lock().unwrap().fail_write = Some(at);
        assert!(rollback(&state).await.0.is_err(), "write {k} of the rollback failed");
        state.lock().unwrap().fail_write = None;
        let (result, out) = run(&state, options()).await;
        if k > 1 {
            // The mark is written first: no forward run on a half rolled-back PV.
            let message = format!("{:#}", result.unwrap_err());
            assert!(message.contains("a rollback did not finish"), "write {k}: {message}\n{out}");
        } else {
            assert!(result.is_ok(), "the mark was never written, the PV is still migrated: {result:?}");
        }
        let (result, out) = rollback(&state).await;
        assert!(result.is_ok(), "rollback again after its write {k} failed: {result:?}\n{out}");
        assert_rolled_back(&state, &format!("rollback rerun after its write {k} failed"));
    }
}

#[tokio::test]
async fn an_old_rollback_that_left_the_journal_on_the_pv_never_leads_to_a_delete_in_use() {
    // What a rollback used to leave after save-original: the workload up,
    // the ConfigMap cleared, the PV still saying save-original.
    let state = fake::legacy_cluster();
    state.lock().unwrap().objects.get_mut(PV).unwrap()["spec"]["persistentVolumeReclaimPolicy"] =
        json!("Retain");
    run(&state, Options { stop_after_step: Some(Step::SaveOriginal.number()), ..options() }).await.0.unwrap();
    {
        let mut s = state.lock().unwrap();
        s.objects.get_mut(DEPLOYMENT).unwrap()["spec"]["replicas"] = json!(1);
        s.objects.insert(
            WRITER_POD.into(),
            json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "writer-0", "namespace": "legacy", "labels": {"app": "writer"}},
            "spec": {"containers": [{"name": "writer", "image": "csi-workshop:0.1.0"}],
                     "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]},
            "status": {"phase": "Running"}}),
        );
        s.objects.remove(JOURNAL);
    }
    // Without --drain: refused, nothing written.
    let writes = state.lock().unwrap().writes.len();
    let (result, _) = run(&state, Options { drain: false, ..options() }).await;
    assert!(format!("{:#}", result.unwrap_err()).contains("in use by pod(s) legacy/writer-0"));
    assert_eq!(state.lock().unwrap().writes.len(), writes);
    // With it: down again, checksummed and saved again, and only then deleted.
    let (result, out) = run(&state, Options { no_verify: false, ..options() }).await;
    assert!(result.is_ok(), "{result:?}\n{out}");
    for step in ["3/11 scale-down", "4/11 verify-before", "5/11 save-original", "6/11 delete-flex-pv"] {
        assert!(out.contains(step), "{step}:\n{out}");
    }
    let s = state.lock().unwrap();
    assert!(s.violations.is_empty(), "{:?}", s.violations);
    assert_eq!(s.get(PV).unwrap()["spec"]["csi"]["volumeHandle"], "vol-1");
    assert_eq!(s.get(DEPLOYMENT).unwrap()["spec"]["replicas"], 1);
}

#[tokio::test]
async fn rollback_waits_for_the_finalizers_of_other_controllers() {
    let state = fake::legacy_cluster();
    run(&state, options()).await.0.unwrap();
    // external-attacher's, while a node still has the CSI volume attached.
    let attacher = "external-attacher/csi-workshop-dev";
    state.lock().unwrap().objects.get_mut(PV).unwrap()["metadata"]["finalizers"] =
        json!(["kubernetes.io/pv-protection", attacher]);
    let (result, out) = rollback(&state).await;
    let message = format!("{:#}", result.unwrap_err());
    assert!(message.contains(attacher), "{message}\n{out}");
    {
        let s = state.lock().unwrap();
        let pv = s.get(PV).expect("still there, terminating");
        assert_eq!(pv["metadata"]["finalizers"], json!([attacher]), "only pv-protection lifted");
        assert!(pv["spec"]["csi"].is_object());
    }
    // The attacher detaches and lets go: the rollback, run again, finishes.
    state.lock().unwrap().objects.remove(PV);
    let (result, out) = rollback(&state).await;
    assert!(result.is_ok(), "{result:?}\n{out}");
    assert_rolled_back(&state, "after the attacher let go");
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
