//! OS (A/B) updates end to end on a real GPT disk on a loop device and the real systemd-sysext:
//! staging, simulated reboots through a gptprio boot loader, mark-good, fallback, rollback, kills.

mod cycle; // issue tests 1, 2, 3, 6: stage v2 with set B, reboot, mark-good, failed boot falls back, rollback
pub(crate) mod rig; // channel + disk + machine booted from a slot, the real upd run inside it
