//! Data-plane nodes as the registry sees them.

use serde::Serialize;
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

#[cfg(test)]
mod tests {
    use super::*;

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
