//! Helpers of the lab 06 tests: run `flex-workshop` as kubelet does, and a
//! guard that removes every mount and loop device under a temp dir, also
//! when the test panicked.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

/// `true` if this test can use loop devices, mkfs and mounts; otherwise
/// prints `SKIP <test>: <reason>` and the test returns.
pub fn require_root() -> bool {
    let Some(reason) = lab03_node::testing::root_skip_reason() else { return true };
    let test = std::thread::current().name().unwrap_or("<test>").to_owned();
    eprintln!("SKIP {test}: {reason}");
    false
}

/// A temp dir under /tmp holding a backend, a Flex state dir and mount
/// dirs; on drop everything mounted or attached from it is undone.
pub struct Host {
    pub dir: tempfile::TempDir,
}

impl Host {
    pub fn new() -> Self {
        Self { dir: tempfile::Builder::new().prefix("csi-lab06-").tempdir_in("/tmp").unwrap() }
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    pub fn backend(&self) -> PathBuf {
        self.path("backend")
    }

    /// Runs `flex-workshop ARGS` as kubelet does: JSON reply and exit code.
    pub fn flex(&self, args: &[&str]) -> (Value, i32) {
        let out = Command::new(env!("CARGO_BIN_EXE_flex-workshop"))
            .args(args)
            .env("FLEX_WORKSHOP_STATE_DIR", self.path("flex-state"))
            .env_remove("RUST_LOG")
            .output()
            .expect("run flex-workshop");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let reply: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "stdout must be one JSON object ({e}): {stdout:?}, stderr {:?}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (reply, out.status.code().expect("exit code, not a signal (a panic would abort)"))
    }

    /// `flex-workshop create-volume`, which must succeed.
    pub fn create_volume(&self, id: &str, kind: &str) {
        let out = Command::new(env!("CARGO_BIN_EXE_flex-workshop"))
            .args(["create-volume", "--id", id, "--type", kind, "--size", "64Mi", "--backend-dir"])
            .arg(self.backend())
            .output()
            .unwrap();
        assert!(out.status.success(), "create-volume: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// The options kubelet passes, with the PV's options.
    pub fn options(&self, id: &str, kind: &str, extra: &[(&str, &str)]) -> String {
        let mut o = serde_json::json!({
            "volumeId": id, "type": kind, "backendDir": self.backend(),
            "kubernetes.io/fsType": "ext4", "kubernetes.io/readwrite": "rw",
            "kubernetes.io/pod.name": "writer-0", "kubernetes.io/pod.namespace": "legacy",
            "kubernetes.io/pod.uid": "1234", "kubernetes.io/pvOrVolumeName": id,
            "kubernetes.io/serviceAccount.name": "default",
        });
        for (k, v) in extra {
            o[*k] = Value::from(*v);
        }
        o.to_string()
    }

    pub fn mounts(&self) -> usize {
        lab03_node::testing::mounts_under(self.dir.path()).len()
    }

    pub fn loops(&self) -> usize {
        loop_devices_under(self.dir.path()).len()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        lab03_node::testing::cleanup_under(self.dir.path());
    }
}

pub use lab03_node::testing::loop_devices_under;
