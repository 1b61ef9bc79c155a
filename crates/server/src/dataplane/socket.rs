//! The transport under a WebSocket connection: a TCP socket, plain or with
//! TLS, driven by readiness rather than by a task per direction.
//!
//! [`super::ws::Peer`] writes from whichever thread broadcasts and reads from
//! the connection's task; both only ever ask the socket for what it can do
//! now (`try_write`, `try_read`). With TLS the same holds: the rustls
//! session (taken over from the HTTP connection after the upgrade) sits
//! behind a mutex, plaintext goes in and records come out in the caller's
//! thread, and records the socket could not take yet stay in the session
//! until it is writable ([`Socket::pending_out`]). rustls bounds what it
//! keeps buffered (64 KiB of records by default), so a slow reader still
//! backs up into the peer's own bounded queue.

use bytes::BytesMut;
use rustls::ServerConnection;
use std::io::{self, IoSlice, Read, Write};
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use tokio::net::TcpStream;

/// A connection's socket; see the module docs.
pub struct Socket {
    tcp: TcpStream,
    tls: Option<Mutex<ServerConnection>>,
}

impl From<TcpStream> for Socket {
    fn from(tcp: TcpStream) -> Self {
        Self { tcp, tls: None }
    }
}

fn lock(m: &Mutex<ServerConnection>) -> MutexGuard<'_, ServerConnection> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `std::io` over a non-blocking tokio socket, for rustls: `WouldBlock`
/// when the socket cannot move bytes now.
struct Wire<'a>(&'a TcpStream);

impl Read for Wire<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

impl Write for Wire<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.try_write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes the session's pending records; `Ok(true)` when none are left.
fn drain(conn: &mut ServerConnection, tcp: &TcpStream) -> io::Result<bool> {
    while conn.wants_write() {
        match conn.write_tls(&mut Wire(tcp)) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

impl Socket {
    /// A TLS connection whose handshake is done: `conn` is the session the
    /// HTTP connection used, with whatever it holds still to be sent or read.
    pub fn tls(tcp: TcpStream, conn: ServerConnection) -> Self {
        Self { tcp, tls: Some(Mutex::new(conn)) }
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.peer_addr()
    }

    pub async fn readable(&self) -> io::Result<()> {
        self.tcp.readable().await
    }

    pub async fn writable(&self) -> io::Result<()> {
        self.tcp.writable().await
    }

    /// One non-blocking write of `bufs` (a prefix of them may be taken);
    /// `WouldBlock` when nothing could be. With TLS "taken" means sealed
    /// into records: those the socket refuses wait in the session.
    pub fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let Some(tls) = &self.tls else { return self.tcp.try_write_vectored(bufs) };
        let mut conn = lock(tls);
        // Older records first, so nothing overtakes them.
        if !drain(&mut conn, &self.tcp)? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let taken = conn.writer().write_vectored(bufs)?;
        if taken == 0 && bufs.iter().any(|b| !b.is_empty()) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        drain(&mut conn, &self.tcp)?;
        Ok(taken)
    }

    /// One non-blocking write of `buf`; see [`Socket::try_write_vectored`].
    pub fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        match &self.tls {
            None => self.tcp.try_write(buf),
            Some(_) => self.try_write_vectored(&[IoSlice::new(buf)]),
        }
    }

    /// TLS records sealed but not yet taken by the socket.
    pub fn pending_out(&self) -> bool {
        self.tls.as_ref().is_some_and(|tls| lock(tls).wants_write())
    }

    /// Writes what [`Socket::pending_out`] holds; `Ok(true)` when all of it
    /// went (always, without TLS).
    pub fn send_pending(&self) -> io::Result<bool> {
        match &self.tls {
            None => Ok(true),
            Some(tls) => drain(&mut lock(tls), &self.tcp),
        }
    }

    /// Ends the TLS session cleanly (a `close_notify` alert), as far as the
    /// socket takes it now; nothing without TLS.
    pub fn close_notify(&self) {
        if let Some(tls) = &self.tls {
            let mut conn = lock(tls);
            conn.send_close_notify();
            let _ = drain(&mut conn, &self.tcp);
        }
    }

    /// Plaintext the session decrypted before the connection was handed
    /// over (bytes the client sent right behind its upgrade request), moved
    /// into `buf`. Nothing without TLS: hyper's own leftover covers that.
    pub fn take_buffered(&self, buf: &mut BytesMut) {
        if let Some(tls) = &self.tls {
            let _ = plaintext(&mut lock(tls), buf);
        }
    }

    /// One non-blocking read into `buf`; `Ok(0)` at the end of the stream,
    /// `WouldBlock` when nothing (no plaintext, with TLS) was there.
    ///
    /// Without TLS a read shorter than the room offered drained the socket,
    /// so it also forgets the socket's read readiness (as tokio's own
    /// `poll_read` does), sparing one more read that would fail. That must
    /// be one step with the read: tokio clears readiness only if no event
    /// arrived since it was sampled, and here it is sampled before the read.
    /// Clearing it in a second call after the read would also wipe an event
    /// for bytes that arrived in between, and with edge-triggered epoll the
    /// connection would then never read them. With TLS, readiness is kept
    /// until a read would block (rustls decides how much it reads).
    pub fn read_some(&self, buf: &mut BytesMut) -> io::Result<usize> {
        match &self.tls {
            None => self.read_plain(buf),
            Some(tls) => self.read_tls(&mut lock(tls), buf),
        }
    }

    fn read_plain(&self, buf: &mut BytesMut) -> io::Result<usize> {
        let stream = &self.tcp;
        let room = buf.capacity() - buf.len();
        let mut got = None;
        let result = stream.try_io(tokio::io::Interest::READABLE, || {
            let n = stream.try_read_buf(buf)?;
            got = Some(n);
            if n > 0 && n < room { Err(io::ErrorKind::WouldBlock.into()) } else { Ok(n) }
        });
        match (result, got) {
            (Ok(n), _) => Ok(n),
            (Err(e), Some(n)) if e.kind() == io::ErrorKind::WouldBlock => Ok(n),
            (Err(e), _) => Err(e),
        }
    }

    fn read_tls(&self, conn: &mut ServerConnection, buf: &mut BytesMut) -> io::Result<usize> {
        let read = self.tcp.try_io(tokio::io::Interest::READABLE, || conn.read_tls(&mut Wire(&self.tcp)))?;
        if let Err(e) = conn.process_new_packets() {
            // The alert rustls queued for it, if the socket takes it.
            let _ = drain(conn, &self.tcp);
            return Err(io::Error::new(io::ErrorKind::InvalidData, e));
        }
        let got = plaintext(conn, buf)?;
        match (read, got) {
            (_, Some(n)) if n > 0 => Ok(n),
            // End of the stream (a clean close_notify or a bare TCP end).
            (0, _) | (_, None) => Ok(0),
            // Part of a record: more is needed.
            _ => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

/// Moves every decrypted byte the session holds into `buf`: `Some(n)`, or
/// `None` when the client ended the session and nothing was left.
fn plaintext(conn: &mut ServerConnection, buf: &mut BytesMut) -> io::Result<Option<usize>> {
    let mut chunk = [0u8; 8192];
    let mut total = 0;
    loop {
        match conn.reader().read(&mut chunk) {
            Ok(0) => return Ok(if total == 0 { None } else { Some(total) }),
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                total += n;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Some(total)),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Ok(if total == 0 { None } else { Some(total) });
            }
            Err(e) => return Err(e),
        }
    }
}
