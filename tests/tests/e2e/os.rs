//! OS (A/B) updates end to end on a real GPT disk on a loop device and the real systemd-sysext:
//! staging, simulated reboots through a gptprio boot loader, mark-good, fallback, rollback, kills.

mod cycle; // issue tests 1, 2, 3, 6: stage v2 with set B, reboot, mark-good, failed boot falls back, rollback
mod delta; // issue 14: an OS update as a delta download: chunks of the booted slot reused, a corrupted region re-fetched, several ranges a request (and one a request from a server answering only the first), a bad index falls back once
mod harness; // the kill harness's driver: a prepared machine saved once, restored for each kill at a syscall or a random instant
mod jsondocs; // docs/json.md lists exactly the fields of every --json document, emitted through an OS cycle and a failure
mod kills; // issue test 5: SIGKILL at every step of stage, boot, mark-good and rollback, and between the two GPT copies; the next boot merges one whole set
pub(crate) mod node; // one machine booted from a slot of its own disk, the real upd run inside it, what it shows
mod refusals; // issue test 4: blocked extension (the running OS's builds still apply), mislabelled extension, OS image that lies, too large or corrupted: nothing switches
pub(crate) mod rig; // channel + server + one node: the rig of the single-machine OS suites
mod syscalls; // the kill harness: SIGKILL at every state-changing syscall (and at random instants) of ext pull, OS pull, both as delta downloads, boot, mark-good, rollback, gc, the live switch; power cut, boot, invariant
mod torn; // issue 16: torn writes of the state file and its journal, the store's promotion, the links, the drop-ins: each prefix of the real binary's calls as a power cut leaves it
mod waiting; // issue 10 defect 11: a channel without the running release: update, pull, check exit 0 and status says why, until it offers a release, which is taken
