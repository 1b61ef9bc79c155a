//! The sync core driven with bytes only: yrs docs play the clients and
//! speak the y-websocket protocol exactly as the stock provider does.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::Bytes;
use std::sync::{Arc, Mutex};
use wiresocket_sync::{ConnId, Outcome, Room, Sender};
use yrs::sync::{Awareness, Message, SyncMessage};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, GetString, ReadTxn, StateVector, Text, Transact, Update};

/// A fake client: what the room sent it, and a doc to edit.
struct Client {
    doc: Doc,
    inbox: Arc<Mutex<Vec<Bytes>>>,
    id: ConnId,
}

fn sender(inbox: &Arc<Mutex<Vec<Bytes>>>) -> Sender {
    let inbox = inbox.clone();
    Arc::new(move |b| {
        inbox.lock().unwrap().push(b);
        true
    })
}

fn join(room: &Arc<Room>) -> Client {
    let inbox = Arc::new(Mutex::new(Vec::new()));
    let id = room.connect(sender(&inbox));
    Client { doc: Doc::new(), inbox, id }
}

impl Client {
    fn take(&self) -> Vec<Message> {
        self.inbox.lock().unwrap().drain(..).map(|b| Message::decode_v1(&b).unwrap()).collect()
    }

    /// Applies every update received; answers how many messages there were.
    fn absorb(&self) -> usize {
        let msgs = self.take();
        for m in &msgs {
            if let Message::Sync(SyncMessage::SyncStep2(u) | SyncMessage::Update(u)) = m {
                self.doc.transact_mut().apply_update(Update::decode_v1(u).unwrap()).unwrap();
            }
        }
        msgs.len()
    }

    fn edit(&self, f: impl FnOnce(&yrs::TextRef, &mut yrs::TransactionMut)) -> Vec<u8> {
        let text = self.doc.get_or_insert_text("t");
        let mut txn = self.doc.transact_mut();
        f(&text, &mut txn);
        txn.encode_update_v1()
    }

    fn text(&self) -> String {
        self.doc.get_or_insert_text("t").get_string(&self.doc.transact())
    }
}

fn update_msg(u: Vec<u8>) -> Vec<u8> {
    Message::Sync(SyncMessage::Update(u)).encode_v1()
}

/// Sends a write and plays the server: persist (here: nothing), then apply.
fn write(room: &Room, c: &Client, u: Vec<u8>) {
    match room.handle(c.id, &update_msg(u), true).unwrap() {
        Outcome::Persist(bytes) => room.apply_persisted(&bytes, Some(c.id)).unwrap(),
        other => panic!("expected a write, got {other:?}"),
    }
}

#[test]
fn connect_sends_step1_then_step1_gets_the_state() {
    let room = Room::new(Vec::<Vec<u8>>::new()).unwrap();
    let a = join(&room);
    let msgs = a.take();
    assert!(matches!(&msgs[..], [Message::Sync(SyncMessage::SyncStep1(_))]), "{msgs:?}");
    write(&room, &a, a.edit(|t, txn| t.insert(txn, 0, "hello")));
    let b = join(&room);
    b.take();
    let sv = b.doc.transact().state_vector();
    room.handle(b.id, &Message::Sync(SyncMessage::SyncStep1(sv)).encode_v1(), true).unwrap();
    b.absorb();
    assert_eq!(b.text(), "hello");
}

#[test]
fn writes_are_not_applied_until_persisted_and_then_reach_the_others_only() {
    let room = Room::new(Vec::<Vec<u8>>::new()).unwrap();
    let a = join(&room);
    let b = join(&room);
    a.take();
    b.take();
    let u = a.edit(|t, txn| t.insert(txn, 0, "x"));
    let outcome = room.handle(a.id, &update_msg(u.clone()), true).unwrap();
    assert_eq!(outcome, Outcome::Persist(u.clone()));
    assert!(b.take().is_empty(), "nothing is broadcast before persistence");
    assert!(room.encode_state().len() <= 2, "nothing applied yet");
    room.apply_persisted(&u, Some(a.id)).unwrap();
    assert_eq!(b.absorb(), 1);
    assert_eq!(b.text(), "x");
    assert!(a.take().is_empty(), "the origin does not get its own update back");
    // Known now: not a write.
    assert_eq!(room.handle(a.id, &update_msg(u), true).unwrap(), Outcome::Done);
}

#[test]
fn read_only_connections_may_handshake_but_not_write() {
    let room = Room::new(Vec::<Vec<u8>>::new()).unwrap();
    let w = join(&room);
    write(&room, &w, w.edit(|t, txn| t.insert(txn, 0, "abc")));
    let r = join(&room);
    // The stock client's empty step 2 and an already-known update are fine.
    let empty = Message::Sync(SyncMessage::SyncStep2(Update::new().encode_v1())).encode_v1();
    assert_eq!(room.handle(r.id, &empty, false).unwrap(), Outcome::Done);
    let known = room.encode_state();
    assert_eq!(room.handle(r.id, &update_msg(known.clone()), false).unwrap(), Outcome::Done);
    // A real change is refused and not applied.
    r.doc.transact_mut().apply_update(Update::decode_v1(&known).unwrap()).unwrap();
    let change = r.edit(|t, txn| t.insert(txn, 3, "!"));
    assert_eq!(room.handle(r.id, &update_msg(change.clone()), false).unwrap(), Outcome::Forbidden);
    assert!(room.would_change(&change).unwrap());
}

#[test]
fn a_delete_only_update_is_a_write_once() {
    let room = Room::new(Vec::<Vec<u8>>::new()).unwrap();
    let a = join(&room);
    write(&room, &a, a.edit(|t, txn| t.insert(txn, 0, "hello")));
    let delete = a.edit(|t, txn| t.remove_range(txn, 0, 2));
    assert!(room.would_change(&delete).unwrap());
    assert_eq!(room.handle(a.id, &update_msg(delete.clone()), false).unwrap(), Outcome::Forbidden);
    write(&room, &a, delete.clone());
    assert!(!room.would_change(&delete).unwrap(), "re-sending a known deletion changes nothing");
    let c = join(&room);
    c.take();
    c.doc.transact_mut().apply_update(Update::decode_v1(&room.encode_state()).unwrap()).unwrap();
    assert_eq!(c.text(), "llo");
}

#[test]
fn awareness_is_relayed_to_all_and_removed_on_disconnect() {
    let room = Room::new(Vec::<Vec<u8>>::new()).unwrap();
    let a = join(&room);
    let b = join(&room);
    a.take();
    b.take();
    let mut aw = Awareness::new(a.doc.clone());
    aw.set_local_state_raw(r#"{"user":"ada"}"#);
    let msg = Message::Awareness(aw.update().unwrap()).encode_v1();
    assert_eq!(room.handle(a.id, &msg, false).unwrap(), Outcome::Done, "read-only may share presence");
    for c in [&a, &b] {
        let got = c.take();
        assert!(matches!(&got[..], [Message::Awareness(u)] if u.clients.contains_key(&a.doc.client_id())), "{got:?}");
    }
    // A newcomer gets current states with its greeting; query answers them too.
    let c = join(&room);
    assert!(c.take().iter().any(|m| matches!(m, Message::Awareness(u) if u.clients.contains_key(&a.doc.client_id()))));
    room.handle(c.id, &Message::AwarenessQuery.encode_v1(), true).unwrap();
    assert!(matches!(&c.take()[..], [Message::Awareness(_)]));
    room.disconnect(a.id);
    let removal = b.take();
    match &removal[..] {
        [Message::Awareness(u)] => assert_eq!(&*u.clients[&a.doc.client_id()].json, "null"),
        other => panic!("expected a removal, got {other:?}"),
    }
    assert_eq!(room.connection_count(), 2);
}

#[test]
fn a_slow_consumer_is_dropped_and_reported() {
    let room = Room::new(Vec::<Vec<u8>>::new()).unwrap();
    let a = join(&room);
    let full: Sender = Arc::new(|_| false);
    let slow = room.connect(full);
    assert_eq!(room.take_dropped(), vec![slow]);
    // The server closes what was reported, then disconnects it.
    room.disconnect(slow);
    assert_eq!(room.connection_count(), 1);
    write(&room, &a, a.edit(|t, txn| t.insert(txn, 0, "x")));
    assert!(room.take_dropped().is_empty());
}

#[test]
fn a_room_loads_from_snapshot_and_updates() {
    let src = Doc::new();
    let t = src.get_or_insert_text("t");
    let snapshot = {
        let mut txn = src.transact_mut();
        t.insert(&mut txn, 0, "base");
        txn.encode_state_as_update_v1(&StateVector::default())
    };
    let later = {
        let mut txn = src.transact_mut();
        t.push(&mut txn, "+more");
        txn.encode_update_v1()
    };
    let room = Room::new([snapshot, later]).unwrap();
    let d = Doc::new();
    d.transact_mut().apply_update(Update::decode_v1(&room.encode_state()).unwrap()).unwrap();
    assert_eq!(d.get_or_insert_text("t").get_string(&d.transact()), "base+more");
    assert!(Room::new([vec![0xffu8, 0xff, 0xff]]).is_err());
}

#[test]
fn three_writers_converge() {
    let room = Room::new(Vec::<Vec<u8>>::new()).unwrap();
    let clients: Vec<Client> = (0..3).map(|_| join(&room)).collect();
    for c in &clients {
        c.take();
    }
    for round in 0..10 {
        for (i, c) in clients.iter().enumerate() {
            let u = c.edit(|t, txn| {
                let len = t.len(txn);
                t.insert(txn, (round * 7 + i as u32) % (len + 1), &format!("{i}"));
            });
            write(&room, c, u);
        }
        for c in &clients {
            c.absorb();
        }
    }
    let texts: Vec<String> = clients.iter().map(Client::text).collect();
    assert_eq!(texts[0].len(), 30);
    assert!(texts.iter().all(|t| t == &texts[0]), "{texts:?}");
}

proptest::proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
        let room = Room::new(Vec::<Vec<u8>>::new()).unwrap();
        let c = join(&room);
        let _ = room.handle(c.id, &bytes, true);
        let _ = room.handle(c.id, &bytes, false);
        let _ = room.would_change(&bytes);
        let mut framed = vec![0u8, 2];
        framed.extend_from_slice(&bytes);
        let _ = room.handle(c.id, &framed, true);
    }
}
