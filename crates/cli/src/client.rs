//! The HTTP side: one `reqwest` client, the server's error bodies turned
//! into [`CliError`]s that say what to do next.

use crate::{CliError, Exit};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::Value;

pub struct Api {
    pub server: String,
    http: reqwest::Client,
}

/// How a request authenticates.
pub enum Auth<'a> {
    None,
    Bearer(&'a str),
    Basic(&'a str, &'a str),
}

impl Api {
    pub fn new(server: &str) -> Result<Self, CliError> {
        let server = server.trim_end_matches('/').to_owned();
        if !(server.starts_with("http://") || server.starts_with("https://")) {
            return Err(CliError::usage(format!(
                "--server must be an http:// or https:// URL, not {server:?} (e.g. http://127.0.0.1:8080)"
            )));
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("wiresocket-cli/", env!("CARGO_PKG_VERSION")))
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .map_err(|e| CliError::new(Exit::Failure, format!("cannot start the HTTP client: {e}")))?;
        Ok(Self { server, http })
    }

    pub fn request(&self, method: Method, path: &str, auth: Auth<'_>) -> RequestBuilder {
        let req = self.http.request(method, format!("{}{path}", self.server));
        match auth {
            Auth::None => req,
            Auth::Bearer(token) => req.bearer_auth(token),
            Auth::Basic(id, secret) => req.basic_auth(id, Some(secret)),
        }
    }

    /// Sends and answers the response when it is a success; otherwise the
    /// server's error as a [`CliError`].
    pub async fn send(&self, req: RequestBuilder) -> Result<Response, CliError> {
        let resp = req.send().await.map_err(|e| self.unreachable(&e))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(error_from(resp).await)
    }

    /// [`Api::send`] and the JSON body (`null` for an empty one).
    pub async fn json(&self, req: RequestBuilder) -> Result<Value, CliError> {
        let resp = self.send(req).await?;
        let bytes = resp.bytes().await.map_err(|e| self.unreachable(&e))?;
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| {
            CliError::new(
                Exit::Server,
                format!(
                    "the server answered something that is not JSON ({e}); is {} a WireSocket server?",
                    self.server
                ),
            )
        })
    }

    fn unreachable(&self, e: &reqwest::Error) -> CliError {
        let why = if e.is_timeout() {
            "timed out".to_owned()
        } else if e.is_connect() {
            "connection refused or unreachable".to_owned()
        } else {
            e.to_string()
        };
        CliError::new(
            Exit::Unreachable,
            format!(
                "cannot reach {} ({why}). Is the server running (`wiresocket serve`)? \
                 Point the CLI elsewhere with --server or WIRESOCKET_SERVER.",
                self.server
            ),
        )
    }
}

/// The error body (`{error, message}`, or RFC 6749's `{error,
/// error_description}`) with an exit code by status and a hint by code.
async fn error_from(resp: Response) -> CliError {
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    let code = body["error"].as_str().unwrap_or("").to_owned();
    let message = body["message"]
        .as_str()
        .or_else(|| body["error_description"].as_str())
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error"))
        .to_owned();
    let exit = match status {
        StatusCode::UNAUTHORIZED => Exit::Auth,
        StatusCode::FORBIDDEN => Exit::Forbidden,
        StatusCode::NOT_FOUND => Exit::NotFound,
        StatusCode::CONFLICT => Exit::Conflict,
        StatusCode::TOO_MANY_REQUESTS => Exit::RateLimited,
        s if s.is_client_error() => Exit::Invalid,
        _ => Exit::Server,
    };
    let hint = match (status, code.as_str()) {
        (StatusCode::UNAUTHORIZED, "mfa_required") => {
            " Give the code of your authenticator app with --totp (or a recovery code with --recovery-code)."
        }
        (StatusCode::UNAUTHORIZED, "invalid_credentials" | "invalid_totp") => "",
        (StatusCode::UNAUTHORIZED, "invalid_client") => {
            " Check --client-id and --client-secret (or WIRESOCKET_CLIENT_ID / WIRESOCKET_CLIENT_SECRET); a rotated secret stops working at once."
        }
        (StatusCode::UNAUTHORIZED, _) => " Your session has expired or was ended: run `wiresocket login`.",
        (StatusCode::FORBIDDEN, _) => {
            " Your role does not allow this; ask an admin of the tenant (see `wiresocket members list`)."
        }
        (StatusCode::NOT_FOUND, _) => {
            " Check the id (and --tenant): `wiresocket apps list`, `wiresocket tenants list`."
        }
        (StatusCode::TOO_MANY_REQUESTS, _) => " Wait a minute and try again.",
        (s, _) if s.is_server_error() => " The server had a problem; its log says more.",
        _ => "",
    };
    let shown =
        if code.is_empty() { format!("{message} ({})", status.as_u16()) } else { format!("{message} ({code})") };
    CliError { exit, message: format!("{shown}.{hint}").replace("..", "."), code: Some(code).filter(|c| !c.is_empty()) }
}

/// One percent-encoded path segment (a document name may hold `/`).
pub fn segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}
