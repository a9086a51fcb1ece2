//! Which stream each event lands in: `<events>:{login mod N}` with N partitions
//! (one account's events in one partition, in order), a symbol in partition 0,
//! ticks in the tick stream under their own source and counter.

mod support;

use std::time::Duration;

use support::*;
use tradecast_producer::*;
use tradecast_testkit::RedisServer;

#[test]
fn events_go_to_the_partition_of_their_login_and_ticks_to_the_tick_stream() {
    let redis = RedisServer::start();
    let dir = temp_dir("layout");
    let mut c = ProducerConfig::new(&redis.url(), "mt5-live-02", &*dir);
    c.partitions = 4;
    c.events_stream = "fx:events".into();
    c.ticks_stream = "fx:ticks".into();
    let producer = Producer::open(c).unwrap();

    let mut symbol = Symbol {
        digits: 2,
        contract_size: 100.0,
        ..Symbol::default()
    };
    set_str(&mut symbol.symbol, "XAUUSD");
    set_str(&mut symbol.group, "metals");
    set_str(&mut symbol.profit_ccy, "USD");
    producer.publish_symbol(&symbol).unwrap();
    for round in 0..3u64 {
        for login in 100..108u64 {
            let deposit = Deal {
                deal: round * 1000 + login,
                login,
                action: TC_DEAL_BALANCE,
                profit: 10.0,
                ..Deal::default()
            };
            producer.publish_deal(&deposit, &[]).unwrap();
        }
        let mut tick = Tick {
            bid: 2345.1 + round as f64,
            ask: 2345.4 + round as f64,
            digits: 2,
            ..Tick::default()
        };
        set_str(&mut tick.symbol, "XAUUSD");
        producer.publish_tick(&tick).unwrap();
    }
    producer.flush(Duration::from_secs(5)).unwrap();

    let mut all_seqs = Vec::new();
    for n in 0..4u64 {
        let events = read_stream(&redis.url(), &format!("fx:events:{{{n}}}"));
        for e in &events {
            if e["type"] == "deal" {
                assert_eq!(e["login"].as_u64().unwrap() % 4, n, "{e}");
            } else {
                assert_eq!((n, e["type"].as_str()), (0, Some("symbol")), "{e}");
            }
        }
        // One account's deposits keep their order within its partition.
        for login in 100..108u64 {
            let deals: Vec<u64> = events
                .iter()
                .filter(|e| e["login"] == login)
                .map(|e| e["deal"].as_u64().unwrap())
                .collect();
            if login % 4 == n {
                assert_eq!(deals, vec![login, 1000 + login, 2000 + login]);
            }
        }
        all_seqs.extend(seqs(&events));
    }
    all_seqs.sort_unstable();
    assert_eq!(
        all_seqs,
        (1..=25).collect::<Vec<_>>(),
        "one counter for trade events"
    );

    let ticks = read_stream(&redis.url(), "fx:ticks");
    assert_eq!(seqs(&ticks), vec![1, 2, 3]);
    assert!(ticks.iter().all(|t| t["src"] == "mt5-live-02/ticks"));
    assert_eq!(redis.cli(&["EXISTS", "tc:events", "tc:ticks"]), "0");
}
