//! Benchmark (not a test): how long a plugin's publish call takes on the calling
//! thread while Redis is up, slow and down, and how many events per second reach
//! Redis.
//!
//! ```sh
//! cargo bench -p tradecast-producer            # writes bench/results/producer.{json,md}
//! ```
//!
//! Each scenario opens a fresh producer (defaults: queue 16384, batches of 512,
//! fsync per spooled batch) on its own redis-server (tradecast-testkit: a free
//! loopback port, never 6379) and publishes a realistic mix (ticks, positions,
//! deals, orders, accounts) in bursts every millisecond, as trade-server callbacks
//! would, timing every call with `Instant` (the timer's own cost, ~20–40 ns, is
//! included). "slow" puts a delaying TCP proxy between the producer and Redis
//! (every chunk forwarded 5 ms late in each direction: a 10 ms round trip); "down"
//! points it at a killed server, so everything goes to the spool. Throughput
//! publishes flat out (retrying a refused call) and stops the clock when a flush
//! confirms that Redis has everything.

// The delaying proxy (shared with the tests, which also use its fault injection).
#[path = "../tests/support/proxy.rs"]
#[allow(dead_code)]
mod proxy;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tradecast_producer::*;
use tradecast_testkit::RedisServer;

const RATE: u64 = 20_000; // events per second in the latency scenarios
const SECONDS: u64 = 3;
const THROUGHPUT_EVENTS: u64 = 300_000;
const SLOW_DELAY: Duration = Duration::from_millis(5);

const SCENARIOS: [&str; 5] = ["up", "slow", "down", "throughput", "throughput-slow"];

fn scratch_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("producer-bench-{name}-{}", std::process::id()))
}

/// The 1-minute load average (Linux), to tell a quiet machine from a busy one.
fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn scratch(name: &str) -> PathBuf {
    let dir = scratch_path(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn open(url: &str, name: &str) -> Producer {
    let mut c = ProducerConfig::new(url, "bench", scratch(name));
    c.connect_timeout = Duration::from_millis(200);
    Producer::open(c).unwrap()
}

/// The records of the mix, built once; publishing copies them.
struct Mix {
    tick: Tick,
    position: Position,
    deal: Deal,
    order: Order,
    account: Account,
}

impl Mix {
    fn new() -> Mix {
        let mut tick = Tick {
            bid: 1.08167,
            ask: 1.08175,
            digits: 5,
            ..Tick::default()
        };
        set_str(&mut tick.symbol, "EURUSD");
        let mut position = Position {
            position_id: 88004300,
            login: 500123,
            op: TC_POSITION_UPDATE,
            digits: 5,
            volume: 150000,
            price_open: 1.08175,
            price_sl: 1.0795,
            price_tp: 1.09,
            contract_size: 100000.0,
            rate_profit: 1.0,
            ..Position::default()
        };
        set_str(&mut position.symbol, "EURUSD");
        let mut deal = Deal {
            deal: 77001234,
            order: 88004400,
            position_id: 88004300,
            login: 500123,
            action: TC_DEAL_SELL,
            entry: TC_ENTRY_OUT,
            digits: 5,
            volume: 150000,
            price: 1.0842,
            contract_size: 100000.0,
            profit: 367.5,
            ..Deal::default()
        };
        set_str(&mut deal.symbol, "EURUSD");
        let mut order = Order {
            order: 88004321,
            login: 500123,
            order_type: 2,
            state: 1,
            volume_initial: 150000,
            volume_current: 150000,
            price_order: 1.08175,
            ..Order::default()
        };
        set_str(&mut order.symbol, "EURUSD");
        let mut account = Account {
            login: 500123,
            leverage: 500,
            balance: 10010.5,
            credit: 0.0,
            margin: 0.0,
            margin_free: f64::NAN,
            margin_level: f64::NAN,
            equity: f64::NAN,
            ..Account::default()
        };
        set_str(&mut account.name, "Ada Lovelace");
        set_str(&mut account.currency, "USD");
        Mix {
            tick,
            position,
            deal,
            order,
            account,
        }
    }

    /// Event `i` of the mix: 6 ticks, 2 position updates, a deal and an order or an
    /// account in every 10.
    fn publish(&mut self, p: &Producer, i: u64) -> Result<(), PublishError> {
        match i % 10 {
            0 | 2 | 4 | 5 | 7 | 9 => {
                self.tick.bid = 1.08 + (i % 100) as f64 * 1e-5;
                self.tick.ask = self.tick.bid + 8e-5;
                p.publish_tick(&self.tick)
            }
            1 | 6 => p.publish_position(&self.position),
            3 => {
                self.deal.deal = 77_000_000 + i;
                p.publish_deal(&self.deal, &[])
            }
            _ if i % 20 == 8 => p.publish_order(&self.order),
            _ => p.publish_account(&self.account),
        }
    }
}

struct Latency {
    samples: Vec<u64>,
    refused: u64,
    spool_bytes: u64,
}

impl Latency {
    fn pct(&self, q: f64) -> u64 {
        let i = ((self.samples.len() as f64 - 1.0) * q).round() as usize;
        self.samples[i]
    }
    fn json(&self) -> Value {
        let mean = self.samples.iter().sum::<u64>() as f64 / self.samples.len() as f64;
        json!({
            "calls": self.samples.len(),
            "p50_ns": self.pct(0.50),
            "p90_ns": self.pct(0.90),
            "p99_ns": self.pct(0.99),
            "p999_ns": self.pct(0.999),
            "max_ns": self.samples.last().copied().unwrap_or(0),
            "mean_ns": (mean * 10.0).round() / 10.0,
            "refused_full": self.refused,
            "spool_bytes_after": self.spool_bytes,
        })
    }
}

/// Publish RATE events/s for SECONDS in 1 ms bursts, timing each call.
fn latency(p: &Producer) -> Latency {
    let mut mix = Mix::new();
    let per_ms = RATE / 1000;
    let total = RATE * SECONDS;
    let mut samples = Vec::with_capacity(total as usize);
    let mut refused = 0;
    let start = Instant::now();
    let mut i = 0;
    while i < total {
        let burst_at = start + Duration::from_millis(i / per_ms);
        if let Some(wait) = burst_at.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        for _ in 0..per_ms {
            let t = Instant::now();
            let result = mix.publish(p, i);
            samples.push(t.elapsed().as_nanos() as u64);
            if result.is_err() {
                refused += 1;
            }
            i += 1;
        }
    }
    samples.sort_unstable();
    Latency {
        samples,
        refused,
        spool_bytes: p.stats().spool_bytes,
    }
}

/// Publish `n` events as fast as the producer takes them (pausing 50 µs when the
/// queue is full); events/s until flushed.
fn throughput(p: &Producer, n: u64) -> (f64, u64, f64) {
    let mut mix = Mix::new();
    let mut retries = 0u64;
    let start = Instant::now();
    for i in 0..n {
        while let Err(e) = mix.publish(p, i) {
            // Queue full: give the writer and Redis the cores for a moment.
            assert_eq!(e, PublishError::Full);
            retries += 1;
            std::thread::sleep(Duration::from_micros(50));
        }
    }
    let published = start.elapsed();
    p.flush(Duration::from_secs(120)).expect("flush");
    let elapsed = start.elapsed().as_secs_f64();
    (
        n as f64 / elapsed,
        retries,
        n as f64 / published.as_secs_f64(),
    )
}

fn row(name: &str, l: &Value) -> String {
    format!(
        "| {name} | {} | {} | {} | {} | {} | {} | {} |",
        l["calls"],
        l["p50_ns"],
        l["p90_ns"],
        l["p99_ns"],
        l["p999_ns"],
        l["max_ns"],
        l["refused_full"]
    )
}

fn main() {
    // `cargo bench` passes --bench. Under `cargo test --benches` (no --bench, and an
    // unoptimised build) do nothing rather than overwrite the results.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("producer benchmark: run it with `cargo bench -p tradecast-producer`");
        return;
    }
    let mut results = json!({
        "bench": "producer_publish",
        "rate_per_s": RATE,
        "seconds": SECONDS,
        "burst_every_ms": 1,
        "slow_proxy_delay_ms_each_way": SLOW_DELAY.as_millis() as u64,
        "queue_capacity": 16384,
        "batch_max": 512,
        "fsync": "batch",
        "load_average_1m_at_start": load_average(),
    });

    eprintln!("redis up ...");
    let redis = RedisServer::start();
    let p = open(&redis.url(), "up");
    p.flush(Duration::from_secs(5)).unwrap();
    let up = latency(&p);
    p.flush(Duration::from_secs(30)).unwrap();
    results["latency_up"] = up.json();
    drop(p);

    eprintln!("redis slow ...");
    let proxy = proxy::Proxy::start(([127, 0, 0, 1], redis.port()).into());
    let p = open(&proxy.url(), "slow");
    p.flush(Duration::from_secs(5)).unwrap();
    proxy.set_delay(SLOW_DELAY);
    let slow = latency(&p);
    p.flush(Duration::from_secs(60)).unwrap();
    results["latency_slow"] = slow.json();
    drop(p);

    eprintln!("redis down ...");
    let mut down_redis = RedisServer::start();
    let down_url = down_redis.url();
    down_redis.kill();
    let p = open(&down_url, "down");
    let down = latency(&p);
    results["latency_down"] = down.json();
    let spooled_events = p.stats().spooled;
    // Redis back: how fast the spool drains.
    down_redis.restart();
    let t = Instant::now();
    p.flush(Duration::from_secs(120)).unwrap();
    let replay = t.elapsed().as_secs_f64();
    results["spool_replay"] = json!({
        "events": spooled_events,
        "seconds_until_flushed": (replay * 1000.0).round() / 1000.0,
        "events_per_s_incl_reconnect": (spooled_events as f64 / replay).round() as u64,
    });
    drop(p);

    eprintln!("throughput ...");
    let p = open(&redis.url(), "throughput");
    p.flush(Duration::from_secs(5)).unwrap();
    let (eps, retries, publish_eps) = throughput(&p, THROUGHPUT_EVENTS);
    let stats = p.stats();
    assert_eq!(stats.delivered, THROUGHPUT_EVENTS);
    results["throughput_up"] = json!({
        "events": THROUGHPUT_EVENTS,
        "events_per_s_into_redis": eps.round() as u64,
        "publish_calls_per_s": publish_eps.round() as u64,
        "full_retries": retries,
    });
    drop(p);
    let p = open(&proxy.url(), "throughput-slow");
    p.flush(Duration::from_secs(5)).unwrap();
    let (slow_eps, slow_retries, _) = throughput(&p, THROUGHPUT_EVENTS / 3);
    results["throughput_slow"] = json!({
        "events": THROUGHPUT_EVENTS / 3,
        "events_per_s_into_redis": slow_eps.round() as u64,
        "full_retries": slow_retries,
    });
    drop(p);

    let md = format!(
        "## tradecast-producer: publish call and throughput\n\n\
         Publish-call latency on the calling thread, in nanoseconds: {RATE} events/s in 1 ms \
         bursts for {SECONDS} s (a mix of 60 % ticks, 20 % position updates, 10 % deals, \
         5 % orders, 5 % accounts), fresh producer with default settings per scenario.\n\n\
         | Redis | calls | p50 | p90 | p99 | p99.9 | max | refused (full) |\n\
         |---|---|---|---|---|---|---|---|\n\
         {}\n{}\n{}\n\n\
         | throughput | value |\n|---|---|\n\
         | events/s into Redis, publishing flat out (up, {} events, until flushed) | **{}** |\n\
         | publish calls/s accepted meanwhile (queue full → retried {} times) | {} |\n\
         | events/s into Redis through the slow proxy (10 ms round trip) | {} |\n\
         | spool replay after the outage: {} events flushed in | {} s |\n\n\
         Machine: 2 cores, Linux x86_64, loopback; redis-server, the writer thread and the \
         publishing thread share the 2 cores (1-minute load average at start: {}). Timings \
         include `Instant::now()` (~20–40 ns). `max` is one call in {}: on a shared machine \
         it mostly measures the OS descheduling the publishing thread, and varies from run \
         to run; p99.9 is the stable tail. Command: `cargo bench -p tradecast-producer`.\n",
        row("up (direct)", &results["latency_up"]),
        row(
            &format!("slow (proxy, +{} ms each way)", SLOW_DELAY.as_millis()),
            &results["latency_slow"]
        ),
        row("down (spooling, fsync per batch)", &results["latency_down"]),
        THROUGHPUT_EVENTS,
        results["throughput_up"]["events_per_s_into_redis"],
        results["throughput_up"]["full_retries"],
        results["throughput_up"]["publish_calls_per_s"],
        results["throughput_slow"]["events_per_s_into_redis"],
        results["spool_replay"]["events"],
        results["spool_replay"]["seconds_until_flushed"],
        results["load_average_1m_at_start"],
        RATE * SECONDS,
    );
    println!("{md}");
    println!("{}", serde_json::to_string_pretty(&results).unwrap());
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/results");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(
        out.join("producer.json"),
        serde_json::to_string_pretty(&results).unwrap() + "\n",
    )
    .unwrap();
    std::fs::write(out.join("producer.md"), md).unwrap();
    for name in SCENARIOS {
        let _ = std::fs::remove_dir_all(scratch_path(name));
    }
    eprintln!("wrote bench/results/producer.json and producer.md");
}
