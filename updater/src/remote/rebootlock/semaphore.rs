//! Airlock's reboot semaphore: the etcd key of a group and its JSON value, with the pure lock and unlock rules.
//!
//! Layout, as coreos/airlock `internal/lock/lock.go` and `internal/lock/semaphore.go` define it:
//! key `com.coreos.airlock/groups/<url.QueryEscape(group)>/v1/semaphore`, value the JSON
//! `{"total_slots":N,"holders":["id",...]}` with the holders kept sorted. upd writes exactly
//! this, so upd machines and Zincati machines behind airlock share one semaphore per group.

use serde::{Deserialize, Serialize};

/// The default number of slots of a newly created semaphore (airlock's default too).
pub const DEFAULT_SLOTS: u64 = 1;

/// The etcd key of `group`'s semaphore, exactly as airlock names it.
pub fn semaphore_key(group: &str) -> String {
    format!(
        "com.coreos.airlock/groups/{}/v1/semaphore",
        query_escape(group)
    )
}

/// Go's `url.QueryEscape`: unreserved bytes stay, space becomes `+`, every other byte `%XX`.
fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char);
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The semaphore value (airlock's `Semaphore` struct); field order matches Go's encoding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Semaphore {
    /// How many machines may hold a slot at once.
    pub total_slots: u64,
    /// The ids of the machines holding a slot, sorted.
    pub holders: Vec<String>,
}

/// What [`Semaphore::lock`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockStep {
    /// The id was a holder already; nothing changed.
    AlreadyHeld,
    /// The id was added as a holder; the new value must be written.
    Taken,
    /// Every slot is held by others; nothing changed.
    Full,
}

impl Semaphore {
    /// An empty semaphore with `total_slots` slots.
    pub fn new(total_slots: u64) -> Self {
        Self {
            total_slots,
            holders: Vec::new(),
        }
    }

    /// Decode a stored value (airlock's JSON).
    pub fn decode(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// Encode as airlock does (compact JSON, `total_slots` then `holders`).
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a struct of an integer and strings always serialises")
    }

    /// Add `id` as a holder if it is not one and a slot is free, keeping the holders sorted.
    pub fn lock(&mut self, id: &str) -> LockStep {
        // Linear search: a value written by hand may not be sorted, and the list is short.
        if self.holders.iter().any(|h| h == id) {
            return LockStep::AlreadyHeld;
        }
        if self.holders.len() as u64 >= self.total_slots {
            return LockStep::Full;
        }
        let at = self.holders.partition_point(|h| h.as_str() < id);
        self.holders.insert(at, id.to_string());
        LockStep::Taken
    }

    /// Remove `id` from the holders; returns whether it was one.
    pub fn unlock(&mut self, id: &str) -> bool {
        let before = self.holders.len();
        self.holders.retain(|h| h != id);
        self.holders.len() != before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_airlocks_template_with_the_group_query_escaped() {
        assert_eq!(
            semaphore_key("default"),
            "com.coreos.airlock/groups/default/v1/semaphore"
        );
        assert_eq!(
            semaphore_key("db workers/2"),
            "com.coreos.airlock/groups/db+workers%2F2/v1/semaphore"
        );
    }

    #[test]
    fn encoding_is_byte_for_byte_what_go_json_marshal_writes() {
        assert_eq!(
            Semaphore::new(1).encode(),
            br#"{"total_slots":1,"holders":[]}"#
        );
        let mut s = Semaphore::new(2);
        s.lock("b");
        s.lock("a");
        assert_eq!(s.encode(), br#"{"total_slots":2,"holders":["a","b"]}"#);
        assert_eq!(Semaphore::decode(&s.encode()).unwrap(), s);
    }

    #[test]
    fn lock_is_idempotent_and_stops_at_total_slots() {
        let mut s = Semaphore::new(2);
        assert_eq!(s.lock("m2"), LockStep::Taken);
        assert_eq!(s.lock("m2"), LockStep::AlreadyHeld);
        assert_eq!(s.lock("m1"), LockStep::Taken);
        assert_eq!(s.lock("m3"), LockStep::Full);
        assert_eq!(s.holders, ["m1", "m2"]);
        assert_eq!(
            s.lock("m1"),
            LockStep::AlreadyHeld,
            "a holder is found even when full"
        );
    }

    #[test]
    fn unlock_removes_only_that_holder_and_says_whether_it_held() {
        let mut s = Semaphore::new(3);
        s.lock("a");
        s.lock("b");
        assert!(s.unlock("a"));
        assert!(!s.unlock("a"));
        assert_eq!(s.holders, ["b"]);
    }

    #[test]
    fn a_semaphore_shrunk_below_its_holders_admits_nobody_new() {
        let mut s = Semaphore::decode(br#"{"total_slots":1,"holders":["x","y"]}"#).unwrap();
        assert_eq!(s.lock("z"), LockStep::Full);
        assert_eq!(s.lock("y"), LockStep::AlreadyHeld);
    }

    #[test]
    fn a_value_that_is_not_airlocks_layout_is_refused() {
        assert!(Semaphore::decode(br#"{"semaphore":1,"max":1,"holders":[]}"#).is_err());
        assert!(Semaphore::decode(b"").is_err());
    }
}
