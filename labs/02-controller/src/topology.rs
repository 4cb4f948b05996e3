//! Topology: which nodes can reach a volume.
//!
//! Every node that mounts the same backend directory can reach every volume on
//! it, like hosts on one SAN. So a volume's accessible topology names the
//! backend, not a node: `topology.<driver>/backend=<backend-id>`. Nodes also
//! report their own name under `topology.<driver>/node`, which lab 05 uses to
//! pin local volumes.

use std::collections::HashMap;

use lab01_identity::csi::{Topology, TopologyRequirement};

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopologyKeys {
    pub backend: String,
    pub node: String,
}

impl TopologyKeys {
    pub fn for_driver(driver_name: &str) -> Self {
        Self {
            backend: format!("topology.{driver_name}/backend"),
            node: format!("topology.{driver_name}/node"),
        }
    }

    /// The segment every volume of this backend is accessible from.
    pub fn volume_topology(&self, backend_id: &str) -> Topology {
        Topology { segments: HashMap::from([(self.backend.clone(), backend_id.to_owned())]) }
    }

    // ANCHOR: check-topology
    /// CreateVolume must place the volume where `requirement.requisite` says.
    /// A segment that names our backend (nodes report it, so the segments
    /// the provisioner copies from node labels carry it) is one we can serve.
    pub fn check_requirement(
        &self,
        requirement: Option<&TopologyRequirement>,
        backend_id: &str,
    ) -> Result<()> {
        let Some(requirement) = requirement else { return Ok(()) };
        // TODO(lab02): When `requisite` is not empty, at least one of its
        // segments must have `self.backend` set to `backend_id`. Otherwise the
        // answer is RESOURCE_EXHAUSTED (`Error::TopologyUnavailable`).
        // ANCHOR: solution
        if requirement.requisite.is_empty() {
            return Ok(());
        }
        let reachable =
            |segment: &Topology| segment.segments.get(&self.backend).map(String::as_str) == Some(backend_id);
        if requirement.requisite.iter().any(reachable) {
            Ok(())
        } else {
            Err(Error::TopologyUnavailable(format!("no requisite segment has {}={backend_id}", self.backend)))
        }
        // ANCHOR_END: solution => Ok(())
    }
    // ANCHOR_END: check-topology
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(pairs: &[(&str, &str)]) -> Topology {
        Topology { segments: pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect() }
    }

    #[test]
    fn a_requisite_naming_another_backend_cannot_be_served() {
        let keys = TopologyKeys::for_driver("csi.test");
        let req =
            TopologyRequirement { requisite: vec![segment(&[(&keys.backend, "other")])], preferred: vec![] };
        assert!(matches!(keys.check_requirement(Some(&req), "san-1"), Err(Error::TopologyUnavailable(_))));
    }

    #[test]
    fn a_node_segment_that_carries_our_backend_is_served() {
        let keys = TopologyKeys::for_driver("csi.test");
        let node = segment(&[(&keys.backend, "san-1"), (&keys.node, "worker")]);
        let req = TopologyRequirement {
            requisite: vec![segment(&[(&keys.backend, "x")]), node],
            preferred: vec![],
        };
        assert!(keys.check_requirement(Some(&req), "san-1").is_ok());
        assert!(keys.check_requirement(None, "san-1").is_ok());
    }
}
