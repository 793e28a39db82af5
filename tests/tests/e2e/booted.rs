//! A booted systemd (252 and 257) in Debian containers run by systemd-nspawn: upd's units, the real
//! root with real links in /etc/extensions, and the container's own systemd-sysext merging them.
//!
//! The trees are minimal Debian 12 and 13 built by mmdebstrap and cached in `$UPD_ROOTFS_CACHE`
//! (upd_tests::rootfs); each test copies one, installs the freshly built upd and boots it
//! (upd_tests::nspawn). Every test runs once per systemd version.

mod analyze;
mod idlike;
mod notify;
mod order;
mod pull;
mod rig;
mod switchback;
mod typo;
mod zerogap;
