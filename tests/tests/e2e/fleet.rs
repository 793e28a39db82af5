//! Fleet rollout on real sandbox machines sharing one signed channel: reboots coordinated through
//! a real etcd and a FleetLock server, rollout waves, pause, withdrawal, directed rollback, replay;
//! the owner's view (report server on SQLite and PostgreSQL, status, the guard, the page).

mod fleetlock; // issue test 4: a refused FleetLock keeps the machine up and says why; allowed, it reboots and releases
mod guard; // issue 15: 20 machines, 3 fail their health check, the guard pauses the rollout and signs
mod page; // issue 15: the rollout page in a real headless Chromium, its numbers against the database
mod publisher; // issue test 3: pause, withdraw a staged release, redirect to the safe release, a replayed manifest
mod reports; // issue 15: bad reports refused (4xx, nothing stored), machines' reports counted, the queue on disk
pub(crate) mod reportserver; // the real `upd-channel fleet serve` on SQLite or a PostgreSQL cluster of its own
pub(crate) mod rig; // one channel served over HTTP, many machines each on its own GPT disk and namespace
mod semaphore; // issue test 1: 20 machines reboot through airlock's etcd semaphore, never more than 2 at once
mod waves; // issue test 2: rollout waves pick machines by fleet position and wariness; pull VERSION bypasses them
