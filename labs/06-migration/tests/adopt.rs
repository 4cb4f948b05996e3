//! The CSI driver adopts a Flex volume: a volume made with `flex-workshop
//! create-volume`, mounted through the Flex call-out and written to, is then
//! staged and published by the lab 03 driver (in-process, on a temp socket)
//! with no reformat, and the file is still there. Needs root.

mod support;

use lab01_identity::args::DriverArgs;
use lab01_identity::csi::controller_client::ControllerClient;
use lab01_identity::csi::node_client::NodeClient;
use lab01_identity::csi::volume_capability::access_mode::Mode;
use lab01_identity::csi::*;
use lab01_identity::testing::TestServer;
use lab02_controller::capability::capability;
use lab02_controller::driver::ControllerArgs;
use lab03_node::driver::{Mode as ServeMode, NodeArgs, router};
use support::{Host, require_root};

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
    let args = NodeArgs {
        controller: ControllerArgs {
            driver: DriverArgs {
                endpoint: String::new(),
                drivername: "csi.workshop.dev".into(),
                backend_dir: host.backend(),
                log_level: "info".into(),
            },
            max_volume_size: 1 << 40,
        },
        mode: ServeMode::All,
        nodeid: Some("node-a".into()),
        state_dir: host.path("csi-state"),
        max_volumes_per_node: 0,
    };
    let server = TestServer::start(router(&args).expect("the lab 03 driver starts"), host.dir.path()).await;
    let channel = server.channel().await;
    let mut controller = ControllerClient::new(channel.clone());
    let mut node = NodeClient::new(channel);
    let cap = || capability(Mode::SingleNodeWriter, false, "ext4");

    controller
        .controller_publish_volume(ControllerPublishVolumeRequest {
            volume_id: "vol-1".into(),
            node_id: "node-a".into(),
            volume_capability: Some(cap()),
            ..Default::default()
        })
        .await
        .expect("ControllerPublish of the adopted volume");
    let staging = host.path("staging/vol-1");
    std::fs::create_dir_all(&staging).unwrap();
    let target = host.path("pods/csi/vol-1");
    node.node_stage_volume(NodeStageVolumeRequest {
        volume_id: "vol-1".into(),
        staging_target_path: staging.display().to_string(),
        volume_capability: Some(cap()),
        ..Default::default()
    })
    .await
    .expect("NodeStage finds ext4 on the image and mounts it (no mkfs)");
    node.node_publish_volume(NodePublishVolumeRequest {
        volume_id: "vol-1".into(),
        staging_target_path: staging.display().to_string(),
        target_path: target.display().to_string(),
        volume_capability: Some(cap()),
        ..Default::default()
    })
    .await
    .expect("NodePublish");
    assert_eq!(
        std::fs::read_to_string(target.join("marker.txt")).unwrap(),
        "written under flex",
        "same data, not reformatted"
    );

    node.node_unpublish_volume(NodeUnpublishVolumeRequest {
        volume_id: "vol-1".into(),
        target_path: target.display().to_string(),
    })
    .await
    .unwrap();
    node.node_unstage_volume(NodeUnstageVolumeRequest {
        volume_id: "vol-1".into(),
        staging_target_path: staging.display().to_string(),
    })
    .await
    .unwrap();
    server.stop().await;
    assert_eq!((host.mounts(), host.loops()), (0, 0), "nothing left mounted or attached");
}
