//! etcd and FleetLock answers: decoded or refused; a semaphore value round-trips, and a slot
//! taken then given back leaves it as it was.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use upd::remote::rebootlock::gateway::{decode_range, decode_txn, error_message};
use upd::remote::rebootlock::semaphore::{LockStep, Semaphore};

/// An etcd gateway body, read as a range answer, a txn answer and an error body; the value of a
/// range answer (or the body itself) read as airlock's semaphore.
pub fn etcd(data: &[u8]) {
    let _ = decode_txn(data);
    let _ = error_message(data);
    if let Ok(Some(kv)) = decode_range(data) {
        // The standard base64 decoder is canonical: the value encodes back to what was sent.
        // (serde_json skips an unknown field without checking its UTF-8, so a body the
        // decoder took may not parse as a `Value`: then there is nothing to compare.)
        if let Ok(sent) = serde_json::from_slice::<serde_json::Value>(data) {
            if let Some(v) = sent["kvs"][0]["value"].as_str() {
                assert_eq!(B64.encode(&kv.value), v);
            }
        }
        semaphore(&kv.value);
    }
    semaphore(data);
}

fn semaphore(value: &[u8]) {
    let Ok(sem) = Semaphore::decode(value) else {
        return;
    };
    assert_eq!(Semaphore::decode(&sem.encode()).expect("round trip"), sem);
    let id = "fuzz-machine";
    let mut s = sem.clone();
    match s.lock(id) {
        LockStep::Taken => {
            assert!(s.holders.len() as u64 <= s.total_slots);
            assert!(s.unlock(id));
            assert_eq!(s, sem, "lock then unlock changed the semaphore");
        }
        LockStep::AlreadyHeld | LockStep::Full => assert_eq!(s, sem),
    }
}

/// A FleetLock refusal body under any status: a reason is always given.
pub fn fleetlock(data: &[u8]) {
    let Some((&[hi, lo], body)) = data.split_first_chunk::<2>().map(|(a, b)| (a, b)) else {
        return;
    };
    let code = 100 + u16::from_be_bytes([hi, lo]) % 900;
    let status = reqwest::StatusCode::from_u16(code).expect("100..=999");
    let reason = upd::remote::rebootlock::fleetlock::reason(status, body);
    assert!(reason.contains(&code.to_string()), "{reason}");
}
