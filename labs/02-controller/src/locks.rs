//! One lock per volume: concurrent RPCs on the same volume run one after the
//! other, so a retried CreateVolume racing the first one cannot create twice.
//! (The spec also allows answering ABORTED instead; waiting is kinder to
//! callers, and calls on different volumes still run in parallel.)

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

#[derive(Debug, Default, Clone)]
pub struct VolumeLocks {
    locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

/// Held while an RPC works on one volume.
pub struct VolumeGuard {
    _guard: OwnedMutexGuard<()>,
}

impl VolumeLocks {
    pub async fn lock(&self, volume_id: &str) -> VolumeGuard {
        let lock = {
            let mut locks = self.locks.lock().expect("lock table poisoned");
            // Forget locks nobody holds or waits for, so the table stays small.
            locks.retain(|_, lock| Arc::strong_count(lock) > 1);
            locks.entry(volume_id.to_owned()).or_default().clone()
        };
        VolumeGuard { _guard: lock.lock_owned().await }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn the_same_volume_is_locked_and_another_volume_is_not() {
        let locks = VolumeLocks::default();
        let held = locks.lock("a").await;
        let other = tokio::time::timeout(Duration::from_millis(50), locks.lock("b")).await;
        assert!(other.is_ok(), "a different volume must not wait");
        let same = tokio::time::timeout(Duration::from_millis(50), locks.lock("a")).await;
        assert!(same.is_err(), "the same volume must wait");
        drop(held);
        assert!(tokio::time::timeout(Duration::from_millis(50), locks.lock("a")).await.is_ok());
    }
}
