//! Offline tests of the node parsing in `labs/cluster-lib.sh`, which
//! `scripts/kind-up.sh` and the cluster checks use to find the workers.
//! The library is sourced by bash; a shell function named `kubectl` stands
//! in for the API server, and `kubectl annotate --local` (no cluster
//! needed) proves what the real jsonpath prints for sample nodes.

use std::path::{Path, PathBuf};
use std::process::Command;

fn cluster_lib() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../labs/cluster-lib.sh")
}

/// Runs `script` in bash after sourcing cluster-lib.sh; returns stdout.
fn bash(script: &str) -> String {
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!("set -o pipefail; source '{}'; {script}", cluster_lib().display()))
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .output()
        .expect("run bash");
    assert!(
        out.status.success(),
        "bash failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What kind's three nodes look like, one of the workers cordoned, plus an
/// old-style control plane labelled `master`.
const NODES: &str = r#"apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Node
  metadata:
    name: csi-workshop-control-plane
    labels:
      kubernetes.io/hostname: csi-workshop-control-plane
      node-role.kubernetes.io/control-plane: ""
  spec:
    taints: [{key: node-role.kubernetes.io/control-plane, effect: NoSchedule}]
- apiVersion: v1
  kind: Node
  metadata:
    name: csi-workshop-worker
    labels: {kubernetes.io/hostname: csi-workshop-worker}
- apiVersion: v1
  kind: Node
  metadata:
    name: csi-workshop-worker2
    labels: {kubernetes.io/hostname: csi-workshop-worker2}
  spec: {}
- apiVersion: v1
  kind: Node
  metadata:
    name: cordoned
    labels: {kubernetes.io/hostname: cordoned}
  spec:
    unschedulable: true
- apiVersion: v1
  kind: Node
  metadata:
    name: old-master
    labels: {node-role.kubernetes.io/master: ""}
"#;

#[test]
fn ordinary_nodes_without_spec_unschedulable_are_workers_and_control_planes_are_not() {
    let lines = "csi-workshop-control-plane\t\t{\"node-role.kubernetes.io/control-plane\":\"\"}\n\
                 csi-workshop-worker2\t\t{\"kubernetes.io/hostname\":\"csi-workshop-worker2\"}\n\
                 csi-workshop-worker\t\t{\"kubernetes.io/hostname\":\"csi-workshop-worker\"}\n\
                 cordoned\ttrue\t{}\n\
                 old-master\t\t{\"node-role.kubernetes.io/master\":\"\"}\n\
                 unlabelled\t\t\n\
                 open\tfalse\t{}\n";
    let out = bash(&format!("printf '%s' '{lines}' | cluster_workers_from_nodes"));
    assert_eq!(out, "csi-workshop-worker2\ncsi-workshop-worker\nunlabelled\nopen\n");
}

#[test]
fn cluster_workers_lists_every_node_and_filters_them_sorted() {
    // The fake kubectl checks it is asked for all nodes, not a filtered list.
    let script = r#"
kubectl() {
  [[ " $* " == *" get nodes "* && " $* " != *"?(@"* ]] || { echo "unexpected: kubectl $*" >&2; return 1; }
  printf 'w2\t\t{}\nw1\t\t{"kubernetes.io/hostname":"w1"}\ncp\t\t{"node-role.kubernetes.io/control-plane":""}\n'
}
cluster_workers"#;
    assert_eq!(bash(script), "w1\nw2\n");
}

#[test]
fn cluster_workers_fails_when_kubectl_fails() {
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!("source '{}'; kubectl() {{ return 1; }}; cluster_workers", cluster_lib().display()))
        .output()
        .expect("run bash");
    assert!(!out.status.success(), "a kubectl error must not look like a cluster without workers");
}

#[test]
fn the_node_jsonpath_prints_nothing_for_a_missing_field_so_no_worker_is_dropped() {
    if Command::new("kubectl").args(["version", "--client"]).output().is_err() {
        println!("SKIP the_node_jsonpath_prints_nothing_for_a_missing_field: kubectl is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let nodes = dir.path().join("nodes.yaml");
    std::fs::write(&nodes, NODES).unwrap();
    // `annotate --local` runs kubectl's own jsonpath printer on each node,
    // without a cluster: the same printer `kubectl get -o jsonpath` uses.
    let out = bash(&format!(
        "kubectl annotate --local -f '{}' check=offline -o jsonpath=\"$CLUSTER_NODE_FIELDS\" | tee /dev/stderr | cluster_workers_from_nodes",
        nodes.display()
    ));
    assert_eq!(out, "csi-workshop-worker\ncsi-workshop-worker2\n");
}
