//! The control plane's view of the fleet: the node directory that
//! discovery picks from.
//!
//! A copy of the registry (`nodes` table) in memory, refreshed after every
//! heartbeat of this process (so within `--heartbeat-interval`) and changed
//! at once by a drain or undrain taken here: discovery reads no database.
//! Status is judged at read time from the last heartbeat, so a node that
//! died drops out of discovery `--node-timeout` after its last heartbeat
//! without anyone marking it.

use crate::dataplane::node::ALL_REGIONS;
use domain::node::{NodeStatus, rendezvous};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;
use store::{NodeRecord, Store};
use time::OffsetDateTime;

#[derive(Default)]
pub struct NodeDirectory {
    /// By id. Replaced whole on refresh; readers clone the `Arc`.
    nodes: RwLock<Arc<Vec<NodeRecord>>>,
}

impl NodeDirectory {
    fn snapshot(&self) -> Arc<Vec<NodeRecord>> {
        self.nodes.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Reloads every node from the registry.
    pub async fn refresh(&self, store: &dyn Store) -> store::Result<()> {
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = store.list_nodes(after.as_deref(), crate::routes::MAX_LIMIT).await?;
            all.extend(page.items);
            match page.next_after {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        *self.nodes.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(all);
        Ok(())
    }

    /// One node as the registry now holds it (after a drain or undrain).
    pub fn upsert(&self, node: NodeRecord) {
        let mut guard = self.nodes.write().unwrap_or_else(PoisonError::into_inner);
        let mut nodes = guard.as_ref().clone();
        match nodes.binary_search_by(|n| n.id.cmp(&node.id)) {
            Ok(i) => nodes[i] = node,
            Err(i) => nodes.insert(i, node),
        }
        *guard = Arc::new(nodes);
    }

    /// The node for (app, doc): by rendezvous hashing over the up nodes
    /// serving `region` (a `--role all` node serves every region).
    pub fn pick(
        &self,
        region: &str,
        app: &str,
        doc: &str,
        now: OffsetDateTime,
        timeout: Duration,
    ) -> Option<NodeRecord> {
        let nodes = self.snapshot();
        let up: Vec<&NodeRecord> = nodes
            .iter()
            .filter(|n| n.region == region || n.region == ALL_REGIONS)
            .filter(|n| NodeStatus::of(n.draining, n.last_heartbeat_at, now, timeout) == NodeStatus::Up)
            .collect();
        rendezvous(&[app, doc], &up, |n| n.id.as_str()).map(|n| (*n).clone())
    }

    /// Every node as gauges: `wiresocket_node_up` (1 when up),
    /// `…_connections`, `…_documents`, labelled by node and region.
    pub fn export_metrics(&self, now: OffsetDateTime, timeout: Duration) {
        for n in self.snapshot().iter() {
            let up = NodeStatus::of(n.draining, n.last_heartbeat_at, now, timeout) == NodeStatus::Up;
            let labels = [("node", n.id.clone()), ("region", n.region.clone())];
            metrics::gauge!("wiresocket_node_up", &labels).set(if up { 1.0 } else { 0.0 });
            metrics::gauge!("wiresocket_node_connections", &labels).set(n.connections as f64);
            metrics::gauge!("wiresocket_node_documents", &labels).set(n.documents as f64);
        }
    }
}

/// The `ws(s)://…/v1/sync` URL a stock provider gets for a node whose
/// public base URL is `base`.
pub fn sync_url(base: &str) -> String {
    let base = base.trim_end_matches('/');
    let ws = if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else {
        format!("ws://{}", base.trim_start_matches("http://"))
    };
    format!("{ws}/v1/sync")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn node(id: &str, region: &str, draining: bool, at: OffsetDateTime) -> NodeRecord {
        NodeRecord {
            id: id.into(),
            region: region.into(),
            url: format!("http://{id}:8080"),
            draining,
            instance: "i".into(),
            started_at: at,
            last_heartbeat_at: at,
            connections: 0,
            documents: 0,
        }
    }

    #[test]
    fn pick_takes_only_up_nodes_of_the_region() {
        let t0 = OffsetDateTime::UNIX_EPOCH + time::Duration::days(1000);
        let timeout = Duration::from_secs(15);
        let dir = NodeDirectory::default();
        dir.upsert(node("eu-1", "eu-central-1", false, t0));
        dir.upsert(node("eu-2", "eu-central-1", true, t0));
        dir.upsert(node("eu-3", "eu-central-1", false, t0 - time::Duration::seconds(60)));
        dir.upsert(node("us-1", "aws-us-east-1", false, t0));
        for doc in ["a", "b", "c", "d", "e", "f"] {
            assert_eq!(dir.pick("eu-central-1", "app", doc, t0, timeout).unwrap().id, "eu-1");
            assert_eq!(dir.pick("aws-us-east-1", "app", doc, t0, timeout).unwrap().id, "us-1");
        }
        assert!(dir.pick("ap-south-1", "app", "a", t0, timeout).is_none());
        // An undrain shows at once.
        dir.upsert(node("eu-2", "eu-central-1", false, t0));
        let picked: std::collections::HashSet<String> =
            (0..50).map(|i| dir.pick("eu-central-1", "app", &format!("d{i}"), t0, timeout).unwrap().id).collect();
        assert_eq!(picked.len(), 2);
    }

    #[test]
    fn sync_urls() {
        assert_eq!(sync_url("http://127.0.0.1:8080"), "ws://127.0.0.1:8080/v1/sync");
        assert_eq!(sync_url("https://rt.example.com/"), "wss://rt.example.com/v1/sync");
    }
}
