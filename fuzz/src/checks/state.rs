//! The state file (`state.json`, `State::from_bytes`): refused or loaded; what loads is saved
//! (as `State::save` writes it) and loads back the same.

use std::path::Path;

use upd::state::State;

pub fn state(data: &[u8]) {
    let path = Path::new("/var/lib/upd/state.json");
    let state = match State::from_bytes(data, path) {
        Ok(s) => s,
        Err(e) => {
            assert!(e.to_string().contains("state.json"), "{e}");
            return;
        }
    };
    let saved = serde_json::to_vec_pretty(&state).expect("a loaded state serialises");
    let back = State::from_bytes(&saved, path).expect("a saved state loads");
    assert_eq!(back, state);
}
