//! The fleet rig: one signed channel served over real HTTP, and any number of sandbox machines,
//! each on its own GPT disk (loop device) and mount namespace, running the real upd.

use upd_tests::channel::Channel;
use upd_tests::faultserver::FaultServer;

use crate::os::node::Node;
use crate::os::rig::{add_v2, serve, served_v1};

/// One channel (`stable`) and its server, shared by every machine of the fleet.
pub(crate) struct Fleet {
    pub(crate) server: FaultServer,
    pub(crate) ch: Channel,
    pub(crate) rt: tokio::runtime::Runtime,
}

impl Fleet {
    /// Channel `stable` with release 1.0.0 (hello 1.0.0, world 1.0.0), published and served.
    pub(crate) fn new() -> Fleet {
        let (rt, server, ch) = served_v1();
        Fleet { server, ch, rt }
    }

    /// Add release 2.0.0 (OS image, hello 2.0.0 + world 2.0.0 built for it); not yet published.
    pub(crate) fn add_v2(&mut self) {
        add_v2(&mut self.ch);
    }

    /// Sign the manifest being edited (serial bumped), serve the whole repository; returns the envelope.
    pub(crate) fn publish(&mut self) -> Vec<u8> {
        let envelope = self.ch.publish();
        serve(&self.ch, &self.server);
        envelope
    }

    /// Serve exactly these manifest envelope bytes (a replay of an older signed manifest).
    pub(crate) fn serve_manifest(&self, envelope: &[u8]) {
        self.ch.write_manifest_bytes(envelope);
        serve(&self.ch, &self.server);
    }

    /// A machine installed with 1.0.0 in USR-A, booted from it, configured for this channel (`extra`
    /// lines appended to upd.conf), with set A pulled and merged.
    pub(crate) fn node(&self, extra: &[&str]) -> Node {
        Node::new(&self.ch, &self.server, extra)
    }
}
