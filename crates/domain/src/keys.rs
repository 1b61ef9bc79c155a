//! Signing-key lifecycle. A key is stored with a `state` and, once rotated
//! out, the instant its grace period ends; its public `status` is derived
//! from those and the current time, so nothing has to flip it on a timer.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// What is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyState {
    Active,
    Retiring,
    Revoked,
}

impl KeyState {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Retiring => "retiring",
            Self::Revoked => "revoked",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(Self::Active),
            "retiring" => Some(Self::Retiring),
            "revoked" => Some(Self::Revoked),
            _ => None,
        }
    }
}

/// What users see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyStatus {
    Active,
    Retiring,
    Retired,
    Revoked,
}

impl KeyStatus {
    pub fn derive(state: KeyState, retires_at: Option<OffsetDateTime>, now: OffsetDateTime) -> Self {
        match state {
            KeyState::Active => Self::Active,
            KeyState::Revoked => Self::Revoked,
            KeyState::Retiring => match retires_at {
                Some(t) if t > now => Self::Retiring,
                _ => Self::Retired,
            },
        }
    }

    /// Whether tokens signed by a key in this status still verify (and the
    /// key is published in the JWKS).
    pub fn verifies(&self) -> bool {
        matches!(self, Self::Active | Self::Retiring)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::Duration;

    #[test]
    fn retiring_key_retires_when_grace_ends() {
        let now = OffsetDateTime::UNIX_EPOCH + Duration::days(10);
        let end = now + Duration::seconds(5);
        assert_eq!(KeyStatus::derive(KeyState::Retiring, Some(end), now), KeyStatus::Retiring);
        assert_eq!(KeyStatus::derive(KeyState::Retiring, Some(end), end), KeyStatus::Retired);
        assert_eq!(KeyStatus::derive(KeyState::Retiring, None, now), KeyStatus::Retired);
        assert!(KeyStatus::Retiring.verifies());
        assert!(!KeyStatus::Retired.verifies());
        assert!(!KeyStatus::derive(KeyState::Revoked, None, now).verifies());
    }
}
