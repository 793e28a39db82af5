//! Fixtures for the end-to-end suites: sandbox roots, real images, keys, channels and servers built at test time.
pub mod bins;
pub mod channel;
pub mod disk;
pub mod etcd;
pub mod faultserver;
pub mod fleetlock;
pub mod images;
pub mod nspawn;
pub mod postgres;
pub mod probe;
pub mod rootfs;
pub mod sandbox;
pub mod torn;
pub mod tree;
