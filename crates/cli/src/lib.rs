//! `wiresocket <command>`: the platform's API from a terminal, the way `gh`,
//! `stripe` or `kubectl` work: `login` once (the session is kept in a 0600
//! file, see [`config`]), then `apps`, `keys`, `members`, `docs`, `nodes`…
//! People get tables; `--json` gives scripts the server's own JSON. Exit
//! codes are stable (see [`Exit`]); every error says what to do next.
//!
//! The binary owns nothing of this: it parses [`Global`] and
//! [`ClientCommand`] with the rest of its command line and calls [`run`].

pub mod client;
pub mod config;
pub mod output;

use clap::{Args, Subcommand};
use client::{Api, Auth, segment};
use config::Saved;
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

/// Exit codes scripts can rely on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 1: anything not listed below (a local file that cannot be read, …).
    Failure = 1,
    /// 2: bad command line, or not enough to go on (not logged in, no tenant chosen).
    Usage = 2,
    /// 3: 401: no, expired or wrong credentials.
    Auth = 3,
    /// 4: 403: the role does not allow it.
    Forbidden = 4,
    /// 5: 404.
    NotFound = 5,
    /// 6: 409: the state forbids it (a second free app, the last super_admin, …).
    Conflict = 6,
    /// 7: any other 4xx: the input was refused.
    Invalid = 7,
    /// 8: 429.
    RateLimited = 8,
    /// 9: the server failed (5xx) or answered something unexpected.
    Server = 9,
    /// 10: the server could not be reached.
    Unreachable = 10,
}

#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CliError {
    pub exit: Exit,
    pub message: String,
    /// The server's stable `error` code, when it answered one.
    pub code: Option<String>,
}

impl CliError {
    pub fn new(exit: Exit, message: impl Into<String>) -> Self {
        Self { exit, message: message.into(), code: None }
    }

    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(Exit::Usage, message)
    }
}

/// Options of every client command.
#[derive(Args, Debug, Clone)]
pub struct Global {
    /// The WireSocket server (default: the one you logged in to, else http://127.0.0.1:8080)
    #[arg(long, global = true, env = "WIRESOCKET_SERVER")]
    pub server: Option<String>,
    /// The tenant to act on (default: the one chosen with `tenants use`, or your only one)
    #[arg(long, global = true, env = "WIRESOCKET_TENANT")]
    pub tenant: Option<String>,
    /// Print the server's JSON instead of tables (errors too, on stderr)
    #[arg(long, global = true)]
    pub json: bool,
}

/// App credentials, for the data-plane commands and `token`.
#[derive(Args, Debug, Clone)]
pub struct AppCredentials {
    /// The app's client id
    #[arg(long, env = "WIRESOCKET_CLIENT_ID")]
    pub client_id: String,
    /// The app's client secret (prefer the environment variable: flags show in `ps`)
    #[arg(long, env = "WIRESOCKET_CLIENT_SECRET", hide_env_values = true)]
    pub client_secret: String,
}

#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// Create the first user and tenant of a fresh server, and log in as that user
    Setup {
        #[arg(long)]
        email: String,
        #[arg(long)]
        tenant_name: String,
        /// Read the password from the first line of stdin instead of prompting
        #[arg(long)]
        password_stdin: bool,
    },
    /// Log in and keep the session for the next commands
    Login {
        #[arg(long)]
        email: Option<String>,
        /// Read the password from the first line of stdin instead of prompting
        #[arg(long)]
        password_stdin: bool,
        /// The current code of your authenticator app, when MFA is on
        #[arg(long)]
        totp: Option<String>,
        /// One of your MFA recovery codes instead (each works once)
        #[arg(long, conflicts_with = "totp")]
        recovery_code: Option<String>,
    },
    /// End the session on the server and forget it here
    Logout,
    /// Who you are logged in as, and your tenants
    Whoami,
    /// Tenants you belong to
    #[command(subcommand)]
    Tenants(TenantsCommand),
    /// Apps of the tenant
    #[command(subcommand)]
    Apps(AppsCommand),
    /// The tenant's signing keys. Not parsed here: the binary's own `keys`
    /// group (which also holds the master-key commands) builds it.
    #[command(skip)]
    Keys(ClientKeysCommand),
    /// Members of the tenant
    #[command(subcommand)]
    Members(MembersCommand),
    /// Print an access token for an app (client credentials), for scripts:
    /// `curl -H "Authorization: Bearer $(wiresocket token)" …`
    Token {
        #[command(flatten)]
        app: AppCredentials,
        /// Scopes to ask for (default WireSocket.API)
        #[arg(long)]
        scope: Option<String>,
    },
    /// Documents of an app (with the app's credentials)
    #[command(subcommand)]
    Docs(DocsCommand),
    /// Data-plane nodes (platform operators)
    #[command(subcommand)]
    Nodes(NodesCommand),
    /// Print a shell completion script: `wiresocket completions bash > /etc/bash_completion.d/wiresocket`
    Completions { shell: clap_complete::Shell },
}

#[derive(Subcommand, Debug)]
pub enum TenantsCommand {
    /// Your tenants and your role in each
    List,
    /// Create a tenant (you become its super_admin)
    Create { name: String },
    /// Make a tenant the default for the next commands
    Use { tenant: String },
}

#[derive(Subcommand, Debug)]
pub enum AppsCommand {
    /// The tenant's apps
    List,
    /// Create an app; its client secret is shown once
    Create {
        name: String,
        /// License region (see GET /v1/regions)
        #[arg(long)]
        region: String,
        #[arg(long, default_value = "free")]
        plan: String,
        /// Allowed browser domain (repeat, at most 3), e.g. app.example.com or localhost:3000
        #[arg(long = "domain")]
        domains: Vec<String>,
        #[arg(long)]
        environment: Option<String>,
    },
    /// One app in full
    Show { app: String },
    /// Change an app's name or allowed domains
    Update {
        app: String,
        #[arg(long)]
        name: Option<String>,
        /// Replaces the allowed domains (repeat); `--domain ''` alone clears them
        #[arg(long = "domain")]
        domains: Option<Vec<String>>,
    },
    /// Change the plan; prints the prorated invoice
    SetPlan { app: String, plan: String },
    /// A new client secret, shown once; the old one stops working at once
    RotateSecret { app: String },
    /// Delete the app with its documents and tokens
    Delete {
        app: String,
        /// Do not ask for confirmation
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum ClientKeysCommand {
    /// The tenant's signing keys and their status
    List,
    /// A new active key; the old one keeps verifying for the grace period
    Rotate {
        /// Seconds the old key keeps verifying (default 1800)
        #[arg(long)]
        grace: Option<i64>,
    },
    /// Revoke a key now: every token it signed stops working and every
    /// connection it opened is closed
    Revoke {
        /// A kid is base64url and may begin with `-`: still the kid, not a flag.
        #[arg(allow_hyphen_values = true)]
        kid: String,
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum MembersCommand {
    /// Members, their roles and MFA
    List,
    /// Change a member's role
    SetRole { user: String, role: String },
    /// Remove a member from the tenant
    Remove {
        user: String,
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum DocsCommand {
    /// The app's documents
    List {
        #[command(flatten)]
        app: AppCredentials,
    },
    /// Write the document's full state (a Yjs update) to a file, or stdout
    Get {
        name: String,
        /// File to write (default: stdout)
        #[arg(short, long)]
        output: Option<PathBuf>,
        #[command(flatten)]
        app: AppCredentials,
    },
    /// Apply a Yjs update from a file (or `-` for stdin) to the document
    Put {
        name: String,
        file: PathBuf,
        #[command(flatten)]
        app: AppCredentials,
    },
    /// Delete a document; its connections close with 4404
    Delete {
        name: String,
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        app: AppCredentials,
    },
}

#[derive(Subcommand, Debug)]
pub enum NodesCommand {
    /// Every node of the registry with its status and load
    List,
    /// Stop sending new documents to a node and move its clients away
    Drain { node: String },
    /// Put a drained node back in service
    Undrain { node: String },
}

/// Where output goes (stdout for results, stderr for notes), so tests can
/// capture both.
pub struct Io<'a> {
    pub out: &'a mut dyn Write,
    pub err: &'a mut dyn Write,
}

impl Io<'_> {
    fn print(&mut self, text: &str) -> Result<(), CliError> {
        writeln!(self.out, "{text}").map_err(|e| CliError::new(Exit::Failure, format!("cannot write output: {e}")))
    }

    fn note(&mut self, text: &str) {
        let _ = writeln!(self.err, "{text}");
    }

    fn json(&mut self, v: &Value) -> Result<(), CliError> {
        let text = serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string());
        self.print(&text)
    }
}

/// State of one invocation.
struct Ctx {
    global: Global,
    api: Api,
    saved: Saved,
    path: PathBuf,
}

const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

impl Ctx {
    fn session(&self) -> Result<&str, CliError> {
        // A session belongs to the server it came from.
        let same_server =
            self.saved.server.as_deref().map(|s| s.trim_end_matches('/')) == Some(self.api.server.as_str());
        match self.saved.session() {
            Some(token) if same_server => Ok(token),
            _ => Err(CliError::usage(format!(
                "not logged in to {}: run `wiresocket login --server {}`",
                self.api.server, self.api.server
            ))),
        }
    }

    fn bearer(&self) -> Result<Auth<'_>, CliError> {
        Ok(Auth::Bearer(self.session()?))
    }

    async fn get(&self, path: &str) -> Result<Value, CliError> {
        self.api.json(self.api.request(Method::GET, path, self.bearer()?)).await
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value, CliError> {
        let mut req = self.api.request(method, path, self.bearer()?);
        if let Some(body) = body {
            req = req.json(&body);
        }
        self.api.json(req).await
    }

    /// Every item of a paged collection, following `next_cursor`.
    async fn all(&self, path: &str, token: &str) -> Result<Vec<Value>, CliError> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let sep = if path.contains('?') { '&' } else { '?' };
            let url = match &cursor {
                Some(c) => format!("{path}{sep}limit=500&cursor={}", segment(c)),
                None => format!("{path}{sep}limit=500"),
            };
            let page = self.api.json(self.api.request(Method::GET, &url, Auth::Bearer(token))).await?;
            items.extend(page["items"].as_array().cloned().unwrap_or_default());
            match page["next_cursor"].as_str() {
                Some(next) if !next.is_empty() && items.len() < 100_000 => cursor = Some(next.to_owned()),
                _ => return Ok(items),
            }
        }
    }

    /// `--tenant`, else the saved default, else the user's only tenant.
    async fn tenant(&self) -> Result<String, CliError> {
        if let Some(t) = self.global.tenant.clone().or_else(|| self.saved.tenant.clone()) {
            return Ok(t);
        }
        let me = self.get("/v1/me").await?;
        let tenants = me["tenants"].as_array().cloned().unwrap_or_default();
        match tenants.as_slice() {
            [only] => Ok(output::cell(&only["id"])),
            [] => Err(CliError::usage("you belong to no tenant: create one with `wiresocket tenants create NAME`")),
            many => Err(CliError::usage(format!(
                "you belong to {} tenants: pick one with --tenant ID or `wiresocket tenants use ID` (see `wiresocket tenants list`)",
                many.len()
            ))),
        }
    }

    async fn app_token(&self, app: &AppCredentials, scope: Option<&str>) -> Result<Value, CliError> {
        let mut form = vec![("grant_type", "client_credentials")];
        if let Some(scope) = scope {
            form.push(("scope", scope));
        }
        let req = self.api.request(Method::POST, "/oauth/token", Auth::Basic(&app.client_id, &app.client_secret));
        self.api.json(req.form(&form)).await
    }

    async fn m2m(&self, app: &AppCredentials) -> Result<String, CliError> {
        let token = self.app_token(app, None).await?;
        token["access_token"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| CliError::new(Exit::Server, "the token endpoint answered no access_token"))
    }

    fn save(&self) -> Result<(), CliError> {
        self.saved.store(&self.path)
    }
}

/// Runs one client command. `stdin` is where `--password-stdin` and `docs
/// put -` read from.
pub async fn run(
    global: Global,
    command: ClientCommand,
    stdin: &mut dyn BufRead,
    io: &mut Io<'_>,
) -> Result<(), CliError> {
    if let ClientCommand::Completions { shell } = command {
        return completions(shell, io);
    }
    let path = config::path()?;
    let saved = Saved::load(&path)?;
    let server = global.server.clone().or_else(|| saved.server.clone()).unwrap_or_else(|| DEFAULT_SERVER.to_owned());
    let api = Api::new(&server)?;
    let mut ctx = Ctx { global, api, saved, path };
    let json = ctx.global.json;
    match command {
        ClientCommand::Completions { .. } => Ok(()),
        ClientCommand::Setup { email, tenant_name, password_stdin } => {
            let password = password(stdin, password_stdin)?;
            let body = json!({"email": email, "password": password.expose_secret(), "tenant_name": tenant_name});
            let req = ctx.api.request(Method::POST, "/v1/setup", Auth::None).json(&body);
            let created = ctx.api.json(req).await?;
            login_with(&mut ctx, &email, &password, None).await?;
            ctx.saved.tenant = created["tenant_id"].as_str().map(str::to_owned);
            ctx.save()?;
            if json {
                return io.json(&created);
            }
            io.print(&format!(
                "Set up {}: you are its super_admin and the platform operator, logged in as {email}.",
                ctx.api.server
            ))?;
            io.print(&output::record(&created, &["user_id", "tenant_id"]))
        }
        ClientCommand::Login { email, password_stdin, totp, recovery_code } => {
            let email = match email {
                Some(e) => e,
                None => prompt(stdin, "Email: ", "give --email")?,
            };
            let password = password(stdin, password_stdin)?;
            let proof = match (totp, recovery_code) {
                (Some(code), _) => Some(SecondFactor::Totp(code)),
                (None, Some(code)) => Some(SecondFactor::Recovery(SecretString::from(code))),
                (None, None) => None,
            };
            let me = login_with(&mut ctx, &email, &password, proof).await?;
            if json {
                return io.json(&me);
            }
            let tenant = ctx.saved.tenant.clone().map(|t| format!("; tenant {t}")).unwrap_or_default();
            io.print(&format!("Logged in to {} as {email}{tenant}.", ctx.api.server))
        }
        ClientCommand::Logout => {
            if let Ok(token) = ctx.session() {
                let req = ctx.api.request(Method::POST, "/v1/auth/logout", Auth::Bearer(token));
                // An expired session is just as logged out.
                match ctx.api.send(req).await {
                    Ok(_) => {}
                    Err(e) if e.exit == Exit::Auth => {}
                    Err(e) => return Err(e),
                }
            }
            ctx.saved.session = None;
            ctx.saved.session_expires_at = None;
            ctx.save()?;
            if !json {
                io.print(&format!("Logged out of {}.", ctx.api.server))?;
            }
            Ok(())
        }
        ClientCommand::Whoami => {
            let me = ctx.get("/v1/me").await?;
            if json {
                return io.json(&me);
            }
            io.print(&output::record(
                &me,
                &["id", "email", "name", "mfa_enabled", "is_operator", "session_expires_at"],
            ))?;
            let tenants = me["tenants"].as_array().cloned().unwrap_or_default();
            io.print("")?;
            io.print(&output::table(&["tenant", "name", "role"], &output::rows(&tenants, &["id", "name", "role"])))
        }
        ClientCommand::Tenants(cmd) => tenants(&mut ctx, cmd, io).await,
        ClientCommand::Apps(cmd) => apps(&ctx, cmd, stdin, io).await,
        ClientCommand::Keys(cmd) => keys(&ctx, cmd, stdin, io).await,
        ClientCommand::Members(cmd) => members(&ctx, cmd, stdin, io).await,
        ClientCommand::Token { app, scope } => {
            let token = ctx.app_token(&app, scope.as_deref()).await?;
            if json {
                return io.json(&token);
            }
            io.print(token["access_token"].as_str().unwrap_or_default())
        }
        ClientCommand::Docs(cmd) => docs(&ctx, cmd, stdin, io).await,
        ClientCommand::Nodes(cmd) => nodes(&ctx, cmd, io).await,
    }
}

/// The second factor given on the command line.
enum SecondFactor {
    Totp(String),
    Recovery(SecretString),
}

/// Logs in (asking for the TOTP code on a terminal when MFA wants one),
/// saves the session and, if the user has exactly one tenant and none is
/// chosen, that tenant. Answers `/v1/me`.
async fn login_with(
    ctx: &mut Ctx,
    email: &str,
    password: &SecretString,
    proof: Option<SecondFactor>,
) -> Result<Value, CliError> {
    let attempt = |proof: Option<&SecondFactor>| {
        let mut body = json!({"email": email, "password": password.expose_secret()});
        match proof {
            Some(SecondFactor::Totp(code)) => body["totp"] = json!(code),
            Some(SecondFactor::Recovery(code)) => body["recovery_code"] = json!(code.expose_secret()),
            None => {}
        }
        ctx.api.request(Method::POST, "/v1/auth/login", Auth::None).json(&body)
    };
    let session = match ctx.api.json(attempt(proof.as_ref())).await {
        Ok(s) => s,
        Err(e) if e.code.as_deref() == Some("mfa_required") && proof.is_none() && std::io::stdin().is_terminal() => {
            let code = rpassword::prompt_password("Authenticator code: ")
                .map_err(|e| CliError::new(Exit::Failure, format!("cannot read the code: {e}")))?;
            ctx.api.json(attempt(Some(&SecondFactor::Totp(code.trim().to_owned())))).await?
        }
        Err(e) => return Err(e),
    };
    let token = session["session_token"]
        .as_str()
        .ok_or_else(|| CliError::new(Exit::Server, "the login answer has no session_token"))?;
    if ctx.saved.server.as_deref() != Some(ctx.api.server.as_str()) {
        ctx.saved.tenant = None;
    }
    ctx.saved.server = Some(ctx.api.server.clone());
    ctx.saved.email = Some(email.to_owned());
    ctx.saved.session = Some(SecretString::from(token.to_owned()));
    ctx.saved.session_expires_at = session["expires_at"].as_str().map(str::to_owned);
    let me = ctx.get("/v1/me").await?;
    if ctx.saved.tenant.is_none()
        && let Some([only]) = me["tenants"].as_array().map(Vec::as_slice)
    {
        ctx.saved.tenant = only["id"].as_str().map(str::to_owned);
    }
    ctx.save()?;
    Ok(me)
}

async fn tenants(ctx: &mut Ctx, cmd: TenantsCommand, io: &mut Io<'_>) -> Result<(), CliError> {
    let json = ctx.global.json;
    match cmd {
        TenantsCommand::List => {
            let me = ctx.get("/v1/me").await?;
            let tenants = me["tenants"].as_array().cloned().unwrap_or_default();
            if json {
                return io.json(&Value::Array(tenants));
            }
            let current = ctx.global.tenant.clone().or_else(|| ctx.saved.tenant.clone()).unwrap_or_default();
            let rows: Vec<Vec<String>> = tenants
                .iter()
                .map(|t| {
                    let id = output::cell(&t["id"]);
                    let mark = if id == current { "*" } else { "" };
                    vec![mark.to_owned(), id, output::cell(&t["name"]), output::cell(&t["role"])]
                })
                .collect();
            io.print(&output::table(&["", "id", "name", "role"], &rows))
        }
        TenantsCommand::Create { name } => {
            let t = ctx.call(Method::POST, "/v1/tenants", Some(json!({"name": name}))).await?;
            if json {
                return io.json(&t);
            }
            io.print(&output::record(&t, &["id", "name", "created_at"]))?;
            io.note(&format!("Make it the default with `wiresocket tenants use {}`.", output::cell(&t["id"])));
            Ok(())
        }
        TenantsCommand::Use { tenant } => {
            // Checked, so a typo does not become the default.
            let t = ctx.get(&format!("/v1/tenants/{}", segment(&tenant))).await?;
            ctx.saved.tenant = Some(tenant.clone());
            ctx.save()?;
            if json {
                return io.json(&t);
            }
            io.print(&format!("Commands now act on tenant {tenant} ({}).", output::cell(&t["name"])))
        }
    }
}

const APP_FIELDS: [&str; 7] = ["id", "name", "client_id", "region", "plan", "allowed_domains", "environment"];

async fn apps(ctx: &Ctx, cmd: AppsCommand, stdin: &mut dyn BufRead, io: &mut Io<'_>) -> Result<(), CliError> {
    let json = ctx.global.json;
    let base = format!("/v1/tenants/{}/apps", segment(&ctx.tenant().await?));
    match cmd {
        AppsCommand::List => {
            let items = ctx.all(&base, ctx.session()?).await?;
            if json {
                return io.json(&Value::Array(items));
            }
            if items.is_empty() {
                io.note("No apps yet: create one with `wiresocket apps create NAME --region REGION`.");
                return Ok(());
            }
            io.print(&output::table(&APP_FIELDS[..6], &output::rows(&items, &APP_FIELDS[..6])))
        }
        AppsCommand::Create { name, region, plan, domains, environment } => {
            let mut body = json!({"name": name, "region": region, "plan": plan, "allowed_domains": domains});
            if let Some(env) = environment {
                body["environment"] = json!(env);
            }
            let app = ctx.call(Method::POST, &base, Some(body)).await?;
            if json {
                return io.json(&app);
            }
            io.print(&output::record(&app, &[&APP_FIELDS[..], &["client_secret"]].concat()))?;
            io.note("The client secret is shown only now: store it in your secret manager.");
            Ok(())
        }
        AppsCommand::Show { app } => {
            let app = ctx.get(&format!("{base}/{}", segment(&app))).await?;
            if json {
                return io.json(&app);
            }
            let fields = [&APP_FIELDS[..], &["created_at", "current_period_start", "current_period_end"]].concat();
            io.print(&output::record(&app, &fields))
        }
        AppsCommand::Update { app, name, domains } => {
            let mut body = json!({});
            if let Some(name) = name {
                body["name"] = json!(name);
            }
            if let Some(domains) = domains {
                let domains: Vec<String> = domains.into_iter().filter(|d| !d.is_empty()).collect();
                body["allowed_domains"] = json!(domains);
            }
            if body.as_object().is_some_and(serde_json::Map::is_empty) {
                return Err(CliError::usage("nothing to change: give --name and/or --domain"));
            }
            let app = ctx.call(Method::PATCH, &format!("{base}/{}", segment(&app)), Some(body)).await?;
            if json {
                return io.json(&app);
            }
            io.print(&output::record(&app, &APP_FIELDS))
        }
        AppsCommand::SetPlan { app, plan } => {
            let invoice =
                ctx.call(Method::POST, &format!("{base}/{}/plan", segment(&app)), Some(json!({"plan": plan}))).await?;
            if json {
                return io.json(&invoice);
            }
            let lines = invoice["lines"].as_array().cloned().unwrap_or_default();
            let rows: Vec<Vec<String>> =
                lines.iter().map(|l| vec![output::cell(&l["description"]), cents(&l["amount_cents"])]).collect();
            io.print(&format!("Plan changed to {plan}. Invoice {}:", output::cell(&invoice["id"])))?;
            io.print(&output::table(&["line", "amount"], &rows))?;
            io.print(&format!("Total: {}", cents(&invoice["total_cents"])))
        }
        AppsCommand::RotateSecret { app } => {
            let rotated = ctx.call(Method::POST, &format!("{base}/{}/secret/rotate", segment(&app)), None).await?;
            if json {
                return io.json(&rotated);
            }
            io.print(&output::record(&rotated, &["client_id", "client_secret", "rotated_at"]))?;
            io.note("The old secret, and every token issued with it, stopped working. The new one is shown only now.");
            Ok(())
        }
        AppsCommand::Delete { app, yes } => {
            confirm(stdin, io, yes, &format!("Delete app {app} with all its documents and tokens?"))?;
            ctx.call(Method::DELETE, &format!("{base}/{}", segment(&app)), None).await?;
            if !json {
                io.print(&format!("Deleted app {app}."))?;
            }
            Ok(())
        }
    }
}

async fn keys(ctx: &Ctx, cmd: ClientKeysCommand, stdin: &mut dyn BufRead, io: &mut Io<'_>) -> Result<(), CliError> {
    let json = ctx.global.json;
    let tenant = ctx.tenant().await?;
    let base = format!("/v1/tenants/{}/keys", segment(&tenant));
    let fields = ["kid", "status", "created_at", "retires_at", "revoked_at"];
    match cmd {
        ClientKeysCommand::List => {
            let items = ctx.all(&base, ctx.session()?).await?;
            if json {
                return io.json(&Value::Array(items));
            }
            io.print(&output::table(&fields, &output::rows(&items, &fields)))
        }
        ClientKeysCommand::Rotate { grace } => {
            let body = grace.map_or_else(|| json!({}), |g| json!({"grace_seconds": g}));
            let key = ctx.call(Method::POST, &format!("{base}/rotate"), Some(body)).await?;
            if json {
                return io.json(&key);
            }
            io.print(&output::record(&key, &fields))
        }
        ClientKeysCommand::Revoke { kid, yes } => {
            confirm(
                stdin,
                io,
                yes,
                &format!(
                    "Revoke key {kid}? Every token it signed stops working and every connection it opened closes now."
                ),
            )?;
            let key = ctx.call(Method::POST, &format!("{base}/{}/revoke", segment(&kid)), None).await?;
            if json {
                return io.json(&key);
            }
            io.print(&output::record(&key, &fields))
        }
    }
}

async fn members(ctx: &Ctx, cmd: MembersCommand, stdin: &mut dyn BufRead, io: &mut Io<'_>) -> Result<(), CliError> {
    let json = ctx.global.json;
    let base = format!("/v1/tenants/{}/members", segment(&ctx.tenant().await?));
    let fields = ["user_id", "email", "name", "role", "mfa_enabled", "joined_at"];
    match cmd {
        MembersCommand::List => {
            let items = ctx.all(&base, ctx.session()?).await?;
            if json {
                return io.json(&Value::Array(items));
            }
            io.print(&output::table(&fields, &output::rows(&items, &fields)))
        }
        MembersCommand::SetRole { user, role } => {
            let m = ctx.call(Method::PUT, &format!("{base}/{}", segment(&user)), Some(json!({"role": role}))).await?;
            if json {
                return io.json(&m);
            }
            io.print(&output::record(&m, &fields))
        }
        MembersCommand::Remove { user, yes } => {
            confirm(stdin, io, yes, &format!("Remove member {user} from the tenant?"))?;
            ctx.call(Method::DELETE, &format!("{base}/{}", segment(&user)), None).await?;
            if !json {
                io.print(&format!("Removed {user}."))?;
            }
            Ok(())
        }
    }
}

async fn docs(ctx: &Ctx, cmd: DocsCommand, stdin: &mut dyn BufRead, io: &mut Io<'_>) -> Result<(), CliError> {
    let json = ctx.global.json;
    match cmd {
        DocsCommand::List { app } => {
            let token = ctx.m2m(&app).await?;
            let items = ctx.all("/v1/docs", &token).await?;
            if json {
                return io.json(&Value::Array(items));
            }
            if items.is_empty() {
                io.note("No documents yet.");
                return Ok(());
            }
            let fields = ["name", "size_bytes", "connections", "updated_at"];
            io.print(&output::table(&fields, &output::rows(&items, &fields)))
        }
        DocsCommand::Get { name, output, app } => {
            let token = ctx.m2m(&app).await?;
            let req = ctx.api.request(Method::GET, &format!("/v1/docs/{}", segment(&name)), Auth::Bearer(&token));
            let bytes = ctx
                .api
                .send(req)
                .await?
                .bytes()
                .await
                .map_err(|e| CliError::new(Exit::Unreachable, format!("the download broke off: {e}")))?;
            match output {
                Some(path) => {
                    std::fs::write(&path, &bytes)
                        .map_err(|e| CliError::new(Exit::Failure, format!("cannot write {}: {e}", path.display())))?;
                    io.note(&format!("Wrote {} bytes (a Yjs update) to {}.", bytes.len(), path.display()));
                    Ok(())
                }
                None => io.out.write_all(&bytes).map_err(|e| CliError::new(Exit::Failure, e.to_string())),
            }
        }
        DocsCommand::Put { name, file, app } => {
            let mut bytes = Vec::new();
            if file.as_os_str() == "-" {
                stdin
                    .read_to_end(&mut bytes)
                    .map_err(|e| CliError::new(Exit::Failure, format!("cannot read stdin: {e}")))?;
            } else {
                bytes = std::fs::read(&file)
                    .map_err(|e| CliError::new(Exit::Failure, format!("cannot read {}: {e}", file.display())))?;
            }
            let token = ctx.m2m(&app).await?;
            let req = ctx
                .api
                .request(Method::POST, &format!("/v1/docs/{}/update", segment(&name)), Auth::Bearer(&token))
                .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                .body(bytes);
            ctx.api.send(req).await?;
            if !json {
                io.print(&format!("Applied the update to {name}."))?;
            }
            Ok(())
        }
        DocsCommand::Delete { name, yes, app } => {
            confirm(stdin, io, yes, &format!("Delete document {name}? Its connections close."))?;
            let token = ctx.m2m(&app).await?;
            let req = ctx.api.request(Method::DELETE, &format!("/v1/docs/{}", segment(&name)), Auth::Bearer(&token));
            ctx.api.send(req).await?;
            if !json {
                io.print(&format!("Deleted {name}."))?;
            }
            Ok(())
        }
    }
}

async fn nodes(ctx: &Ctx, cmd: NodesCommand, io: &mut Io<'_>) -> Result<(), CliError> {
    let json = ctx.global.json;
    let fields = ["id", "region", "status", "url", "connections", "documents", "last_heartbeat_at"];
    let (path, verb) = match cmd {
        NodesCommand::List => {
            let items = ctx.all("/v1/nodes", ctx.session()?).await?;
            if json {
                return io.json(&Value::Array(items));
            }
            return io.print(&output::table(&fields, &output::rows(&items, &fields)));
        }
        NodesCommand::Drain { node } => (format!("/v1/nodes/{}/drain", segment(&node)), "draining"),
        NodesCommand::Undrain { node } => (format!("/v1/nodes/{}/undrain", segment(&node)), "back in service"),
    };
    let node = ctx.call(Method::POST, &path, None).await?;
    if json {
        return io.json(&node);
    }
    io.print(&format!("Node {} is {verb}.", output::cell(&node["id"])))?;
    io.print(&output::record(&node, &fields))
}

fn completions(shell: clap_complete::Shell, io: &mut Io<'_>) -> Result<(), CliError> {
    // The script covers the whole binary, so it is generated from its
    // command, handed in through `set_root_command`.
    let mut cmd = ROOT.get().map(|f| f()).ok_or_else(|| CliError::new(Exit::Failure, "no root command registered"))?;
    let name = cmd.get_name().to_owned();
    clap_complete::generate(shell, &mut cmd, name, io.out);
    Ok(())
}

static ROOT: std::sync::OnceLock<fn() -> clap::Command> = std::sync::OnceLock::new();

/// Gives the CLI the binary's whole command (for completion scripts).
pub fn set_root_command(f: fn() -> clap::Command) {
    let _ = ROOT.set(f);
}

/// `12.34 USD` from cents (negative for a credit).
fn cents(v: &Value) -> String {
    match v.as_i64() {
        Some(c) => format!("{}{}.{:02}", if c < 0 { "-" } else { "" }, c.unsigned_abs() / 100, c.unsigned_abs() % 100),
        None => output::cell(v),
    }
}

/// The password: the first line of stdin with `--password-stdin`, else a
/// prompt without echo on a terminal.
fn password(stdin: &mut dyn BufRead, from_stdin: bool) -> Result<SecretString, CliError> {
    if from_stdin {
        let mut line = String::new();
        stdin.read_line(&mut line).map_err(|e| CliError::new(Exit::Failure, format!("cannot read stdin: {e}")))?;
        let pw = line.trim_end_matches(['\r', '\n']).to_owned();
        zeroize::Zeroize::zeroize(&mut line);
        if pw.is_empty() {
            return Err(CliError::usage("--password-stdin: the first line of stdin is empty"));
        }
        return Ok(SecretString::from(pw));
    }
    if !std::io::stdin().is_terminal() {
        return Err(CliError::usage("no terminal to ask for the password: pipe it in with --password-stdin"));
    }
    rpassword::prompt_password("Password: ")
        .map(SecretString::from)
        .map_err(|e| CliError::new(Exit::Failure, format!("cannot read the password: {e}")))
}

fn prompt(stdin: &mut dyn BufRead, question: &str, otherwise: &str) -> Result<String, CliError> {
    if !std::io::stdin().is_terminal() {
        return Err(CliError::usage(format!("no terminal to ask on: {otherwise}")));
    }
    eprint!("{question}");
    let mut line = String::new();
    stdin.read_line(&mut line).map_err(|e| CliError::new(Exit::Failure, e.to_string()))?;
    Ok(line.trim().to_owned())
}

/// Asks before a destructive step; without a terminal `--yes` is required.
fn confirm(stdin: &mut dyn BufRead, io: &mut Io<'_>, yes: bool, question: &str) -> Result<(), CliError> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(CliError::usage(format!("{question} Not asked without a terminal: add --yes to confirm.")));
    }
    io.note(&format!("{question} [y/N] "));
    let mut line = String::new();
    stdin.read_line(&mut line).map_err(|e| CliError::new(Exit::Failure, e.to_string()))?;
    if matches!(line.trim(), "y" | "Y" | "yes") { Ok(()) } else { Err(CliError::new(Exit::Failure, "cancelled")) }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn cents_read_as_money() {
        assert_eq!(cents(&json!(1234)), "12.34");
        assert_eq!(cents(&json!(-5)), "-0.05");
        assert_eq!(cents(&json!(null)), "-");
    }

    #[test]
    fn a_kid_that_begins_with_a_dash_is_the_kid() {
        #[derive(clap::Parser)]
        struct Keys {
            #[command(subcommand)]
            command: ClientKeysCommand,
        }
        use clap::Parser;
        for args in [&["keys", "revoke", "-Mx3_a"][..], &["keys", "revoke", "-Mx3_a", "--yes"]] {
            match Keys::try_parse_from(args).unwrap().command {
                ClientKeysCommand::Revoke { kid, yes } => {
                    assert_eq!(kid, "-Mx3_a");
                    assert_eq!(yes, args.len() == 4);
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn exit_codes_are_stable() {
        let codes = [
            Exit::Failure,
            Exit::Usage,
            Exit::Auth,
            Exit::Forbidden,
            Exit::NotFound,
            Exit::Conflict,
            Exit::Invalid,
            Exit::RateLimited,
            Exit::Server,
            Exit::Unreachable,
        ];
        assert_eq!(codes.map(|c| c as u8), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    }
}
