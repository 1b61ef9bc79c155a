//! Loading, generating and rotating the master key ring that wraps every
//! tenant's private signing key, every webhook signing secret and every
//! user's TOTP secret.
//!
//! The ring comes from one of three places: a file, `WIRESOCKET_MASTER_KEY`,
//! or the stdout of `--master-key-command` (any vault CLI). A command-backed
//! ring lives in the vault: this process never writes it anywhere.

use crate::config::{Config, MasterKeyCommand, MasterKeySource};
use auth::envelope::MasterKeyRing;
use secrecy::ExposeSecret;
use std::io::Write;
use std::path::Path;
use std::time::Duration;
use store::Store;
use tokio::io::AsyncReadExt;
use zeroize::Zeroizing;

/// How long `--master-key-command` may take (CONTRACT: 10 s).
pub const MASTER_KEY_COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// More than any ring (a version is ≈50 bytes); a command printing more is
/// not printing a ring, and is not read further.
const MAX_RING_OUTPUT: usize = 64 * 1024;

/// How much of a failed command's stderr the error quotes.
const STDERR_EXCERPT: usize = 300;

#[derive(Debug, thiserror::Error)]
pub enum MasterKeyError {
    #[error("master key file {path}: {msg}")]
    File { path: String, msg: String },
    #[error("master key: {0}")]
    Bad(#[from] auth::AuthError),
    #[error("--master-key-command {0}")]
    Command(String),
    #[error("{0}")]
    Other(String),
}

fn file_err(path: &Path, msg: impl std::fmt::Display) -> MasterKeyError {
    MasterKeyError::File { path: path.display().to_string(), msg: msg.to_string() }
}

/// Loads the ring; when none was configured, generates one into the data dir
/// (mode 0600) and warns that production must supply its own.
pub async fn load_or_generate(config: &Config) -> Result<MasterKeyRing, MasterKeyError> {
    match &config.master_key {
        MasterKeySource::Inline(text) => Ok(MasterKeyRing::parse(text.expose_secret())?),
        MasterKeySource::Command(command) => run_ring_command(command).await,
        MasterKeySource::File(path) => {
            if path.exists() {
                check_permissions(path)?;
                let text = std::fs::read_to_string(path).map_err(|e| file_err(path, e))?;
                return Ok(MasterKeyRing::parse(&text)?);
            }
            if !config.master_key_generated {
                return Err(file_err(path, "does not exist"));
            }
            let ring = MasterKeyRing::generate()?;
            write_ring(path, &ring)?;
            tracing::warn!(
                path = %path.display(),
                "generated a master key inside the data dir; anyone who can read the data dir can decrypt the signing keys. \
                 In production supply your own with --master-key-file or WIRESOCKET_MASTER_KEY, kept apart from the data"
            );
            Ok(ring)
        }
    }
}

/// Runs `--master-key-command` with `sh -c` and parses its stdout as a ring.
///
/// - stdin is closed, so a CLI that would prompt (a login) fails instead of
///   hanging until the timeout.
/// - The command runs in its own process group; on timeout the whole group
///   is killed, so a `sh -c` wrapper cannot leave its child running.
/// - stdout is the secret: read into one buffer of fixed capacity (no
///   reallocation leaves copies behind), zeroized after parsing, and never
///   part of a log line or an error, whatever it holds.
/// - stderr is where a vault CLI says why it failed ("permission denied",
///   "token expired"), so a failure quotes its first [`STDERR_EXCERPT`]
///   bytes; on success it is dropped unread into any log. A CLI that prints
///   secrets to stderr on failure would leak them into the start-up error:
///   none of the common ones (vault, aws, op, gcloud) do.
/// - The command text itself is never quoted (it may embed a token).
pub async fn run_ring_command(command: &MasterKeyCommand) -> Result<MasterKeyRing, MasterKeyError> {
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg(command.command.expose_secret())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    #[cfg(unix)]
    cmd.process_group(0);
    let mut child = cmd.spawn().map_err(|e| MasterKeyError::Command(format!("could not be started: {e}")))?;
    let pid = child.id();
    let (Some(mut stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(MasterKeyError::Command("could not be started: no output pipes".into()));
    };
    let run = async {
        let mut out = Zeroizing::new(Vec::with_capacity(MAX_RING_OUTPUT + 64));
        let mut err = Vec::with_capacity(STDERR_EXCERPT);
        let read_out = async {
            let mut limited = (&mut stdout).take(MAX_RING_OUTPUT as u64 + 1);
            limited.read_to_end(&mut out).await
        };
        let read_err = async {
            let mut limited = stderr.take(STDERR_EXCERPT as u64);
            let n = limited.read_to_end(&mut err).await;
            // Drain the rest so a chatty command does not block on a full pipe.
            let mut rest = limited.into_inner();
            let _ = tokio::io::copy(&mut rest, &mut tokio::io::sink()).await;
            n
        };
        let (o, _) = tokio::join!(read_out, read_err);
        o.map_err(|e| MasterKeyError::Command(format!("output could not be read: {e}")))?;
        // Over the cap: stop reading (the rest is not a ring either).
        drop(stdout);
        let status =
            child.wait().await.map_err(|e| MasterKeyError::Command(format!("could not be waited for: {e}")))?;
        Ok::<_, MasterKeyError>((status, out, err))
    };
    let (status, out, err) = match tokio::time::timeout(command.timeout, run).await {
        Ok(result) => result?,
        Err(_) => {
            // Not reaped yet (the child is only dropped below), so the
            // group id cannot have been reused.
            kill_group(pid);
            return Err(MasterKeyError::Command(format!(
                "did not finish within {} s (killed)",
                command.timeout.as_secs_f64()
            )));
        }
    };
    if out.len() > MAX_RING_OUTPUT {
        return Err(MasterKeyError::Command(format!(
            "printed more than {MAX_RING_OUTPUT} bytes: that is not a master key ring"
        )));
    }
    if !status.success() {
        let why = stderr_excerpt(&err);
        let code = status.code().map_or_else(|| "a signal".to_owned(), |c| format!("status {c}"));
        return Err(MasterKeyError::Command(if why.is_empty() {
            format!("exited with {code}")
        } else {
            format!("exited with {code}: {why}")
        }));
    }
    let text = std::str::from_utf8(&out)
        .map_err(|_| MasterKeyError::Command("printed something that is not text: not a master key ring".into()))?;
    // The parse error names a line number and what is wrong, never the text.
    MasterKeyRing::parse(text)
        .map_err(|e| MasterKeyError::Command(format!("printed something that is not a master key ring ({e})")))
}

/// A printable, single-line excerpt of a failed command's stderr.
fn stderr_excerpt(err: &[u8]) -> String {
    let text = String::from_utf8_lossy(err);
    let one_line: String =
        text.split_whitespace().collect::<Vec<_>>().join(" ").chars().filter(|c| !c.is_control()).collect();
    if err.len() >= STDERR_EXCERPT { format!("{one_line}…") } else { one_line }
}

#[cfg(unix)]
fn kill_group(pid: Option<u32>) {
    let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()).and_then(rustix::process::Pid::from_raw) else {
        return;
    };
    // ESRCH (the group is gone already) is the normal case.
    let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
}

#[cfg(not(unix))]
fn kill_group(_: Option<u32>) {}

#[cfg(unix)]
fn check_permissions(path: &Path) -> Result<(), MasterKeyError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).map_err(|e| file_err(path, e))?.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "master key file is readable by group or others; chmod 600 it");
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_permissions(_: &Path) -> Result<(), MasterKeyError> {
    Ok(())
}

/// Writes atomically (temp file + rename) with mode 0600, so a crash never
/// leaves a half-written ring.
pub fn write_ring(path: &Path, ring: &MasterKeyRing) -> Result<(), MasterKeyError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| file_err(path, e))?;
    }
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp).map_err(|e| file_err(&tmp, e))?;
    f.write_all(ring.to_text().as_bytes()).map_err(|e| file_err(&tmp, e))?;
    f.sync_all().map_err(|e| file_err(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| file_err(path, e))?;
    Ok(())
}

/// `wiresocket keys rotate-master`: adds a new master key version, saves the
/// ring (before touching any row, so every ciphertext stays decryptable
/// whatever happens next), then re-wraps every stored signing key, webhook
/// secret and MFA secret under it; answers the version and how many moved.
/// Old versions stay in the ring until removed with `remove_version`.
///
/// A ring from `--master-key-command` lives in a vault this process cannot
/// write to, and a new version must reach every node before anything is
/// wrapped under it. So the operator adds the version in the vault first;
/// this then re-wraps under the vault ring's current (highest) version, and
/// refuses when that is no newer than what the rows already use.
pub async fn rotate_master(config: &Config, store: &dyn Store) -> Result<(u32, usize), MasterKeyError> {
    if let MasterKeySource::Command(command) = &config.master_key {
        let ring = run_ring_command(command).await?;
        let current = ring.current_version();
        let n = rewrap_all(&ring, store).await?;
        if n == 0 {
            return Err(MasterKeyError::Other(format!(
                "every secret is already wrapped under version {current}, the newest in the ring from \
                 --master-key-command. Add version {} to the ring in your vault (a line `{}:<32 random bytes, \
                 base64>`, e.g. from `openssl rand -base64 32`), then run this again to re-wrap under it",
                current + 1,
                current + 1
            )));
        }
        return Ok((current, n));
    }
    let MasterKeySource::File(path) = &config.master_key else {
        return Err(MasterKeyError::Other(
            "rotate-master rewrites the key ring and so needs --master-key-file (or the generated key in the data dir), \
             not WIRESOCKET_MASTER_KEY"
                .into(),
        ));
    };
    let mut ring = load_or_generate(config).await?;
    let version = ring.add_version()?;
    write_ring(path, &ring)?;
    let n = rewrap_all(&ring, store).await?;
    Ok((version, n))
}

/// Re-wraps every signing key, MFA secret and webhook secret not yet under
/// the ring's current version; answers how many.
pub async fn rewrap_all(ring: &MasterKeyRing, store: &dyn Store) -> Result<usize, MasterKeyError> {
    Ok(rewrap_signing_keys(ring, store).await?
        + rewrap_mfa_secrets(ring, store).await?
        + rewrap_webhook_secrets(ring, store).await?)
}

async fn rewrap_mfa_secrets(ring: &MasterKeyRing, store: &dyn Store) -> Result<usize, MasterKeyError> {
    let current = ring.current_version();
    let mut n = 0;
    for record in store.list_all_mfa_secrets().await.map_err(|e| MasterKeyError::Other(e.to_string()))? {
        if record.master_key_version == current {
            continue;
        }
        let aad = auth::envelope::mfa_aad(&record.user_id.to_string());
        let secret = ring.decrypt(&record.secret_enc, &aad)?;
        let blob = ring.encrypt(&secret, &aad)?;
        match store.rewrap_mfa_secret(record.user_id, &blob, current).await {
            Ok(()) => n += 1,
            // Turned off meanwhile: nothing left to re-wrap.
            Err(store::StoreError::NotFound) => {}
            Err(e) => return Err(MasterKeyError::Other(e.to_string())),
        }
    }
    Ok(n)
}

async fn rewrap_signing_keys(ring: &MasterKeyRing, store: &dyn Store) -> Result<usize, MasterKeyError> {
    let current = ring.current_version();
    let mut n = 0;
    for record in store.list_all_signing_keys().await.map_err(|e| MasterKeyError::Other(e.to_string()))? {
        if record.master_key_version == current {
            continue;
        }
        let aad = auth::envelope::key_aad(&record.tenant_id.to_string(), &record.kid);
        let der = ring.decrypt(&record.private_key_enc, &aad)?;
        let blob = ring.encrypt(&der, &aad)?;
        store
            .rewrap_signing_key(&record.kid, &blob, current)
            .await
            .map_err(|e| MasterKeyError::Other(e.to_string()))?;
        n += 1;
    }
    Ok(n)
}

/// Re-wraps every webhook secret not yet under the ring's current version.
pub async fn rewrap_webhook_secrets(ring: &MasterKeyRing, store: &dyn Store) -> Result<usize, MasterKeyError> {
    let current = ring.current_version();
    let mut n = 0;
    for hook in store.list_all_webhook_secrets().await.map_err(|e| MasterKeyError::Other(e.to_string()))? {
        if hook.master_key_version == current {
            continue;
        }
        let aad = crate::webhooks::secret_aad(hook.tenant_id, &hook.id);
        let secret = ring.decrypt(&hook.secret_enc, &aad)?;
        let blob = ring.encrypt(&secret, &aad)?;
        match store.rewrap_webhook_secret(&hook.id, &blob, current).await {
            // Deleted meanwhile: nothing left to re-wrap.
            Ok(()) | Err(store::StoreError::NotFound) => {}
            Err(e) => return Err(MasterKeyError::Other(e.to_string())),
        }
        n += 1;
    }
    Ok(n)
}

/// Fails fast at start-up when the ring cannot unwrap the stored keys (a
/// missing version, or a different key altogether), instead of failing on
/// the first token request.
pub async fn check_ring_matches_store(ring: &MasterKeyRing, store: &dyn Store) -> Result<(), MasterKeyError> {
    let keys = store.list_all_signing_keys().await.map_err(|e| MasterKeyError::Other(e.to_string()))?;
    let versions = ring.versions();
    if let Some(k) = keys.iter().find(|k| !versions.contains(&k.master_key_version)) {
        return Err(MasterKeyError::Other(format!(
            "signing key {} is wrapped under master key version {}, which the configured ring lacks",
            k.kid, k.master_key_version
        )));
    }
    if let Some(k) = keys.first() {
        let aad = auth::envelope::key_aad(&k.tenant_id.to_string(), &k.kid);
        ring.decrypt(&k.private_key_enc, &aad).map_err(|_| {
            MasterKeyError::Other("the configured master key cannot decrypt the stored signing keys: wrong key?".into())
        })?;
    }
    let hooks = store.list_all_webhook_secrets().await.map_err(|e| MasterKeyError::Other(e.to_string()))?;
    if let Some(h) = hooks.iter().find(|h| !versions.contains(&h.master_key_version)) {
        return Err(MasterKeyError::Other(format!(
            "webhook {} has its secret wrapped under master key version {}, which the configured ring lacks",
            h.id, h.master_key_version
        )));
    }
    Ok(())
}

/// `wiresocket keys remove-master --version N`: refuses while any signing
/// key or MFA secret is still wrapped under N. With `--master-key-command`
/// it only checks: the version is then deleted in the vault.
pub async fn remove_master_version(
    config: &Config,
    store: &dyn Store,
    version: u32,
) -> Result<Removal, MasterKeyError> {
    let path = match &config.master_key {
        MasterKeySource::File(path) => Some(path),
        MasterKeySource::Command(_) => None,
        MasterKeySource::Inline(_) => {
            return Err(MasterKeyError::Other("remove-master needs --master-key-file".into()));
        }
    };
    let mut ring = load_or_generate(config).await?;
    let in_use = store
        .list_all_signing_keys()
        .await
        .map_err(|e| MasterKeyError::Other(e.to_string()))?
        .iter()
        .filter(|k| k.master_key_version == version)
        .count();
    if in_use > 0 {
        return Err(MasterKeyError::Other(format!(
            "{in_use} signing keys are still wrapped under version {version}; run `wiresocket keys rotate-master` first"
        )));
    }
    let hooks_in_use = store
        .list_all_webhook_secrets()
        .await
        .map_err(|e| MasterKeyError::Other(e.to_string()))?
        .iter()
        .filter(|h| h.master_key_version == version)
        .count();
    if hooks_in_use > 0 {
        return Err(MasterKeyError::Other(format!(
            "{hooks_in_use} webhook secrets are still wrapped under version {version}; \
             run `wiresocket keys rotate-master` first"
        )));
    }
    let mfa_in_use = store
        .list_all_mfa_secrets()
        .await
        .map_err(|e| MasterKeyError::Other(e.to_string()))?
        .iter()
        .filter(|m| m.master_key_version == version)
        .count();
    if mfa_in_use > 0 {
        return Err(MasterKeyError::Other(format!(
            "{mfa_in_use} MFA secrets are still wrapped under version {version}; run `wiresocket keys rotate-master` first"
        )));
    }
    ring.remove_version(version)?;
    match path {
        Some(path) => write_ring(path, &ring).map(|()| Removal::FromFile),
        None => Ok(Removal::InVault),
    }
}

/// What [`remove_master_version`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// Removed from the ring file.
    FromFile,
    /// Nothing uses the version any more; the ring is in a vault, where
    /// the operator deletes it.
    InVault,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use secrecy::SecretString;
    use std::time::Instant;

    fn command(sh: &str) -> MasterKeyCommand {
        MasterKeyCommand { command: SecretString::from(sh.to_owned()), timeout: MASTER_KEY_COMMAND_TIMEOUT }
    }

    fn ring_text() -> (MasterKeyRing, String) {
        let mut ring = MasterKeyRing::generate().unwrap();
        ring.add_version().unwrap();
        let text = ring.to_text().to_string();
        (ring, text)
    }

    /// The base64 of each key in a ring's text: what must never leak.
    fn key_parts(text: &str) -> Vec<String> {
        text.lines().filter_map(|l| l.split_once(':')).map(|(_, k)| k.trim().to_owned()).collect()
    }

    #[tokio::test]
    async fn a_command_printing_a_ring_supplies_it() {
        let (ring, text) = ring_text();
        // With and without a trailing newline, as `vault kv get -field` and `op read` differ.
        for sh in [format!("printf '%s' '{text}'"), format!("printf '%s\\n' '{text}'"), format!("echo '{text}'")] {
            let got = run_ring_command(&command(&sh)).await.unwrap();
            assert_eq!(got.versions(), ring.versions());
            assert_eq!(got.current_version(), 2);
            let blob = ring.encrypt(b"secret", b"aad").unwrap();
            assert_eq!(&got.decrypt(&blob, b"aad").unwrap()[..], b"secret");
        }
    }

    #[tokio::test]
    async fn a_failing_command_says_why_without_quoting_its_output_or_itself() {
        let (_, text) = ring_text();
        let sh = format!("printf '%s' '{text}'; echo 'Error: permission denied (token expired)' >&2; exit 3");
        let err = run_ring_command(&command(&sh)).await.unwrap_err().to_string();
        assert!(err.contains("exited with status 3"), "{err}");
        assert!(err.contains("permission denied (token expired)"), "{err}");
        assert!(!err.contains("printf"), "the command is not quoted: {err}");
        for key in key_parts(&text) {
            assert!(!err.contains(&key), "stdout leaked: {err}");
        }
        // A long stderr is cut.
        let err = run_ring_command(&command("head -c 5000 /dev/zero | tr '\\0' x >&2; exit 1"))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.len() < STDERR_EXCERPT + 100 && err.ends_with('…'), "{err}");
        let err = run_ring_command(&command("exit 1")).await.unwrap_err().to_string();
        assert_eq!(err, "--master-key-command exited with status 1");
        let err = run_ring_command(&command("kill -9 $$")).await.unwrap_err().to_string();
        assert!(err.contains("exited with a signal"), "{err}");
    }

    #[tokio::test]
    async fn output_that_is_not_a_ring_is_refused_without_being_echoed() {
        let secret_looking = "hunter2-not-a-ring";
        for sh in [
            format!("echo {secret_looking}"),
            String::new() + "true",
            format!("echo '1:{secret_looking}'"),
            "head -c 100000 /dev/zero".to_owned(),
            "printf '\\377\\376'".to_owned(),
        ] {
            let err = run_ring_command(&command(&sh)).await.unwrap_err().to_string();
            assert!(err.contains("not a master key ring"), "{sh}: {err}");
            assert!(!err.contains(secret_looking), "{err}");
        }
    }

    #[tokio::test]
    async fn a_hanging_command_is_killed_with_its_children_at_the_timeout() {
        assert_eq!(MASTER_KEY_COMMAND_TIMEOUT, Duration::from_secs(10));
        let dir = std::env::temp_dir().join(format!("wiresocket-mkc-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let pid_file = dir.join("pid");
        // A background child holding stdout open, as a CLI's helper might:
        // killing only `sh` would leave it running.
        let sh = format!("sleep 30 & echo $! > {}; wait", pid_file.display());
        let cmd = MasterKeyCommand { timeout: Duration::from_millis(500), ..command(&sh) };
        let started = Instant::now();
        let err = run_ring_command(&cmd).await.unwrap_err().to_string();
        let took = started.elapsed();
        assert!(err.contains("did not finish within 0.5 s"), "{err}");
        assert!(took < Duration::from_secs(3), "{took:?}");
        let pid = std::fs::read_to_string(&pid_file).unwrap().trim().to_owned();
        let mut gone = false;
        for _ in 0..50 {
            let status = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // Gone, or a zombie waiting for init to reap it.
            if status.is_empty() || status.contains(") Z") {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(gone, "the command's child {pid} is still running");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn stdin_is_closed_so_a_prompt_fails_at_once() {
        let started = Instant::now();
        // `read` at end of input fails: a CLI asking for a password does not wait for one.
        let err = run_ring_command(&command("read answer || exit 4; echo \"$answer\"")).await.unwrap_err();
        assert!(err.to_string().contains("status 4"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(3));
    }
}
