//! Running systemd-sysext and checking the merged set against the expected one.
