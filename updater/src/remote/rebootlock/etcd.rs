//! The `etcd-lock` strategy: a slot of the group's airlock semaphore in etcd, taken and given back by compare-and-swap.
//!
//! Every change reads the semaphore, changes it in memory ([`Semaphore::lock`] /
//! [`Semaphore::unlock`]) and writes it back in a transaction guarded by the key's
//! `mod_revision`, so two machines that read the same value can never both win: the loser
//! reads again and retries. A missing key is created with `with_slots` slots (default 1)
//! by a create-if-absent transaction, as airlock's `ensureInit` does; an existing key's
//! `total_slots` always wins.
//!
//! A holder that died keeps its slot (see the parent module). To free it by hand:
//! `EtcdLock::force_release(id)`, or with etcdctl (v3 API):
//!
//! ```text
//! etcdctl get com.coreos.airlock/groups/GROUP/v1/semaphore --print-value-only
//! etcdctl put com.coreos.airlock/groups/GROUP/v1/semaphore '{"total_slots":1,"holders":[]}'
//! ```
//!
//! (a plain put is not compare-and-swap: write it only while no other machine is changing it).

use std::time::Duration;

use reqwest::Url;

use super::gateway::{Cmp, Gateway, Kv};
use super::semaphore::{semaphore_key, LockStep, Semaphore, DEFAULT_SLOTS};
use super::{Outcome, RebootLockError};

/// Compare-and-swap attempts before giving up; each loss means another machine made progress.
const MAX_ATTEMPTS: u32 = 200;

/// A machine's handle on its group's reboot semaphore in etcd.
#[derive(Debug, Clone)]
pub struct EtcdLock {
    gateway: Gateway,
    endpoints: Vec<Url>,
    key: String,
    id: String,
    slots: u64,
}

impl EtcdLock {
    /// The semaphore of `group` on the etcd cluster at `endpoints` (tried in order), for machine `id`.
    pub fn new(endpoints: Vec<Url>, group: &str, id: &str) -> Self {
        Self {
            gateway: Gateway::new(endpoints.clone()),
            endpoints,
            key: semaphore_key(group),
            id: id.to_string(),
            slots: DEFAULT_SLOTS,
        }
    }

    /// Create a missing semaphore with `n` slots instead of 1 (an existing one keeps its own).
    pub fn with_slots(mut self, n: u64) -> Self {
        self.slots = n;
        self
    }

    /// The etcd key of the semaphore.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Take a slot for this machine; `Acquired` also if it holds one already.
    pub async fn acquire(&self) -> Result<Outcome, RebootLockError> {
        let id = self.id.clone();
        self.change(|sem| match sem.lock(&id) {
            LockStep::AlreadyHeld => Change::Done(Outcome::Acquired),
            LockStep::Taken => Change::Write(Outcome::Acquired),
            LockStep::Full => Change::Done(Outcome::Denied {
                reason: format!(
                    "all {} slots of the reboot semaphore are held by: {}",
                    sem.total_slots,
                    sem.holders.join(", ")
                ),
            }),
        })
        .await
    }

    /// Give this machine's slot back; does nothing if it holds none.
    pub async fn release(&self) -> Result<(), RebootLockError> {
        self.force_release(&self.id).await
    }

    /// Free the slot held by machine `id` (an operator's recovery for a holder that never came back).
    pub async fn force_release(&self, id: &str) -> Result<(), RebootLockError> {
        // The outcome is unused: a release has nothing to report but errors.
        self.change(|sem| {
            if sem.unlock(id) {
                Change::Write(Outcome::Acquired)
            } else {
                Change::Done(Outcome::Acquired)
            }
        })
        .await
        .map(|_| ())
    }

    /// The semaphore's total slots and current holders (the default slots and none if it does not exist yet).
    pub async fn holders(&self) -> Result<(u64, Vec<String>), RebootLockError> {
        let (endpoint, kv) = self.gateway.get(&self.key).await?;
        match kv {
            None => Ok((self.slots, Vec::new())),
            Some(kv) => {
                let sem = self.decode(&endpoint, &kv)?;
                Ok((sem.total_slots, sem.holders))
            }
        }
    }

    /// Read, apply `step`, and write back guarded by the revision read, until a write wins.
    async fn change(
        &self,
        step: impl Fn(&mut Semaphore) -> Change,
    ) -> Result<Outcome, RebootLockError> {
        let mut endpoint = self.endpoints.first().cloned();
        for attempt in 0..MAX_ATTEMPTS {
            let (at, kv) = self.gateway.get(&self.key).await?;
            endpoint = Some(at.clone());
            let Some(kv) = kv else {
                // 1. No semaphore yet: create it empty, unless another machine just did.
                let fresh = Semaphore::new(self.slots).encode();
                self.gateway.put_if(&self.key, Cmp::Absent, &fresh).await?;
                continue;
            };
            // 2. Change the value read in memory.
            let mut sem = self.decode(&at, &kv)?;
            let outcome = match step(&mut sem) {
                Change::Done(outcome) => return Ok(outcome),
                Change::Write(outcome) => outcome,
            };
            // 3. Write it back only if nobody wrote since we read; else read again.
            let cmp = Cmp::ModRevision(kv.mod_revision);
            if self.gateway.put_if(&self.key, cmp, &sem.encode()).await?.1 {
                return Ok(outcome);
            }
            tokio::time::sleep(backoff(attempt, &self.id)).await;
        }
        Err(RebootLockError::Contended {
            endpoint: endpoint.ok_or(RebootLockError::NoEndpoints)?.to_string(),
            key: self.key.clone(),
            attempts: MAX_ATTEMPTS,
        })
    }

    fn decode(&self, endpoint: &Url, kv: &Kv) -> Result<Semaphore, RebootLockError> {
        Semaphore::decode(&kv.value).map_err(|e| RebootLockError::BadSemaphore {
            endpoint: endpoint.to_string(),
            key: self.key.clone(),
            why: e.to_string(),
        })
    }
}

/// What one read-modify step decided.
enum Change {
    /// Nothing to write: this is the answer.
    Done(Outcome),
    /// Write the changed semaphore; on success this is the answer.
    Write(Outcome),
}

/// A short pause after a lost compare-and-swap, spread by the machine id so losers do not retry in step.
fn backoff(attempt: u32, id: &str) -> Duration {
    let spread = id.bytes().fold(attempt, |h, b| {
        h.wrapping_mul(31).wrapping_add(u32::from(b))
    });
    Duration::from_millis(u64::from(attempt.min(10) + spread % 7))
}
