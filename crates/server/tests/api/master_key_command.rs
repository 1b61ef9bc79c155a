//! `--master-key-command`: the ring comes from a command's stdout (a vault
//! CLI in production; `cat` of a file standing in for the vault here), is
//! re-read by running the command again, and never shows in any output.

use crate::crash::{binary, free_port, wait_ready};
use crate::helpers::*;
use auth::envelope::MasterKeyRing;
use server::config::{MasterKeyCommand, MasterKeySource};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// A "vault" holding `ring`, and a config whose command reads it, counting runs.
fn vault_config(data_dir: &Path, ring: &MasterKeyRing) -> server::Config {
    let vault = data_dir.join("vault-ring");
    std::fs::write(&vault, ring.to_text().as_bytes()).unwrap();
    let mut config = test_config(data_dir);
    let sh = format!("echo run >> {}; cat {}", data_dir.join("runs").display(), vault.display());
    config.master_key = MasterKeySource::Command(MasterKeyCommand {
        command: auth::SecretString::from(sh),
        timeout: server::masterkey::MASTER_KEY_COMMAND_TIMEOUT,
    });
    config.master_key_generated = false;
    config
}

fn runs(data_dir: &Path) -> usize {
    std::fs::read_to_string(data_dir.join("runs")).unwrap_or_default().lines().count()
}

#[tokio::test]
async fn a_vault_ring_serves_rotates_in_the_vault_and_is_re_read_while_running() {
    let data_dir = temp_dir();
    let mut ring = MasterKeyRing::generate().unwrap();
    let config = vault_config(&data_dir, &ring);
    let app = spawn_with(config.clone()).await;
    assert_eq!(runs(&data_dir), 1, "run once at start");
    let owner = app.setup().await;
    let creds = app.create_app(&owner, "starter", &[]).await;
    app.m2m_token(&creds).await;
    assert!(!data_dir.join("master.key").exists(), "a vault ring is never written to the data dir");

    // rotate-master cannot write to the vault: without a new version there, it says what to do.
    let store = server::open_store(&config).await.unwrap();
    let err = server::masterkey::rotate_master(&config, store.as_ref()).await.unwrap_err().to_string();
    assert!(err.contains("Add version 2 to the ring in your vault"), "{err}");

    // The operator adds version 2 in the vault; rotate-master re-wraps under it.
    ring.add_version().unwrap();
    std::fs::write(data_dir.join("vault-ring"), ring.to_text().as_bytes()).unwrap();
    let (version, rewrapped) = server::masterkey::rotate_master(&config, store.as_ref()).await.unwrap();
    assert_eq!((version, rewrapped), (2, 1));
    assert!(store.list_all_signing_keys().await.unwrap().iter().all(|k| k.master_key_version == 2));

    // The running server meets version 2: it runs the command again, once.
    let before = runs(&data_dir);
    let fresh = app.state.keys.ring_for(2).await.unwrap();
    assert_eq!(fresh.versions(), vec![1, 2]);
    assert_eq!(runs(&data_dir), before + 1);
    // A version no ring has does not start a command per request: none
    // at all within COMMAND_REREAD_INTERVAL of the last run.
    for _ in 0..5 {
        assert_eq!(app.state.keys.ring_for(9).await.unwrap().versions(), vec![1, 2]);
    }
    assert_eq!(runs(&data_dir), before + 1);
    app.stop().await;

    // Version 1 is unused now: remove-master checks, and says to delete it in the vault.
    let removal = server::masterkey::remove_master_version(&config, store.as_ref(), 1).await.unwrap();
    assert_eq!(removal, server::masterkey::Removal::InVault);
    assert!(server::masterkey::remove_master_version(&config, store.as_ref(), 2).await.is_err());
    drop(store);
    let app = spawn_with(config).await;
    app.m2m_token(&creds).await;
    app.stop().await;
}

#[tokio::test]
async fn a_failing_command_stops_the_start() {
    let data_dir = temp_dir();
    let ring = MasterKeyRing::generate().unwrap();
    let mut config = vault_config(&data_dir, &ring);
    for (sh, expect) in [
        ("echo 'Code: 403. permission denied' >&2; exit 2", "exited with status 2: Code: 403. permission denied"),
        ("echo not-a-ring", "printed something that is not a master key ring"),
    ] {
        config.master_key = MasterKeySource::Command(MasterKeyCommand {
            command: auth::SecretString::from(sh),
            timeout: Duration::from_secs(10),
        });
        let err = server::Application::build(config.clone()).await.err().expect("must not start").to_string();
        assert!(err.contains(expect), "{err}");
    }
    config.master_key = MasterKeySource::Command(MasterKeyCommand {
        command: auth::SecretString::from("sleep 30"),
        timeout: Duration::from_millis(300),
    });
    let started = std::time::Instant::now();
    let err = server::Application::build(config).await.err().expect("must not start").to_string();
    assert!(err.contains("did not finish within 0.3 s"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// The real binary at trace level, with the ring on the command's stdout
/// and the command embedding a token: neither shows in anything it prints,
/// started or refused. Flags and env, exclusive.
#[tokio::test]
async fn the_ring_and_the_command_never_show_in_the_binarys_output() {
    let data_dir = temp_dir();
    let ring = MasterKeyRing::generate().unwrap();
    let text = ring.to_text().to_string();
    let key = text.lines().next().unwrap().split_once(':').unwrap().1.trim().to_owned();
    let vault = data_dir.join("vault-ring");
    std::fs::write(&vault, &text).unwrap();
    let command = format!("VAULT_TOKEN=s.tok3n-secret cat {}", vault.display());
    let port = free_port();
    let log = data_dir.join("server.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut server = Command::new(binary())
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(&*data_dir)
        .env("WIRESOCKET_MASTER_KEY_COMMAND", &command)
        .env("WIRESOCKET_LOG", "trace")
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    wait_ready(&http, &format!("http://127.0.0.1:{port}")).await;
    server.kill().unwrap();
    server.wait().unwrap();
    let printed = std::fs::read_to_string(&log).unwrap();
    assert!(printed.contains("wiresocket listening"), "{printed}");
    assert!(!printed.contains(&key) && !printed.contains("tok3n"), "{printed}");

    // Refused: a non-zero exit after printing the ring.
    let failing = format!("cat {}; exit 7", vault.display());
    let refused = Command::new(binary())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&*data_dir)
        .args(["--master-key-command", &failing])
        .env("WIRESOCKET_LOG", "trace")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let printed = format!("{}{}", String::from_utf8_lossy(&refused.stdout), String::from_utf8_lossy(&refused.stderr));
    assert!(printed.contains("--master-key-command exited with status 7"), "{printed}");
    assert!(!printed.contains(&key), "{printed}");

    // Exclusive with WIRESOCKET_MASTER_KEY.
    let both = Command::new(binary())
        .args(["serve", "--data-dir"])
        .arg(&*data_dir)
        .args(["--master-key-command", &failing])
        .env("WIRESOCKET_MASTER_KEY", &text)
        .output()
        .unwrap();
    assert!(!both.status.success());
    let printed = String::from_utf8_lossy(&both.stderr);
    assert!(printed.contains("only one of"), "{printed}");
    assert!(!printed.contains(&key), "{printed}");
}
