//! The CLI's own file: which server, whose session, which tenant.
//!
//! `$WIRESOCKET_CLI_CONFIG`, else `$XDG_CONFIG_HOME/wiresocket/cli.toml`,
//! else `~/.config/wiresocket/cli.toml`. It holds a live session token, so it
//! is written with mode 0600 (its folder 0700), through a temporary file
//! renamed into place so a crash never leaves half a file.

use crate::CliError;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// What `login` saves. The session is secret: never printed, and redacted
/// from `Debug`.
#[derive(Default, Serialize, Deserialize)]
pub struct Saved {
    /// The server the session belongs to.
    pub server: Option<String>,
    pub email: Option<String>,
    #[serde(default, with = "secret_opt")]
    pub session: Option<SecretString>,
    /// RFC 3339, as the server answered it.
    pub session_expires_at: Option<String>,
    /// The tenant commands act on when `--tenant` is not given.
    pub tenant: Option<String>,
}

impl std::fmt::Debug for Saved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Saved")
            .field("server", &self.server)
            .field("email", &self.email)
            .field("session", &self.session.as_ref().map(|_| "[redacted]"))
            .field("session_expires_at", &self.session_expires_at)
            .field("tenant", &self.tenant)
            .finish()
    }
}

mod secret_opt {
    use secrecy::{ExposeSecret, SecretString};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(secret) => s.serialize_some(secret.expose_secret()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SecretString>, D::Error> {
        Ok(Option::<String>::deserialize(d)?.map(SecretString::from))
    }
}

/// Where the file lives (see the module docs).
pub fn path() -> Result<PathBuf, CliError> {
    if let Some(p) = std::env::var_os("WIRESOCKET_CLI_CONFIG").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|p| !p.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => match std::env::var_os("HOME").filter(|p| !p.is_empty()) {
            Some(home) => PathBuf::from(home).join(".config"),
            None => {
                return Err(CliError::usage(
                    "cannot tell where to keep the CLI's settings: set WIRESOCKET_CLI_CONFIG to a file path",
                ));
            }
        },
    };
    Ok(base.join("wiresocket").join("cli.toml"))
}

impl Saved {
    /// The saved settings; an absent file is empty settings.
    pub fn load(path: &Path) -> Result<Self, CliError> {
        match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text).map_err(|e| {
                CliError::usage(format!(
                    "{} is not a valid CLI settings file ({}); fix it or delete it and run `wiresocket login`",
                    path.display(),
                    e.message()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(CliError::usage(format!("cannot read {}: {e}", path.display()))),
        }
    }

    /// Writes the settings with mode 0600, atomically.
    pub fn store(&self, path: &Path) -> Result<(), CliError> {
        let fail = |e: std::io::Error| CliError::usage(format!("cannot write {}: {e}", path.display()));
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            create_private_dir(dir).map_err(fail)?;
        }
        let mut text = toml::to_string(self).map_err(|e| CliError::usage(format!("cannot encode settings: {e}")))?;
        let tmp = path.with_extension("tmp");
        let written = (|| {
            let mut file = private_file(&tmp)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        zeroize::Zeroize::zeroize(&mut text);
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written.map_err(fail)
    }

    pub fn session(&self) -> Option<&str> {
        self.session.as_ref().map(ExposeSecret::expose_secret)
    }
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

#[cfg(unix)]
fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    // An existing file keeps its mode through `open`: force it.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(file)
}

#[cfg(not(unix))]
fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new().write(true).create(true).truncate(true).open(path)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("wiresocket-cli-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn round_trip_with_private_modes() {
        let dir = scratch("roundtrip");
        let path = dir.join("nested").join("cli.toml");
        let saved = Saved {
            server: Some("http://127.0.0.1:9".into()),
            email: Some("a@example.com".into()),
            session: Some(SecretString::from("wss_secret")),
            session_expires_at: None,
            tenant: Some("t".into()),
        };
        saved.store(&path).unwrap();
        let back = Saved::load(&path).unwrap();
        assert_eq!(back.session(), Some("wss_secret"));
        assert_eq!(back.tenant.as_deref(), Some("t"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
            assert_eq!(std::fs::metadata(path.parent().unwrap()).unwrap().permissions().mode() & 0o777, 0o700);
        }
        assert!(!format!("{back:?}").contains("wss_secret"), "Debug must not show the session");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_missing_file_is_empty_and_a_broken_one_says_what_to_do() {
        let dir = scratch("broken");
        assert!(Saved::load(&dir.join("absent.toml")).unwrap().session.is_none());
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("cli.toml");
        std::fs::write(&path, "server = [").unwrap();
        let err = Saved::load(&path).unwrap_err();
        assert!(err.message.contains("wiresocket login"), "{}", err.message);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
