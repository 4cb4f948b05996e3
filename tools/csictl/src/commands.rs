//! One function per subcommand group: build the request from flags, make
//! the call, print the response.

use std::path::Path;

use anyhow::Context;
use lab01_identity::csi::{self, volume_content_source};
use serde_json::{Value, json};

use crate::cli::{ControllerCmd, IdentityCmd, NodeCmd};
use crate::parse::{to_map, to_topology};
use crate::print::{self, Printer, Record};
use crate::rpc::Csi;

pub async fn identity(csi: &Csi, out: Printer, cmd: IdentityCmd) -> anyhow::Result<()> {
    let mut client = csi.identity.clone();
    let record = match cmd {
        IdentityCmd::Info => {
            let r = csi.call(client.get_plugin_info(csi.req(csi::GetPluginInfoRequest {}))).await?;
            Record::new()
                .with("name", r.name)
                .with("vendor_version", r.vendor_version)
                .with("manifest", print::map_json(&r.manifest))
        }
        IdentityCmd::Caps => {
            let r = csi
                .call(client.get_plugin_capabilities(csi.req(csi::GetPluginCapabilitiesRequest {})))
                .await?;
            let caps: Vec<Value> = r.capabilities.iter().map(print::plugin_capability_json).collect();
            Record::new().with("capabilities", caps)
        }
        IdentityCmd::Probe => {
            let r = csi.call(client.probe(csi.req(csi::ProbeRequest {}))).await?;
            // Unset `ready` means ready (the plugin chose not to report it).
            Record::new().with("ready", r.ready.unwrap_or(true)).with("ready_reported", r.ready.is_some())
        }
    };
    out.emit(&record);
    Ok(())
}

pub async fn controller(csi: &Csi, out: Printer, cmd: ControllerCmd) -> anyhow::Result<()> {
    let mut client = csi.controller.clone();
    let record = match cmd {
        ControllerCmd::Create {
            name,
            size,
            limit,
            volume_type,
            params,
            mutable_params,
            cap,
            requisite_topology,
            preferred_topology,
            source_snapshot,
            source_volume,
        } => {
            let mut parameters = to_map(&params);
            if let Some(t) = volume_type {
                parameters.insert("type".into(), t.as_str().into());
            }
            let accessibility_requirements = if requisite_topology.is_empty() && preferred_topology.is_empty()
            {
                None
            } else {
                Some(csi::TopologyRequirement {
                    requisite: to_topology(&requisite_topology).into_iter().collect(),
                    preferred: to_topology(&preferred_topology).into_iter().collect(),
                })
            };
            let volume_content_source = match (source_snapshot, source_volume) {
                (Some(snapshot_id), _) => {
                    Some(volume_content_source::Type::Snapshot(volume_content_source::SnapshotSource {
                        snapshot_id,
                    }))
                }
                (None, Some(volume_id)) => {
                    Some(volume_content_source::Type::Volume(volume_content_source::VolumeSource {
                        volume_id,
                    }))
                }
                (None, None) => None,
            }
            .map(|t| csi::VolumeContentSource { r#type: Some(t) });
            let request = csi::CreateVolumeRequest {
                name,
                capacity_range: Some(csi::CapacityRange {
                    required_bytes: size,
                    limit_bytes: limit.unwrap_or(0),
                }),
                volume_capabilities: vec![cap.spec().to_message()],
                parameters,
                secrets: Default::default(),
                volume_content_source,
                accessibility_requirements,
                mutable_parameters: to_map(&mutable_params),
            };
            let r = csi.call(client.create_volume(csi.req(request))).await?;
            let volume = r.volume.context("CreateVolume answered without a volume")?;
            let mut rec = Record::new();
            rec.extend(print::volume_fields(&volume));
            rec
        }
        ControllerCmd::Delete { volume_id } => {
            let request =
                csi::DeleteVolumeRequest { volume_id: volume_id.clone(), secrets: Default::default() };
            csi.call(client.delete_volume(csi.req(request))).await?;
            Record::new().with("volume_id", volume_id).with("deleted", true)
        }
        ControllerCmd::Publish { volume_id, node_id, readonly, cap, volume_context } => {
            let request = csi::ControllerPublishVolumeRequest {
                volume_id: volume_id.clone(),
                node_id: node_id.clone(),
                volume_capability: Some(cap.spec().to_message()),
                readonly,
                secrets: Default::default(),
                volume_context: to_map(&volume_context),
            };
            let r = csi.call(client.controller_publish_volume(csi.req(request))).await?;
            Record::new()
                .with("volume_id", volume_id)
                .with("node_id", node_id)
                .with("publish_context", print::map_json(&r.publish_context))
        }
        ControllerCmd::Unpublish { volume_id, node_id } => {
            let request = csi::ControllerUnpublishVolumeRequest {
                volume_id: volume_id.clone(),
                node_id: node_id.clone(),
                secrets: Default::default(),
            };
            csi.call(client.controller_unpublish_volume(csi.req(request))).await?;
            Record::new()
                .with("volume_id", volume_id)
                .with("node_id", if node_id.is_empty() { Value::from("(all nodes)") } else { node_id.into() })
                .with("unpublished", true)
        }
        ControllerCmd::Validate { volume_id, cap, volume_context, params } => {
            let request = csi::ValidateVolumeCapabilitiesRequest {
                volume_id: volume_id.clone(),
                volume_context: to_map(&volume_context),
                volume_capabilities: vec![cap.spec().to_message()],
                parameters: to_map(&params),
                secrets: Default::default(),
                mutable_parameters: Default::default(),
            };
            let r = csi.call(client.validate_volume_capabilities(csi.req(request))).await?;
            let mut rec = Record::new().with("volume_id", volume_id).with("confirmed", r.confirmed.is_some());
            if let Some(c) = &r.confirmed {
                rec.push(
                    "confirmed_capabilities",
                    c.volume_capabilities.iter().map(print::capability_json).collect::<Vec<_>>(),
                );
                rec.push("confirmed_volume_context", print::map_json(&c.volume_context));
                rec.push("confirmed_parameters", print::map_json(&c.parameters));
            }
            if !r.message.is_empty() {
                rec.push("message", r.message);
            }
            rec
        }
        ControllerCmd::List { max_entries, starting_token } => {
            let request = csi::ListVolumesRequest { max_entries, starting_token };
            let r = csi.call(client.list_volumes(csi.req(request))).await?;
            let entries: Vec<Value> = r
                .entries
                .iter()
                .map(|e| {
                    let mut v = e.volume.as_ref().map(print::volume_json).unwrap_or_else(|| json!({}));
                    if let (Some(status), Value::Object(m)) = (&e.status, &mut v) {
                        m.insert("published_node_ids".into(), status.published_node_ids.clone().into());
                        m.insert("volume_condition".into(), print::condition_json(&status.volume_condition));
                    }
                    v
                })
                .collect();
            Record::new()
                .with("count", entries.len())
                .with("entries", entries)
                .with("next_token", r.next_token)
        }
        ControllerCmd::Capacity { params, access_mode, block } => {
            let volume_capabilities = access_mode
                .map(|mode| {
                    crate::parse::CapabilitySpec { mode, block, fs_type: String::new(), mount_flags: vec![] }
                        .to_message()
                })
                .into_iter()
                .collect();
            let request = csi::GetCapacityRequest {
                volume_capabilities,
                parameters: to_map(&params),
                accessible_topology: None,
            };
            let r = csi.call(client.get_capacity(csi.req(request))).await?;
            Record::new()
                .with("available_capacity", r.available_capacity)
                .with("maximum_volume_size", r.maximum_volume_size)
                .with("minimum_volume_size", r.minimum_volume_size)
        }
        ControllerCmd::Get { volume_id } => {
            let request = csi::ControllerGetVolumeRequest { volume_id };
            let r = csi.call(client.controller_get_volume(csi.req(request))).await?;
            let mut rec = Record::new();
            if let Some(v) = &r.volume {
                rec.extend(print::volume_fields(v));
            }
            if let Some(s) = &r.status {
                rec.push("published_node_ids", s.published_node_ids.clone());
                rec.push("volume_condition", print::condition_json(&s.volume_condition));
            }
            rec
        }
        ControllerCmd::Expand { volume_id, size, limit } => {
            let request = csi::ControllerExpandVolumeRequest {
                volume_id: volume_id.clone(),
                capacity_range: Some(csi::CapacityRange {
                    required_bytes: size,
                    limit_bytes: limit.unwrap_or(0),
                }),
                secrets: Default::default(),
                volume_capability: None,
            };
            let r = csi.call(client.controller_expand_volume(csi.req(request))).await?;
            Record::new()
                .with("volume_id", volume_id)
                .with("capacity_bytes", r.capacity_bytes)
                .with("node_expansion_required", r.node_expansion_required)
        }
        ControllerCmd::Modify { volume_id, params } => {
            let request = csi::ControllerModifyVolumeRequest {
                volume_id: volume_id.clone(),
                secrets: Default::default(),
                mutable_parameters: to_map(&params),
            };
            csi.call(client.controller_modify_volume(csi.req(request))).await?;
            Record::new().with("volume_id", volume_id).with("modified", true)
        }
        ControllerCmd::Caps => {
            let r = csi
                .call(client.controller_get_capabilities(csi.req(csi::ControllerGetCapabilitiesRequest {})))
                .await?;
            let caps: Vec<String> = r.capabilities.iter().map(print::controller_capability_name).collect();
            Record::new().with("capabilities", caps)
        }
        ControllerCmd::CreateSnapshot { source_id, name, params } => {
            let request = csi::CreateSnapshotRequest {
                source_volume_id: source_id,
                name,
                secrets: Default::default(),
                parameters: to_map(&params),
            };
            let r = csi.call(client.create_snapshot(csi.req(request))).await?;
            let mut rec = Record::new();
            rec.extend_object(r.snapshot.as_ref().map(print::snapshot_json).unwrap_or(Value::Null));
            rec
        }
        ControllerCmd::DeleteSnapshot { snapshot_id } => {
            let request =
                csi::DeleteSnapshotRequest { snapshot_id: snapshot_id.clone(), secrets: Default::default() };
            csi.call(client.delete_snapshot(csi.req(request))).await?;
            Record::new().with("snapshot_id", snapshot_id).with("deleted", true)
        }
        ControllerCmd::ListSnapshots { source_id, snapshot_id, max_entries, starting_token } => {
            let request = csi::ListSnapshotsRequest {
                max_entries,
                starting_token,
                source_volume_id: source_id,
                snapshot_id,
                secrets: Default::default(),
            };
            let r = csi.call(client.list_snapshots(csi.req(request))).await?;
            let entries: Vec<Value> =
                r.entries.iter().filter_map(|e| e.snapshot.as_ref()).map(print::snapshot_json).collect();
            Record::new()
                .with("count", entries.len())
                .with("entries", entries)
                .with("next_token", r.next_token)
        }
        ControllerCmd::GetSnapshot { snapshot_id } => {
            let request = csi::GetSnapshotRequest { snapshot_id, secrets: Default::default() };
            let r = csi.call(client.get_snapshot(csi.req(request))).await?;
            let mut rec = Record::new();
            rec.extend_object(r.snapshot.as_ref().map(print::snapshot_json).unwrap_or(Value::Null));
            rec
        }
    };
    out.emit(&record);
    Ok(())
}

fn path_string(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Like a CO, csictl owns the directories around the plugin's mounts.
fn create_dir(path: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(path).with_context(|| format!("creating directory {}", path.display()))
}

pub async fn node(csi: &Csi, out: Printer, cmd: NodeCmd) -> anyhow::Result<()> {
    let mut client = csi.node.clone();
    let record = match cmd {
        NodeCmd::Stage { volume_id, staging_path, publish_context, volume_context, cap } => {
            create_dir(&staging_path)?;
            let request = csi::NodeStageVolumeRequest {
                volume_id: volume_id.clone(),
                publish_context: to_map(&publish_context),
                staging_target_path: path_string(&staging_path),
                volume_capability: Some(cap.spec().to_message()),
                secrets: Default::default(),
                volume_context: to_map(&volume_context),
            };
            csi.call(client.node_stage_volume(csi.req(request))).await?;
            Record::new()
                .with("volume_id", volume_id)
                .with("staging_path", path_string(&staging_path))
                .with("staged", true)
        }
        NodeCmd::Unstage { volume_id, staging_path } => {
            let request = csi::NodeUnstageVolumeRequest {
                volume_id: volume_id.clone(),
                staging_target_path: path_string(&staging_path),
            };
            csi.call(client.node_unstage_volume(csi.req(request))).await?;
            Record::new()
                .with("volume_id", volume_id)
                .with("staging_path", path_string(&staging_path))
                .with("unstaged", true)
        }
        NodeCmd::Publish {
            volume_id,
            target_path,
            staging_path,
            readonly,
            publish_context,
            volume_context,
            cap,
        } => {
            // The plugin creates the target itself (a directory or, for block
            // access, a file); the CO only guarantees the parent exists.
            if let Some(parent) = target_path.parent() {
                create_dir(parent)?;
            }
            let request = csi::NodePublishVolumeRequest {
                volume_id: volume_id.clone(),
                publish_context: to_map(&publish_context),
                staging_target_path: staging_path.as_deref().map(path_string).unwrap_or_default(),
                target_path: path_string(&target_path),
                volume_capability: Some(cap.spec().to_message()),
                readonly,
                secrets: Default::default(),
                volume_context: to_map(&volume_context),
            };
            csi.call(client.node_publish_volume(csi.req(request))).await?;
            Record::new()
                .with("volume_id", volume_id)
                .with("target_path", path_string(&target_path))
                .with("published", true)
        }
        NodeCmd::Unpublish { volume_id, target_path } => {
            let request = csi::NodeUnpublishVolumeRequest {
                volume_id: volume_id.clone(),
                target_path: path_string(&target_path),
            };
            csi.call(client.node_unpublish_volume(csi.req(request))).await?;
            Record::new()
                .with("volume_id", volume_id)
                .with("target_path", path_string(&target_path))
                .with("unpublished", true)
        }
        NodeCmd::Info => {
            let r = csi.call(client.node_get_info(csi.req(csi::NodeGetInfoRequest {}))).await?;
            Record::new()
                .with("node_id", r.node_id)
                .with("max_volumes_per_node", r.max_volumes_per_node)
                .with(
                    "accessible_topology",
                    r.accessible_topology.as_ref().map(print::topology_json).unwrap_or(Value::Null),
                )
        }
        NodeCmd::Caps => {
            let r =
                csi.call(client.node_get_capabilities(csi.req(csi::NodeGetCapabilitiesRequest {}))).await?;
            let caps: Vec<String> = r.capabilities.iter().map(print::node_capability_name).collect();
            Record::new().with("capabilities", caps)
        }
        NodeCmd::Stats { volume_id, path, staging_path } => {
            let request = csi::NodeGetVolumeStatsRequest {
                volume_id: volume_id.clone(),
                volume_path: path_string(&path),
                staging_target_path: staging_path.as_deref().map(path_string).unwrap_or_default(),
            };
            let r = csi.call(client.node_get_volume_stats(csi.req(request))).await?;
            Record::new()
                .with("volume_id", volume_id)
                .with("usage", r.usage.iter().map(print::usage_json).collect::<Vec<_>>())
                .with("volume_condition", print::condition_json(&r.volume_condition))
        }
        NodeCmd::Expand { volume_id, path, size, staging_path } => {
            let request = csi::NodeExpandVolumeRequest {
                volume_id: volume_id.clone(),
                volume_path: path_string(&path),
                capacity_range: Some(csi::CapacityRange { required_bytes: size, limit_bytes: 0 }),
                staging_target_path: staging_path.as_deref().map(path_string).unwrap_or_default(),
                volume_capability: None,
                secrets: Default::default(),
            };
            let r = csi.call(client.node_expand_volume(csi.req(request))).await?;
            Record::new().with("volume_id", volume_id).with("capacity_bytes", r.capacity_bytes)
        }
    };
    out.emit(&record);
    Ok(())
}
