//! A parser for os-release and extension-release files (systemd format).
