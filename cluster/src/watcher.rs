//! The view of one ring, read from the catalog every heartbeat period and shared by whatever
//! routes over it.

use std::sync::Arc;

use profusion_catalog::{Catalog, RingMember};
use tokio::sync::watch;

use crate::RingConfig;

/// The members of one ring as last read from the catalog.
#[derive(Debug, Clone)]
pub struct RingWatcher {
    ring: String,
    config: RingConfig,
    members: watch::Receiver<Arc<Vec<RingMember>>>,
}

impl RingWatcher {
    /// Reads `ring` now, then again every heartbeat period for as long as a clone of the
    /// watcher lives.
    pub async fn start(
        catalog: Arc<dyn Catalog>,
        ring: &str,
        config: RingConfig,
    ) -> Result<Self, profusion_catalog::CatalogError> {
        let first = catalog.ring_members(ring).await?;
        let (tx, rx) = watch::channel(Arc::new(first));
        let name = ring.to_owned();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(config.heartbeat_period) => {}
                    _ = tx.closed() => return,
                }
                match catalog.ring_members(&name).await {
                    Ok(members) => {
                        tx.send_if_modified(|current| {
                            if **current == members {
                                return false;
                            }
                            *current = Arc::new(members);
                            true
                        });
                    }
                    Err(e) => tracing::warn!(ring = name, error = %e, "reading the ring"),
                }
            }
        });
        Ok(Self {
            ring: ring.to_owned(),
            config,
            members: rx,
        })
    }

    pub fn ring(&self) -> &str {
        &self.ring
    }

    pub fn config(&self) -> RingConfig {
        self.config
    }

    /// Every member, healthy or not, by instance id.
    pub fn members(&self) -> Arc<Vec<RingMember>> {
        Arc::clone(&self.members.borrow())
    }

    /// Members that heartbeat within the timeout and are ACTIVE: the ones to send work to.
    pub fn serving(&self) -> Vec<RingMember> {
        self.members()
            .iter()
            .filter(|m| {
                m.state == profusion_catalog::MemberState::Active && self.config.is_healthy(m)
            })
            .cloned()
            .collect()
    }

    /// Waits until the members change.
    pub async fn changed(&mut self) -> bool {
        self.members.changed().await.is_ok()
    }
}
