//! Coordinated reboots: the etcd-lock client against a real etcd (airlock's layout, CAS under contention, dead holders) and the FleetLock client.

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use upd::remote::rebootlock::{EtcdLock, FleetLock, Outcome, RebootLockError, Semaphore};
use upd_tests::etcd::Etcd;
use upd_tests::fleetlock::FleetLockServer;

const GROUP: &str = "workers";
const KEY: &str = "com.coreos.airlock/groups/workers/v1/semaphore";

fn lock(etcd: &Etcd, id: &str) -> EtcdLock {
    EtcdLock::new(vec![etcd.url()], GROUP, id)
}

async fn stored(etcd: &Etcd) -> Semaphore {
    let (value, _) = etcd
        .value_at(KEY, None)
        .await
        .unwrap()
        .expect("semaphore key exists");
    Semaphore::decode(&value).unwrap()
}

fn denied(outcome: Outcome) -> String {
    match outcome {
        Outcome::Denied { reason } => reason,
        Outcome::Acquired => panic!("expected Denied, got Acquired"),
    }
}

/// A URL on which nothing listens (a port bound a moment ago, then closed).
fn dead_url() -> reqwest::Url {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("http://127.0.0.1:{port}").parse().unwrap()
}

#[tokio::test]
async fn etcd_acquire_and_release_are_idempotent_and_stored_in_airlocks_layout() {
    // A fresh etcd with no semaphore; machine a takes the one default slot, b is refused until a releases.
    let etcd = Etcd::start().await.unwrap();
    let (a, b) = (lock(&etcd, "aaaa"), lock(&etcd, "bbbb"));
    assert_eq!(a.key(), KEY);
    assert_eq!(
        a.holders().await.unwrap(),
        (1, vec![]),
        "no key yet: default slots, nobody"
    );
    assert!(
        etcd.value_at(KEY, None).await.unwrap().is_none(),
        "holders() does not write"
    );

    assert_eq!(a.acquire().await.unwrap(), Outcome::Acquired);
    let (raw, rev) = etcd.value_at(KEY, None).await.unwrap().unwrap();
    assert_eq!(
        raw, br#"{"total_slots":1,"holders":["aaaa"]}"#,
        "airlock's exact JSON"
    );
    assert_eq!(
        a.acquire().await.unwrap(),
        Outcome::Acquired,
        "already a holder"
    );
    assert_eq!(
        etcd.value_at(KEY, None).await.unwrap().unwrap().1,
        rev,
        "a repeat writes nothing"
    );

    let reason = denied(b.acquire().await.unwrap());
    assert!(
        reason.contains("aaaa") && reason.contains("1 slots"),
        "{reason}"
    );
    assert_eq!(b.holders().await.unwrap(), (1, vec!["aaaa".to_string()]));

    b.release().await.unwrap();
    assert_eq!(
        stored(&etcd).await.holders,
        ["aaaa"],
        "releasing a slot not held changes nothing"
    );
    a.release().await.unwrap();
    a.release().await.unwrap();
    assert_eq!(stored(&etcd).await, Semaphore::new(1));
    assert_eq!(b.acquire().await.unwrap(), Outcome::Acquired);
}

#[tokio::test]
async fn etcd_semaphore_written_by_airlock_is_shared_and_its_slots_win() {
    // Airlock already created the group's semaphore with 3 slots and two holders; upd (default 1 slot) joins it.
    let etcd = Etcd::start().await.unwrap();
    etcd.put(KEY, br#"{"total_slots":3,"holders":["x-node","y-node"]}"#)
        .await
        .unwrap();
    let me = lock(&etcd, "m-node");
    assert_eq!(me.acquire().await.unwrap(), Outcome::Acquired);
    let (raw, _) = etcd.value_at(KEY, None).await.unwrap().unwrap();
    assert_eq!(
        raw,
        br#"{"total_slots":3,"holders":["m-node","x-node","y-node"]}"#
    );
    assert!(denied(lock(&etcd, "z-node").acquire().await.unwrap()).contains("x-node"));

    // A value in another layout (locksmith's) is an error naming the key, never overwritten.
    etcd.put(KEY, br#"{"semaphore":1,"max":1,"holders":[]}"#)
        .await
        .unwrap();
    let err = me.acquire().await.unwrap_err();
    assert!(matches!(err, RebootLockError::BadSemaphore { .. }), "{err}");
    assert!(err.to_string().contains(KEY), "{err}");
}

#[tokio::test]
async fn etcd_twenty_machines_never_exceed_two_slots_in_the_whole_history() {
    // 20 machines race for a 2-slot semaphore: each retries until it gets a slot, holds it briefly, releases.
    let etcd = Etcd::start().await.unwrap();
    let start = etcd.current_revision().await.unwrap();
    // How many machines believe they hold a slot right now, and the most at any moment.
    let (inside, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let l = lock(&etcd, &format!("m{i:02}")).with_slots(2);
            let (inside, most) = (inside.clone(), most.clone());
            tokio::spawn(async move {
                let mut denials = 0u32;
                while l.acquire().await.unwrap() != Outcome::Acquired {
                    denials += 1;
                    assert!(denials < 2000, "never got a slot");
                    tokio::time::sleep(Duration::from_millis(5 + u64::from(denials % 7))).await;
                }
                most.fetch_max(inside.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                inside.fetch_sub(1, Ordering::SeqCst);
                l.release().await.unwrap();
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        most.load(Ordering::SeqCst),
        2,
        "at most 2 machines held a slot at once, and 2 did"
    );

    // Replay every revision of the store since the start: the key is the only thing written.
    let end = etcd.current_revision().await.unwrap();
    let mut prev: BTreeSet<String> = BTreeSet::new();
    let mut takes: BTreeMap<String, u32> = BTreeMap::new();
    let mut max_seen = 0;
    for rev in start + 1..=end {
        let (value, mod_rev) = etcd
            .value_at(KEY, Some(rev))
            .await
            .unwrap()
            .expect("key exists");
        assert_eq!(mod_rev, rev, "each revision is a write of the semaphore");
        let sem = Semaphore::decode(&value).unwrap();
        assert_eq!(sem.total_slots, 2);
        let now: BTreeSet<String> = sem.holders.iter().cloned().collect();
        assert_eq!(
            now.len(),
            sem.holders.len(),
            "no duplicate holder at revision {rev}"
        );
        assert!(
            now.len() <= 2,
            "revision {rev}: {} holders: {:?}",
            now.len(),
            now
        );
        for id in now.difference(&prev) {
            *takes.entry(id.clone()).or_default() += 1;
        }
        max_seen = max_seen.max(now.len());
        prev = now;
    }
    assert!(prev.is_empty(), "everyone released: {prev:?}");
    assert_eq!(takes.len(), 20, "all 20 held a slot: {takes:?}");
    assert!(
        takes.values().all(|&n| n == 1),
        "each exactly once: {takes:?}"
    );
    assert_eq!(max_seen, 2, "the two slots were used in parallel");
}

#[tokio::test]
async fn etcd_dead_holder_blocks_the_group_until_an_operator_force_releases_it() {
    // Machine "dead" took the slot and never came back; "live" is refused until the operator frees it.
    let etcd = Etcd::start().await.unwrap();
    assert_eq!(
        lock(&etcd, "dead").acquire().await.unwrap(),
        Outcome::Acquired
    );
    let live = lock(&etcd, "live");
    for _ in 0..3 {
        assert!(denied(live.acquire().await.unwrap()).contains("dead"));
    }
    let operator = lock(&etcd, "operator");
    operator.force_release("dead").await.unwrap();
    assert_eq!(operator.holders().await.unwrap(), (1, vec![]));
    assert_eq!(live.acquire().await.unwrap(), Outcome::Acquired);
    operator.force_release("dead").await.unwrap();
    assert_eq!(
        stored(&etcd).await.holders,
        ["live"],
        "freeing an absent holder touches nobody"
    );
}

#[tokio::test]
async fn etcd_endpoints_are_tried_in_order_and_errors_name_the_endpoint() {
    // The first endpoint is down, the second is the real etcd; then all endpoints are down.
    let etcd = Etcd::start().await.unwrap();
    let down = dead_url();
    let l = EtcdLock::new(vec![down.clone(), etcd.url()], GROUP, "m");
    assert_eq!(l.acquire().await.unwrap(), Outcome::Acquired);
    assert_eq!(stored(&etcd).await.holders, ["m"]);

    let err = EtcdLock::new(vec![down.clone()], GROUP, "m")
        .acquire()
        .await
        .unwrap_err();
    assert!(
        matches!(err, RebootLockError::EtcdUnreachable { .. }),
        "{err}"
    );
    assert!(err.to_string().contains(down.as_str()), "{err}");
    let none = EtcdLock::new(vec![], GROUP, "m")
        .release()
        .await
        .unwrap_err();
    assert!(matches!(none, RebootLockError::NoEndpoints), "{none}");
}

#[tokio::test]
async fn fleetlock_speaks_zincatis_wire_format_and_honours_the_servers_slots() {
    // A one-slot FleetLock server; machine a takes the slot, b is refused with the server's reason.
    let server = FleetLockServer::start(1).await.unwrap();
    let a = FleetLock::new(server.url(), GROUP, "aaaa");
    let b = FleetLock::new(server.url(), GROUP, "bbbb");
    assert_eq!(a.acquire().await.unwrap(), Outcome::Acquired);
    let first = &server.received()[0];
    assert_eq!(first.path, "/v1/pre-reboot");
    assert_eq!(first.protocol_header.as_deref(), Some("true"));
    assert_eq!(
        first.body,
        r#"{"client_params":{"id":"aaaa","group":"workers"}}"#
    );

    let reason = denied(b.acquire().await.unwrap());
    assert_eq!(reason, "failed_lock: all 1 slots held (HTTP 409)");
    a.release().await.unwrap();
    assert_eq!(server.received()[2].path, "/v1/steady-state");
    assert_eq!(b.acquire().await.unwrap(), Outcome::Acquired);
    assert_eq!(server.holders(), ["bbbb"]);
}

#[tokio::test]
async fn fleetlock_refusals_and_an_unreachable_server() {
    // The server refuses everything (a freeze); then no server at all.
    let server = FleetLockServer::start(5).await.unwrap();
    server.refuse_all(Some("fleet frozen for maintenance"));
    let c = FleetLock::new(server.url(), GROUP, "m");
    let reason = denied(c.acquire().await.unwrap());
    assert!(
        reason.contains("fleet frozen for maintenance") && reason.contains("503"),
        "{reason}"
    );
    let err = c.release().await.unwrap_err();
    assert!(
        matches!(err, RebootLockError::FleetLockRefused { status: 503, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("/v1/steady-state"), "{err}");
    server.refuse_all(None);
    assert_eq!(c.acquire().await.unwrap(), Outcome::Acquired);

    let down = dead_url();
    let err = FleetLock::new(down.clone(), GROUP, "m")
        .acquire()
        .await
        .unwrap_err();
    assert!(
        matches!(err, RebootLockError::FleetLockUnreachable { .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains(&format!("{down}v1/pre-reboot")),
        "{err}"
    );
}
