//! Data-plane nodes as the registry sees them.

use serde::Serialize;
use sha2::{Digest, Sha256};
use std::time::Duration;
use time::OffsetDateTime;

/// What the registry answers for a node (CONTRACT "Nodes and the fleet").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeStatus {
    /// Heartbeating and taking connections.
    Up,
    /// Heartbeating, but drained by an operator: no new connections, and
    /// discovery does not hand it out.
    Draining,
    /// No heartbeat for longer than the timeout.
    Down,
}

impl NodeStatus {
    /// `down` is never stored: it is a heartbeat older than `timeout` at
    /// `now`, so a node that stops without a word is down without any job
    /// marking it, and one that heartbeats again is back at once.
    pub fn of(draining: bool, last_heartbeat_at: OffsetDateTime, now: OffsetDateTime, timeout: Duration) -> Self {
        if now - last_heartbeat_at > timeout {
            NodeStatus::Down
        } else if draining {
            NodeStatus::Draining
        } else {
            NodeStatus::Up
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Up => "up",
            NodeStatus::Draining => "draining",
            NodeStatus::Down => "down",
        }
    }
}

/// The node for `key` among `nodes`, by rendezvous (highest random weight)
/// hashing: each node's weight for the key is a hash of the two, and the
/// heaviest wins. Everyone holding the same set of nodes picks the same
/// one, keys spread evenly, and a node leaving moves only the keys it had
/// (each to its next-heaviest node); one joining takes only keys from
/// others, never shuffles them among the rest. `key` is (app, doc) for
/// discovery. SHA-256, not the std hasher: the pick must agree across
/// processes and builds.
pub fn rendezvous<'a, T>(key: &[&str], nodes: &'a [T], id: impl Fn(&T) -> &str) -> Option<&'a T> {
    let weight = |node: &T| {
        let mut h = Sha256::new();
        // Length-prefixed parts, so ("ab", "c") and ("a", "bc") differ.
        for part in std::iter::once(id(node)).chain(key.iter().copied()) {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        let digest = h.finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        (u64::from_be_bytes(first), id(node).to_owned())
    };
    nodes.iter().max_by_key(|n| weight(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pick<'a>(app: &str, doc: &str, nodes: &'a [&'a str]) -> &'a str {
        rendezvous(&[app, doc], nodes, |n| n).copied().unwrap_or_default()
    }

    #[test]
    fn rendezvous_is_stable_spreads_and_moves_only_what_it_must() {
        let three = ["node-a", "node-b", "node-c"];
        let docs: Vec<String> = (0..3000).map(|i| format!("doc-{i}")).collect();
        let before: Vec<&str> = docs.iter().map(|d| pick("app", d, &three)).collect();
        // The same answer every time, whatever the order of the set.
        let shuffled = ["node-c", "node-a", "node-b"];
        for (d, b) in docs.iter().zip(&before) {
            assert_eq!(pick("app", d, &shuffled), *b);
        }
        // Even spread: each node gets about a third.
        for n in three {
            let share = before.iter().filter(|p| **p == n).count();
            assert!((800..1200).contains(&share), "{n} got {share} of 3000");
        }
        // node-b leaves: only its documents move.
        let two = ["node-a", "node-c"];
        for (d, b) in docs.iter().zip(&before) {
            let now = pick("app", d, &two);
            if *b != "node-b" {
                assert_eq!(now, *b, "{d} moved although its node stayed");
            }
        }
        // A fourth joins: documents move only to it.
        let four = ["node-a", "node-b", "node-c", "node-d"];
        let mut moved = 0;
        for (d, b) in docs.iter().zip(&before) {
            let now = pick("app", d, &four);
            if now != *b {
                assert_eq!(now, "node-d");
                moved += 1;
            }
        }
        assert!((550..950).contains(&moved), "{moved} of 3000 moved to the new node");
        // The app is part of the key.
        let differ = docs.iter().filter(|d| pick("app-1", d, &three) != pick("app-2", d, &three)).count();
        assert!(differ > 1000);
        assert!(rendezvous(&["app", "doc"], &[] as &[&str], |n| n).is_none());
    }

    #[test]
    fn down_is_a_stale_heartbeat_and_wins_over_draining() {
        let t0 = OffsetDateTime::UNIX_EPOCH;
        let timeout = Duration::from_secs(15);
        let at = |s: i64| t0 + time::Duration::seconds(s);
        assert_eq!(NodeStatus::of(false, t0, at(15), timeout), NodeStatus::Up);
        assert_eq!(NodeStatus::of(true, t0, at(15), timeout), NodeStatus::Draining);
        assert_eq!(NodeStatus::of(false, t0, at(16), timeout), NodeStatus::Down);
        assert_eq!(NodeStatus::of(true, t0, at(16), timeout), NodeStatus::Down);
        // A clock behind the heartbeat (another process's) is not "down".
        assert_eq!(NodeStatus::of(false, at(10), t0, timeout), NodeStatus::Up);
    }
}
