//! `wiresocket`: the one binary. Thin: parses the command line and hands off
//! to the server crate.

use clap::{CommandFactory, Parser, Subcommand};
use secrecy::SecretString;
use server::{Application, Config, ConfigLayer};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

/// mimalloc instead of glibc's malloc: a connect allocates and frees
/// hundreds of small objects across threads (request, token, tasks), where
/// glibc spent about a tenth of the server's CPU (see the README's bench).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "wiresocket",
    version,
    about = "Managed real-time collaboration on Yjs documents",
    long_about = "WireSocket: a multi-tenant platform for real-time collaboration on Yjs documents.\n\n\
                  `wiresocket serve` runs the control plane (tenants, apps, OAuth 2 token service) and a \
                  data-plane node in one process, on an embedded SQLite database in ./wiresocket-data.\n\n\
                  Settings come from flags, then WIRESOCKET_* environment variables, then the TOML file \
                  given with --config. Log level: WIRESOCKET_LOG (e.g. info, debug, wiresocket_server=trace)."
)]
struct Cli {
    #[command(flatten)]
    global: cli::Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the platform (control plane and one data-plane node)
    Serve(Settings),
    /// The tenant's signing keys (list, rotate, revoke: client commands), and the
    /// master key that encrypts them (rotate-master, remove-master: run where the data is)
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Work with the tamper-evident audit trail
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Client commands: talk to a running server's API (login, apps, keys, docs, …)
    #[command(flatten)]
    Client(cli::ClientCommand),
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Re-compute every hash chain (each tenant's and the platform's); exits
    /// non-zero at the first edited, deleted or truncated entry
    /// (`--tenant ID`: only this tenant's chain)
    Verify {
        #[command(flatten)]
        settings: Settings,
    },
}

#[derive(clap::Args)]
struct Settings {
    /// TOML file with settings (same names as the flags, in snake_case)
    #[arg(long, env = "WIRESOCKET_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    layer: ConfigLayer,
}

#[derive(Subcommand)]
enum KeysCommand {
    #[command(flatten)]
    Tenant(cli::ClientKeysCommand),
    /// Add a new master key version and re-wrap every stored signing key, webhook secret and MFA secret
    /// under it. Old versions stay in the ring (still able to decrypt) until removed.
    RotateMaster(Settings),
    /// Remove an old master key version once no signing key, webhook secret or MFA secret uses it
    RemoveMaster {
        /// The version to remove
        #[arg(long)]
        version: u32,
        #[command(flatten)]
        settings: Settings,
    },
}

fn resolve(settings: Settings) -> Result<Config, String> {
    let file = match &settings.config {
        Some(path) => ConfigLayer::from_toml_file(path).map_err(|e| e.to_string())?,
        None => ConfigLayer::default(),
    };
    let master_key_env = std::env::var("WIRESOCKET_MASTER_KEY").ok().filter(|s| !s.is_empty()).map(SecretString::from);
    Config::resolve(settings.layer.over(file), master_key_env).map_err(|e| e.to_string())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}

async fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Client(_) | Command::Keys(KeysCommand::Tenant(_)) => {
            Err("internal: client commands are run by `client`".to_owned())
        }
        Command::Serve(settings) => {
            let config = resolve(settings)?;
            let app = Application::build(config).await.map_err(|e| e.to_string())?;
            app.run_until(shutdown_signal()).await.map_err(|e| e.to_string())
        }
        Command::Keys(KeysCommand::RotateMaster(settings)) => {
            let config = resolve(settings)?;
            let store = server::open_admin_store(&config).await.map_err(|e| e.to_string())?;
            let (version, n) =
                server::masterkey::rotate_master(&config, store.as_ref()).await.map_err(|e| e.to_string())?;
            println!(
                "master key version {version} is now current; re-wrapped {n} secrets (signing keys, webhook and MFA secrets)"
            );
            Ok(())
        }
        Command::Audit(AuditCommand::Verify { settings }) => {
            let tenant = cli.global.tenant;
            let config = resolve(settings)?;
            let store = server::open_admin_store(&config).await.map_err(|e| e.to_string())?;
            let chains = match tenant {
                Some(t) => vec![Some(domain::ids::TenantId::parse(&t).map_err(|e| e.message)?)],
                None => store.audit_chains().await.map_err(|e| e.to_string())?,
            };
            let mut broken = 0;
            for chain in chains {
                let name = chain.map_or_else(|| "platform".to_owned(), |t| format!("tenant {t}"));
                let report =
                    server::routes::audit::chain_report(store.as_ref(), chain).await.map_err(|e| e.to_string())?;
                if report.ok {
                    println!("ok      {name}: {} entries", report.entries);
                } else {
                    broken += 1;
                    println!(
                        "BROKEN  {name}: at entry {} ({})",
                        report.broken_at.unwrap_or_default(),
                        report.reason.as_deref().unwrap_or("unknown")
                    );
                }
            }
            if broken > 0 { Err(format!("{broken} audit chain(s) failed verification")) } else { Ok(()) }
        }
        Command::Keys(KeysCommand::RemoveMaster { version, settings }) => {
            let config = resolve(settings)?;
            let store = server::open_admin_store(&config).await.map_err(|e| e.to_string())?;
            match server::masterkey::remove_master_version(&config, store.as_ref(), version)
                .await
                .map_err(|e| e.to_string())?
            {
                server::masterkey::Removal::FromFile => println!("master key version {version} removed"),
                server::masterkey::Removal::InVault => println!(
                    "nothing is wrapped under master key version {version} any more; the ring comes from \
                     --master-key-command, so delete the line `{version}:…` from it in your vault"
                ),
            }
            Ok(())
        }
    }
}

/// A client command: its output on stdout, errors on stderr (as JSON with
/// `--json`), and the CLI's stable exit code.
async fn client(global: cli::Global, command: cli::ClientCommand) -> ExitCode {
    cli::set_root_command(Cli::command);
    let json = global.json;
    let (stdout, stderr, stdin) = (std::io::stdout(), std::io::stderr(), std::io::stdin());
    let (mut out, mut err, mut input) = (stdout.lock(), stderr.lock(), stdin.lock());
    let mut io = cli::Io { out: &mut out, err: &mut err };
    match cli::run(global, command, &mut input, &mut io).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if json {
                let body = serde_json::json!({"error": e.code.as_deref().unwrap_or("cli_error"), "message": e.message, "exit": e.exit as u8});
                eprintln!("{body}");
            } else {
                eprintln!("wiresocket: {}", e.message);
            }
            ExitCode::from(e.exit as u8)
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let filter = EnvFilter::try_from_env("WIRESOCKET_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("WIRESOCKET_LOG_FORMAT").is_ok_and(|v| v == "json");
    // The log goes to stdout; colour codes only when a person watches it,
    // never into a file, a pipe or a log collector.
    let ansi = std::io::stdout().is_terminal();
    if json {
        tracing_subscriber::fmt().with_env_filter(filter).with_ansi(false).json().init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).init();
    }
    let parsed = Cli::parse();
    match parsed.command {
        Command::Client(command) => return client(parsed.global, command).await,
        Command::Keys(KeysCommand::Tenant(keys)) => return client(parsed.global, cli::ClientCommand::Keys(keys)).await,
        _ => {}
    }
    match run(parsed).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wiresocket: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    /// clap's own consistency checks over the whole tree (duplicate names,
    /// a global flag shadowed by a subcommand's), which otherwise run only
    /// for the path a user happens to take.
    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
