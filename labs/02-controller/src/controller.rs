//! The Controller service: volumes on the backend, and their attachments.
//!
//! external-provisioner calls CreateVolume/DeleteVolume for PVCs;
//! external-attacher calls ControllerPublish/Unpublish for VolumeAttachments;
//! external-resizer calls ControllerExpandVolume. None of this depends on the
//! host the controller runs on: it only talks to the backend.

use std::collections::{BTreeMap, HashMap};

use lab01_identity::csi::controller_server::Controller;
use lab01_identity::csi::controller_service_capability::{Rpc, Type as CapType, rpc};
use lab01_identity::csi::*;
use lab01_identity::server::record_volume_id;
use tonic::{Request, Response, Status};

use crate::backend::{Attachment, Backend, VolumeKind, VolumeRecord};
use crate::capability::{self, Capability, is_multi_node, unsupported_reason};
use crate::capacity;
use crate::error::{Error, Result};
use crate::locks::VolumeLocks;
use crate::topology::TopologyKeys;
use crate::validate;

/// The volume context key that tells the node which kind of volume it stages.
pub const CONTEXT_TYPE: &str = "type";
/// The publish context key naming the attached image, relative to the backend.
pub const PUBLISH_IMAGE: &str = "image";
/// StorageClass parameters Kubernetes reserves for itself; external-provisioner
/// strips them, other callers may not.
const RESERVED_PREFIX: &str = "csi.storage.k8s.io/";

#[derive(Debug, Clone)]
pub struct ControllerService {
    backend: Backend,
    locks: VolumeLocks,
    topology: TopologyKeys,
    max_volume_bytes: i64,
    /// The kinds CreateVolume may create (`--volume-types`).
    kinds: Vec<VolumeKind>,
}

impl ControllerService {
    pub fn new(backend: Backend, topology: TopologyKeys, max_volume_bytes: i64) -> Self {
        Self {
            backend,
            locks: VolumeLocks::default(),
            topology,
            max_volume_bytes,
            kinds: vec![VolumeKind::Block, VolumeKind::File],
        }
    }

    /// Serves only these kinds. A file-only driver needs no attach, so it
    /// does not advertise PUBLISH_UNPUBLISH_VOLUME either.
    pub fn with_volume_kinds(mut self, kinds: Vec<VolumeKind>) -> Self {
        self.kinds = kinds;
        self
    }

    fn serves_block(&self) -> bool {
        self.kinds.contains(&VolumeKind::Block)
    }

    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// The CSI `Volume` message for a record.
    fn volume(&self, record: &VolumeRecord) -> Volume {
        Volume {
            capacity_bytes: record.capacity_bytes,
            volume_id: record.id.clone(),
            volume_context: HashMap::from([(CONTEXT_TYPE.to_owned(), record.kind.as_str().to_owned())]),
            content_source: None,
            accessible_topology: vec![self.topology.volume_topology(self.backend.id())],
        }
    }

    fn condition(&self, record: &VolumeRecord) -> VolumeCondition {
        if self.backend.data_present(record) {
            VolumeCondition { abnormal: false, message: "volume data is present on the backend".into() }
        } else {
            VolumeCondition { abnormal: true, message: "volume data is missing from the backend".into() }
        }
    }

    // ANCHOR: create-volume
    fn create_volume(&self, req: &CreateVolumeRequest) -> Result<VolumeRecord> {
        let name = validate::id("name", &req.name)?;
        let capabilities = capability::parse_all(&req.volume_capabilities)?;
        let parameters = own_parameters(&req.parameters)?;
        let kind = VolumeKind::parse(parameters.get("type").map(String::as_str).unwrap_or_default())?;
        if !self.kinds.contains(&kind) {
            return Err(Error::InvalidArgument(format!(
                "this driver serves {} volumes only (--volume-types), not type={}",
                self.kinds.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(" and "),
                kind.as_str()
            )));
        }
        if let Some(reason) = capabilities.iter().find_map(|c| unsupported_reason(kind, c)) {
            return Err(Error::InvalidArgument(reason));
        }
        if req.volume_content_source.is_some() {
            return Err(Error::InvalidArgument(
                "volume content sources (snapshots, clones) are not supported".into(),
            ));
        }
        self.topology.check_requirement(req.accessibility_requirements.as_ref(), self.backend.id())?;
        let capacity = capacity::from_range(req.capacity_range.as_ref(), self.max_volume_bytes)?;

        // TODO(lab02): Make CreateVolume idempotent by name. If a volume with
        // this name exists: return it when kind, parameters and size fit the
        // request, or fail with `Error::NameConflict`. Otherwise create it.
        // ANCHOR: solution
        if let Some(existing) = self.backend.load(name)? {
            let conflict = |reason: String| Err(Error::NameConflict { name: name.to_owned(), reason });
            if existing.kind != kind {
                return conflict(format!("it is a {} volume", existing.kind.as_str()));
            }
            if existing.parameters != parameters {
                return conflict(format!("its parameters are {:?}", existing.parameters));
            }
            if !capacity::fits(existing.capacity_bytes, req.capacity_range.as_ref()) {
                return conflict(format!("its capacity is {} bytes", existing.capacity_bytes));
            }
            return Ok(existing);
        }
        let record = VolumeRecord {
            id: name.to_owned(),
            name: name.to_owned(),
            kind,
            capacity_bytes: capacity,
            parameters,
            attachments: BTreeMap::new(),
        };
        self.backend.create(&record)?;
        tracing::info!(kind = kind.as_str(), capacity, "volume created");
        Ok(record)
        // ANCHOR_END: solution => Err(Error::NotWritten(format!("lab02: CreateVolume is not written yet ({kind:?}, {capacity} bytes; chapter 2, step 5)")))
    }
    // ANCHOR_END: create-volume

    // ANCHOR: delete-volume
    fn delete_volume(&self, volume_id: &str) -> Result<()> {
        // TODO(lab02): Deleting a volume that does not exist succeeds (the
        // call may be a retry). A volume still published to a node must not
        // be deleted: `Error::StillPublished`.
        // ANCHOR: solution
        let Some(record) = self.backend.load(volume_id)? else {
            tracing::info!("volume already gone");
            return Ok(());
        };
        if !record.attachments.is_empty() {
            return Err(Error::StillPublished {
                volume: volume_id.to_owned(),
                nodes: record.attachments.keys().cloned().collect(),
            });
        }
        self.backend.delete(volume_id)?;
        tracing::info!("volume deleted");
        Ok(())
        // ANCHOR_END: solution => Err(Error::NotWritten("lab02: DeleteVolume is not written yet (chapter 2, step 6)".into()))
    }
    // ANCHOR_END: delete-volume

    // ANCHOR: controller-publish
    fn publish(
        &self,
        volume_id: &str,
        node_id: &str,
        cap: &Capability,
        readonly: bool,
    ) -> Result<HashMap<String, String>> {
        let mut record = self.backend.get(volume_id)?;
        let node = self.backend.node(node_id)?.ok_or_else(|| Error::NodeNotFound(node_id.to_owned()))?;
        if let Some(reason) = unsupported_reason(record.kind, cap) {
            return Err(Error::InvalidArgument(reason));
        }
        let wanted = Attachment { readonly, access_mode: cap.mode.as_str_name().to_owned() };
        // TODO(lab02): Publishing is idempotent: the same attachment again is
        // fine, a different one for this node is `Error::PublishedDifferently`.
        // A single-node volume published elsewhere is `Error::PublishedElsewhere`;
        // a second read-write node for MULTI_NODE_SINGLE_WRITER is `Error::SecondWriter`.
        // A node at its `max_volumes` is `Error::NodeFull`. Then record the
        // attachment, save the record and return the publish context.
        // ANCHOR: solution
        match record.attachments.get(node_id) {
            Some(existing) if *existing == wanted => return Ok(self.publish_context(&record)),
            Some(existing) => {
                return Err(Error::PublishedDifferently {
                    volume: volume_id.to_owned(),
                    node: node_id.to_owned(),
                    reason: format!("readonly={} access_mode={}", existing.readonly, existing.access_mode),
                });
            }
            None => {}
        }
        let single_node = |a: &Attachment| {
            volume_capability::access_mode::Mode::from_str_name(&a.access_mode)
                .is_none_or(|m| !is_multi_node(m))
        };
        if let Some((other, _)) =
            record.attachments.iter().find(|(_, a)| !is_multi_node(cap.mode) || single_node(a))
        {
            return Err(Error::PublishedElsewhere { volume: volume_id.to_owned(), other: other.clone() });
        }
        // MULTI_NODE_SINGLE_WRITER: many nodes, but only one of them writes.
        let single_writer = volume_capability::access_mode::Mode::MultiNodeSingleWriter;
        let writer = |a: &Attachment| !a.readonly && a.access_mode == single_writer.as_str_name();
        if cap.mode == single_writer && !readonly {
            if let Some((other, _)) = record.attachments.iter().find(|(_, a)| writer(a)) {
                return Err(Error::SecondWriter { volume: volume_id.to_owned(), writer: other.clone() });
            }
        }
        if node.max_volumes > 0 {
            let attached =
                self.backend.list()?.iter().filter(|v| v.attachments.contains_key(node_id)).count();
            if attached as i64 >= node.max_volumes {
                return Err(Error::NodeFull { node: node_id.to_owned(), max: node.max_volumes });
            }
        }
        record.attachments.insert(node_id.to_owned(), wanted);
        self.backend.save(&record)?;
        tracing::info!(node_id, readonly, "volume published");
        Ok(self.publish_context(&record))
        // ANCHOR_END: solution => Err(Error::NotWritten(format!("lab02: ControllerPublishVolume is not written yet ({node:?}; chapter 2, step 7)")))
    }
    // ANCHOR_END: controller-publish

    /// What the node needs to find the attached volume. A real SAN would
    /// return a LUN or a device path here.
    fn publish_context(&self, record: &VolumeRecord) -> HashMap<String, String> {
        match record.kind {
            VolumeKind::Block => {
                HashMap::from([(PUBLISH_IMAGE.to_owned(), format!("volumes/{}/disk.img", record.id))])
            }
            VolumeKind::File => HashMap::new(),
        }
    }

    // ANCHOR: controller-unpublish
    fn unpublish(&self, volume_id: &str, node_id: Option<&str>) -> Result<()> {
        // TODO(lab02): Remove the node's attachment (or every attachment when
        // no node is given) and save. A volume or attachment that is already
        // gone is success: the spec asks plugins to treat it as unpublished.
        // ANCHOR: solution
        let Some(mut record) = self.backend.load(volume_id)? else {
            tracing::info!("volume is gone, so it is not published anywhere");
            return Ok(());
        };
        let before = record.attachments.len();
        match node_id {
            Some(node) => {
                record.attachments.remove(node);
            }
            None => record.attachments.clear(),
        }
        if record.attachments.len() != before {
            self.backend.save(&record)?;
            tracing::info!(node_id, "volume unpublished");
        }
        Ok(())
        // ANCHOR_END: solution => Err(Error::NotWritten("lab02: ControllerUnpublishVolume is not written yet (chapter 2, step 7)".into()))
    }
    // ANCHOR_END: controller-unpublish

    // ANCHOR: list-volumes
    fn list_volumes(&self, max_entries: i32, starting_token: &str) -> Result<ListVolumesResponse> {
        if max_entries < 0 {
            return Err(Error::InvalidArgument(format!(
                "max_entries must not be negative, got {max_entries}"
            )));
        }
        let records = self.backend.list()?;
        // The token is the id of the next volume to return. Ids are sorted, so
        // a volume deleted between pages does not make the listing skip others.
        let start = if starting_token.is_empty() {
            0
        } else {
            let next_id = starting_token
                .strip_prefix(TOKEN_PREFIX)
                .filter(|id| validate::volume_id(id).is_ok())
                .ok_or_else(|| Error::BadListToken(starting_token.to_owned()))?;
            records.partition_point(|r| r.id.as_str() < next_id)
        };
        let page = if max_entries == 0 { usize::MAX } else { max_entries as usize };
        let end = start.saturating_add(page).min(records.len());
        let entries = records[start..end]
            .iter()
            .map(|record| list_volumes_response::Entry {
                volume: Some(self.volume(record)),
                status: Some(list_volumes_response::VolumeStatus {
                    published_node_ids: record.attachments.keys().cloned().collect(),
                    volume_condition: Some(self.condition(record)),
                }),
            })
            .collect();
        let next_token = records.get(end).map(|r| format!("{TOKEN_PREFIX}{}", r.id)).unwrap_or_default();
        Ok(ListVolumesResponse { entries, next_token })
    }
    // ANCHOR_END: list-volumes

    // ANCHOR: controller-expand
    fn expand(&self, volume_id: &str, range: Option<&CapacityRange>) -> Result<(i64, bool)> {
        let range = validate::required("capacity_range", range)?;
        capacity::check_range(range)?;
        let mut record = self.backend.get(volume_id)?;
        if range.limit_bytes > 0 && range.limit_bytes < record.capacity_bytes {
            return Err(Error::CapacityOutOfRange(format!(
                "limit_bytes {} is below the current size {}: volumes cannot shrink",
                range.limit_bytes, record.capacity_bytes
            )));
        }
        // Block volumes need the node to grow the loop device and filesystem.
        let node_expansion = record.kind == VolumeKind::Block;
        if record.capacity_bytes >= range.required_bytes {
            return Ok((record.capacity_bytes, node_expansion)); // already big enough: a retry
        }
        let new_size = capacity::from_range(Some(range), self.max_volume_bytes)?;
        if record.kind == VolumeKind::Block {
            self.backend.grow_image(volume_id, new_size)?;
        }
        record.capacity_bytes = new_size;
        self.backend.save(&record)?;
        tracing::info!(new_size, "volume expanded");
        Ok((new_size, node_expansion))
    }
    // ANCHOR_END: controller-expand
}

const TOKEN_PREFIX: &str = "next:";

/// StorageClass parameters we understand, without Kubernetes' reserved keys.
fn own_parameters(parameters: &HashMap<String, String>) -> Result<BTreeMap<String, String>> {
    let mut own = BTreeMap::new();
    for (key, value) in parameters {
        if key.starts_with(RESERVED_PREFIX) {
            continue;
        }
        if key != "type" {
            return Err(Error::InvalidArgument(format!(
                "unknown parameter {key:?}; only \"type\" is supported"
            )));
        }
        own.insert(key.clone(), value.clone());
    }
    Ok(own)
}

/// Converts a result into a gRPC response, logging nothing twice.
fn reply<T>(result: Result<T>) -> Result<Response<T>, Status> {
    result.map(Response::new).map_err(Status::from)
}

#[tonic::async_trait]
impl Controller for ControllerService {
    async fn create_volume(
        &self,
        request: Request<CreateVolumeRequest>,
    ) -> Result<Response<CreateVolumeResponse>, Status> {
        let req = request.into_inner();
        record_volume_id(&req.name);
        let _guard = self.locks.lock(&req.name).await;
        reply(
            self.create_volume(&req)
                .map(|record| CreateVolumeResponse { volume: Some(self.volume(&record)) }),
        )
    }

    async fn delete_volume(
        &self,
        request: Request<DeleteVolumeRequest>,
    ) -> Result<Response<DeleteVolumeResponse>, Status> {
        let req = request.into_inner();
        record_volume_id(&req.volume_id);
        let id = validate::volume_id(&req.volume_id)?;
        let _guard = self.locks.lock(id).await;
        reply(self.delete_volume(id).map(|()| DeleteVolumeResponse {}))
    }

    async fn controller_publish_volume(
        &self,
        request: Request<ControllerPublishVolumeRequest>,
    ) -> Result<Response<ControllerPublishVolumeResponse>, Status> {
        let req = request.into_inner();
        record_volume_id(&req.volume_id);
        let id = validate::volume_id(&req.volume_id)?;
        let node = validate::node_id(&req.node_id)?;
        let cap =
            capability::parse(validate::required("volume_capability", req.volume_capability.as_ref())?)?;
        let _guard = self.locks.lock(id).await;
        // The node's volume limit counts attachments of every volume: two
        // publishes of different volumes to one node must not both pass it.
        let _node_guard = self.locks.lock(&format!("node:{node}")).await;
        reply(
            self.publish(id, node, &cap, req.readonly)
                .map(|publish_context| ControllerPublishVolumeResponse { publish_context }),
        )
    }

    async fn controller_unpublish_volume(
        &self,
        request: Request<ControllerUnpublishVolumeRequest>,
    ) -> Result<Response<ControllerUnpublishVolumeResponse>, Status> {
        let req = request.into_inner();
        record_volume_id(&req.volume_id);
        let id = validate::volume_id(&req.volume_id)?;
        // An empty node id means "from every node".
        let node = if req.node_id.is_empty() { None } else { Some(validate::node_id(&req.node_id)?) };
        let _guard = self.locks.lock(id).await;
        reply(self.unpublish(id, node).map(|()| ControllerUnpublishVolumeResponse {}))
    }

    // ANCHOR: validate-volume-capabilities
    async fn validate_volume_capabilities(
        &self,
        request: Request<ValidateVolumeCapabilitiesRequest>,
    ) -> Result<Response<ValidateVolumeCapabilitiesResponse>, Status> {
        let req = request.into_inner();
        record_volume_id(&req.volume_id);
        let id = validate::volume_id(&req.volume_id)?;
        let capabilities = capability::parse_all(&req.volume_capabilities)?;
        let record = self.backend.get(id)?;
        // Confirm only what we really support; otherwise explain, without error.
        // Parameters we do not know cannot be confirmed: CreateVolume would
        // have refused them.
        let refusal = capabilities.iter().find_map(|c| unsupported_reason(record.kind, c)).or_else(|| {
            match own_parameters(&req.parameters) {
                Err(unknown) => Some(unknown.to_string()),
                Ok(asked) => (!req.parameters.is_empty() && asked != record.parameters)
                    .then(|| format!("the volume was created with parameters {:?}", record.parameters)),
            }
        });
        let response = match refusal {
            Some(message) => ValidateVolumeCapabilitiesResponse { confirmed: None, message },
            None => ValidateVolumeCapabilitiesResponse {
                confirmed: Some(validate_volume_capabilities_response::Confirmed {
                    volume_context: req.volume_context,
                    volume_capabilities: req.volume_capabilities,
                    parameters: req.parameters,
                    mutable_parameters: Default::default(),
                }),
                message: String::new(),
            },
        };
        Ok(Response::new(response))
    }
    // ANCHOR_END: validate-volume-capabilities

    async fn list_volumes(
        &self,
        request: Request<ListVolumesRequest>,
    ) -> Result<Response<ListVolumesResponse>, Status> {
        let req = request.into_inner();
        reply(self.list_volumes(req.max_entries, &req.starting_token))
    }

    // ANCHOR: get-capacity
    async fn get_capacity(
        &self,
        request: Request<GetCapacityRequest>,
    ) -> Result<Response<GetCapacityResponse>, Status> {
        let req = request.into_inner();
        let params = own_parameters(&req.parameters)?;
        let kind = VolumeKind::parse(params.get("type").map(String::as_str).unwrap_or_default())?;
        let capabilities: Vec<Capability> =
            req.volume_capabilities.iter().map(capability::parse).collect::<Result<_>>()?;
        // Capacity elsewhere, or for a use we cannot serve, is zero.
        let elsewhere = req
            .accessible_topology
            .as_ref()
            .and_then(|t| t.segments.get(&self.topology.backend))
            .is_some_and(|backend| backend != self.backend.id());
        let unusable = capabilities.iter().any(|c| unsupported_reason(kind, c).is_some());
        let available = if elsewhere || unusable { 0 } else { self.backend.available_bytes()? };
        Ok(Response::new(GetCapacityResponse {
            available_capacity: available,
            // Images are sparse, so one volume may be larger than the free space.
            maximum_volume_size: Some(self.max_volume_bytes),
            minimum_volume_size: Some(capacity::MIN_VOLUME_BYTES),
        }))
    }
    // ANCHOR_END: get-capacity

    // ANCHOR: controller-get-capabilities
    async fn controller_get_capabilities(
        &self,
        _request: Request<ControllerGetCapabilitiesRequest>,
    ) -> Result<Response<ControllerGetCapabilitiesResponse>, Status> {
        use rpc::Type;
        let capabilities = [
            Type::CreateDeleteVolume,
            Type::PublishUnpublishVolume,
            Type::ListVolumes,
            Type::GetCapacity,
            Type::ExpandVolume,
            Type::ListVolumesPublishedNodes,
            Type::VolumeCondition,
            Type::GetVolume,
            Type::PublishReadonly,
            Type::SingleNodeMultiWriter,
        ]
        .into_iter()
        // Without block volumes nothing is ever attached: no publish RPCs.
        .filter(|t| self.serves_block() || !matches!(t, Type::PublishUnpublishVolume | Type::PublishReadonly))
        .map(|t| ControllerServiceCapability { r#type: Some(CapType::Rpc(Rpc { r#type: t as i32 })) })
        .collect();
        Ok(Response::new(ControllerGetCapabilitiesResponse { capabilities }))
    }
    // ANCHOR_END: controller-get-capabilities

    async fn controller_get_volume(
        &self,
        request: Request<ControllerGetVolumeRequest>,
    ) -> Result<Response<ControllerGetVolumeResponse>, Status> {
        let req = request.into_inner();
        record_volume_id(&req.volume_id);
        let id = validate::volume_id(&req.volume_id)?;
        let record = self.backend.get(id)?;
        Ok(Response::new(ControllerGetVolumeResponse {
            volume: Some(self.volume(&record)),
            status: Some(controller_get_volume_response::VolumeStatus {
                published_node_ids: record.attachments.keys().cloned().collect(),
                volume_condition: Some(self.condition(&record)),
            }),
        }))
    }

    async fn controller_expand_volume(
        &self,
        request: Request<ControllerExpandVolumeRequest>,
    ) -> Result<Response<ControllerExpandVolumeResponse>, Status> {
        let req = request.into_inner();
        record_volume_id(&req.volume_id);
        let id = validate::volume_id(&req.volume_id)?;
        if let Some(cap) = req.volume_capability.as_ref() {
            capability::parse(cap)?;
        }
        let _guard = self.locks.lock(id).await;
        reply(self.expand(id, req.capacity_range.as_ref()).map(
            |(capacity_bytes, node_expansion_required)| ControllerExpandVolumeResponse {
                capacity_bytes,
                node_expansion_required,
            },
        ))
    }
}
