//! The A/B rig: a signed channel with OS releases and their extensions, a real GPT disk on a loop
//! device, and a sandbox machine booted from a slot of that disk, running the real upd.

use std::collections::BTreeMap;
use std::ops::{Deref, DerefMut};

use upd_tests::channel::Channel;
use upd_tests::faultserver::{Fault, FaultServer};
use upd_tests::images::{OsSpec, SysextSpec};

use super::node::Node;

/// `ID=` of the test OS.
pub(crate) const OS_ID: &str = "updos";
/// The release installed first.
pub(crate) const V1: &str = "1.0.0";
/// The release updated to.
pub(crate) const V2: &str = "2.0.0";
/// Size of each OS slot.
pub(crate) const SLOT_SIZE: u64 = 16 << 20;

/// The OS `version` (VERSION_ID equals the release version).
pub(crate) fn os(version: &str) -> OsSpec {
    OsSpec::new(OS_ID, version)
}

/// Extension `name` `version` built for OS `os_version` (`world` as erofs, the others squashfs).
pub(crate) fn ext(name: &str, version: &str, os_version: &str) -> SysextSpec {
    let s = SysextSpec::new(name, version, OS_ID, os_version);
    if name == "world" {
        s.erofs()
    } else {
        s
    }
}

/// A name → version map.
pub(crate) fn set(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// Set A: the extensions built for 1.0.0.
pub(crate) fn set_a() -> BTreeMap<String, String> {
    set(&[("hello", "1.0.0"), ("world", "1.0.0")])
}

/// Set B: the extensions built for 2.0.0.
pub(crate) fn set_b() -> BTreeMap<String, String> {
    set(&[("hello", "2.0.0"), ("world", "2.0.0")])
}

/// A runtime, a server, and channel `stable` with release 1.0.0 (hello 1.0.0, world 1.0.0),
/// published and served.
pub(crate) fn served_v1() -> (tokio::runtime::Runtime, FaultServer, Channel) {
    let (rt, server) = FaultServer::start_with_runtime();
    let mut ch = Channel::new("stable");
    ch.add_os_release(V1, &os(V1));
    ch.add_extension(V1, &ext("hello", "1.0.0", V1));
    ch.add_extension(V1, &ext("world", "1.0.0", V1));
    ch.publish();
    serve(&ch, &server);
    (rt, server, ch)
}

/// Add release 2.0.0 (OS image, hello 2.0.0 + world 2.0.0 built for it); not yet published.
pub(crate) fn add_v2(ch: &mut Channel) {
    ch.add_os_release(V2, &os(V2));
    ch.add_extension(V2, &ext("hello", "2.0.0", V2));
    ch.add_extension(V2, &ext("world", "2.0.0", V2));
}

/// Serve every file of the repository as it is now, without faults.
pub(crate) fn serve(ch: &Channel, server: &FaultServer) {
    for (url, file) in ch.files() {
        server.put_file(&url, file, Fault::Normal).unwrap();
    }
}

/// Channel, server and one machine on its disk (reached through `Deref`).
pub(crate) struct OsRig {
    pub(crate) server: FaultServer,
    pub(crate) ch: Channel,
    pub(crate) node: Node,
    _rt: tokio::runtime::Runtime,
}

impl OsRig {
    /// Channel `stable` with release 1.0.0 (hello 1.0.0, world 1.0.0); the disk holds 1.0.0 in
    /// USR-A, as installed; the machine booted USR-A, pulled its extensions and merged them
    /// (`extra` config lines appended to upd.conf).
    pub(crate) fn new(extra: &[&str]) -> OsRig {
        let (rt, server, ch) = served_v1();
        OsRig::on(rt, server, ch, extra)
    }

    /// A machine installed from `ch` (which `server` serves, on `rt`), as [`OsRig::new`] has it.
    pub(crate) fn on(
        rt: tokio::runtime::Runtime,
        server: FaultServer,
        ch: Channel,
        extra: &[&str],
    ) -> OsRig {
        let node = Node::new(&ch, &server, extra);
        OsRig {
            server,
            ch,
            node,
            _rt: rt,
        }
    }

    /// Add release 2.0.0 (OS image and hello 2.0.0 + world 2.0.0 built for it) and publish.
    pub(crate) fn add_v2(&mut self) {
        add_v2(&mut self.ch);
        self.publish();
    }

    /// Publish the manifest being edited and serve the whole repository.
    pub(crate) fn publish(&mut self) {
        self.ch.publish();
        serve(&self.ch, &self.server);
    }
}

impl Deref for OsRig {
    type Target = Node;
    fn deref(&self) -> &Node {
        &self.node
    }
}

impl DerefMut for OsRig {
    fn deref_mut(&mut self) -> &mut Node {
        &mut self.node
    }
}
