//! Fixtures for the end-to-end suites: sandbox roots, real images, keys, channels and servers built at test time.
pub mod channel;
pub mod disk;
pub mod faultserver;
pub mod images;
pub mod sandbox;
