//! The claims of WireSocket access tokens (RFC 9068 style) and client tokens.

use serde::{Deserialize, Serialize};

/// What a client token may do to the documents it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Access {
    #[default]
    #[serde(rename = "rw")]
    ReadWrite,
    #[serde(rename = "r")]
    Read,
}

impl Access {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "rw" => Some(Self::ReadWrite),
            "r" => Some(Self::Read),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// `<public-url>/<tid>`
    pub iss: String,
    /// The client_id, or the end user's id for a client token.
    pub sub: String,
    /// Always [`crate::AUDIENCE`].
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    pub jti: String,
    pub client_id: String,
    /// Tenant id.
    pub tid: String,
    /// App id.
    pub app: String,
    pub region: String,
    /// Space-separated scopes.
    pub scope: String,
    /// The app's allowed domains as stored.
    #[serde(default)]
    pub origins: Vec<String>,
    /// Client tokens: document patterns this token covers. Absent = every doc.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docs: Option<Vec<String>>,
    /// Client tokens: `rw` or `r`. Absent = `rw`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<Access>,
    /// Client tokens: the end user's display name, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Not before. Our issuer never sets it; a token that has it is
    /// refused until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
}

impl Claims {
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scope.split(' ').any(|s| s == scope)
    }

    /// A client token is one minted for an end user by `POST /v1/client-tokens`.
    pub fn is_client_token(&self) -> bool {
        self.docs.is_some() || self.access.is_some() || self.sub != self.client_id
    }

    pub fn access(&self) -> Access {
        self.access.unwrap_or_default()
    }
}
