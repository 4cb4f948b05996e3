//! The migration steps against the Kubernetes API (kube-rs).
//!
//! A PV's volume source is immutable, so "moving a PV to CSI" means deleting
//! it and creating it again under the same name, with the same claimRef.
//! Everything around that is safety: the workload is stopped first, the
//! reclaim policy is Retain before anything is deleted, every step is
//! journaled (see [`crate::plan`]), and a checksum taken through a Pod
//! before and after proves the data is the same.
//!
//! Every write to the API goes through [`Migrator::write`], the one place
//! where [`crate::fault`] can make the run die, so the tests can interrupt a
//! run after any write and prove the next run (or `--rollback`) copes.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, anyhow, bail, ensure};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolume, PersistentVolumeClaim, Pod};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::fault::{Fault, Tracker};
use crate::plan::{self, Journal, PlanOptions, Step, Usage, Workload, WorkloadKind};

/// Labels the tool's own Pods (the checksum readers), so they never count
/// as users of the claim.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "csi-migrate");

/// The tool's annotations (journal, step, migrated-from).
const JOURNAL_PREFIX: &str = "csi-migrate.workshop.dev/";

/// The Flex PV to create again from the journal's copy: its name, labels,
/// annotations (but the tool's) and spec, without the server's fields.
fn flex_from(original: &PersistentVolume) -> PersistentVolume {
    let mut flex = original.clone();
    flex.metadata = kube::api::ObjectMeta {
        name: original.metadata.name.clone(),
        labels: original.metadata.labels.clone(),
        annotations: original.metadata.annotations.clone().map(|mut a| {
            a.retain(|k, _| !k.starts_with(JOURNAL_PREFIX));
            a
        }),
        ..Default::default()
    };
    flex.status = None;
    if let Some(claim) = flex.spec.as_mut().and_then(|s| s.claim_ref.as_mut()) {
        claim.resource_version = None;
    }
    flex
}

/// The PV controller's finalizer on a Bound PV; the one the tool lifts.
const PV_PROTECTION: &str = "kubernetes.io/pv-protection";

/// A 409 from the API server: somebody changed the object since we read it.
fn is_conflict(e: &anyhow::Error) -> bool {
    matches!(e.downcast_ref::<kube::Error>(), Some(kube::Error::Api(s)) if s.code == 409)
}

#[derive(Debug, Clone)]
pub struct Options {
    /// Print the plan, change nothing.
    pub dry_run: bool,
    pub drain: bool,
    pub no_verify: bool,
    /// Stop after this step number (1-based), cleanly, between two steps.
    pub stop_after_step: Option<usize>,
    /// Die in the middle of a step (see [`crate::fault`]).
    pub fault: Option<Fault>,
    /// Only these PVs (default: every Flex PV of our driver, and every PV
    /// the journal has unfinished).
    pub pvs: Vec<String>,
    /// Where the journal ConfigMap lives.
    pub namespace: String,
    /// The image of the checksum Pod (needs sh, find, sort, sha256sum).
    pub verify_image: String,
    pub poll: Duration,
    pub timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            dry_run: false,
            drain: false,
            no_verify: false,
            stop_after_step: None,
            fault: None,
            pvs: vec![],
            namespace: "csi-workshop".into(),
            verify_image: "csi-workshop:0.1.0".into(),
            poll: Duration::from_secs(2),
            timeout: Duration::from_secs(300),
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every PV migrated (or nothing to do).
    Done {
        migrated: Vec<String>,
    },
    /// `--stop-after-step` reached.
    Stopped {
        pv: String,
        step: Step,
    },
    DryRun,
}

pub struct Migrator<'a> {
    client: Client,
    options: Options,
    out: &'a mut dyn Write,
    tracker: Mutex<Tracker>,
}

fn pp() -> PatchParams {
    PatchParams::default()
}

impl<'a> Migrator<'a> {
    pub fn new(client: Client, options: Options, out: &'a mut dyn Write) -> Self {
        let tracker = Mutex::new(Tracker::new(options.fault));
        Self { client, options, out, tracker }
    }

    /// Whether the fault of [`Options::fault`] fired.
    pub fn fault_fired(&self) -> bool {
        self.tracker.lock().expect("tracker").fired()
    }

    /// Every write to the API: awaits it, then gives fault injection its
    /// chance to kill the run right after it.
    async fn write<T>(&self, request: impl Future<Output = kube::Result<T>>) -> anyhow::Result<T> {
        let done = request.await?;
        self.tracker.lock().expect("tracker").wrote()?;
        Ok(done)
    }

    fn pvs(&self) -> Api<PersistentVolume> {
        Api::all(self.client.clone())
    }

    fn configmaps(&self) -> Api<ConfigMap> {
        Api::namespaced(self.client.clone(), &self.options.namespace)
    }

    fn say(&mut self, line: String) {
        let _ = writeln!(self.out, "{line}");
    }

    /// The PVs to look at: the Flex ones and those with an unfinished journal.
    pub async fn candidates(&self) -> anyhow::Result<Vec<String>> {
        if !self.options.pvs.is_empty() {
            return Ok(self.options.pvs.clone());
        }
        // Unfinished: not done, or a rollback under way.
        let unfinished = |j: &Journal| j.completed != Some(Step::Done) || j.rolling_back;
        let mut names: Vec<String> = self
            .pvs()
            .list(&ListParams::default())
            .await
            .context("listing PVs")?
            .into_iter()
            .filter(|pv| plan::is_flex(pv) || plan::journal_of(pv).is_some_and(|j| unfinished(&j)))
            .filter_map(|pv| pv.metadata.name)
            .collect();
        if let Some(cm) = self
            .configmaps()
            .get_opt(plan::JOURNAL_CONFIGMAP)
            .await
            .context("reading the journal ConfigMap")?
        {
            for (key, value) in cm.data.unwrap_or_default() {
                let Some(pv) = key.strip_suffix(".journal") else { continue };
                let journal: Journal =
                    serde_json::from_str(&value).with_context(|| format!("journal entry {key}"))?;
                if unfinished(&journal) && !names.iter().any(|n| n == pv) {
                    names.push(pv.to_owned());
                }
            }
        }
        names.sort();
        Ok(names)
    }

    pub async fn run(&mut self) -> anyhow::Result<Outcome> {
        let names = self.candidates().await?;
        if names.is_empty() {
            self.say(format!("no PV uses {}: nothing to migrate", crate::flex::DRIVER_NAME));
        }
        let mut migrated = vec![];
        for name in names {
            if let Some(step) = self.migrate_one(&name).await.with_context(|| format!("PV {name}"))? {
                return Ok(Outcome::Stopped { pv: name, step });
            }
            migrated.push(name);
        }
        Ok(if self.options.dry_run { Outcome::DryRun } else { Outcome::Done { migrated } })
    }

    /// (original PV, journal) from the ConfigMap.
    async fn saved(&self, name: &str) -> anyhow::Result<(Option<PersistentVolume>, Option<Journal>)> {
        let Some(cm) = self.configmaps().get_opt(plan::JOURNAL_CONFIGMAP).await? else {
            return Ok((None, None));
        };
        let data = cm.data.unwrap_or_default();
        let pv = data.get(&format!("{name}.pv")).map(|t| serde_json::from_str(t)).transpose()?;
        let journal = data.get(&format!("{name}.journal")).map(|t| serde_json::from_str(t)).transpose()?;
        Ok((pv, journal))
    }

    /// The claim of PV `name` as it was before the migration, from the ConfigMap.
    async fn saved_claim(&self, name: &str) -> anyhow::Result<Option<PersistentVolumeClaim>> {
        let Some(cm) = self.configmaps().get_opt(plan::JOURNAL_CONFIGMAP).await? else { return Ok(None) };
        let data = cm.data.unwrap_or_default();
        Ok(data.get(&format!("{name}.claim")).map(|t| serde_json::from_str(t)).transpose()?)
    }

    /// Who uses the claim of `pv`.
    pub async fn usage(&self, pv: &PersistentVolume) -> anyhow::Result<Usage> {
        let Some((ns, claim)) = plan::claim_of(pv) else { return Ok(Usage::default()) };
        let uses_claim = |spec: Option<&k8s_openapi::api::core::v1::PodSpec>| {
            spec.and_then(|s| s.volumes.as_ref()).is_some_and(|vs| {
                vs.iter().any(|v| v.persistent_volume_claim.as_ref().is_some_and(|c| c.claim_name == claim))
            })
        };
        let mut usage = Usage { claim: Some(format!("{ns}/{claim}")), ..Default::default() };
        let mut selectors: Vec<BTreeMap<String, String>> = vec![];
        for d in Api::<Deployment>::namespaced(self.client.clone(), &ns).list(&ListParams::default()).await? {
            let spec = d.spec.unwrap_or_default();
            if uses_claim(spec.template.spec.as_ref()) {
                selectors.push(spec.selector.match_labels.unwrap_or_default());
                usage.workloads.push(Workload {
                    kind: WorkloadKind::Deployment,
                    namespace: ns.clone(),
                    name: d.metadata.name.unwrap_or_default(),
                    replicas: spec.replicas.unwrap_or(1),
                });
            }
        }
        for s in Api::<StatefulSet>::namespaced(self.client.clone(), &ns).list(&ListParams::default()).await?
        {
            let sts = s.metadata.name.clone().unwrap_or_default();
            let spec = s.spec.unwrap_or_default();
            // A claim from a volumeClaimTemplate is named <template>-<sts>-<ordinal>.
            let templated = spec.volume_claim_templates.iter().flatten().any(|t| {
                claim.starts_with(&format!("{}-{sts}-", t.metadata.name.as_deref().unwrap_or_default()))
            });
            if templated || uses_claim(spec.template.spec.as_ref()) {
                selectors.push(spec.selector.match_labels.unwrap_or_default());
                usage.workloads.push(Workload {
                    kind: WorkloadKind::StatefulSet,
                    namespace: ns.clone(),
                    name: sts,
                    replicas: spec.replicas.unwrap_or(1),
                });
            }
        }
        for p in Api::<Pod>::namespaced(self.client.clone(), &ns).list(&ListParams::default()).await? {
            let labels = p.metadata.labels.clone().unwrap_or_default();
            let phase = p.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
            if labels.get(MANAGED_BY.0).map(String::as_str) == Some(MANAGED_BY.1)
                || phase == "Succeeded"
                || phase == "Failed"
            {
                continue;
            }
            if uses_claim(p.spec.as_ref()) {
                let name = format!("{ns}/{}", p.metadata.name.unwrap_or_default());
                let owned = selectors
                    .iter()
                    .any(|sel| !sel.is_empty() && sel.iter().all(|(k, v)| labels.get(k) == Some(v)));
                if !owned {
                    usage.unmanaged_pods.push(name.clone());
                }
                usage.pods.push(name);
            }
        }
        Ok(usage)
    }

    /// Runs what is left for one PV. `Some(step)`: stopped after it.
    async fn migrate_one(&mut self, name: &str) -> anyhow::Result<Option<Step>> {
        let pv = self.pvs().get_opt(name).await?;
        let (saved, saved_journal) = self.saved(name).await?;
        let mut journal = Journal::newest(pv.as_ref().and_then(plan::journal_of), saved_journal)
            .unwrap_or_else(|| Journal::new(name));
        if pv.as_ref().is_some_and(plan::is_csi) && journal.completed.is_none() {
            self.say(format!("{name}: already a {} PV, nothing to do", plan::CSI_DRIVER));
            return Ok(None);
        }
        if journal.completed == Some(Step::Done) && !journal.rolling_back && !self.options.dry_run {
            self.say(format!("{name}: already migrated (journal says done)"));
            return Ok(None);
        }
        // Between delete and create, the claim is the saved PV's.
        let usage = match pv.as_ref().or(saved.as_ref()) {
            Some(pv) => self.usage(pv).await?,
            None => Usage::default(),
        };
        let options = PlanOptions { drain: self.options.drain };
        let steps = plan::plan(pv.as_ref(), saved.as_ref(), &usage, &journal, options)?;
        let no_verify = self.options.no_verify;
        let skipped = move |step: Step| no_verify && step.is_verification();
        if self.options.dry_run {
            self.say(format!("{name}: plan ({} step(s) left, dry run: nothing changes)", steps.len()));
            for step in &steps {
                let note = if skipped(*step) { " (skipped: --no-verify)" } else { "" };
                self.say(format!("  {:>2}. {}{note}", step.number(), step.name()));
            }
            if let Some(pv) = pv.as_ref().filter(|pv| plan::is_flex(pv)) {
                let csi = plan::to_csi_pv(pv)?;
                self.say(format!(
                    "  new spec.csi: {}",
                    serde_json::to_string(&csi.spec.and_then(|s| s.csi))?
                ));
            }
            if !usage.workloads.is_empty() {
                let names: Vec<String> = usage
                    .workloads
                    .iter()
                    .map(|w| format!("{:?} {}/{} (replicas {})", w.kind, w.namespace, w.name, w.replicas))
                    .collect();
                self.say(format!("  workload: {}", names.join(", ")));
            }
            return Ok(None);
        }
        for step in steps.iter().copied().chain([Step::Done]) {
            self.tracker.lock().expect("tracker").enter(Some(step));
            if !skipped(step) {
                self.execute(name, step, &mut journal, &usage)
                    .await
                    .with_context(|| format!("step {} {}", step.number(), step.name()))?;
            }
            // Never backwards: a step done again (a scale-down after the
            // workload came back) re-establishes what the journal says.
            journal.completed = journal.completed.max(Some(step));
            self.save_journal(name, &mut journal, None)
                .await
                .with_context(|| format!("journaling step {}", step.name()))?;
            let what = match step {
                Step::Done => format!(
                    "{name}: step {:>2}/{} migrated to {}",
                    step.number(),
                    Step::ALL.len(),
                    plan::CSI_DRIVER
                ),
                s if skipped(s) => format!(
                    "{name}: step {:>2}/{} {} skipped (--no-verify)",
                    s.number(),
                    Step::ALL.len(),
                    s.name()
                ),
                s => format!("{name}: step {:>2}/{} {} done", s.number(), Step::ALL.len(), s.name()),
            };
            self.say(what);
            if self.options.stop_after_step == Some(step.number()) && step != Step::Done {
                self.say(format!(
                    "{name}: stopping after step {} as asked (--stop-after-step); run again to resume",
                    step.number()
                ));
                return Ok(Some(step));
            }
        }
        self.tracker.lock().expect("tracker").enter(None);
        Ok(None)
    }

    /// Writes the journal where it must survive: on the PV while it exists,
    /// and from SaveOriginal on (or once the ConfigMap has an entry for the
    /// PV) also in the ConfigMap. `spec` is merged into the same PV patch,
    /// so the change and its record land together.
    async fn save_journal(
        &self,
        name: &str,
        journal: &mut Journal,
        spec: Option<serde_json::Value>,
    ) -> anyhow::Result<()> {
        journal.revision += 1;
        let text = serde_json::to_string(journal)?;
        let step = journal.completed.map(Step::name).unwrap_or("none");
        if self.pvs().get_opt(name).await?.is_some() {
            let mut patch = json!({"metadata": {"annotations": {plan::JOURNAL_ANNOTATION: text, plan::STEP_ANNOTATION: step}}});
            if let Some(spec) = spec {
                patch["spec"] = spec;
            }
            self.write(self.pvs().patch(name, &pp(), &Patch::Merge(patch))).await?;
        }
        if journal.completed >= Some(Step::SaveOriginal) || self.saved(name).await?.1.is_some() {
            self.put_configmap(BTreeMap::from([(format!("{name}.journal"), text)])).await?;
        }
        Ok(())
    }

    async fn put_configmap(&self, data: BTreeMap<String, String>) -> anyhow::Result<()> {
        let api = self.configmaps();
        if api.get_opt(plan::JOURNAL_CONFIGMAP).await?.is_some() {
            self.write(api.patch(plan::JOURNAL_CONFIGMAP, &pp(), &Patch::Merge(json!({ "data": data }))))
                .await?;
        } else {
            let mut cm = ConfigMap::default();
            cm.metadata.name = Some(plan::JOURNAL_CONFIGMAP.into());
            cm.metadata.labels = Some(BTreeMap::from([(MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned())]));
            cm.data = Some(data);
            self.write(api.create(&PostParams::default(), &cm)).await?;
        }
        Ok(())
    }

    // ANCHOR: execute-step
    async fn execute(
        &mut self,
        name: &str,
        step: Step,
        journal: &mut Journal,
        usage: &Usage,
    ) -> anyhow::Result<()> {
        match step {
            Step::RecordWorkload => journal.workloads = usage.workloads.clone(),
            Step::RetainPolicy => {
                let pv = self.pvs().get(name).await?;
                let current = pv
                    .spec
                    .and_then(|s| s.persistent_volume_reclaim_policy)
                    .unwrap_or_else(|| "Delete".into());
                journal.reclaim_policy.get_or_insert(current);
                journal.completed = Some(step);
                // The policy and the journal that remembers the old one, in one patch.
                self.save_journal(name, journal, Some(json!({"persistentVolumeReclaimPolicy": "Retain"})))
                    .await?;
            }
            Step::ScaleDown => {
                for w in journal.workloads.clone() {
                    self.scale(&w, 0).await?;
                }
                self.wait_unused(&self.claim_holder(name).await?).await?;
            }
            Step::VerifyBefore => journal.checksum = self.checksum(name, "before").await?,
            Step::SaveOriginal => {
                let pv = self.pvs().get(name).await?;
                ensure!(
                    plan::is_flex(&pv),
                    "PV {name} is not the Flex PV any more; refusing to save it as the original"
                );
                journal.completed = journal.completed.max(Some(step));
                journal.revision += 1;
                let mut data = BTreeMap::from([
                    (format!("{name}.pv"), serde_json::to_string(&pv)?),
                    (format!("{name}.journal"), serde_json::to_string(journal)?),
                ]);
                // The claim too: if it vanishes while the PV is away, it can be rebuilt.
                if let Some((ns, claim)) = plan::claim_of(&pv)
                    && let Some(pvc) = Api::<PersistentVolumeClaim>::namespaced(self.client.clone(), &ns)
                        .get_opt(&claim)
                        .await?
                {
                    data.insert(format!("{name}.claim"), serde_json::to_string(&pvc)?);
                }
                self.put_configmap(data).await?;
            }
            Step::DeleteFlexPv => {
                // The plan checked it; this is the last word, right before the
                // delete: never delete a PV the journal could not put back.
                let (saved, _) = self.saved(name).await?;
                if let Some(pv) = self.pvs().get_opt(name).await? {
                    ensure!(
                        saved.as_ref().is_some_and(|s| plan::same_volume(s, &pv)),
                        "the journal ConfigMap holds no copy of PV {name}; refusing to delete it"
                    );
                }
                self.delete_pv(name, plan::is_flex).await?
            }
            Step::CreateCsiPv => {
                let (original, _) = self.saved(name).await?;
                let original =
                    original.ok_or_else(|| anyhow!("the journal ConfigMap holds no copy of PV {name}"))?;
                let mut csi = plan::to_csi_pv(&original)?;
                // The new PV carries the journal as it stands: this step
                // counts as done only once the claim is bound again too.
                let annotations = csi.metadata.annotations.get_or_insert_with(Default::default);
                annotations.insert(plan::JOURNAL_ANNOTATION.into(), serde_json::to_string(journal)?);
                annotations.insert(
                    plan::STEP_ANNOTATION.into(),
                    journal.completed.map(Step::name).unwrap_or("none").into(),
                );
                match self.pvs().get_opt(name).await? {
                    Some(existing) if plan::is_csi(&existing) => {}
                    Some(_) => bail!("PV {name} exists and is not a {} PV", plan::CSI_DRIVER),
                    None => {
                        self.write(self.pvs().create(&PostParams::default(), &csi)).await?;
                    }
                }
                self.ensure_claim_bound(&original).await?;
            }
            Step::VerifyAfter => {
                let Some(after) = self.checksum(name, "after").await? else { return Ok(()) };
                match &journal.checksum {
                    Some(before) if *before != after => bail!(
                        "checksum after ({after}) differs from before ({before}): workload NOT restored; see --rollback"
                    ),
                    Some(_) => self.say(format!("{name}: checksum {after} identical before and after")),
                    None => {
                        self.say(format!("{name}: checksum {after} (no checksum from before to compare)"))
                    }
                }
            }
            Step::RestoreWorkload => {
                for w in journal.workloads.clone() {
                    self.scale(&w, w.replicas).await?;
                }
            }
            Step::RestorePolicy => {
                let policy = journal.reclaim_policy.clone().unwrap_or_else(|| "Retain".into());
                journal.completed = Some(step);
                self.save_journal(name, journal, Some(json!({"persistentVolumeReclaimPolicy": policy})))
                    .await?;
            }
            Step::Done => {}
        }
        Ok(())
    }
    // ANCHOR_END: execute-step

    async fn scale(&self, w: &Workload, replicas: i32) -> anyhow::Result<()> {
        let patch = Patch::Merge(json!({"spec": {"replicas": replicas}}));
        match w.kind {
            WorkloadKind::Deployment => drop(
                self.write(Api::<Deployment>::namespaced(self.client.clone(), &w.namespace).patch(
                    &w.name,
                    &pp(),
                    &patch,
                ))
                .await?,
            ),
            WorkloadKind::StatefulSet => drop(
                self.write(Api::<StatefulSet>::namespaced(self.client.clone(), &w.namespace).patch(
                    &w.name,
                    &pp(),
                    &patch,
                ))
                .await?,
            ),
        }
        Ok(())
    }

    /// The PV whose claim matters for `name`: the PV itself, or between
    /// delete and create the copy in the journal.
    async fn claim_holder(&self, name: &str) -> anyhow::Result<PersistentVolume> {
        match self.pvs().get_opt(name).await? {
            Some(pv) => Ok(pv),
            None => self
                .saved(name)
                .await?
                .0
                .ok_or_else(|| anyhow!("PV {name} is gone and the journal holds no copy")),
        }
    }

    /// Until no Pod (but the tool's own) uses the claim of `pv`.
    async fn wait_unused(&self, pv: &PersistentVolume) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + self.options.timeout;
        loop {
            let usage = self.usage(pv).await?;
            if usage.pods.is_empty() {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "claim {} is still used by {} after {:?}",
                    usage.claim.unwrap_or_default(),
                    usage.pods.join(", "),
                    self.options.timeout
                );
            }
            tokio::time::sleep(self.options.poll).await;
        }
    }

    // ANCHOR: delete-pv
    /// Deletes PV `name` if `is_expected` says it is the one to delete. The
    /// reclaim policy must be Retain (the data stays in the backend), and no
    /// Pod may use its claim: checked here, right before the delete, whatever
    /// the journal says.
    async fn delete_pv(&self, name: &str, is_expected: fn(&PersistentVolume) -> bool) -> anyhow::Result<()> {
        let Some(pv) = self.pvs().get_opt(name).await? else { return Ok(()) };
        ensure!(is_expected(&pv), "PV {name} is not the PV this step deletes; refusing");
        let policy =
            pv.spec.as_ref().and_then(|s| s.persistent_volume_reclaim_policy.as_deref()).unwrap_or("Delete");
        ensure!(
            policy == "Retain",
            "PV {name} has reclaim policy {policy}; refusing to delete it (the data would go)"
        );
        let usage = self.usage(&pv).await?;
        ensure!(
            usage.pods.is_empty(),
            "claim {} is in use by {}: refusing to delete PV {name}",
            usage.claim.unwrap_or_default(),
            usage.pods.join(", ")
        );
        if pv.metadata.deletion_timestamp.is_none() {
            self.write(self.pvs().delete(name, &DeleteParams::default())).await?;
        }
        // kubernetes.io/pv-protection holds a Bound PV until its claim is
        // deleted, which we don't want. No Pod uses the claim, so we lift
        // that finalizer ourselves. Any other (external-attacher's while a
        // node still has the volume, a provisioner's) belongs to a
        // controller that knows when to let go: wait for it.
        let deadline = tokio::time::Instant::now() + self.options.timeout;
        let mut lifted = false;
        while let Some(pv) = self.pvs().get_opt(name).await? {
            let finalizers = pv.metadata.finalizers.clone().unwrap_or_default();
            if !lifted && finalizers.iter().any(|f| f == PV_PROTECTION) {
                let rest: Vec<&String> = finalizers.iter().filter(|f| *f != PV_PROTECTION).collect();
                // resourceVersion: fail rather than overwrite a controller's change.
                let patch = json!({"metadata": {"finalizers": rest, "resourceVersion": pv.metadata.resource_version}});
                match self.write(self.pvs().patch(name, &pp(), &Patch::Merge(patch))).await {
                    Err(e) if is_conflict(&e) => continue, // read it again
                    other => drop(other?),
                }
                lifted = true;
                continue; // gone now, unless another finalizer holds it
            }
            ensure!(
                tokio::time::Instant::now() < deadline,
                "PV {name} is still there after {:?}, held by finalizer(s) {}",
                self.options.timeout,
                finalizers.join(", ")
            );
            tokio::time::sleep(self.options.poll).await;
        }
        Ok(())
    }
    // ANCHOR_END: delete-pv

    // ANCHOR: claim-rebind
    /// The claim keeps `spec.volumeName`, so the PV controller binds it to
    /// the new PV (same name, same claimRef UID) by itself, even after it
    /// marked the claim Lost while the PV was missing: its periodic resync
    /// finds the PV back and binds again. Only a claim that is gone, or that
    /// stays Lost until the timeout, is recreated, bound by volumeName. A
    /// different claim under the same name is never touched.
    async fn ensure_claim_bound(&mut self, original: &PersistentVolume) -> anyhow::Result<()> {
        let Some((ns, claim)) = plan::claim_of(original) else { return Ok(()) };
        let pv_name = original.metadata.name.clone().unwrap_or_default();
        let mut want_uid =
            original.spec.as_ref().and_then(|s| s.claim_ref.as_ref()).and_then(|c| c.uid.clone());
        let api = Api::<PersistentVolumeClaim>::namespaced(self.client.clone(), &ns);
        let deadline = tokio::time::Instant::now() + self.options.timeout;
        loop {
            let Some(pvc) = api.get_opt(&claim).await? else {
                return self.recreate_claim(&api, None, &claim, &pv_name).await;
            };
            let phase = pvc.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
            let bound_to_us = pvc.spec.as_ref().and_then(|s| s.volume_name.as_deref()) == Some(&pv_name);
            if want_uid.is_some() && pvc.metadata.uid != want_uid {
                // Ours only if a recreate of ours was interrupted before the
                // PV pointed at it: then finish that.
                ensure!(
                    bound_to_us && pvc.metadata.deletion_timestamp.is_none(),
                    "claim {ns}/{claim} is not the claim PV {pv_name} was bound to (another UID, \
                     volumeName {:?}); refusing to touch it. Move it away and run again",
                    pvc.spec.as_ref().and_then(|s| s.volume_name.clone()).unwrap_or_default()
                );
                self.point_pv_at(&pv_name, pvc.metadata.uid.as_deref()).await?;
                // Now it is the claim to wait for (it may be Lost meanwhile).
                want_uid = pvc.metadata.uid.clone();
                continue;
            }
            if phase == "Bound" || (phase == "Pending" && bound_to_us && want_uid.is_none()) {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                self.say(format!(
                    "{pv_name}: claim {ns}/{claim} is still {phase} after {:?}: recreating it bound to {pv_name}",
                    self.options.timeout
                ));
                return self.recreate_claim(&api, Some(pvc), &claim, &pv_name).await;
            }
            tokio::time::sleep(self.options.poll).await;
        }
    }

    // ANCHOR_END: claim-rebind

    /// Deletes `old` (if any), waits until it is gone, and creates the claim
    /// again from `old` or from the copy the journal keeps, pre-bound to
    /// `pv`. The PV has Retain at this point, so deleting its claim is safe.
    async fn recreate_claim(
        &self,
        api: &Api<PersistentVolumeClaim>,
        old: Option<PersistentVolumeClaim>,
        claim: &str,
        pv: &str,
    ) -> anyhow::Result<()> {
        let template = match old {
            Some(old) => {
                if old.metadata.deletion_timestamp.is_none() {
                    self.write(api.delete(claim, &DeleteParams::default())).await?;
                }
                old
            }
            None => self.saved_claim(pv).await?.ok_or_else(|| {
                anyhow!("claim {claim} is gone and the journal holds no copy; recreate it with spec.volumeName: {pv}")
            })?,
        };
        // kubernetes.io/pvc-protection keeps a deleted claim until no Pod uses it.
        let deadline = tokio::time::Instant::now() + self.options.timeout;
        while api.get_opt(claim).await?.is_some() {
            ensure!(
                tokio::time::Instant::now() < deadline,
                "claim {claim} is still terminating after {:?}",
                self.options.timeout
            );
            tokio::time::sleep(self.options.poll).await;
        }
        let mut fresh =
            PersistentVolumeClaim { metadata: Default::default(), spec: template.spec, status: None };
        fresh.metadata.name = Some(claim.to_owned());
        fresh.metadata.labels = template.metadata.labels;
        fresh.spec.get_or_insert_with(Default::default).volume_name = Some(pv.to_owned());
        let created = self.write(api.create(&PostParams::default(), &fresh)).await?;
        self.point_pv_at(pv, created.metadata.uid.as_deref()).await
    }

    /// Sets the UID in the PV's claimRef, so the PV controller binds the
    /// (recreated) claim to it.
    async fn point_pv_at(&self, pv: &str, claim_uid: Option<&str>) -> anyhow::Result<()> {
        let patch = json!({"spec": {"claimRef": {"uid": claim_uid, "resourceVersion": null}}});
        self.write(self.pvs().patch(pv, &pp(), &Patch::Merge(patch))).await?;
        Ok(())
    }

    // ANCHOR: checksum-pod
    /// sha256 over every file of the claim (names and contents), computed by
    /// a Pod that mounts the claim read-only.
    /// `None` when the PV has no claim to mount it through.
    async fn checksum(&mut self, name: &str, when: &str) -> anyhow::Result<Option<String>> {
        let pv = self.pvs().get(name).await?;
        let Some((ns, claim)) = plan::claim_of(&pv) else {
            self.say(format!("{name}: no claim to read the data through: checksum {when} skipped"));
            return Ok(None);
        };
        let pod_name = format!("csi-migrate-verify-{when}-{name}");
        let pods = Api::<Pod>::namespaced(self.client.clone(), &ns);
        // A leftover of an interrupted run.
        self.delete_pod(&pods, &pod_name).await?;
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": pod_name, "labels": {MANAGED_BY.0: MANAGED_BY.1}},
            "spec": {
                "restartPolicy": "Never",
                "containers": [{
                    "name": "sha256",
                    "image": self.options.verify_image,
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["sh", "-c", "cd /data && find . -path ./lost+found -prune -o -type f -print0 | sort -z | xargs -0r sha256sum | sha256sum | cut -d' ' -f1"],
                    "volumeMounts": [{"name": "data", "mountPath": "/data", "readOnly": true}]
                }],
                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim, "readOnly": true}}]
            }
        }))?;
        self.say(format!("{name}: reading every file through pod {ns}/{pod_name}"));
        self.write(pods.create(&PostParams::default(), &pod)).await?;
        let deadline = tokio::time::Instant::now() + self.options.timeout;
        loop {
            let phase = pods.get(&pod_name).await?.status.and_then(|s| s.phase).unwrap_or_default();
            match phase.as_str() {
                "Succeeded" => break,
                "Failed" => bail!("checksum pod {ns}/{pod_name} failed: kubectl -n {ns} logs {pod_name}"),
                _ if tokio::time::Instant::now() > deadline => {
                    bail!("checksum pod {ns}/{pod_name} did not finish in {:?}", self.options.timeout)
                }
                _ => tokio::time::sleep(self.options.poll).await,
            }
        }
        let sum = pods.logs(&pod_name, &LogParams::default()).await?.trim().to_owned();
        // Gone, not just deleted: a Pod that still has the volume mounted
        // must not be there when the next step deletes its PV.
        self.delete_pod(&pods, &pod_name).await?;
        ensure!(sum.len() == 64, "checksum pod printed {sum:?}, not a sha256");
        self.say(format!("{name}: checksum {when}: {sum}"));
        Ok(Some(sum))
    }
    // ANCHOR_END: checksum-pod

    /// Deletes Pod `name` if it exists and waits until it is gone.
    async fn delete_pod(&self, pods: &Api<Pod>, name: &str) -> anyhow::Result<()> {
        if pods.get_opt(name).await?.is_none() {
            return Ok(());
        }
        self.write(pods.delete(name, &DeleteParams::default())).await?;
        let deadline = tokio::time::Instant::now() + self.options.timeout;
        while pods.get_opt(name).await?.is_some() {
            ensure!(
                tokio::time::Instant::now() < deadline,
                "pod {name} is still terminating after {:?}",
                self.options.timeout
            );
            tokio::time::sleep(self.options.poll).await;
        }
        Ok(())
    }

    // ANCHOR: rollback
    /// Undoes the migration of PV `name` from wherever it stopped (a clean
    /// stop, a crash in the middle of a step, a finished run): the Flex PV
    /// back (from the journal's copy, if it was deleted), its claim bound to
    /// it, the workload at its recorded replicas, the old reclaim policy,
    /// and no journal left on the PV or in the ConfigMap, so that the next
    /// run starts from scratch. Safe to run again if it is interrupted itself.
    pub async fn rollback(&mut self, name: &str) -> anyhow::Result<()> {
        self.tracker.lock().expect("tracker").enter(None);
        let current = self.pvs().get_opt(name).await?;
        let (original, saved_journal) = self.saved(name).await?;
        let Some(mut journal) = Journal::newest(current.as_ref().and_then(plan::journal_of), saved_journal)
        else {
            self.say(format!("{name}: no migration journal: nothing to roll back"));
            return Ok(());
        };
        // The Flex PV as it was, untouched: then nothing was deleted yet.
        let intact =
            current.as_ref().is_some_and(|pv| plan::is_flex(pv) && pv.metadata.deletion_timestamp.is_none());
        let rebuild = match (&original, intact) {
            (_, true) => None,
            (Some(original), false) => Some(original.clone()),
            (None, false) => bail!(
                "PV {name} is not the Flex PV any more and the journal ConfigMap holds no copy of it: \
                 nothing to roll back to (kubectl get pv {name} -o yaml)"
            ),
        };
        // From scale-down on (it may have been cut short), the workload is not
        // as it was; a rebuild stops it too.
        let scaled = journal.completed >= Some(Step::RetainPolicy) || rebuild.is_some();
        if self.options.dry_run {
            self.say(format!(
                "{name}: rollback plan (dry run, journal at {}): {}{}restore the reclaim policy, clear the journal",
                journal.completed.map_or("nothing", Step::name),
                if rebuild.is_some() { "scale down, delete the CSI PV, create the Flex PV again, " } else { "" },
                if scaled { format!("scale {} workload(s) back, ", journal.workloads.len()) } else { String::new() },
            ));
            return Ok(());
        }
        // From here on a forward run refuses this PV until we are done.
        journal.rolling_back = true;
        self.save_journal(name, &mut journal, None).await?;
        if let Some(holder) = current.as_ref().or(original.as_ref()) {
            self.delete_checksum_pods(holder, name).await?;
        }
        if let Some(original) = &rebuild {
            for w in &journal.workloads {
                self.scale(w, 0).await?;
            }
            self.wait_unused(current.as_ref().unwrap_or(original)).await?;
            if let Some(pv) = self.pvs().get_opt(name).await? {
                let policy = pv.spec.as_ref().and_then(|s| s.persistent_volume_reclaim_policy.as_deref());
                if policy != Some("Retain") {
                    // A CSI PV after restore-policy: Retain before the delete.
                    let patch = json!({"spec": {"persistentVolumeReclaimPolicy": "Retain"}});
                    self.write(self.pvs().patch(name, &pp(), &Patch::Merge(patch))).await?;
                }
                // The CSI PV, or a Flex PV whose deletion a crash interrupted.
                self.delete_pv(name, |pv| plan::is_csi(pv) || plan::is_flex(pv)).await?;
            }
            self.write(self.pvs().create(&PostParams::default(), &flex_from(original))).await?;
        }
        // Also when this is a rerun, after a rollback that rebuilt the PV
        // but was cut short before its claim was bound again.
        if let Some(original) = &original {
            self.ensure_claim_bound(original).await?;
        }
        if scaled {
            for w in &journal.workloads {
                self.scale(w, w.replicas).await?;
            }
        }
        // One patch: the policy back and the journal gone, so a crash leaves
        // either both or neither.
        let mut patch = json!({"metadata": {"annotations": {plan::JOURNAL_ANNOTATION: null, plan::STEP_ANNOTATION: null}}});
        if let Some(policy) = &journal.reclaim_policy {
            patch["spec"] = json!({"persistentVolumeReclaimPolicy": policy});
        }
        self.write(self.pvs().patch(name, &pp(), &Patch::Merge(patch))).await?;
        self.clear_claim_journal(current.as_ref().or(original.as_ref())).await?;
        // Last: the entries that told a rerun of the rollback where it was.
        if self.configmaps().get_opt(plan::JOURNAL_CONFIGMAP).await?.is_some() {
            let patch = json!({"data": {
                format!("{name}.pv"): null,
                format!("{name}.journal"): null,
                format!("{name}.claim"): null,
            }});
            self.write(self.configmaps().patch(plan::JOURNAL_CONFIGMAP, &pp(), &Patch::Merge(patch))).await?;
        }
        self.say(format!("{name}: rolled back to {}", crate::flex::DRIVER_NAME));
        Ok(())
    }
    // ANCHOR_END: rollback

    /// The tool's checksum Pods for PV `name`, left by an interrupted run.
    async fn delete_checksum_pods(&self, pv: &PersistentVolume, name: &str) -> anyhow::Result<()> {
        let Some((ns, _)) = plan::claim_of(pv) else { return Ok(()) };
        let pods = Api::<Pod>::namespaced(self.client.clone(), &ns);
        for when in ["before", "after"] {
            self.delete_pod(&pods, &format!("csi-migrate-verify-{when}-{name}")).await?;
        }
        Ok(())
    }

    /// The tool keeps no journal on the claim (its copy is in the ConfigMap),
    /// but a claim is part of the migration's state: make sure none is left.
    async fn clear_claim_journal(&self, pv: Option<&PersistentVolume>) -> anyhow::Result<()> {
        let Some((ns, claim)) = pv.and_then(plan::claim_of) else { return Ok(()) };
        let api = Api::<PersistentVolumeClaim>::namespaced(self.client.clone(), &ns);
        let Some(pvc) = api.get_opt(&claim).await? else { return Ok(()) };
        let ours: BTreeMap<String, serde_json::Value> = pvc
            .metadata
            .annotations
            .unwrap_or_default()
            .into_keys()
            .filter(|k| k.starts_with(JOURNAL_PREFIX))
            .map(|k| (k, serde_json::Value::Null))
            .collect();
        if !ours.is_empty() {
            let patch = json!({"metadata": {"annotations": ours}});
            self.write(api.patch(&claim, &pp(), &Patch::Merge(patch))).await?;
        }
        Ok(())
    }
}
