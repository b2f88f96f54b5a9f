//! One ring membership of this process: registered as JOINING, ACTIVE once the role can
//! serve, LEAVING and then removed at a clean shutdown.

use std::sync::{Arc, Mutex};

use profusion_catalog::{Catalog, MemberState, RingMember};
use tokio::sync::Notify;

use crate::RingConfig;

/// Keeps this process's member of one ring alive in the catalog.
#[derive(Debug)]
pub struct Lifecycler {
    catalog: Arc<dyn Catalog>,
    member: Mutex<RingMember>,
    /// Wakes the heartbeat loop early (a state change) or for good (shutdown).
    wake: Notify,
    stopped: std::sync::atomic::AtomicBool,
}

impl Lifecycler {
    /// Registers the member as JOINING (failing if the catalog refuses the first heartbeat,
    /// so a process never runs unseen), then heartbeats every `config.heartbeat_period`.
    pub async fn register(
        catalog: Arc<dyn Catalog>,
        ring: &str,
        instance: &str,
        address: &str,
        tokens: Vec<u32>,
        config: RingConfig,
    ) -> Result<Arc<Self>, profusion_catalog::CatalogError> {
        let now = profusion_model::time::now_millis();
        let member = RingMember {
            ring: ring.to_owned(),
            instance: instance.to_owned(),
            address: address.to_owned(),
            tokens,
            state: MemberState::Joining,
            registered_at_millis: now,
            heartbeat_at_millis: now,
        };
        catalog.heartbeat(&member).await?;
        tracing::info!(ring, instance, address, "joined the ring");
        let lifecycler = Arc::new(Self {
            catalog,
            member: Mutex::new(member),
            wake: Notify::new(),
            stopped: Default::default(),
        });
        tokio::spawn(Arc::clone(&lifecycler).heartbeat_loop(config.heartbeat_period));
        Ok(lifecycler)
    }

    /// The member as last sent.
    pub fn member(&self) -> RingMember {
        self.member.lock().expect("member lock").clone()
    }

    /// Marks the member ACTIVE: the role serves.
    pub fn set_active(&self) {
        self.set_state(MemberState::Active);
    }

    fn set_state(&self, state: MemberState) {
        self.member.lock().expect("member lock").state = state;
        self.wake.notify_one();
    }

    /// A clean shutdown: LEAVING (so routing stops at once), then out of the ring.
    pub async fn leave(&self) {
        self.stopped
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.wake.notify_one();
        let member = {
            let mut member = self.member.lock().expect("member lock");
            member.state = MemberState::Leaving;
            member.clone()
        };
        if let Err(e) = self.catalog.heartbeat(&member).await {
            tracing::warn!(ring = member.ring, error = %e, "marking the member LEAVING");
        }
        match self
            .catalog
            .forget_member(&member.ring, &member.instance)
            .await
        {
            Ok(()) => tracing::info!(
                ring = member.ring,
                instance = member.instance,
                "left the ring"
            ),
            Err(e) => tracing::warn!(
                ring = member.ring,
                error = %e,
                "leaving the ring; the member turns unhealthy when its heartbeat times out"
            ),
        }
    }

    async fn heartbeat_loop(self: Arc<Self>, period: std::time::Duration) {
        loop {
            let _ = tokio::time::timeout(period, self.wake.notified()).await;
            if self.stopped.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            let member = self.member();
            if let Err(e) = self.catalog.heartbeat(&member).await {
                // The next beat retries; a member that cannot reach the catalog for longer
                // than the timeout is routed around, which is what should happen to it.
                tracing::warn!(ring = member.ring, instance = member.instance, error = %e, "ring heartbeat failed");
            }
        }
    }
}
