//! upd end-to-end suites, compiled into one test binary; one line per module says what it covers.
mod booted; // booted Debian containers (systemd 252 and 257, systemd-nspawn): units in order, upd.service on the real root, switch back, ID_LIKE per systemd version, config typo, analyze verify/security, zero-gap switch under a prober
mod corpus; // the fuzz targets' property checks (fuzz/src/checks, included by path) on every seed corpus file, on stable Rust
mod delta; // delta downloads by the fetcher over real HTTP: reuse, coalesced ranges, multi-range requests (fewer requests; a server answering one range, the whole file, or coalescing; each bad multipart answer), resume at chunk granularity, stall; each bad index or chunk (hash, size, overlap, order, corrupt chunk, Range ignored) falls back to the whole image
mod disk; // the A/B disk rig itself on real loop devices: GPT slots (sgdisk and raw bytes), gptprio boots and fallback, release
mod failpoints; // upd's failpoints grouped by prefix for the kill suites; every point is in a group some suite kills at
mod fetch; // the upd fetcher over real HTTP with injected faults: hash, size limit, resume, stall, retries, ETag
mod fleet; // fleet rollout on real sandbox machines: 20 machines through a real etcd reboot semaphore, waves, pause, withdraw, redirect, replay, FleetLock
mod os; // OS (A/B) updates on a real GPT disk on loop devices: stage, reboot, mark-good, fallback, rollback, kills
mod publish; // upd-channel binary end to end: keygen, init, add-release from real images, sign, serve, verify; each tampered manifest refused
mod pull; // the real upd binary on sandbox machines: pull, refusals, resume, SIGKILL at each switch step, lock, full disk
mod readonly; // status, check and list change nothing: the root byte-identical, the merged set and the disk as they were
mod rebootlock; // coordinated reboots: etcd-lock against a real etcd (airlock layout, 20 racing machines, dead holder) and FleetLock
mod rollout_publish; // upd-channel as a release engineer uses it: promote alpha→beta→stable, waves and share, pause, withdraw with redirect, barrier, refusals
mod sysext; // real systemd-sysext 252 on sandbox machines: merge, silent skips, verify_merged, reboot, isolation
mod units; // systemd units: systemd-analyze verify, ordering before systemd-sysext, timer
mod versions; // OS versions ordered as the real systemd-analyze compare-versions of 252 and 257 orders them (334 pairs); a Debian VERSION_ID=12 machine checked and pulled
mod zerogap; // the zero-gap switch: 0 probes missing over 20 switches, systemd-sysext list/refresh/unmerge and upd boot after a swap, failed assembly keeps the old overlay, open files survive, fallback without mount-beneath
