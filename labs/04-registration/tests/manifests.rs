//! Cross-checks of the Kubernetes manifests under `labs/*/deploy`.
//!
//! A schema validator (`validate-manifests.sh`) proves each object is
//! well-formed; these tests prove the objects fit *together*: the socket the
//! driver serves is the one the sidecars dial, kubelet is told the host path
//! of that socket, the service accounts exist and are bound, the classes name
//! our driver. Each kustomization is rendered with `kubectl kustomize`; the
//! tests print SKIP and pass when kubectl is not installed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_yaml::Value;

const IMAGE: &str = "csi-workshop:0.1.0";
const DRIVER: &str = "csi.workshop.dev";
const PLUGINS_REGISTRY: &str = "/var/lib/kubelet/plugins_registry";
const KUBELET_DIR: &str = "/var/lib/kubelet";
/// The provisioner of static classes, whose PVs an administrator creates.
const NO_PROVISIONER: &str = "kubernetes.io/no-provisioner";

// ------------------------------------------------------------------ rendering

/// One kustomization, rendered.
struct Render {
    /// Relative to the repository root, e.g. `labs/04-registration/deploy/base`.
    dir: String,
    objects: Vec<Value>,
    /// Something you `kubectl apply -k`; a *part* (a kustomization that
    /// another one in its parent directory includes) may lack what it needs.
    deployable: bool,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every directory under `labs/*/deploy` with a kustomization.yaml, except
/// the `checks/` folders (plain workloads the cluster checks apply).
fn kustomization_dirs() -> Vec<PathBuf> {
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
        if dir.join("kustomization.yaml").is_file() {
            found.push(dir.to_owned());
        }
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() && entry.file_name() != "checks" {
                walk(&path, found);
            }
        }
    }
    let mut found = Vec::new();
    for lab in std::fs::read_dir(repo_root().join("labs")).expect("labs/ exists").flatten() {
        let deploy = lab.path().join("deploy");
        if deploy.is_dir() {
            walk(&deploy, &mut found);
        }
    }
    found.sort();
    found
}

/// The documents of a multi-document YAML stream (split at `---` lines, as
/// kubectl kustomize and our files write them).
fn parse_documents(yaml: &str) -> Vec<Value> {
    let mut documents = vec![String::new()];
    for line in yaml.lines() {
        if line.trim_end() == "---" {
            documents.push(String::new());
        } else {
            let current = documents.last_mut().expect("at least one document");
            current.push_str(line);
            current.push('\n');
        }
    }
    documents
        .iter()
        .map(|doc| {
            serde_yaml::from_str::<Value>(doc).unwrap_or_else(|e| panic!("invalid YAML ({e}):\n{doc}"))
        })
        .filter(|v| !v.is_null())
        .collect()
}

/// All renders, once per test binary; `None` when kubectl is missing.
fn renders() -> Option<&'static [Render]> {
    static RENDERS: OnceLock<Option<Vec<Render>>> = OnceLock::new();
    RENDERS
        .get_or_init(|| {
            if Command::new("kubectl").arg("version").arg("--client").output().is_err() {
                return None;
            }
            let root = repo_root();
            let renders = kustomization_dirs()
                .into_iter()
                .map(|dir| {
                    let out =
                        Command::new("kubectl").arg("kustomize").arg(&dir).output().expect("run kubectl");
                    let rel = dir.strip_prefix(&root).unwrap_or(&dir).display().to_string();
                    assert!(
                        out.status.success(),
                        "kubectl kustomize {rel} failed:\n{}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                    let deployable = !dir.parent().is_some_and(|p| p.join("kustomization.yaml").is_file());
                    Render {
                        dir: rel,
                        objects: parse_documents(&String::from_utf8_lossy(&out.stdout)),
                        deployable,
                    }
                })
                .collect();
            Some(renders)
        })
        .as_deref()
}

/// Runs `f` over the renders, or says SKIP when kubectl is missing.
fn with_renders(test: &str, f: impl FnOnce(&[Render])) {
    match renders() {
        Some(renders) => f(renders),
        None => println!("SKIP {test}: kubectl is not installed, the kustomizations cannot be rendered"),
    }
}

/// Fails with every problem found, not just the first.
fn assert_no_problems(what: &str, problems: Vec<String>) {
    assert!(problems.is_empty(), "{what}:\n  - {}", problems.join("\n  - "));
}

// ------------------------------------------------------------------ reading objects

fn kind(v: &Value) -> &str {
    v["kind"].as_str().unwrap_or_default()
}

fn name(v: &Value) -> &str {
    v["metadata"]["name"].as_str().unwrap_or_default()
}

fn namespace(v: &Value) -> &str {
    v["metadata"]["namespace"].as_str().unwrap_or("default")
}

fn seq(v: &Value) -> &[Value] {
    v.as_sequence().map(Vec::as_slice).unwrap_or_default()
}

fn strings(v: &Value) -> Vec<String> {
    seq(v).iter().filter_map(|s| s.as_str().map(str::to_owned)).collect()
}

/// A Deployment's, DaemonSet's or StatefulSet's pod template spec, or a Pod's spec.
fn pod_spec(object: &Value) -> Option<&Value> {
    match kind(object) {
        "Deployment" | "DaemonSet" | "StatefulSet" | "Job" => Some(&object["spec"]["template"]["spec"]),
        "Pod" => Some(&object["spec"]),
        _ => None,
    }
}

struct Mount {
    volume: String,
    path: String,
    propagation: Option<String>,
}

struct Container {
    name: String,
    image: String,
    pull_policy: Option<String>,
    args: Vec<String>,
    mounts: Vec<Mount>,
    privileged: bool,
}

impl Container {
    fn from(v: &Value) -> Self {
        let mut args = strings(&v["command"]);
        args.extend(strings(&v["args"]));
        Self {
            name: v["name"].as_str().unwrap_or_default().to_owned(),
            image: v["image"].as_str().unwrap_or_default().to_owned(),
            pull_policy: v["imagePullPolicy"].as_str().map(str::to_owned),
            args,
            mounts: seq(&v["volumeMounts"])
                .iter()
                .map(|m| Mount {
                    volume: m["name"].as_str().unwrap_or_default().to_owned(),
                    path: m["mountPath"].as_str().unwrap_or_default().trim_end_matches('/').to_owned(),
                    propagation: m["mountPropagation"].as_str().map(str::to_owned),
                })
                .collect(),
            privileged: v["securityContext"]["privileged"].as_bool() == Some(true),
        }
    }

    /// The value of `--flag=value` or `--flag value`.
    fn flag(&self, flag: &str) -> Option<&str> {
        let with_eq = format!("{flag}=");
        self.args.iter().enumerate().find_map(|(i, arg)| {
            if let Some(value) = arg.strip_prefix(&with_eq) {
                Some(value)
            } else if arg == flag {
                self.args.get(i + 1).map(String::as_str)
            } else {
                None
            }
        })
    }

    fn is_ours(&self) -> bool {
        image_repository(&self.image) == "csi-workshop"
    }

    /// The driver serves CSI (`--endpoint`); sidecars dial it (`--csi-address`).
    fn endpoint_socket(&self) -> Option<&str> {
        self.flag("--endpoint").map(|e| e.strip_prefix("unix://").unwrap_or(e))
    }

    /// The mount whose path is `dir` exactly.
    fn mount_at(&self, dir: &str) -> Option<&Mount> {
        self.mounts.iter().find(|m| m.path == dir)
    }
}

/// `registry.k8s.io/sig-storage/csi-attacher:v4.13.0` -> `registry.k8s.io/sig-storage/csi-attacher`.
fn image_repository(image: &str) -> &str {
    let without_digest = image.split('@').next().unwrap_or(image);
    match without_digest.rfind(':') {
        Some(colon) if !without_digest[colon..].contains('/') => &without_digest[..colon],
        _ => without_digest,
    }
}

/// The tag of an image reference, if it has one.
fn image_tag(image: &str) -> Option<&str> {
    let without_digest = image.split('@').next().unwrap_or(image);
    let repo = image_repository(image);
    without_digest.strip_prefix(repo).and_then(|rest| rest.strip_prefix(':'))
}

/// One pod template of one render, with what the checks need.
struct PodTemplate<'a> {
    render: &'a Render,
    owner: String,
    spec: &'a Value,
    containers: Vec<Container>,
}

impl PodTemplate<'_> {
    fn volume(&self, name: &str) -> Option<&Value> {
        seq(&self.spec["volumes"]).iter().find(|v| v["name"].as_str() == Some(name))
    }

    fn host_path(&self, volume: &str) -> Option<&str> {
        self.volume(volume)?["hostPath"]["path"].as_str().map(|p| p.trim_end_matches('/'))
    }

    fn driver(&self) -> Option<&Container> {
        self.containers.iter().find(|c| c.endpoint_socket().is_some())
    }

    fn registrar(&self) -> Option<&Container> {
        self.containers.iter().find(|c| c.flag("--kubelet-registration-path").is_some())
    }

    fn what(&self) -> String {
        format!("{}: {}", self.render.dir, self.owner)
    }
}

fn pod_templates(renders: &[Render]) -> Vec<PodTemplate<'_>> {
    let mut templates = Vec::new();
    for render in renders {
        for object in &render.objects {
            let Some(spec) = pod_spec(object) else { continue };
            let containers = ["initContainers", "containers"]
                .iter()
                .flat_map(|field| seq(&spec[*field]).iter().map(Container::from))
                .collect();
            templates.push(PodTemplate {
                render,
                owner: format!("{} {}", kind(object), name(object)),
                spec,
                containers,
            });
        }
    }
    templates
}

fn dir_and_file(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

// ------------------------------------------------------------------ the tests

#[test]
fn every_kustomization_renders_to_some_objects() {
    with_renders("every_kustomization_renders_to_some_objects", |renders| {
        let dirs: BTreeSet<&str> = renders.iter().map(|r| r.dir.as_str()).collect();
        for expected in [
            "labs/01-identity/deploy",
            "labs/02-controller/deploy",
            "labs/03-node/deploy",
            "labs/04-registration/deploy/base",
            "labs/04-registration/deploy/overlays/official-registrar",
            "labs/04-registration/deploy/overlays/rust-registrar",
        ] {
            assert!(dirs.contains(expected), "no kustomization at {expected}; found {dirs:?}");
        }
        let empty: Vec<String> =
            renders.iter().filter(|r| r.objects.is_empty()).map(|r| r.dir.clone()).collect();
        assert_no_problems("kustomizations that render nothing", empty);
    });
}

#[test]
fn our_containers_use_the_workshop_image() {
    with_renders("our_containers_use_the_workshop_image", |renders| {
        let mut problems = Vec::new();
        let mut ours = 0;
        for t in pod_templates(renders) {
            for c in t.containers.iter().filter(|c| c.is_ours()) {
                ours += 1;
                if c.image != IMAGE {
                    problems.push(format!(
                        "{}: container {} uses {}, not {IMAGE}",
                        t.what(),
                        c.name,
                        c.image
                    ));
                }
            }
        }
        assert!(ours > 0, "no container uses {IMAGE} at all");
        assert_no_problems("containers of ours", problems);
    });
}

#[test]
fn every_container_says_image_pull_policy_if_not_present() {
    with_renders("every_container_says_image_pull_policy_if_not_present", |renders| {
        // Ours is loaded into the nodes (kind load), never pulled: Always (or
        // the default for :latest) would try a registry. The sidecars'
        // tags are pinned, so a node that has the image may reuse it; the
        // policy is spelled out so that nobody has to know the defaulting
        // rule to read the manifest.
        let mut findings = Vec::new();
        let mut containers = 0;
        for t in pod_templates(renders) {
            for c in &t.containers {
                containers += 1;
                if c.pull_policy.as_deref() != Some("IfNotPresent") {
                    findings.push(format!(
                        "{}: container {} ({}) has imagePullPolicy {:?}, want IfNotPresent",
                        t.what(),
                        c.name,
                        c.image,
                        c.pull_policy
                    ));
                }
            }
        }
        assert!(containers > 0, "no containers at all");
        assert_no_problems("image pull policies", findings);
    });
}

#[test]
fn no_sidecar_is_given_a_deprecated_flag() {
    with_renders("no_sidecar_is_given_a_deprecated_flag", |renders| {
        // (sidecar image, flag prefix, why)
        let deprecated = [
            ("livenessprobe", "--health-port", "deprecated: use --http-endpoint=:PORT"),
            ("csi-node-driver-registrar", "--health-port", "deprecated: use --http-endpoint=:PORT"),
            (
                "csi-provisioner",
                "--feature-gates=Topology=",
                "Topology is GA and always on; the gate is slated for removal",
            ),
        ];
        let mut findings = Vec::new();
        for t in pod_templates(renders) {
            for c in t.containers.iter().filter(|c| !c.is_ours()) {
                let repo = image_repository(&c.image);
                for (image, flag, why) in deprecated {
                    if repo.ends_with(&format!("/{image}")) && c.args.iter().any(|a| a.starts_with(flag)) {
                        findings.push(format!("{}: {} passes {flag}…: {why}", t.what(), c.name));
                    }
                }
            }
        }
        assert_no_problems("deprecated sidecar flags", findings);
    });
}

#[test]
fn each_sidecar_has_one_version_across_all_manifests() {
    with_renders("each_sidecar_has_one_version_across_all_manifests", |renders| {
        // The book and the manifests' comments name one version per
        // sidecar; two in the manifests means one of them was forgotten.
        let mut tags: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
        for t in pod_templates(renders) {
            for c in t.containers.iter().filter(|c| !c.is_ours()) {
                if let Some(tag) = image_tag(&c.image) {
                    tags.entry(image_repository(&c.image).to_owned())
                        .or_default()
                        .entry(tag.to_owned())
                        .or_default()
                        .push(t.what());
                }
            }
        }
        let problems: Vec<String> = tags
            .iter()
            .filter(|(_, by_tag)| by_tag.len() > 1)
            .map(|(repo, by_tag)| format!("{repo} is used with several tags: {by_tag:?}"))
            .collect();
        assert_no_problems("sidecar versions", problems);
    });
}

#[test]
fn every_sidecar_image_is_pinned_to_a_release_tag() {
    with_renders("every_sidecar_image_is_pinned_to_a_release_tag", |renders| {
        let mut problems = Vec::new();
        for t in pod_templates(renders) {
            for c in t.containers.iter().filter(|c| !c.is_ours()) {
                match image_tag(&c.image) {
                    None if c.image.contains("@sha256:") => {}
                    None => problems.push(format!("{}: {} uses {} without a tag", t.what(), c.name, c.image)),
                    Some("latest") => {
                        problems.push(format!("{}: {} uses {} (:latest moves)", t.what(), c.name, c.image))
                    }
                    Some(tag) if c.image.starts_with("registry.k8s.io/sig-storage/") => {
                        // The kubernetes-csi sidecars are released as vMAJOR.MINOR.PATCH.
                        let numbers: Vec<&str> = tag.trim_start_matches('v').split('.').collect();
                        let release = tag.starts_with('v')
                            && numbers.len() == 3
                            && numbers.iter().all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
                        if !release {
                            problems.push(format!(
                                "{}: {} tag {tag} is not a vX.Y.Z release",
                                t.what(),
                                c.name
                            ));
                        }
                    }
                    Some(_) => {}
                }
            }
        }
        assert_no_problems("sidecar images", problems);
    });
}

#[test]
fn the_driver_serves_the_socket_every_sidecar_dials_on_a_shared_volume() {
    with_renders("the_driver_serves_the_socket_every_sidecar_dials_on_a_shared_volume", |renders| {
        let mut problems = Vec::new();
        for t in pod_templates(renders) {
            let sidecars: Vec<&Container> =
                t.containers.iter().filter(|c| c.flag("--csi-address").is_some()).collect();
            let Some(driver) = t.driver() else {
                if !sidecars.is_empty() {
                    problems.push(format!(
                        "{}: sidecars dial --csi-address but no container serves --endpoint",
                        t.what()
                    ));
                }
                continue;
            };
            let socket = driver.endpoint_socket().unwrap_or_default();
            if !driver.flag("--endpoint").unwrap_or_default().starts_with("unix:///") {
                problems.push(format!("{}: --endpoint {socket} is not unix:///<absolute path>", t.what()));
                continue;
            }
            let (socket_dir, _) = dir_and_file(socket);
            let Some(driver_mount) = driver.mount_at(socket_dir) else {
                problems.push(format!(
                    "{}: the driver serves {socket}, but nothing is mounted at {socket_dir}",
                    t.what()
                ));
                continue;
            };
            for sidecar in sidecars {
                let address = sidecar.flag("--csi-address").unwrap_or_default();
                let address = address.strip_prefix("unix://").unwrap_or(address);
                if address != socket {
                    problems.push(format!(
                        "{}: {} dials {address}, the driver serves {socket}",
                        t.what(),
                        sidecar.name
                    ));
                }
                match sidecar.mount_at(socket_dir) {
                    Some(m) if m.volume == driver_mount.volume => {}
                    Some(m) => problems.push(format!(
                        "{}: {} mounts volume {} at {socket_dir}, the driver mounts {} there",
                        t.what(),
                        sidecar.name,
                        m.volume,
                        driver_mount.volume
                    )),
                    None => problems.push(format!(
                        "{}: {} does not mount the socket volume {} at {socket_dir}",
                        t.what(),
                        sidecar.name,
                        driver_mount.volume
                    )),
                }
            }
        }
        assert_no_problems("driver and sidecar sockets", problems);
    });
}

#[test]
fn the_registrar_gives_kubelet_the_host_path_of_the_driver_socket() {
    with_renders("the_registrar_gives_kubelet_the_host_path_of_the_driver_socket", |renders| {
        let mut problems = Vec::new();
        let mut registrars = 0;
        for t in pod_templates(renders) {
            let Some(registrar) = t.registrar() else { continue };
            registrars += 1;
            let told = registrar.flag("--kubelet-registration-path").unwrap_or_default();
            let Some(driver) = t.driver() else {
                problems.push(format!("{}: a registrar without a driver container", t.what()));
                continue;
            };
            let (socket_dir, socket_file) = dir_and_file(driver.endpoint_socket().unwrap_or_default());
            let host_dir = driver.mount_at(socket_dir).and_then(|m| t.host_path(&m.volume));
            match host_dir {
                Some(host_dir) => {
                    let host_socket = format!("{host_dir}/{socket_file}");
                    if told != host_socket {
                        problems.push(format!(
                            "{}: --kubelet-registration-path={told}, but the driver's socket is {host_socket} on the host",
                            t.what()
                        ));
                    }
                }
                None => problems.push(format!(
                    "{}: the driver's socket directory {socket_dir} is not a hostPath volume, so kubelet cannot reach it",
                    t.what()
                )),
            }
        }
        assert!(registrars > 0, "no pod template runs a registrar (--kubelet-registration-path)");
        assert_no_problems("registration paths", problems);
    });
}

#[test]
fn the_registrar_serves_its_socket_in_kubelets_plugins_registry() {
    with_renders("the_registrar_serves_its_socket_in_kubelets_plugins_registry", |renders| {
        let mut problems = Vec::new();
        for t in pod_templates(renders) {
            let Some(registrar) = t.registrar() else { continue };
            // node-driver-registrar's default, which our csi-registrar shares.
            let dir =
                registrar.flag("--plugin-registration-path").unwrap_or("/registration").trim_end_matches('/');
            match registrar.mount_at(dir).map(|m| (m, t.host_path(&m.volume))) {
                Some((_, Some(PLUGINS_REGISTRY))) => {}
                Some((m, host)) => problems.push(format!(
                    "{}: {} serves its socket in {dir}, volume {} is {host:?} on the host, not {PLUGINS_REGISTRY}",
                    t.what(),
                    registrar.name,
                    m.volume
                )),
                None => problems.push(format!("{}: {} mounts nothing at {dir}", t.what(), registrar.name)),
            }
        }
        assert_no_problems("registration directories", problems);
    });
}

#[test]
fn the_node_driver_is_privileged_and_shares_kubelets_mounts_bidirectionally() {
    with_renders("the_node_driver_is_privileged_and_shares_kubelets_mounts_bidirectionally", |renders| {
        // Drivers that serve block volumes (a class of theirs says type:
        // block): those attach loop devices, so they need the host's /dev.
        let block_drivers: BTreeSet<&str> = renders
            .iter()
            .flat_map(|r| &r.objects)
            .filter(|o| kind(o) == "StorageClass" && o["parameters"]["type"].as_str() == Some("block"))
            .filter_map(|c| c["provisioner"].as_str())
            .collect();
        let mut problems = Vec::new();
        let mut node_drivers = 0;
        for t in pod_templates(renders) {
            let Some(driver) = t.driver() else { continue };
            if !matches!(driver.flag("--mode"), Some("node" | "all")) || !t.owner.starts_with("DaemonSet") {
                continue;
            }
            let serves_block = block_drivers.contains(driver.flag("--drivername").unwrap_or(DRIVER));
            node_drivers += 1;
            if !driver.privileged {
                problems
                    .push(format!("{}: the node driver is not privileged (loop devices, mounts)", t.what()));
            }
            match driver.mount_at(KUBELET_DIR) {
                Some(m) if m.propagation.as_deref() == Some("Bidirectional") && t.host_path(&m.volume) == Some(KUBELET_DIR) => {}
                Some(m) => problems.push(format!(
                    "{}: {KUBELET_DIR} is mounted from {:?} with propagation {:?}; want the host's {KUBELET_DIR}, Bidirectional",
                    t.what(),
                    t.host_path(&m.volume),
                    m.propagation
                )),
                None => problems.push(format!("{}: the node driver does not mount {KUBELET_DIR}", t.what())),
            }
            if serves_block && driver.mount_at("/dev").and_then(|m| t.host_path(&m.volume)) != Some("/dev") {
                problems
                    .push(format!("{}: the node driver does not mount the host's /dev at /dev", t.what()));
            }
        }
        assert!(node_drivers > 0, "no DaemonSet runs the driver with --mode node or all");
        assert_no_problems("node driver", problems);
    });
}

#[test]
fn every_workload_service_account_exists_and_is_bound_or_gets_no_token() {
    with_renders("every_workload_service_account_exists_and_is_bound_or_gets_no_token", |renders| {
        let mut problems = Vec::new();
        for render in renders.iter().filter(|r| r.deployable) {
            let of_kind = |k: &'static str| render.objects.iter().filter(move |o| kind(o) == k);
            let accounts: BTreeMap<(&str, &str), &Value> =
                of_kind("ServiceAccount").map(|sa| ((namespace(sa), name(sa)), sa)).collect();
            let roles: BTreeSet<(&str, &str)> = of_kind("Role")
                .map(|r| ("Role", name(r)))
                .chain(of_kind("ClusterRole").map(|r| ("ClusterRole", name(r))))
                .collect();
            let mut bound = BTreeSet::new();
            for binding in of_kind("RoleBinding").chain(of_kind("ClusterRoleBinding")) {
                let role_ref = (
                    binding["roleRef"]["kind"].as_str().unwrap_or_default(),
                    binding["roleRef"]["name"].as_str().unwrap_or_default(),
                );
                if !roles.contains(&role_ref) {
                    problems.push(format!(
                        "{}: {} {} refers to a missing {role_ref:?}",
                        render.dir,
                        kind(binding),
                        name(binding)
                    ));
                }
                for subject in
                    seq(&binding["subjects"]).iter().filter(|s| s["kind"].as_str() == Some("ServiceAccount"))
                {
                    let ns = subject["namespace"].as_str().unwrap_or(namespace(binding));
                    bound.insert((ns.to_owned(), subject["name"].as_str().unwrap_or_default().to_owned()));
                }
            }
            for workload in render
                .objects
                .iter()
                .filter(|o| matches!(kind(o), "Deployment" | "DaemonSet" | "StatefulSet"))
            {
                let spec = pod_spec(workload).expect("a workload has a pod template");
                let Some(account) = spec["serviceAccountName"].as_str() else { continue };
                let what = format!("{}: {} {}", render.dir, kind(workload), name(workload));
                let ns = namespace(workload);
                let Some(sa) = accounts.get(&(ns, account)) else {
                    problems.push(format!(
                        "{what} runs as ServiceAccount {ns}/{account}, which is not in the kustomization"
                    ));
                    continue;
                };
                // A pod that gets no token cannot call the API, so it needs no
                // role. The pod's setting wins over its account's.
                let gets_token = spec["automountServiceAccountToken"]
                    .as_bool()
                    .or(sa["automountServiceAccountToken"].as_bool())
                    .unwrap_or(true);
                if gets_token && !bound.contains(&(ns.to_owned(), account.to_owned())) {
                    problems.push(format!(
                        "{what}: ServiceAccount {ns}/{account} gets a token but no (Cluster)RoleBinding"
                    ));
                }
            }
        }
        assert_no_problems("service accounts", problems);
    });
}

#[test]
fn every_storage_class_provisions_with_our_csidriver() {
    with_renders("every_storage_class_provisions_with_our_csidriver", |renders| {
        let objects = || renders.iter().flat_map(|r| r.objects.iter().map(move |o| (r, o)));
        let drivers: BTreeSet<&str> =
            objects().filter(|(_, o)| kind(o) == "CSIDriver").map(|(_, o)| name(o)).collect();
        assert!(drivers.contains(DRIVER), "no CSIDriver {DRIVER} in any kustomization: {drivers:?}");
        // Lab 05 adds a second, file-only driver; every one is ours.
        for driver in &drivers {
            assert!(
                *driver == DRIVER || driver.ends_with(&format!(".{DRIVER}")),
                "CSIDriver {driver} is not one of the workshop's ({DRIVER} or *.{DRIVER})"
            );
        }
        let mut problems = Vec::new();
        let mut classes = 0;
        for (render, class) in objects().filter(|(_, o)| kind(o) == "StorageClass") {
            classes += 1;
            let provisioner = class["provisioner"].as_str().unwrap_or_default();
            // Static classes (lab 05's local PVs) provision nothing at all.
            if provisioner == NO_PROVISIONER {
                continue;
            }
            if !drivers.contains(provisioner) {
                problems.push(format!(
                    "{}: StorageClass {} has provisioner {provisioner:?}, which is no CSIDriver of ours ({drivers:?}) nor {NO_PROVISIONER}",
                    render.dir,
                    name(class)
                ));
                continue;
            }
            let kind_of_volume = class["parameters"]["type"].as_str();
            if !matches!(kind_of_volume, Some("block" | "file")) {
                problems.push(format!(
                    "{}: StorageClass {} has parameters.type {kind_of_volume:?}",
                    render.dir,
                    name(class)
                ));
            }
        }
        assert!(classes > 0, "no StorageClass at all");
        assert_no_problems("storage classes", problems);
    });
}

#[test]
fn no_storage_class_of_ours_is_marked_default() {
    with_renders("no_storage_class_of_ours_is_marked_default", |renders| {
        let mut problems = Vec::new();
        for render in renders {
            for class in render.objects.iter().filter(|o| kind(o) == "StorageClass") {
                for annotation in [
                    "storageclass.kubernetes.io/is-default-class",
                    "storageclass.beta.kubernetes.io/is-default-class",
                ] {
                    if class["metadata"]["annotations"][annotation].as_str() == Some("true") {
                        problems.push(format!(
                            "{}: StorageClass {} is marked default: kind's `standard` is the default, ours are named by every claim",
                            render.dir,
                            name(class)
                        ));
                    }
                }
            }
        }
        assert_no_problems("default storage classes", problems);
    });
}

#[test]
fn every_check_claim_names_one_of_our_storage_classes() {
    with_renders("every_check_claim_names_one_of_our_storage_classes", |renders| {
        let classes: BTreeSet<&str> =
            renders.iter().flat_map(|r| &r.objects).filter(|o| kind(o) == "StorageClass").map(name).collect();
        let mut problems = Vec::new();
        let mut claims = 0;
        for lab in std::fs::read_dir(repo_root().join("labs")).expect("labs/ exists").flatten() {
            let Ok(files) = std::fs::read_dir(lab.path().join("deploy/checks")) else { continue };
            for file in files.flatten().filter(|f| f.path().extension().is_some_and(|e| e == "yaml")) {
                let text = std::fs::read_to_string(file.path()).expect("read a checks/ file");
                for claim in parse_documents(&text).iter().filter(|o| kind(o) == "PersistentVolumeClaim") {
                    claims += 1;
                    // Without a class name, the default class (not ours) takes the claim.
                    match claim["spec"]["storageClassName"].as_str() {
                        Some(class) if classes.contains(class) => {}
                        other => problems.push(format!(
                            "{}: claim {} has storageClassName {other:?}; ours are {classes:?}",
                            file.path().display(),
                            name(claim)
                        )),
                    }
                }
            }
        }
        assert!(claims > 0, "no PersistentVolumeClaim in any labs/*/deploy/checks/");
        assert_no_problems("check claims", problems);
    });
}

#[test]
fn image_references_split_into_repository_and_tag() {
    assert_eq!(image_repository("csi-workshop:0.1.0"), "csi-workshop");
    assert_eq!(image_tag("csi-workshop:0.1.0"), Some("0.1.0"));
    assert_eq!(
        image_repository("registry.k8s.io/sig-storage/csi-attacher:v4.13.0"),
        "registry.k8s.io/sig-storage/csi-attacher"
    );
    assert_eq!(image_tag("registry.k8s.io/sig-storage/csi-attacher:v4.13.0"), Some("v4.13.0"));
    assert_eq!(image_tag("localhost:5000/csi-workshop"), None);
    assert_eq!(image_repository("localhost:5000/csi-workshop"), "localhost:5000/csi-workshop");
    assert_eq!(image_tag("busybox"), None);
    assert_eq!(image_tag("busybox@sha256:0123"), None);
}
