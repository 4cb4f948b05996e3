//! The two binaries as the manifests and check scripts run them:
//! `csi-registrar` with node-driver-registrar's flags, and `kubelet-sim watch
//! --once` with its exit codes (0 registered, 1 failed, 2 nothing found).

mod support;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use support::*;
use tokio::process::{Child, Command};

fn registrar(scene: &Scene, kubelet_registration_path: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_csi-registrar"))
        .arg("--csi-address")
        .arg(format!("unix://{}", scene.csi_socket().display()))
        .arg("--kubelet-registration-path")
        .arg(kubelet_registration_path)
        .arg("--plugin-registration-path")
        .arg(scene.registry())
        .args(["--timeout", "2s", "--log-level", "info"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start csi-registrar")
}

async fn kubelet_sim(scene: &Scene, timeout: &str) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_kubelet-sim"))
        .arg("watch")
        .arg("--dir")
        .arg(scene.registry())
        .args(["--once", "--timeout", timeout])
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(WAIT + Duration::from_secs(5), output)
        .await
        .expect("kubelet-sim --once must exit")
        .expect("run kubelet-sim");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    (output.status.code().unwrap_or(-1), stdout)
}

async fn exit_code(child: &mut Child) -> i32 {
    tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("csi-registrar must exit")
        .expect("wait for csi-registrar")
        .code()
        .unwrap_or(-1)
}

#[tokio::test]
async fn kubelet_sim_registers_the_driver_served_by_csi_registrar_which_exits_0_on_sigterm() {
    let scene = Scene::new();
    let _driver = scene.start_driver().await;
    let mut child = registrar(&scene, &scene.csi_socket());

    let (code, stdout) = kubelet_sim(&scene, "15s").await;
    assert_eq!(code, 0, "kubelet-sim --once exits 0 after a registration; it printed:\n{stdout}");
    let expected =
        format!("registered {DRIVER} endpoint={} node_id={NODE} topology=", scene.csi_socket().display());
    assert!(
        stdout.lines().any(|l| l.starts_with(&expected)),
        "expected a line starting with `{expected}`:\n{stdout}"
    );
    assert!(scene.registration_socket().exists());

    kill(Pid::from_raw(child.id().unwrap() as i32), Signal::SIGTERM).unwrap();
    assert_eq!(exit_code(&mut child).await, 0, "SIGTERM is a clean stop");
    assert!(!scene.registration_socket().exists(), "the registrar removes its socket on SIGTERM");
}

#[tokio::test]
async fn a_rejected_registration_makes_kubelet_sim_exit_1_and_csi_registrar_exit_non_zero() {
    let scene = Scene::new();
    let _driver = scene.start_driver().await;
    let mut child = registrar(&scene, &scene.path("not-on-the-host/csi.sock"));

    let (code, stdout) = kubelet_sim(&scene, "15s").await;
    assert_eq!(code, 1, "kubelet-sim --once exits 1 after a failed registration; it printed:\n{stdout}");
    assert!(stdout.contains("step=dial-driver"), "{stdout}");
    assert_ne!(
        exit_code(&mut child).await,
        0,
        "plugin_registered=false must make csi-registrar exit non-zero"
    );
}

#[tokio::test]
async fn kubelet_sim_exits_2_when_no_plugin_shows_up_in_time() {
    let scene = Scene::new();
    let (code, stdout) = kubelet_sim(&scene, "500ms").await;
    assert_eq!(code, 2, "{stdout}");
}
