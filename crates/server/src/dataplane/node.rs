//! This process as a data-plane node: its id (kept in the data dir), whether
//! it is drained, and its heartbeat to the registry.
//!
//! The registry (the `nodes` table of the control database, see
//! `routes::nodes`) is the one place that says whether a node is drained:
//! drain and undrain write it there, and every heartbeat answers the node
//! as stored, so a node learns of a drain from its next heartbeat at the
//! latest (`--heartbeat-interval`, 5 s by default), whichever control
//! process took the request. When the drain reaches the process that runs
//! the node (`--role all`), it applies at once.
//!
//! Draining: no new connections (the upgrade answers 503 `node_draining`,
//! discovery stops naming the node), and every open connection is closed
//! with 4503 so its client reconnects through discovery. Nothing needs
//! flushing first: an update is persisted before anyone receives it.

use super::CloseReason;
use super::close;
use super::registry::Registry;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use store::{NodeHeartbeat, NodeRecord, Store};
use time::OffsetDateTime;

/// The region a `--role all` node reports: it serves every region.
pub const ALL_REGIONS: &str = "all";

/// A node id: 1–64 visible ASCII characters.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_graphic())
}

/// `--node-id` if given; otherwise the id kept in `<data-dir>/node-id`,
/// generated there on first start, so a restarted node keeps its id (and
/// comes back `up` under it in the registry).
pub fn resolve_id(given: Option<&str>, data_dir: &Path) -> std::io::Result<String> {
    if let Some(id) = given {
        return Ok(id.to_owned());
    }
    let path = data_dir.join("node-id");
    match std::fs::read_to_string(&path) {
        Ok(text) if valid_id(text.trim()) => return Ok(text.trim().to_owned()),
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} does not hold a node id (1-64 visible ASCII characters)", path.display()),
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let id = format!("node-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    std::fs::write(&path, format!("{id}\n"))?;
    Ok(id)
}

pub struct LocalNode {
    pub id: String,
    pub region: String,
    /// The public base URL clients reach it at.
    pub url: String,
    /// This process; a new one tells the registry the node restarted.
    instance: String,
    started_at: OffsetDateTime,
    draining: AtomicBool,
    registry: Weak<Registry>,
}

impl LocalNode {
    pub fn new(id: String, region: String, url: String, now: OffsetDateTime, registry: &Arc<Registry>) -> Self {
        Self {
            id,
            region,
            url,
            instance: uuid::Uuid::new_v4().to_string(),
            started_at: now,
            draining: AtomicBool::new(false),
            registry: Arc::downgrade(registry),
        }
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Follows the registry's word. Entering the drain closes every open
    /// connection with 4503 (answers how many).
    pub fn set_draining(&self, draining: bool) -> usize {
        let was = self.draining.swap(draining, Ordering::AcqRel);
        if !draining || was {
            return 0;
        }
        let reason = CloseReason { code: close::DRAINING, reason: "node draining: reconnect through discovery" };
        let closed = self.registry.upgrade().map_or(0, |r| r.close_where(reason, |_| true));
        tracing::info!(node = %self.id, closed, "node draining: new connections refused, open ones told to move");
        closed
    }

    /// One heartbeat: reports this node to the registry and follows what it
    /// answers about draining.
    pub async fn heartbeat(
        &self,
        store: &dyn Store,
        documents: usize,
        now: OffsetDateTime,
    ) -> store::Result<NodeRecord> {
        let connections = self.registry.upgrade().map_or(0, |r| r.len());
        let beat = NodeHeartbeat {
            id: self.id.clone(),
            region: self.region.clone(),
            url: self.url.clone(),
            instance: self.instance.clone(),
            started_at: self.started_at,
            connections: i64::try_from(connections).unwrap_or(i64::MAX),
            documents: i64::try_from(documents).unwrap_or(i64::MAX),
        };
        let record = store.node_heartbeat(&beat, now).await?;
        self.set_draining(record.draining);
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_generated_id_is_kept_in_the_data_dir() {
        let dir = std::env::temp_dir().join(format!("wiresocket-node-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let first = resolve_id(None, &dir).unwrap();
        assert!(first.starts_with("node-"));
        assert_eq!(resolve_id(None, &dir).unwrap(), first);
        assert_eq!(resolve_id(Some("edge-1"), &dir).unwrap(), "edge-1");
        std::fs::write(dir.join("node-id"), "bad id with spaces\n").unwrap();
        assert!(resolve_id(None, &dir).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
