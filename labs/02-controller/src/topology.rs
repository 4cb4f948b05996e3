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
        // A topology key's prefix must be lower case; driver names need not be.
        let prefix = driver_name.to_ascii_lowercase();
        Self { backend: format!("topology.{prefix}/backend"), node: format!("topology.{prefix}/node") }
    }

    /// Checks that `value` can be a topology segment value: the spec allows
    /// at most 63 characters, beginning and ending with a letter or digit,
    /// with `-`, `_` and `.` between. Node ids become such values.
    pub fn check_segment_value(what: &str, value: &str) -> Result<()> {
        let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
        let ok = value.len() <= 63
            && edge_ok(value.chars().next())
            && edge_ok(value.chars().last())
            && value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if ok {
            Ok(())
        } else {
            Err(Error::InvalidArgument(format!(
                "{what} {value:?} cannot be a topology value: at most 63 characters, letters, digits, \
                 '-', '_' and '.', beginning and ending with a letter or digit"
            )))
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
    fn topology_keys_are_lower_case_and_node_ids_must_fit_a_segment_value() {
        assert_eq!(TopologyKeys::for_driver("CSI.Test").node, "topology.csi.test/node");
        assert!(TopologyKeys::check_segment_value("node id", "kind-worker2").is_ok());
        for bad in ["", "-a", "a.", &"x".repeat(64)] {
            assert!(TopologyKeys::check_segment_value("node id", bad).is_err(), "{bad:?} must be refused");
        }
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
