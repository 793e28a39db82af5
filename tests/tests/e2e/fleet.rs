//! Fleet rollout on real sandbox machines sharing one signed channel: reboots coordinated through
//! a real etcd and a FleetLock server, rollout waves, pause, withdrawal, directed rollback, replay.

mod fleetlock; // issue test 4: a refused FleetLock keeps the machine up and says why; allowed, it reboots and releases
mod publisher; // issue test 3: pause, withdraw a staged release, redirect to the safe release, a replayed manifest
pub(crate) mod rig; // one channel served over HTTP, many machines each on its own GPT disk and namespace
mod semaphore; // issue test 1: 20 machines reboot through airlock's etcd semaphore, never more than 2 at once
mod waves; // issue test 2: rollout waves pick machines by fleet position and wariness; pull VERSION bypasses them
