//! Refuses an update that reuses ids the doc already has for other content.
//!
//! yrs trusts ids. When an update carries structs for ids the doc already
//! has, it drops the known part and integrates the rest as if the dropped
//! part had said what the doc says: the first new unit is put after the
//! doc's item at the id before it, but keeps the parent the update named.
//! A forged update (a client reusing another's client id and clocks with
//! other content) thus links an item into one parent's list while counting
//! it in another's, and a later deletion underflows that parent's length
//! (found by fuzzing; `tests/data/damaging_updates.rs` is one such
//! sequence). The room then has to be reloaded, and the client that sent it
//! can keep the document in reload backoff by sending it again.
//!
//! An honest peer never does this: each id is written once, by its client,
//! and any two encodings of it describe the same item however their structs
//! are split or merged. So over the ids both the update and the doc
//! describe, unit by unit (a unit is one clock), the two must agree on:
//! - the origin: an item's own for its first unit, the unit just before it
//!   for every other (so splitting and merging change nothing);
//! - the right origin, and for a unit with neither origin, the parent and
//!   the map key it names;
//! - the kind of content, and for strings each UTF-16 unit, for binary
//!   content and shared types the bytes.
//!
//! Where either side holds only a tombstone for the unit (a GC or skip
//! struct, or a deleted item whose content is gone), the content can no
//! longer be compared, and a deleted item's structure is still compared.
//! `Any` values, embeds and formats are compared by kind only: Yjs and yrs
//! may encode the same value differently (a float in 32 or 64 bits).
//!
//! Cost: nothing unless the update starts below the doc's state vector for
//! some client (Yjs's sync step 2 and incremental updates never do; a
//! re-sent full state does). Then one diff of the doc from those clocks on
//! (that client's structs up to the state vector, plus the delete set) and
//! one pass over both.

use std::collections::HashMap;

use yrs::{ClientID, StateVector, Update};

use crate::SyncError;
use crate::guard::{self, Struct, WireId};

/// Clients whose structs in `update` start below `known` (the doc's state
/// vector), each with the clock its structs start at.
pub(crate) fn overlapping(update: &Update, known: &StateVector) -> Vec<(u64, u32)> {
    let mut found: Vec<(u64, u32)> = update
        .state_vector_lower()
        .iter()
        .filter(|(client, lower)| **lower < known.get(client))
        .map(|(client, lower)| (client.get(), *lower))
        .collect();
    found.sort_unstable();
    found
}

/// Checks `bytes` (the update, already accepted by the guard, decoded as
/// `update`) against the doc whose state vector is `known`. `diff` encodes
/// the doc's v1 diff against a state vector (`None` if it cannot).
pub(crate) fn check(
    bytes: &[u8],
    update: &Update,
    known: &StateVector,
    diff: impl FnOnce(&StateVector) -> Option<Vec<u8>>,
) -> Result<(), SyncError> {
    let overlap = overlapping(update, known);
    if overlap.is_empty() {
        return Ok(());
    }
    let mut from = known.clone();
    for &(client, clock) in &overlap {
        // Lowers the entry: every other client stays at the doc's clock, so
        // the diff holds only these clients' structs from these clocks on.
        from.set_min(ClientID::new(client), clock);
    }
    let doc_bytes = diff(&from).ok_or_else(|| SyncError::BadUpdate("the document cannot be compared".to_owned()))?;
    let clients: Vec<u64> = overlap.iter().map(|&(client, _)| client).collect();
    let refused = |e: crate::wire::WireError| SyncError::BadUpdate(e.0.to_owned());
    let ours = guard::client_structs(bytes, &clients).map_err(refused)?;
    let theirs = guard::client_structs(&doc_bytes, &clients).map_err(refused)?;
    for &(client, _) in &overlap {
        let (Some((u_clock, u_structs)), Some((d_clock, d_structs))) = (ours.get(&client), theirs.get(&client)) else {
            continue;
        };
        let end = known.get(&ClientID::new(client));
        if !agree(client, Side::new(*u_clock, u_structs), Side::new(*d_clock, d_structs), end) {
            return Err(SyncError::Conflict(format!(
                "the update reuses ids of client {client} that the document already has, with other content"
            )));
        }
    }
    Ok(())
}

/// One encoding's structs of one client, walked unit by unit.
struct Side<'s, 'a> {
    structs: &'s [Struct<'a>],
    /// The clock each struct starts at.
    starts: Vec<u32>,
    /// UTF-16 units of string structs, decoded on first use.
    units: HashMap<usize, Vec<u16>>,
}

impl<'s, 'a> Side<'s, 'a> {
    fn new(first: u32, structs: &'s [Struct<'a>]) -> Self {
        let mut starts = Vec::with_capacity(structs.len());
        let mut clock = first;
        for s in structs {
            starts.push(clock);
            clock = clock.saturating_add(s.len);
        }
        Self { structs, starts, units: HashMap::new() }
    }

    /// The struct holding `clock`, with its start.
    fn at(&self, clock: u32) -> Option<(usize, u32)> {
        let i = self.starts.partition_point(|&start| start <= clock).checked_sub(1)?;
        let start = self.starts[i];
        (clock < start.saturating_add(self.structs[i].len)).then_some((i, start))
    }

    fn string_units(&mut self, i: usize) -> &[u16] {
        let body = self.structs[i].body;
        self.units.entry(i).or_insert_with(|| {
            // A string body is a lib0 var string: its length, then UTF-8.
            let text = crate::wire::Reader::new(body).string().unwrap_or_default();
            text.encode_utf16().collect()
        })
    }
}

/// The origin of the unit at `clock` of a struct starting at `start`.
fn origin_at(client: u64, s: &Struct<'_>, start: u32, clock: u32) -> Option<WireId> {
    if clock == start { s.origin } else { Some((client, clock - 1)) }
}

/// Whether the update's structs (`ours`) and the doc's (`theirs`) describe
/// the same items over the clocks both hold, below `end`.
fn agree(client: u64, mut ours: Side<'_, '_>, mut theirs: Side<'_, '_>, end: u32) -> bool {
    let Some(mut clock) = ours.starts.first().copied() else { return true };
    while clock < end {
        let (Some((ui, us)), Some((di, ds))) = (ours.at(clock), theirs.at(clock)) else {
            // A clock only one side holds: nothing to compare there. Jump
            // to the next clock where the update has a struct.
            match ours.starts.iter().find(|&&s| s > clock) {
                Some(&next) => {
                    clock = next;
                    continue;
                }
                None => return true,
            }
        };
        let (u, d) = (ours.structs[ui], theirs.structs[di]);
        // The segment both structs cover from here.
        let seg_end = end.min(us.saturating_add(u.len)).min(ds.saturating_add(d.len));
        if u.is_item() && d.is_item() && !same_unit(client, &u, us, &d, ds, clock) {
            return false;
        }
        if u.is_item() && d.is_item() && !u.is_deleted() && !d.is_deleted() {
            if u.content != d.content {
                return false;
            }
            if u.is_string() {
                let (from_u, from_d) = ((clock - us) as usize, (clock - ds) as usize);
                let n = (seg_end - clock) as usize;
                let a = ours.string_units(ui).get(from_u..from_u + n).map(<[u16]>::to_vec);
                let b = theirs.string_units(di).get(from_d..from_d + n);
                match (a, b) {
                    // U+FFFD stands where either side split a surrogate pair.
                    (Some(a), Some(b)) => {
                        if a.iter().zip(b).any(|(x, y)| x != y && *x != 0xFFFD && *y != 0xFFFD) {
                            return false;
                        }
                    }
                    _ => return false,
                }
            } else if u.has_canonical_body() && u.body != d.body {
                return false;
            }
        }
        clock = seg_end;
    }
    true
}

/// Whether the unit at `clock` has the same place in the doc on both sides.
/// Within a segment every later unit's origin is the unit before it on both
/// sides and the right origin is the struct's, so the first unit decides.
fn same_unit(client: u64, u: &Struct<'_>, us: u32, d: &Struct<'_>, ds: u32, clock: u32) -> bool {
    let (uo, d_o) = (origin_at(client, u, us, clock), origin_at(client, d, ds, clock));
    if uo != d_o || u.right_origin != d.right_origin {
        return false;
    }
    if uo.is_none() && u.right_origin.is_none() {
        // Both name their parent (a unit with neither origin is a struct's first).
        return u.parent == d.parent && u.parent_sub == d.parent_sub;
    }
    true
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;
    use yrs::updates::decoder::Decode;
    use yrs::{Doc, GetString, Map, ReadTxn, Text, Transact};

    fn check_against(doc: &Doc, update: &[u8]) -> Result<(), SyncError> {
        let decoded = Update::decode_v1(update).unwrap();
        let sv = doc.transact().state_vector();
        check(update, &decoded, &sv, |from| Some(doc.transact().encode_diff_v1(from)))
    }

    fn full_state(doc: &Doc) -> Vec<u8> {
        doc.transact().encode_state_as_update_v1(&StateVector::default())
    }

    #[test]
    fn the_same_history_resent_in_other_splits_is_accepted() {
        // A backend doc typed in three transactions (its structs merge), and
        // the server that saw only the first two.
        let backend = Doc::with_client_id(7);
        let text = backend.get_or_insert_text("t");
        let map = backend.get_or_insert_map("m");
        let server = Doc::with_client_id(1);
        let mut seen = Vec::new();
        for (i, chunk) in ["héllo 😀", " wörld", "!!"].iter().enumerate() {
            let before = backend.transact().state_vector();
            {
                let mut txn = backend.transact_mut();
                let len = text.len(&txn);
                text.insert(&mut txn, len, chunk);
                map.insert(&mut txn, format!("k{i}"), 1.5f64);
            }
            seen.push(backend.transact().encode_diff_v1(&before));
        }
        {
            let mut txn = server.transact_mut();
            for part in &seen[..2] {
                txn.apply_update(Update::decode_v1(part).unwrap()).unwrap();
            }
        }
        // Some deletions on the backend: its resent state has deleted items.
        {
            let mut txn = backend.transact_mut();
            text.remove_range(&mut txn, 1, 3);
        }
        let state = full_state(&backend);
        check_against(&server, &state).unwrap();
        // And it converges when applied.
        server.transact_mut().apply_update(Update::decode_v1(&state).unwrap()).unwrap();
        assert_eq!(text.get_string(&backend.transact()), server.get_or_insert_text("t").get_string(&server.transact()));
    }

    #[test]
    fn a_fresh_update_costs_nothing_and_passes() {
        let doc = Doc::with_client_id(1);
        let text = doc.get_or_insert_text("t");
        text.insert(&mut doc.transact_mut(), 0, "abc");
        let before = doc.transact().state_vector();
        let other = Doc::with_client_id(2);
        other.transact_mut().apply_update(Update::decode_v1(&full_state(&doc)).unwrap()).unwrap();
        let t2 = other.get_or_insert_text("t");
        t2.insert(&mut other.transact_mut(), 3, "d");
        let diff = other.transact().encode_diff_v1(&before);
        let decoded = Update::decode_v1(&diff).unwrap();
        assert!(overlapping(&decoded, &before).is_empty());
        check(&diff, &decoded, &before, |_| panic!("no diff needed")).unwrap();
    }

    #[test]
    fn other_content_under_known_ids_is_refused() {
        // Client 5 typed "hello" in the doc; a forger sends client 5's
        // clocks 0.. with "HELLO world".
        let doc = Doc::with_client_id(5);
        doc.get_or_insert_text("t").insert(&mut doc.transact_mut(), 0, "hello");
        let forged = Doc::with_client_id(5);
        forged.get_or_insert_text("t").insert(&mut forged.transact_mut(), 0, "HELLO world");
        let err = check_against(&doc, &full_state(&forged)).unwrap_err();
        assert!(matches!(err, SyncError::Conflict(_)), "{err:?}");
        // Same text, but in another root type: other parent.
        let forged = Doc::with_client_id(5);
        forged.get_or_insert_text("other").insert(&mut forged.transact_mut(), 0, "hello world");
        assert!(matches!(check_against(&doc, &full_state(&forged)), Err(SyncError::Conflict(_))));
        // Same ids as a map entry instead of text.
        let forged = Doc::with_client_id(5);
        forged.get_or_insert_map("t").insert(&mut forged.transact_mut(), "k", "v");
        assert!(matches!(check_against(&doc, &full_state(&forged)), Err(SyncError::Conflict(_))));
    }

    include!("../tests/data/damaging_updates.rs");

    #[test]
    fn the_fuzzed_damaging_update_is_refused() {
        let doc = Doc::new();
        let mut txn = doc.transact_mut();
        txn.apply_update(Update::decode_v1(DAMAGING_UPDATES[0]).unwrap()).unwrap();
        drop(txn);
        assert!(matches!(check_against(&doc, DAMAGING_UPDATES[1]), Err(SyncError::Conflict(_))));
    }

    /// Honest histories are never refused: peers edit text, maps and arrays
    /// concurrently (with deletions, so tombstones and GC), sync with each
    /// other at random, and the server gets their full states and diffs
    /// against stale state vectors, in random order.
    #[test]
    fn honest_peers_resending_in_any_order_are_never_refused() {
        use yrs::{Array, ArrayPrelim};
        let mut compared = 0;
        for seed in 1..=150u64 {
            let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            let mut next = move |n: u64| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng % n.max(1)
            };
            // Offsets in UTF-16 units, as Yjs counts them.
            let peers: Vec<Doc> = (0..3)
                .map(|i| {
                    Doc::with_options(yrs::Options {
                        client_id: ClientID::new(100 + i),
                        offset_kind: yrs::OffsetKind::Utf16,
                        ..Default::default()
                    })
                })
                .collect();
            let server = Doc::with_client_id(1);
            let mut stale: Vec<StateVector> = vec![StateVector::default(); 3];
            for step in 0..40 {
                let p = &peers[next(3) as usize];
                match next(6) {
                    0 | 1 => {
                        let t = p.get_or_insert_text("t");
                        let mut txn = p.transact_mut();
                        let len = t.len(&txn);
                        let words = ["a", "bc", "déf", "😀x", "ghij "];
                        t.insert(&mut txn, next(u64::from(len) + 1) as u32, words[next(5) as usize]);
                    }
                    2 => {
                        let t = p.get_or_insert_text("t");
                        let mut txn = p.transact_mut();
                        let len = t.len(&txn);
                        if len > 1 {
                            let at = next(u64::from(len - 1)) as u32;
                            t.remove_range(&mut txn, at, 1 + next(u64::from(len - at - 1).min(3)) as u32);
                        }
                    }
                    3 => {
                        let m = p.get_or_insert_map("m");
                        m.insert(&mut p.transact_mut(), format!("k{}", next(4)), step as f64 + 0.5);
                    }
                    4 => {
                        let a = p.get_or_insert_array("a");
                        let mut txn = p.transact_mut();
                        a.push_back(&mut txn, ArrayPrelim::from([1.25f64, 2.0]));
                    }
                    _ => {
                        // Two peers sync both ways.
                        let q = &peers[next(3) as usize];
                        let to_q = p.transact().encode_diff_v1(&q.transact().state_vector());
                        q.transact_mut().apply_update(Update::decode_v1(&to_q).unwrap()).unwrap();
                        let to_p = q.transact().encode_diff_v1(&p.transact().state_vector());
                        p.transact_mut().apply_update(Update::decode_v1(&to_p).unwrap()).unwrap();
                    }
                }
                // The server hears from a random peer: its full state, or a
                // diff against what that peer last knew of the server.
                if next(2) == 0 {
                    let i = next(3) as usize;
                    let update = if next(2) == 0 {
                        full_state(&peers[i])
                    } else {
                        peers[i].transact().encode_diff_v1(&stale[i])
                    };
                    let known = server.transact().state_vector();
                    compared += usize::from(!overlapping(&Update::decode_v1(&update).unwrap(), &known).is_empty());
                    stale[i] = known;
                    if let Err(e) = check_against(&server, &update) {
                        panic!("seed {seed} step {step}: refused an honest update: {e}");
                    }
                    server.transact_mut().apply_update(Update::decode_v1(&update).unwrap()).unwrap();
                }
            }
        }
        // Most resent states overlap what the server has: the check ran.
        assert!(compared > 500, "only {compared} updates overlapped the server's state");
    }
}
