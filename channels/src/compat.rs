//! sysext compatibility rules, as systemd-sysext applies them at merge time.
