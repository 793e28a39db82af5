//! Crash points for the tests: `UPD_FAILPOINT=NAME` kills the real binary with SIGKILL at NAME.

/// Kill this process with SIGKILL if `UPD_FAILPOINT` names `name` (only with the `failpoints` feature).
pub fn hit(name: &str) {
    #[cfg(feature = "failpoints")]
    if std::env::var("UPD_FAILPOINT").is_ok_and(|v| v == name) {
        tracing::warn!(failpoint = name, "failpoint hit: killing upd");
        let _ = nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::SIGKILL);
    }
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
}
