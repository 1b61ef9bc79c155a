//! Outgoing mail (invites, password resets) behind one [`Mailer`] trait.
//!
//! - [`SmtpMailer`]: `--smtp-url smtp://user:pass@host:587?tls=required` or
//!   `smtps://…:465`, through lettre's async SMTP transport.
//! - [`OutboxMailer`]: the default. Each message is written to
//!   `<data-dir>/outbox/<uuid>.eml` (RFC 5322, as lettre formats it for the
//!   wire), so an operator without SMTP can still hand out links, and tests
//!   read the links from there.
//!
//! Messages carry single-use tokens; neither implementation logs a body.
//! Handlers never wait for delivery: [`send_detached`] hands the message to
//! a task, so neither a slow relay nor an answer's timing says anything
//! (e.g. whether a password-reset address has an account). The templates
//! put tokens after a `#` in links, so they never reach a web server's log.

use async_trait::async_trait;
use lettre::message::{Mailbox, header::ContentType};
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use secrecy::{ExposeSecret, SecretString};
use std::path::{Path, PathBuf};

/// One plain-text message to one recipient.
#[derive(Clone)]
pub struct Mail {
    pub to: String,
    pub subject: String,
    pub body: String,
}

impl std::fmt::Debug for Mail {
    /// The body holds a token: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mail").field("to", &self.to).field("subject", &self.subject).finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("invalid address: {0}")]
    Address(String),
    #[error("could not build the message: {0}")]
    Build(String),
    #[error("could not deliver the message: {0}")]
    Transport(String),
}

#[async_trait]
pub trait Mailer: Send + Sync + 'static {
    async fn send(&self, mail: &Mail) -> Result<(), MailError>;
    /// For logs and `/readyz`-style reporting: where mail goes, without credentials.
    fn describe(&self) -> String;
}

/// The configured mailer: SMTP with `--smtp-url`, else the outbox in the data dir.
pub fn from_config(config: &crate::config::Config) -> Result<std::sync::Arc<dyn Mailer>, MailError> {
    Ok(match &config.smtp_url {
        Some(url) => std::sync::Arc::new(SmtpMailer::new(&config.mail_from, url)?),
        None => std::sync::Arc::new(OutboxMailer::new(&config.mail_from, &config.data_dir.join("outbox"))?),
    })
}

/// Whether `address` can be a recipient (what the transport will accept).
pub fn valid_recipient(address: &str) -> bool {
    address.parse::<Mailbox>().is_ok()
}

/// Sends in the background. A failure is logged with the subject and the
/// reason, never the body (it holds a token).
pub fn send_detached(mailer: std::sync::Arc<dyn Mailer>, mail: Mail) {
    tokio::spawn(async move {
        match mailer.send(&mail).await {
            Ok(()) => tracing::info!(subject = %mail.subject, via = %mailer.describe(), "mail sent"),
            Err(e) => tracing::warn!(subject = %mail.subject, via = %mailer.describe(), error = %e, "mail not sent"),
        }
    });
}

/// The invitation to join a tenant.
pub fn invite_mail(to: &str, tenant: &str, inviter: &str, role: &str, link: &str, expires: &str) -> Mail {
    Mail {
        to: to.to_owned(),
        subject: format!("You are invited to {tenant} on WireSocket"),
        body: format!(
            "{inviter} invited you to join the tenant \"{tenant}\" on WireSocket as {role}.\n\n\
             Accept the invitation here (the link works once, until {expires}):\n\n\
             {link}\n\n\
             If you did not expect this invitation, ignore this message.\n"
        ),
    }
}

/// The password-reset link.
pub fn reset_mail(to: &str, link: &str, minutes: i64) -> Mail {
    Mail {
        to: to.to_owned(),
        subject: "Reset your WireSocket password".to_owned(),
        body: format!(
            "Someone (hopefully you) asked to reset the password of this WireSocket account.\n\n\
             Choose a new password here (the link works once, for {minutes} minutes):\n\n\
             {link}\n\n\
             Setting a new password signs you out everywhere. If you did not ask for this, \
             ignore this message: your password stays as it is.\n"
        ),
    }
}

fn build(from: &Mailbox, mail: &Mail) -> Result<lettre::Message, MailError> {
    let to: Mailbox = mail.to.parse().map_err(|e| MailError::Address(format!("{e}")))?;
    lettre::Message::builder()
        .from(from.clone())
        .to(to)
        .subject(mail.subject.clone())
        .header(ContentType::TEXT_PLAIN)
        .body(mail.body.clone())
        .map_err(|e| MailError::Build(format!("{e}")))
}

/// Writes each message as `<uuid>.eml` into a directory.
pub struct OutboxMailer {
    from: Mailbox,
    dir: PathBuf,
    transport: AsyncFileTransport<Tokio1Executor>,
}

impl OutboxMailer {
    /// Creates `dir` (mode 0700: the messages hold live tokens) if missing.
    pub fn new(from: &str, dir: &Path) -> Result<Self, MailError> {
        let from: Mailbox = from.parse().map_err(|e| MailError::Address(format!("{e}")))?;
        std::fs::create_dir_all(dir).map_err(|e| MailError::Transport(format!("{}: {e}", dir.display())))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        }
        Ok(Self { from, dir: dir.to_owned(), transport: AsyncFileTransport::new(dir) })
    }
}

#[async_trait]
impl Mailer for OutboxMailer {
    async fn send(&self, mail: &Mail) -> Result<(), MailError> {
        let message = build(&self.from, mail)?;
        self.transport.send(message).await.map_err(|e| MailError::Transport(format!("{e}")))?;
        Ok(())
    }

    fn describe(&self) -> String {
        format!("outbox {}", self.dir.display())
    }
}

/// Sends over SMTP.
pub struct SmtpMailer {
    from: Mailbox,
    host: String,
    transport: AsyncSmtpTransport<Tokio1Executor>,
}

impl SmtpMailer {
    /// `url`: `smtp://[user:pass@]host[:port][?tls=required|opportunistic]` or
    /// `smtps://…` (implicit TLS), per lettre's `from_url`.
    pub fn new(from: &str, url: &SecretString) -> Result<Self, MailError> {
        let from: Mailbox = from.parse().map_err(|e| MailError::Address(format!("{e}")))?;
        let parsed = url::Url::parse(url.expose_secret()).map_err(|_| MailError::Transport("bad SMTP URL".into()))?;
        let host = format!("{}:{}", parsed.host_str().unwrap_or_default(), parsed.port().unwrap_or_default());
        // The error may quote the URL, which can hold a password: not repeated.
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose_secret())
            .map_err(|_| MailError::Transport("bad SMTP URL".into()))?
            .timeout(Some(std::time::Duration::from_secs(20)))
            .build();
        Ok(Self { from, host, transport })
    }
}

#[async_trait]
impl Mailer for SmtpMailer {
    async fn send(&self, mail: &Mail) -> Result<(), MailError> {
        let message = build(&self.from, mail)?;
        self.transport.send(message).await.map_err(|e| MailError::Transport(format!("{e}")))?;
        Ok(())
    }

    fn describe(&self) -> String {
        format!("smtp {}", self.host)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    fn mail() -> Mail {
        Mail {
            to: "ada@example.com".into(),
            subject: "You are invited".into(),
            body: "Accept: http://127.0.0.1:8080/dashboard/accept#token=inv_secret123".into(),
        }
    }

    #[tokio::test]
    async fn outbox_writes_one_rfc5322_file_per_message() {
        let dir = std::env::temp_dir().join(format!("outbox-{}", uuid::Uuid::new_v4()));
        let m = OutboxMailer::new("WireSocket <no-reply@localhost>", &dir).unwrap();
        m.send(&mail()).await.unwrap();
        m.send(&mail()).await.unwrap();
        let files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
        assert_eq!(files.len(), 2);
        let text = std::fs::read_to_string(&files[0]).unwrap();
        assert!(files[0].extension().unwrap() == "eml");
        assert!(text.contains("To: ada@example.com\r\n"), "{text}");
        assert!(text.contains("Subject: You are invited\r\n"));
        assert!(text.contains("Date: "));
        assert!(text.contains("inv_secret123"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn bad_recipient_is_an_error_not_a_panic() {
        let dir = std::env::temp_dir().join(format!("outbox-{}", uuid::Uuid::new_v4()));
        let m = OutboxMailer::new("no-reply@localhost", &dir).unwrap();
        let mut bad = mail();
        bad.to = "not an address".into();
        assert!(matches!(m.send(&bad).await, Err(MailError::Address(_))));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn debug_hides_the_body() {
        assert!(!format!("{:?}", mail()).contains("inv_secret123"));
    }

    /// A minimal SMTP server: enough of RFC 5321 for one message.
    async fn fake_smtp() -> (u16, tokio::task::JoinHandle<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let (sock, _) = listener.accept().await.unwrap();
            let (r, mut w) = sock.into_split();
            let mut r = BufReader::new(r);
            w.write_all(b"220 fake ESMTP\r\n").await.unwrap();
            let mut transcript = String::new();
            let mut in_data = false;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).await.unwrap() == 0 {
                    break;
                }
                transcript.push_str(&line);
                if in_data {
                    if line == ".\r\n" {
                        in_data = false;
                        w.write_all(b"250 queued\r\n").await.unwrap();
                    }
                    continue;
                }
                let cmd = line.to_ascii_uppercase();
                let reply: &[u8] = if cmd.starts_with("EHLO") {
                    b"250-fake\r\n250 AUTH PLAIN LOGIN\r\n"
                } else if cmd.starts_with("AUTH") {
                    b"235 ok\r\n"
                } else if cmd.starts_with("DATA") {
                    in_data = true;
                    b"354 go\r\n"
                } else if cmd.starts_with("QUIT") {
                    w.write_all(b"221 bye\r\n").await.unwrap();
                    break;
                } else {
                    b"250 ok\r\n"
                };
                w.write_all(reply).await.unwrap();
            }
            transcript
        });
        (port, task)
    }

    #[tokio::test]
    async fn smtp_delivers_to_a_real_socket() {
        let (port, server) = fake_smtp().await;
        let url = SecretString::from(format!("smtp://mailuser:mailpass@127.0.0.1:{port}"));
        let m = SmtpMailer::new("no-reply@wiresocket.test", &url).unwrap();
        assert_eq!(m.describe(), format!("smtp 127.0.0.1:{port}"));
        m.send(&mail()).await.unwrap();
        drop(m);
        let transcript = tokio::time::timeout(std::time::Duration::from_secs(10), server).await.unwrap().unwrap();
        assert!(transcript.contains("MAIL FROM:<no-reply@wiresocket.test>"), "{transcript}");
        assert!(transcript.contains("RCPT TO:<ada@example.com>"));
        assert!(transcript.contains("AUTH PLAIN"));
        assert!(transcript.contains("inv_secret123"));
    }
}
