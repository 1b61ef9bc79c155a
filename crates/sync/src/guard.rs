//! Checks a Yjs v1 update before yrs sees it.
//!
//! yrs 0.28.1 trusts its input in ways a network peer can exploit; each of
//! these was reproduced by fuzzing mutated updates against it:
//! - clocks near `u32::MAX`: `clock + len` overflows while decoding blocks or
//!   delete-set ranges (a panic in debug builds, silent wrap-around in
//!   release), and integrating such blocks panics in release too (an
//!   `unwrap` on `None` in `BlockStore::push`, out-of-bounds indexing in
//!   `ClientBlockList::find_index`);
//! - client ids wider than 53 bits trip a `debug_assert` in `ClientID::new`;
//! - `Any` values nest without limit, so a few MiB of `[[[[…` overflow the
//!   stack while decoding, which aborts the process (no unwinding);
//! - legacy `ContentJSON` is decoded with one string too many and re-encoded
//!   differently, so once such a block waits as a pending struct,
//!   `encode_state_as_update_v1` panics (an `unwrap` in `merge_pending_v1`).
//!
//! [`check_update`] walks the update's structure with a strict reader and
//! refuses all of that, plus counts larger than the bytes left (so yrs's
//! reservations stay bounded by the message size). It only checks; what
//! the update means is still read from yrs's own decoder ([`decode`]), so
//! the two can never disagree about what an update contains.
//!
//! Not decidable from the update alone: one that reuses ids the doc already
//! has for different content (a client forging another's client id and
//! clocks). yrs trusts ids, so integrating such an update, or honest ones
//! after it, can underflow a parent's length counter
//! (`TransactionMut::delete`: a panic in debug builds, a wrapped counter in
//! release; found by fuzzing). The `reuse` module compares such an update
//! with the doc, using the structs this module reads ([`Struct`]). `Room`
//! still applies inside `catch_unwind` and, should yrs panic anyway, stops
//! using that doc (see "Damage" in the room module): after such a panic,
//! touching the doc again crashed the fuzzer with a segfault.

use std::panic::{AssertUnwindSafe, catch_unwind};

use yrs::Update;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;

use crate::SyncError;
use crate::wire::{Reader, WireError, WireResult};

/// Highest clock (exclusive end of a block or delete range) accepted. A
/// client reaching it would have made two billion insertions in one session;
/// keeping clocks below 2^31 keeps every `clock + len` in yrs below `u32::MAX`.
pub(crate) const MAX_CLOCK: u32 = 1 << 31;

/// How deeply `Any` values may nest (`serde_json`'s default limit too).
const MAX_ANY_DEPTH: u32 = 128;

const HAS_ORIGIN: u8 = 0b1000_0000;
const HAS_RIGHT_ORIGIN: u8 = 0b0100_0000;
const HAS_PARENT_SUB: u8 = 0b0010_0000;

const REF_GC: u8 = 0;
const REF_DELETED: u8 = 1;
const REF_JSON: u8 = 2;
const REF_BINARY: u8 = 3;
const REF_STRING: u8 = 4;
const REF_EMBED: u8 = 5;
const REF_FORMAT: u8 = 6;
const REF_TYPE: u8 = 7;
const REF_ANY: u8 = 8;
const REF_DOC: u8 = 9;
const REF_SKIP: u8 = 10;

const TYPE_XML_ELEMENT: u8 = 3;

/// An id as the wire carries it: (client, clock).
pub(crate) type WireId = (u64, u32);

/// What an item's parent is, when the struct names it (only when it has
/// neither origin).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Parent<'a> {
    Root(&'a str),
    Item(WireId),
}

/// One struct of a v1 update, as [`read_struct`] found it: enough to tell
/// whether two encodings of the same ids describe the same items.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Struct<'a> {
    /// The content ref (`REF_*`), the low five bits of the info byte.
    pub(crate) content: u8,
    /// Clock length.
    pub(crate) len: u32,
    pub(crate) origin: Option<WireId>,
    pub(crate) right_origin: Option<WireId>,
    pub(crate) parent: Option<Parent<'a>>,
    pub(crate) parent_sub: Option<&'a str>,
    /// The content's bytes as encoded (after the parent info).
    pub(crate) body: &'a [u8],
}

impl Struct<'_> {
    /// GC and skip structs carry ids only, no item.
    pub(crate) fn is_item(&self) -> bool {
        !matches!(self.content, REF_GC | REF_SKIP)
    }

    pub(crate) fn is_deleted(&self) -> bool {
        self.content == REF_DELETED
    }

    pub(crate) fn is_string(&self) -> bool {
        self.content == REF_STRING
    }

    /// Whether the content bytes are canonical, so equal content means equal
    /// bytes: binary, shared types and deleted ranges are; strings are
    /// compared per UTF-16 unit instead, and `Any`, embeds, formats and
    /// subdocs hold values that Yjs and yrs may encode differently (a float
    /// as 32 or 64 bits), so only their kind is compared.
    pub(crate) fn has_canonical_body(&self) -> bool {
        matches!(self.content, REF_BINARY | REF_TYPE)
    }
}

/// Validates `bytes` as a v1 update (see the module docs) and decodes it with yrs.
pub(crate) fn decode(bytes: &[u8]) -> Result<Update, SyncError> {
    check_update(bytes).map_err(|e| SyncError::BadUpdate(e.0.to_owned()))?;
    // The walk above leaves yrs nothing known to panic on; the guard is for
    // what fuzzing has not found. Decoding touches no shared state, so
    // resuming after a caught panic is sound.
    match catch_unwind(AssertUnwindSafe(|| Update::decode_v1(bytes))) {
        Ok(Ok(update)) => Ok(update),
        Ok(Err(e)) => Err(SyncError::BadUpdate(e.to_string())),
        Err(_) => Err(SyncError::BadUpdate("update could not be decoded".to_owned())),
    }
}

/// Checked before an update is persisted: yrs must be able to read back
/// what it writes for it, or a block of it waiting in the pending set would
/// later break `encode_state` (snapshots, sync step 2). Costs one more
/// encode and decode, paid by writes only.
pub(crate) fn ensure_persistable(update: &Update) -> Result<(), SyncError> {
    let round_trips =
        catch_unwind(AssertUnwindSafe(|| Update::decode_v1(&update.encode_v1()).is_ok())).unwrap_or(false);
    if round_trips { Ok(()) } else { Err(SyncError::BadUpdate("update does not survive re-encoding".to_owned())) }
}

/// Walks a v1 update: structs per client, then the delete set.
pub(crate) fn check_update(bytes: &[u8]) -> WireResult<()> {
    let mut r = Reader::new(bytes);
    let mut seen = Vec::new();

    let clients = r.count()?;
    for _ in 0..clients {
        let blocks = r.count()?;
        let client = r.client_id()?;
        seen.push(client);
        let mut clock = r.var_u32()?;
        for _ in 0..blocks {
            let len = read_struct(&mut r)?.len;
            clock = clock.checked_add(len).filter(|end| *end <= MAX_CLOCK).ok_or(WireError("clock out of range"))?;
        }
        if clock > MAX_CLOCK {
            return Err(WireError("clock out of range"));
        }
    }
    unique(&mut seen)?;

    seen.clear();
    let clients = r.count()?;
    for _ in 0..clients {
        seen.push(r.client_id()?);
        let ranges = r.count()?;
        for _ in 0..ranges {
            let start = r.var_u32()?;
            let len = r.var_u32()?;
            start.checked_add(len).filter(|end| *end <= MAX_CLOCK).ok_or(WireError("delete range out of range"))?;
        }
    }
    unique(&mut seen)
}

/// Yjs writes each client once per section; yrs would merge repeated struct
/// sections into one (non-contiguous) list and let a repeated delete-set
/// entry replace the earlier one.
fn unique(clients: &mut [u64]) -> WireResult<()> {
    clients.sort_unstable();
    if clients.windows(2).any(|w| w[0] == w[1]) {
        return Err(WireError("client repeated in an update section"));
    }
    Ok(())
}

/// The structs of the clients in `wanted`, each as (first clock, structs),
/// from an update that [`check_update`] accepted (so every struct is
/// well-formed and every clock in range).
pub(crate) fn client_structs<'a>(
    bytes: &'a [u8],
    wanted: &[u64],
) -> WireResult<std::collections::HashMap<u64, (u32, Vec<Struct<'a>>)>> {
    let mut r = Reader::new(bytes);
    let mut found = std::collections::HashMap::new();
    let clients = r.count()?;
    for _ in 0..clients {
        let blocks = r.count()?;
        let client = r.client_id()?;
        let clock = r.var_u32()?;
        let mut structs = Vec::with_capacity(if wanted.contains(&client) { blocks } else { 0 });
        for _ in 0..blocks {
            let s = read_struct(&mut r)?;
            if wanted.contains(&client) {
                structs.push(s);
            }
        }
        if wanted.contains(&client) {
            found.insert(client, (clock, structs));
        }
    }
    Ok(found)
}

/// Reads one struct, refusing what yrs would misread (see the module docs).
/// Its `len` is the clock length yrs gives it.
fn read_struct<'a>(r: &mut Reader<'a>) -> WireResult<Struct<'a>> {
    let info = r.u8()?;
    // yrs compares the whole info byte with the GC and Skip refs but masks
    // item content refs to 4 bits; Yjs masks 5 bits everywhere. Refusing flag
    // bits where neither expects them keeps the two readings identical.
    let content = info & 0b1_1111;
    let mut s = Struct { content, len: 0, origin: None, right_origin: None, parent: None, parent_sub: None, body: &[] };
    match content {
        REF_GC | REF_SKIP => {
            if info != content {
                return Err(WireError("unexpected flags on a GC or skip struct"));
            }
            s.len = r.var_u32()?;
            if s.len == 0 {
                return Err(WireError("empty struct"));
            }
            Ok(s)
        }
        REF_DELETED..=REF_DOC => {
            if info & HAS_ORIGIN != 0 {
                s.origin = Some(read_id(r)?);
            }
            if info & HAS_RIGHT_ORIGIN != 0 {
                s.right_origin = Some(read_id(r)?);
            }
            if info & (HAS_ORIGIN | HAS_RIGHT_ORIGIN) == 0 {
                s.parent = Some(match r.var_u64()? {
                    1 => Parent::Root(r.string()?),
                    0 => Parent::Item(read_id(r)?),
                    _ => return Err(WireError("invalid parent info")),
                });
                if info & HAS_PARENT_SUB != 0 {
                    s.parent_sub = Some(r.string()?);
                }
            }
            let start = r.position();
            s.len = check_content(r, content)?;
            s.body = r.since(start);
            Ok(s)
        }
        _ => Err(WireError("unknown struct type")),
    }
}

fn read_id(r: &mut Reader<'_>) -> WireResult<WireId> {
    let client = r.client_id()?;
    let clock = r.var_u32()?;
    if clock >= MAX_CLOCK {
        return Err(WireError("clock out of range"));
    }
    Ok((client, clock))
}

fn check_content(r: &mut Reader<'_>, content: u8) -> WireResult<u32> {
    match content {
        REF_DELETED => r.var_u32(),
        REF_BINARY => r.var_bytes().map(|_| 1),
        REF_STRING => {
            let s = r.string()?;
            u32::try_from(s.encode_utf16().count()).map_err(|_| WireError("string too long"))
        }
        REF_EMBED => r.string().map(|_| 1),
        REF_FORMAT => {
            r.string()?;
            r.string().map(|_| 1)
        }
        REF_TYPE => match r.u8()? {
            TYPE_XML_ELEMENT => r.string().map(|_| 1),
            // array, map, text, xml fragment, xml hook, xml text, subdoc, undefined
            0 | 1 | 2 | 4 | 5 | 6 | 9 | 15 => Ok(1),
            _ => Err(WireError("unsupported shared type")),
        },
        REF_ANY => {
            let n = r.count()?;
            for _ in 0..n {
                check_any(r, 0)?;
            }
            u32::try_from(n).map_err(|_| WireError("too many values"))
        }
        REF_DOC => {
            r.string()?;
            check_any(r, 0).map(|()| 1)
        }
        // REF_JSON: see the module docs.
        REF_JSON => Err(WireError("legacy JSON content is not supported")),
        _ => Err(WireError("unknown content type")),
    }
}

/// lib0 `Any`, as yrs reads it.
fn check_any(r: &mut Reader<'_>, depth: u32) -> WireResult<()> {
    if depth >= MAX_ANY_DEPTH {
        return Err(WireError("value nested too deeply"));
    }
    match r.u8()? {
        // undefined, null, false, true
        127 | 126 | 121 | 120 => Ok(()),
        125 => r.skip_var_i64(),
        124 => r.bytes(4).map(|_| ()),
        123 | 122 => r.bytes(8).map(|_| ()),
        119 => r.string().map(|_| ()),
        118 => {
            let n = r.count()?;
            for _ in 0..n {
                r.string()?;
                check_any(r, depth + 1)?;
            }
            Ok(())
        }
        117 => {
            let n = r.count()?;
            for _ in 0..n {
                check_any(r, depth + 1)?;
            }
            Ok(())
        }
        116 => r.var_bytes().map(|_| ()),
        _ => Err(WireError("unknown value type")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::write_var;

    fn var(out: &mut Vec<u8>, n: u64) {
        write_var(out, n);
    }

    /// One client section with one struct, then an empty delete set.
    fn one_struct(client: u64, clock: u64, st: &[u8]) -> Vec<u8> {
        let mut u = Vec::new();
        var(&mut u, 1);
        var(&mut u, 1);
        var(&mut u, client);
        var(&mut u, clock);
        u.extend_from_slice(st);
        u.push(0);
        u
    }

    #[test]
    fn accepts_empty_update() {
        assert_eq!(check_update(Update::EMPTY_V1), Ok(()));
    }

    #[test]
    fn refuses_clock_overflow_in_delete_set() {
        // No structs; one delete-set client; one range at u32::MAX of length 5.
        let u = [0u8, 1, 5, 1, 0xff, 0xff, 0xff, 0xff, 0x0f, 5];
        assert!(check_update(&u).is_err());
        assert!(decode(&u).is_err());
    }

    #[test]
    fn refuses_high_clocks_and_wide_clients() {
        // A GC struct of length 5 at clock 2^31 - 2.
        assert!(check_update(&one_struct(1, u64::from(MAX_CLOCK) - 2, &[0, 5])).is_err());
        assert!(check_update(&one_struct(1, u64::from(MAX_CLOCK) - 5, &[0, 5])).is_ok());
        assert!(check_update(&one_struct(1 << 53, 0, &[0, 5])).is_err());
    }

    #[test]
    fn refuses_deep_any() {
        // Item with parent root "a", Any content holding 200 nested arrays.
        let mut st = vec![REF_ANY, 1, 1, b'a', 1];
        for _ in 0..200 {
            st.extend_from_slice(&[117, 1]);
        }
        st.push(126);
        assert_eq!(check_update(&one_struct(1, 0, &st)), Err(WireError("value nested too deeply")));
        let mut st = vec![REF_ANY, 1, 1, b'a', 1];
        for _ in 0..100 {
            st.extend_from_slice(&[117, 1]);
        }
        st.push(126);
        assert_eq!(check_update(&one_struct(1, 0, &st)), Ok(()));
        assert!(decode(&one_struct(1, 0, &st)).is_ok());
    }

    #[test]
    fn refuses_json_content_and_repeated_clients() {
        let st = [REF_JSON, 1, 1, b'a', 0, 1, b'1'];
        assert!(check_update(&one_struct(1, 0, &st)).is_err());
        // Two sections for client 1.
        let u = [2u8, 1, 1, 0, 0, 5, 1, 1, 5, 0, 5, 0];
        assert_eq!(check_update(&u), Err(WireError("client repeated in an update section")));
    }
}
