//! Fault injection for tests of the damage path (see "Damage" in the room
//! module). The guard refuses every input known to make yrs panic, so a
//! test that needs a panicking apply poisons the bytes of an update: from
//! then on, integrating exactly those bytes panics inside the guarded
//! apply, live ([`crate::Room::apply_persisted`]) and on load
//! ([`crate::Room::new`]), as a yrs bug would. Compiled only with the
//! `fault-injection` feature, which only dev-dependencies turn on.

use std::sync::{Mutex, PoisonError};

static POISONED: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// From now on, applying exactly `update` panics (process-wide: tests
/// running in parallel poison updates of their own).
pub fn poison(update: &[u8]) {
    POISONED.lock().unwrap_or_else(PoisonError::into_inner).push(update.to_vec());
}

/// Called inside the guarded applies.
#[allow(clippy::panic)]
pub(crate) fn trip(update: &[u8]) {
    let poisoned = POISONED.lock().unwrap_or_else(PoisonError::into_inner).iter().any(|p| p == update);
    if poisoned {
        panic!("fault injection: this update was poisoned");
    }
}
