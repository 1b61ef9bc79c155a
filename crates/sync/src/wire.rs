//! The y-protocols framing spoken by stock `y-websocket` providers, read and
//! written with lib0 variable-length integers.
//!
//! ```text
//! message   = varuint type, body
//! type 0    sync:            varuint sub (0 step 1 | 1 step 2 | 2 update), varbytes payload
//! type 1    awareness:       varbytes awareness update
//! type 3    query awareness: (no body)
//! ```
//!
//! This module parses the framing, state vectors and awareness updates itself
//! instead of calling yrs's decoders, because those assert (and so panic in
//! debug builds) on client ids wider than 53 bits, and a peer picks those
//! bytes. The reader is strict: a varint must fit its type without wrapping,
//! so any input it accepts means the same thing to yrs.

use std::collections::HashMap;
use std::sync::Arc;

use yrs::sync::awareness::{AwarenessUpdate, AwarenessUpdateEntry};
use yrs::{ClientID, StateVector};

pub(crate) const MSG_SYNC: u64 = 0;
pub(crate) const MSG_AWARENESS: u64 = 1;
pub(crate) const MSG_QUERY_AWARENESS: u64 = 3;

pub(crate) const SYNC_STEP1: u64 = 0;
pub(crate) const SYNC_STEP2: u64 = 1;
pub(crate) const SYNC_UPDATE: u64 = 2;

/// Yjs client ids are JavaScript-safe integers; yrs asserts they fit 53 bits.
pub(crate) const MAX_CLIENT_ID: u64 = (1 << 53) - 1;

/// Why some bytes could not be read; the caller wraps it in a `SyncError`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WireError(pub &'static str);

pub(crate) type WireResult<T> = Result<T, WireError>;

/// A cursor over untrusted bytes. Every read is bounds-checked and every
/// count is checked against the bytes left, so nothing here allocates more
/// than the input could describe.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// How far the reader has come, for [`Reader::since`].
    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    /// The bytes read since `position` was `start`.
    pub(crate) fn since(&self, start: usize) -> &'a [u8] {
        self.buf.get(start..self.pos).unwrap_or_default()
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    pub(crate) fn u8(&mut self) -> WireResult<u8> {
        let b = *self.buf.get(self.pos).ok_or(WireError("unexpected end of message"))?;
        self.pos += 1;
        Ok(b)
    }

    pub(crate) fn bytes(&mut self, len: usize) -> WireResult<&'a [u8]> {
        if len > self.remaining() {
            return Err(WireError("unexpected end of message"));
        }
        let out = &self.buf[self.pos..self.pos + len];
        self.pos += len;
        Ok(out)
    }

    /// lib0 `readVarUint`, refusing anything that does not fit 64 bits.
    pub(crate) fn var_u64(&mut self) -> WireResult<u64> {
        let mut value: u64 = 0;
        for i in 0..10u32 {
            let b = self.u8()?;
            let payload = u64::from(b & 0x7f);
            if i == 9 && payload > 1 {
                return Err(WireError("varint overflows 64 bits"));
            }
            value |= payload << (7 * i);
            if b < 0x80 {
                return Ok(value);
            }
        }
        Err(WireError("varint overflows 64 bits"))
    }

    pub(crate) fn var_u32(&mut self) -> WireResult<u32> {
        u32::try_from(self.var_u64()?).map_err(|_| WireError("varint overflows 32 bits"))
    }

    /// A count of things that each take at least one more byte.
    pub(crate) fn count(&mut self) -> WireResult<usize> {
        let n = self.var_u64()?;
        match usize::try_from(n) {
            Ok(n) if n <= self.remaining() => Ok(n),
            _ => Err(WireError("count larger than the message")),
        }
    }

    /// lib0 `readVarInt` (signed): skipped, never interpreted. Capped at the
    /// 10 bytes an `i64` needs, because yrs's reader overflows a shift past that.
    pub(crate) fn skip_var_i64(&mut self) -> WireResult<()> {
        if self.u8()? < 0x80 {
            return Ok(());
        }
        for _ in 0..9 {
            if self.u8()? < 0x80 {
                return Ok(());
            }
        }
        Err(WireError("signed varint overflows 64 bits"))
    }

    /// lib0 `readVarUint8Array`.
    pub(crate) fn var_bytes(&mut self) -> WireResult<&'a [u8]> {
        let len = self.count()?;
        self.bytes(len)
    }

    /// lib0 `readVarString`.
    pub(crate) fn string(&mut self) -> WireResult<&'a str> {
        std::str::from_utf8(self.var_bytes()?).map_err(|_| WireError("string is not UTF-8"))
    }

    pub(crate) fn client_id(&mut self) -> WireResult<u64> {
        let id = self.var_u64()?;
        if id > MAX_CLIENT_ID {
            return Err(WireError("client id wider than 53 bits"));
        }
        Ok(id)
    }
}

/// Appends lib0 varints and byte arrays.
pub(crate) fn write_var(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

pub(crate) fn write_var_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    write_var(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// One message of the y-websocket protocol, borrowing its payload.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame<'a> {
    SyncStep1(&'a [u8]),
    SyncStep2(&'a [u8]),
    SyncUpdate(&'a [u8]),
    Awareness(&'a [u8]),
    QueryAwareness,
    /// Message types this server does not speak (e.g. 2 = auth, or
    /// application-defined ones): ignored, as the reference server does.
    Other(u64),
}

/// Reads the one message a WebSocket frame carries. Like the reference
/// server, bytes after that message are ignored.
pub(crate) fn read_frame(msg: &[u8]) -> WireResult<Frame<'_>> {
    let mut r = Reader::new(msg);
    match r.var_u64()? {
        MSG_SYNC => {
            let sub = r.var_u64()?;
            let payload = r.var_bytes()?;
            match sub {
                SYNC_STEP1 => Ok(Frame::SyncStep1(payload)),
                SYNC_STEP2 => Ok(Frame::SyncStep2(payload)),
                SYNC_UPDATE => Ok(Frame::SyncUpdate(payload)),
                _ => Err(WireError("unknown sync message type")),
            }
        }
        MSG_AWARENESS => Ok(Frame::Awareness(r.var_bytes()?)),
        MSG_QUERY_AWARENESS => Ok(Frame::QueryAwareness),
        other => Ok(Frame::Other(other)),
    }
}

fn sync_frame(sub: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 8);
    write_var(&mut out, MSG_SYNC);
    write_var(&mut out, sub);
    write_var_bytes(&mut out, payload);
    out
}

pub(crate) fn step1_frame(state_vector: &[u8]) -> Vec<u8> {
    sync_frame(SYNC_STEP1, state_vector)
}

pub(crate) fn step2_frame(update: &[u8]) -> Vec<u8> {
    sync_frame(SYNC_STEP2, update)
}

pub(crate) fn update_frame(update: &[u8]) -> Vec<u8> {
    sync_frame(SYNC_UPDATE, update)
}

pub(crate) fn awareness_frame(update: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(update.len() + 6);
    write_var(&mut out, MSG_AWARENESS);
    write_var_bytes(&mut out, update);
    out
}

/// A Yjs state vector: varuint count, then (client, clock) pairs.
pub(crate) fn read_state_vector(bytes: &[u8]) -> WireResult<StateVector> {
    let mut r = Reader::new(bytes);
    let n = r.count()?;
    let mut sv = StateVector::default();
    for _ in 0..n {
        let client = r.client_id()?;
        let clock = r.var_u32()?;
        sv.set_max(ClientID::new(client), clock);
    }
    Ok(sv)
}

/// A y-protocols awareness update: varuint count, then (client, clock, JSON
/// state) triples, the state being `null` for a removed client. Each state
/// must be valid JSON: stock providers `JSON.parse` what we relay, and one
/// bad string would break every peer of the room.
pub(crate) fn read_awareness(bytes: &[u8]) -> WireResult<AwarenessUpdate> {
    let mut r = Reader::new(bytes);
    let n = r.count()?;
    let mut clients = HashMap::with_capacity(n.min(64));
    for _ in 0..n {
        let client = r.client_id()?;
        let clock = r.var_u32()?;
        let json = r.string()?;
        if serde_json::from_str::<serde::de::IgnoredAny>(json).is_err() {
            return Err(WireError("awareness state is not JSON"));
        }
        clients.insert(ClientID::new(client), AwarenessUpdateEntry { clock, json: Arc::from(json) });
    }
    Ok(AwarenessUpdate { clients })
}

/// Encodes an awareness update the way y-protocols' `encodeAwarenessUpdate` does.
pub(crate) fn write_awareness(update: &AwarenessUpdate) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + update.clients.len() * 24);
    write_var(&mut out, update.clients.len() as u64);
    for (client, entry) in &update.clients {
        write_var(&mut out, client.get());
        write_var(&mut out, u64::from(entry.clock));
        write_var_bytes(&mut out, entry.json.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn var(n: u64) -> Vec<u8> {
        let mut v = Vec::new();
        write_var(&mut v, n);
        v
    }

    #[test]
    fn varints_round_trip_and_refuse_overflow() {
        for n in [0, 1, 127, 128, 300, u64::from(u32::MAX), MAX_CLIENT_ID, u64::MAX] {
            assert_eq!(Reader::new(&var(n)).var_u64(), Ok(n));
        }
        assert!(Reader::new(&var(u64::from(u32::MAX) + 1)).var_u32().is_err());
        assert!(Reader::new(&[0xff; 11]).var_u64().is_err());
        assert!(Reader::new(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]).var_u64().is_err());
        assert!(Reader::new(&[0x80]).var_u64().is_err());
        assert!(Reader::new(&[0xff; 10]).skip_var_i64().is_err());
        assert!(Reader::new(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]).skip_var_i64().is_ok());
    }

    #[test]
    fn frames() {
        assert_eq!(read_frame(&[0, 0, 1, 0]), Ok(Frame::SyncStep1(&[0])));
        assert_eq!(read_frame(&[0, 1, 2, 0, 0]), Ok(Frame::SyncStep2(&[0, 0])));
        assert_eq!(read_frame(&[0, 2, 2, 0, 0]), Ok(Frame::SyncUpdate(&[0, 0])));
        assert_eq!(read_frame(&[1, 1, 0]), Ok(Frame::Awareness(&[0])));
        assert_eq!(read_frame(&[3]), Ok(Frame::QueryAwareness));
        assert_eq!(read_frame(&[2, 0]), Ok(Frame::Other(2)));
        assert_eq!(read_frame(&[100]), Ok(Frame::Other(100)));
        assert!(read_frame(&[]).is_err());
        assert!(read_frame(&[0, 3, 0]).is_err());
        assert!(read_frame(&[0, 2, 5, 0]).is_err());
        assert_eq!(step1_frame(&[0]), vec![0, 0, 1, 0]);
        assert_eq!(update_frame(&[0, 0]), vec![0, 2, 2, 0, 0]);
        assert_eq!(awareness_frame(&[0]), vec![1, 1, 0]);
    }

    #[test]
    fn state_vectors_refuse_wide_client_ids() {
        let mut sv = var(1);
        sv.extend(var(1 << 53));
        sv.extend(var(5));
        assert!(read_state_vector(&sv).is_err());
        let mut sv = var(1);
        sv.extend(var(MAX_CLIENT_ID));
        sv.extend(var(5));
        assert_eq!(read_state_vector(&sv).map(|sv| sv.get(&ClientID::new(MAX_CLIENT_ID))), Ok(5));
        // A count the bytes cannot hold is refused before anything is reserved.
        assert!(read_state_vector(&[0xff, 0xff, 0xff, 0x7f]).is_err());
    }

    #[test]
    fn awareness_round_trips_and_refuses_bad_json() {
        let mut clients = HashMap::new();
        clients.insert(ClientID::new(7), AwarenessUpdateEntry { clock: 3, json: Arc::from(r#"{"a":1}"#) });
        let update = AwarenessUpdate { clients };
        assert_eq!(read_awareness(&write_awareness(&update)), Ok(update));
        let mut bad = var(1);
        bad.extend(var(7));
        bad.extend(var(1));
        write_var_bytes(&mut bad, b"{oops");
        assert!(read_awareness(&bad).is_err());
    }
}
