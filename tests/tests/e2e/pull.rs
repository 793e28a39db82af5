//! `upd pull` end to end: the real binary on sandbox machines merging with the real systemd-sysext, a signed
//! channel served over HTTP with injected faults, refusals, resume, SIGKILL at every switch step, lock, full disk.

mod agree; // check exits 100 exactly when the pull that follows changes something (extension for another OS only, nothing new, a new build, a disabled extension)
mod attacks; // mirrors (404, corrupt, stalled, replayed: passed over), expired root never cached, clock behind (warning) or ahead (refused), fast-forward recovered by key rotation, root chain over the cap, duplicate keys and numbers out of range
mod buildwaves; // extension builds follow their release's pause and waves or their own; kept through a pause, switched away from when withdrawn; no machine id, no waves; check --now
mod delta; // delta downloads by the real upd: hello 1.0.0 → 1.1.0 as a small change moves few bytes (server byte counter); bad index hash, chunks past the image, overlapping, out of order, a corrupt chunk, Range ignored: one warning, whole image, completes
mod exitcodes; // exit codes by cause: server down, 5xx, stall on the root probe (7); refused root or manifest (4); oversized manifest (7)
mod faults; // cut download resumed, SIGKILL at each switch failpoint + reboot, wrong merge switched back, lock, full disk
mod happy; // pull, check, second pull, gc; administrator images untouched; ext disable unmerges
mod refusals; // corrupt, oversized, foreign or mislabelled images; tampered, replayed, expired, other-channel manifests; root rotation
pub(crate) mod rig; // channel + fault server + sandbox machine, the real upd run inside it, snapshots
