//! Redis failures under a live publisher: killed mid-session and restarted, a reply
//! lost after Redis applied the batch, and an outage long enough to fill the spool.
//! In each case the stream ends up with every accepted event exactly once, in
//! order, and no publish call ever blocks.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use support::proxy::Proxy;
use support::*;
use tradecast_producer::*;
use tradecast_testkit::RedisServer;

fn config(url: &str, dir: &std::path::Path) -> ProducerConfig {
    let mut c = ProducerConfig::new(url, "mt5-live-01", dir);
    c.connect_timeout = Duration::from_millis(200);
    c.io_timeout = Duration::from_millis(1000);
    c
}

/// A deposit of 1.00 with ticket `deal` on account 42.
fn deposit(deal: u64) -> Deal {
    Deal {
        deal,
        login: 42,
        action: TC_DEAL_BALANCE,
        profit: 1.0,
        ..Deal::default()
    }
}

fn deal_tickets(events: &[serde_json::Value]) -> Vec<u64> {
    events.iter().map(|e| e["deal"].as_u64().unwrap()).collect()
}

/// Publishing continues while Redis is killed (SIGKILL) and, a second later,
/// started again, empty, on the same port. Redis keeps nothing on disk, so the test
/// reads what it held just before dying: it pauses writes (`CLIENT PAUSE WRITE`,
/// which leaves the producer's pipeline in flight and unanswered), reads the stream,
/// then kills it. What came before plus what arrives after the restart must be every
/// event, seq 1..N, once each, in publish order.
#[test]
fn redis_killed_mid_session_every_event_arrives_exactly_once_in_order() {
    const N: u64 = 6000;
    let mut redis = RedisServer::start();
    let url = redis.url();
    let dir = temp_dir("killed");
    let producer = Arc::new(Producer::open(config(&url, &dir)).unwrap());

    // About 2 events per millisecond for 3 s, checking every call returns at once.
    let publisher = std::thread::spawn({
        let producer = Arc::clone(&producer);
        move || {
            let mut slowest = Duration::ZERO;
            for i in 1..=N {
                let started = Instant::now();
                producer.publish_deal(&deposit(i), &[]).expect("publish");
                slowest = slowest.max(started.elapsed());
                if i % 2 == 0 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            slowest
        }
    });

    let deadline = Instant::now() + Duration::from_secs(10);
    while producer.stats().delivered < N / 4 {
        assert!(
            Instant::now() < deadline,
            "nothing delivered: {:?}",
            producer.stats()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(redis.cli(&["CLIENT", "PAUSE", "30000", "WRITE"]), "OK");
    std::thread::sleep(Duration::from_millis(100));
    let before = read_stream(&url, "tc:events");
    redis.kill();
    std::thread::sleep(Duration::from_millis(1000));
    let during = producer.stats();
    assert_eq!(during.redis_up, 0, "{during:?}");
    assert!(during.spooled > 0, "{during:?}");
    redis.restart();

    let slowest = publisher.join().unwrap();
    producer
        .flush(Duration::from_secs(15))
        .expect("everything reaches Redis");
    let after = read_stream(&url, "tc:events");

    let all: Vec<serde_json::Value> = before.iter().chain(after.iter()).cloned().collect();
    assert!(!before.is_empty() && !after.is_empty());
    assert_eq!(
        seqs(&all),
        (1..=N).collect::<Vec<_>>(),
        "every seq once, in order"
    );
    assert_eq!(
        deal_tickets(&all),
        (1..=N).collect::<Vec<_>>(),
        "publish order kept"
    );
    // Blocking would mean waiting for Redis (a second or more); the margin is for a
    // busy machine descheduling the thread.
    assert!(
        slowest < Duration::from_millis(200),
        "a publish call took {slowest:?}"
    );
    let stats = producer.stats();
    assert_eq!(stats.published, N);
    assert_eq!(stats.spool_bytes, 0, "{stats:?}");
}

/// The connection drops after Redis applied a batch but before its reply arrives:
/// the producer cannot know, resends it, and the idempotent append skips what is
/// already there.
#[test]
fn a_lost_reply_is_resent_without_duplicates() {
    let redis = RedisServer::start();
    let proxy = Proxy::start(([127, 0, 0, 1], redis.port()).into());
    let dir = temp_dir("lost-reply");
    let producer = Producer::open(config(&proxy.url(), &dir)).unwrap();

    producer.publish_deal(&deposit(1), &[]).unwrap();
    producer.flush(Duration::from_secs(5)).unwrap();
    proxy.drop_replies(1);
    for i in 2..=200 {
        producer.publish_deal(&deposit(i), &[]).unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();

    let events = read_stream(&redis.url(), "tc:events");
    assert_eq!(seqs(&events), (1..=200).collect::<Vec<_>>());
    assert_eq!(deal_tickets(&events), (1..=200).collect::<Vec<_>>());
    let stats = producer.stats();
    assert!(
        stats.duplicates_skipped > 0,
        "the resend met entries Redis had: {stats:?}"
    );
    assert_eq!(stats.delivered, 200, "{stats:?}");
}

/// Redis down long enough to fill a small spool: publish calls start failing with
/// `Full` (fast, never blocking), accepted events all arrive once Redis is back.
#[test]
fn a_full_queue_and_spool_refuse_events_at_once_and_nothing_accepted_is_lost() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    redis.kill();
    let dir = temp_dir("full");
    let mut c = config(&url, &dir);
    c.queue_capacity = 256;
    c.spool_max_bytes = 64 * 1024;
    let producer = Producer::open(c).unwrap();

    // Publish at a pace the writer can spool until it stops taking events: the spool
    // is at its limit and the queue full.
    let mut accepted = Vec::new();
    let started = Instant::now();
    let mut ticket = 0;
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            producer.stats()
        );
        ticket += 1;
        match producer.publish_deal(&deposit(ticket), &[]) {
            Ok(()) => accepted.push(ticket),
            Err(PublishError::Full) if producer.stats().spool_bytes >= 64 * 1024 => break,
            Err(PublishError::Full) => std::thread::sleep(Duration::from_millis(2)),
            Err(e) => panic!("{e}"),
        }
        if ticket % 16 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    // From now on every call is refused, at once.
    let mut slowest = Duration::ZERO;
    for _ in 0..1000 {
        ticket += 1;
        let t = Instant::now();
        assert_eq!(
            producer.publish_deal(&deposit(ticket), &[]),
            Err(PublishError::Full)
        );
        slowest = slowest.max(t.elapsed());
    }
    // Blocking would mean waiting for Redis (a second or more); the margin is for a
    // busy machine descheduling the thread.
    assert!(
        slowest < Duration::from_millis(200),
        "a publish call took {slowest:?}"
    );
    let stats = producer.stats();
    assert!(stats.rejected_full >= 1000, "{stats:?}");
    assert_eq!(stats.queued, 256, "{stats:?}");

    redis.restart();
    producer
        .flush(Duration::from_secs(15))
        .expect("the spool drains");
    let events = read_stream(&url, "tc:events");
    assert_eq!(
        seqs(&events),
        (1..=accepted.len() as u64).collect::<Vec<_>>()
    );
    assert_eq!(deal_tickets(&events), accepted);
}

/// Close with Redis down spools what is queued; the next open (same directory)
/// delivers it before anything new and continues the seq count.
#[test]
fn close_with_redis_down_then_reopen_delivers_in_order() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    redis.kill();
    let dir = temp_dir("reopen");
    let producer = Producer::open(config(&url, &dir)).unwrap();
    for i in 1..=100 {
        producer.publish_deal(&deposit(i), &[]).unwrap();
    }
    assert_eq!(
        producer.flush(Duration::from_millis(300)),
        Err(FlushError::Timeout)
    );
    let started = Instant::now();
    drop(producer);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "close took {:?}",
        started.elapsed()
    );

    // The directory is locked while a producer has it open.
    let first = Producer::open(config(&url, &dir)).unwrap();
    assert!(matches!(
        Producer::open(config(&url, &dir)),
        Err(OpenError::Io { .. })
    ));
    drop(first);

    redis.restart();
    let producer = Producer::open(config(&url, &dir)).unwrap();
    for i in 101..=150 {
        producer.publish_deal(&deposit(i), &[]).unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    let events = read_stream(&url, "tc:events");
    assert_eq!(seqs(&events), (1..=150).collect::<Vec<_>>());
    assert_eq!(deal_tickets(&events), (1..=150).collect::<Vec<_>>());
}

/// A slow Redis (every packet 100 ms late each way through a proxy) slows
/// delivery, never the publish call.
#[test]
fn a_slow_redis_does_not_slow_the_publish_call() {
    let redis = RedisServer::start();
    let proxy = Proxy::start(([127, 0, 0, 1], redis.port()).into());
    let dir = temp_dir("slow");
    let mut c = config(&proxy.url(), &dir);
    c.io_timeout = Duration::from_secs(3);
    let producer = Producer::open(c).unwrap();
    producer.flush(Duration::from_secs(5)).unwrap();
    proxy.set_delay(Duration::from_millis(100));
    let mut slowest = Duration::ZERO;
    for i in 1..=2000 {
        let t = Instant::now();
        producer.publish_deal(&deposit(i), &[]).unwrap();
        slowest = slowest.max(t.elapsed());
        if i % 100 == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    // Waiting for Redis would take 200 ms per round trip.
    assert!(
        slowest < Duration::from_millis(60),
        "a publish call took {slowest:?}"
    );
    producer.flush(Duration::from_secs(15)).unwrap();
    let events = read_stream(&redis.url(), "tc:events");
    assert_eq!(seqs(&events), (1..=2000).collect::<Vec<_>>());
}
