//! The CSI driver adopts a Flex volume: a volume made with `flex-workshop
//! create-volume`, mounted through the Flex call-out and written to, is then
//! staged and published by the lab 03 driver (in-process, on a temp socket)
//! with no reformat, and the data is still there: a block image keeps its
//! file system, a file volume's directory is bind-mounted as it is, every
//! file, mode and modification time unchanged. Needs root.

mod support;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use lab01_identity::csi::controller_client::ControllerClient;
use lab01_identity::csi::node_client::NodeClient;
use lab01_identity::csi::volume_capability::access_mode::Mode;
use lab01_identity::csi::*;
use lab01_identity::testing::TestServer;
use lab02_controller::capability::capability;
use lab03_node::driver::{Mode as ServeMode, NodeArgs, router};
use support::{Host, require_root};
use tonic::transport::Channel;

/// The lab 03 driver (all services, node node-a) on the Host's backend, in
/// this process, on a socket under the Host's temp dir.
async fn start_driver(host: &Host) -> (TestServer, ControllerClient<Channel>, NodeClient<Channel>) {
    // csi-state: the Flex driver keeps its own records under the Host too.
    let mut args = NodeArgs::in_dir("csi.workshop.dev", host.dir.path(), "node-a", ServeMode::All);
    args.state_dir = host.path("csi-state");
    let server = TestServer::start(router(&args).expect("the lab 03 driver starts"), host.dir.path()).await;
    let channel = server.channel().await;
    (server, ControllerClient::new(channel.clone()), NodeClient::new(channel))
}

/// Every file and directory under `root`: its kind and mode, its contents
/// and modification time (files), its symlink target, its inode. Equal
/// snapshots mean nobody wrote, chmodded, replaced or copied anything.
fn snapshot(root: &Path) -> BTreeMap<String, String> {
    let mut found = BTreeMap::new();
    let mut dirs = vec![root.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let what = if meta.file_type().is_symlink() {
                format!("link -> {}", std::fs::read_link(&path).unwrap().display())
            } else if meta.is_dir() {
                dirs.push(path.clone());
                format!("dir {:o}", meta.permissions().mode())
            } else {
                let bytes = std::fs::read(&path).unwrap();
                format!(
                    "file {:o} {} bytes {:?} mtime {}.{}",
                    meta.permissions().mode(),
                    bytes.len(),
                    bytes,
                    meta.mtime(),
                    meta.mtime_nsec()
                )
            };
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            found.insert(rel, format!("{what} inode {}", meta.ino()));
        }
    }
    found
}

/// What kubelet and the attacher ask of the CSI driver to give a pod the
/// volume: ControllerPublish, NodeStage, NodePublish. Returns the target.
async fn attach_stage_publish(
    host: &Host,
    controller: &mut ControllerClient<Channel>,
    node: &mut NodeClient<Channel>,
    volume_id: &str,
    cap: &VolumeCapability,
) -> PathBuf {
    let staging = host.path(&format!("staging/{volume_id}"));
    std::fs::create_dir_all(&staging).unwrap();
    let target = host.path(&format!("pods/csi/{volume_id}"));
    controller
        .controller_publish_volume(ControllerPublishVolumeRequest {
            volume_id: volume_id.into(),
            node_id: "node-a".into(),
            volume_capability: Some(cap.clone()),
            ..Default::default()
        })
        .await
        .expect("ControllerPublish of the adopted volume");
    node.node_stage_volume(NodeStageVolumeRequest {
        volume_id: volume_id.into(),
        staging_target_path: staging.display().to_string(),
        volume_capability: Some(cap.clone()),
        ..Default::default()
    })
    .await
    .expect("NodeStage of the adopted volume (an existing filesystem or directory: no mkfs)");
    node.node_publish_volume(NodePublishVolumeRequest {
        volume_id: volume_id.into(),
        staging_target_path: staging.display().to_string(),
        target_path: target.display().to_string(),
        volume_capability: Some(cap.clone()),
        ..Default::default()
    })
    .await
    .expect("NodePublish");
    target
}

/// The way back: NodeUnpublish, NodeUnstage, ControllerUnpublish.
async fn unpublish_unstage_detach(
    host: &Host,
    controller: &mut ControllerClient<Channel>,
    node: &mut NodeClient<Channel>,
    volume_id: &str,
) {
    let target = host.path(&format!("pods/csi/{volume_id}"));
    let staging = host.path(&format!("staging/{volume_id}"));
    node.node_unpublish_volume(NodeUnpublishVolumeRequest {
        volume_id: volume_id.into(),
        target_path: target.display().to_string(),
    })
    .await
    .unwrap();
    node.node_unstage_volume(NodeUnstageVolumeRequest {
        volume_id: volume_id.into(),
        staging_target_path: staging.display().to_string(),
    })
    .await
    .unwrap();
    controller
        .controller_unpublish_volume(ControllerUnpublishVolumeRequest {
            volume_id: volume_id.into(),
            node_id: "node-a".into(),
            ..Default::default()
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn a_flex_volume_is_staged_by_the_csi_driver_without_reformatting() {
    if !require_root() {
        return;
    }
    let host = Host::new();
    host.create_volume("vol-1", "block");

    // The Flex life: kubelet mounts, the pod writes, kubelet unmounts.
    let flex_dir = host.path("pods/legacy/vol-1");
    let d = flex_dir.to_str().unwrap();
    let (reply, _) = host.flex(&["mount", d, &host.options("vol-1", "block", &[])]);
    assert_eq!(reply["status"], "Success", "{reply}");
    std::fs::write(flex_dir.join("marker.txt"), "written under flex").unwrap();
    let (reply, _) = host.flex(&["unmount", d]);
    assert_eq!(reply["status"], "Success", "{reply}");

    // The CSI life, on the same backend directory.
    let (server, mut controller, mut node) = start_driver(&host).await;
    let cap = capability(Mode::SingleNodeWriter, false, "ext4");
    let target = attach_stage_publish(&host, &mut controller, &mut node, "vol-1", &cap).await;
    assert_eq!(
        std::fs::read_to_string(target.join("marker.txt")).unwrap(),
        "written under flex",
        "same data, not reformatted"
    );
    unpublish_unstage_detach(&host, &mut controller, &mut node, "vol-1").await;
    server.stop().await;
    assert_eq!((host.mounts(), host.loops()), (0, 0), "nothing left mounted or attached");
}

#[tokio::test]
async fn a_flex_file_directory_is_adopted_by_the_csi_driver_without_touching_its_data() {
    if !require_root() {
        return;
    }
    let host = Host::new();
    host.create_volume("vol-f", "file");

    // The Flex life: kubelet bind-mounts the directory, the pod writes a
    // small tree (a nested file, a private file, a symlink), kubelet unmounts.
    let flex_dir = host.path("pods/legacy/vol-f");
    let d = flex_dir.to_str().unwrap();
    let (reply, _) = host.flex(&["mount", d, &host.options("vol-f", "file", &[])]);
    assert_eq!(reply["status"], "Success", "{reply}");
    std::fs::write(flex_dir.join("marker.txt"), "written under flex").unwrap();
    std::fs::create_dir_all(flex_dir.join("nested/deep")).unwrap();
    std::fs::write(
        flex_dir.join("nested/deep/data.bin"),
        (0..=255u8).cycle().take(10_000).collect::<Vec<_>>(),
    )
    .unwrap();
    std::fs::set_permissions(flex_dir.join("nested/deep/data.bin"), std::fs::Permissions::from_mode(0o600))
        .unwrap();
    std::os::unix::fs::symlink("nested/deep/data.bin", flex_dir.join("latest")).unwrap();
    let (reply, _) = host.flex(&["unmount", d]);
    assert_eq!(reply["status"], "Success", "{reply}");
    assert_eq!(host.mounts(), 0, "the Flex mount is gone");

    let data = host.backend().join("volumes/vol-f/data");
    let before = snapshot(&data);
    assert_eq!(before.len(), 5, "marker.txt, nested, nested/deep, data.bin, latest: {before:#?}");

    // The CSI life: attach (a no-op for a directory, but kubelet asks, as
    // the CSIDriver has attachRequired), stage, publish, read, and back.
    let (server, mut controller, mut node) = start_driver(&host).await;
    let cap = capability(Mode::MultiNodeMultiWriter, false, "");
    let target = attach_stage_publish(&host, &mut controller, &mut node, "vol-f", &cap).await;
    assert_eq!(std::fs::read_to_string(target.join("marker.txt")).unwrap(), "written under flex");
    assert_eq!(
        std::fs::read(target.join("latest")).unwrap().len(),
        10_000,
        "the symlink resolves inside the volume"
    );
    assert_eq!(snapshot(&target), before, "the pod sees the very same tree: same inodes, not a copy");

    unpublish_unstage_detach(&host, &mut controller, &mut node, "vol-f").await;
    server.stop().await;
    assert_eq!(snapshot(&data), before, "adopting and releasing the directory changed nothing in it");
    assert_eq!((host.mounts(), host.loops()), (0, 0), "nothing left mounted or attached");
}
