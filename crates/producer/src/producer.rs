//! The producer handle: configuration, the publish calls, flush, stats and close.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed, Ordering::SeqCst, fence};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};

use crate::event::Event;
use crate::records::*;
use crate::spool::Spool;
use crate::state::StateFile;
use crate::writer::Writer;

/// How the spool is made durable (see `docs/plugin.md`, "Durability").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fsync {
    /// fsync after every batch appended to the spool (default).
    #[default]
    Batch,
    /// fsync at most once per interval while there is unsynced data, and on close.
    Interval(Duration),
    /// Leave write-back to the OS.
    Never,
}

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Error = TC_LOG_ERROR as isize,
    Warn = TC_LOG_WARN as isize,
    Info = TC_LOG_INFO as isize,
}

/// Where the producer's log lines go (called on the writer thread). MT5 plugins
/// forward them to `IMTServerAPI::LoggerOut`.
pub type LogFn = Arc<dyn Fn(LogLevel, &str) + Send + Sync>;

/// Everything [`Producer::open`] needs. [`ProducerConfig::new`] fills in the
/// defaults.
#[derive(Clone)]
pub struct ProducerConfig {
    /// `redis://host:port/db` (`rediss://` is not supported by this build).
    pub redis_url: String,
    /// The `src` of trade events: the trade server's id, e.g. `mt5-live-01`.
    pub source: String,
    /// The `src` of ticks, with its own `seq` counter (default `<source>/ticks`, so
    /// that a busy tick feed never runs thousands of numbers ahead of the trade
    /// events tradecast reads from another stream). Set it to `source` to share one
    /// counter.
    pub ticks_source: String,
    /// Trade-event stream (or partition prefix), default `tc:events`.
    pub events_stream: String,
    /// Tick stream, default `tc:ticks`.
    pub ticks_stream: String,
    /// 0: one events stream; N: `<events>:{login mod N}`, as `tradecast serve
    /// --partitions N`.
    pub partitions: u32,
    /// Directory of the spool and the state file; created if missing; one producer
    /// per directory.
    pub spool_dir: PathBuf,
    /// Events the in-memory queue holds (default 16384).
    pub queue_capacity: usize,
    /// Unreplayed spool bytes above which the writer stops taking events from the
    /// queue (default 1 GiB); then publishes fail with `Full` once the queue is full.
    pub spool_max_bytes: u64,
    /// Events per pipelined batch (default 512).
    pub batch_max: usize,
    /// TCP connect timeout to Redis (default 500 ms).
    pub connect_timeout: Duration,
    /// Read/write timeout of one Redis round trip (default 2 s); a slower answer
    /// counts as a failure and the batch is spooled and resent (idempotently).
    pub io_timeout: Duration,
    /// How long close may spend delivering what is queued before it spools the
    /// rest (default 2 s).
    pub close_timeout: Duration,
    pub fsync: Fsync,
    /// The trade server's time zone, minutes east of UTC (MT5:
    /// `IMTConServer::TimeZone()`): subtracted from every MT time.
    pub tz_offset_minutes: i32,
    /// `XADD MAXLEN ~ n` trimming of every stream (0: none, the default).
    pub stream_maxlen: u64,
    /// Log sink (default: none).
    pub log: Option<LogFn>,
}

impl std::fmt::Debug for ProducerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProducerConfig")
            .field("redis_url", &self.redis_url)
            .field("source", &self.source)
            .field("ticks_source", &self.ticks_source)
            .field("events_stream", &self.events_stream)
            .field("ticks_stream", &self.ticks_stream)
            .field("partitions", &self.partitions)
            .field("spool_dir", &self.spool_dir)
            .field("queue_capacity", &self.queue_capacity)
            .field("spool_max_bytes", &self.spool_max_bytes)
            .field("batch_max", &self.batch_max)
            .field("fsync", &self.fsync)
            .finish_non_exhaustive()
    }
}

impl ProducerConfig {
    /// The defaults for a source writing to `redis_url`, spooling in `spool_dir`.
    pub fn new(redis_url: &str, source: &str, spool_dir: impl Into<PathBuf>) -> Self {
        ProducerConfig {
            redis_url: redis_url.to_owned(),
            source: source.to_owned(),
            ticks_source: format!("{source}/ticks"),
            events_stream: "tc:events".into(),
            ticks_stream: "tc:ticks".into(),
            partitions: 0,
            spool_dir: spool_dir.into(),
            queue_capacity: 16384,
            spool_max_bytes: 1 << 30,
            batch_max: 512,
            connect_timeout: Duration::from_millis(500),
            io_timeout: Duration::from_secs(2),
            close_timeout: Duration::from_secs(2),
            fsync: Fsync::Batch,
            tz_offset_minutes: 0,
            stream_maxlen: 0,
            log: None,
        }
    }

    fn check(&self) -> Result<(), String> {
        for (name, value) in [
            ("source", &self.source),
            ("ticks_source", &self.ticks_source),
            ("events_stream", &self.events_stream),
            ("ticks_stream", &self.ticks_stream),
        ] {
            if value.is_empty() {
                return Err(format!("{name} must not be empty"));
            }
            if value.len() > 255 {
                return Err(format!("{name} is longer than 255 bytes"));
            }
        }
        if self.spool_dir.as_os_str().is_empty() {
            return Err("spool_dir must not be empty".into());
        }
        if self.queue_capacity == 0 || self.batch_max == 0 {
            return Err("queue_capacity and batch_max must be at least 1".into());
        }
        if self.partitions > 65536 {
            return Err("partitions must be at most 65536".into());
        }
        Ok(())
    }
}

/// Why a publish call did not take the event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    #[error("invalid event: {0}")]
    Invalid(String),
    #[error("queue full: Redis cannot keep up and the spool is full")]
    Full,
    #[error("producer closed")]
    Closed,
}

impl PublishError {
    /// The C result code.
    pub fn code(&self) -> i32 {
        match self {
            PublishError::Invalid(_) => TC_ERR_INVALID,
            PublishError::Full => TC_ERR_FULL,
            PublishError::Closed => TC_ERR_CLOSED,
        }
    }
}

/// Why [`Producer::open`] failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("spool directory {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Why [`Producer::flush`] returned before everything reached Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FlushError {
    #[error("not everything reached Redis within the timeout")]
    Timeout,
    #[error("producer closed")]
    Closed,
}

/// A snapshot of the producer's counters (`tc_stats` in C).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Events taken by publish calls.
    pub published: u64,
    /// Publish calls refused with `TC_ERR_FULL`.
    pub rejected_full: u64,
    /// Events waiting in the in-memory queue.
    pub queued: u64,
    /// Events Redis acknowledged (directly or from the spool), resends it already
    /// had included.
    pub delivered: u64,
    /// Resent entries Redis already had, skipped (exactly-once at work).
    pub duplicates_skipped: u64,
    /// Events written to the spool since open.
    pub spooled: u64,
    /// Spool bytes not yet replayed into Redis.
    pub spool_bytes: u64,
    /// The next `seq` of the trade-event source.
    pub next_seq: u64,
    /// The next `seq` of the tick source.
    pub next_tick_seq: u64,
    /// 1 while the writer has a working Redis connection.
    pub redis_up: u32,
}

/// An item of the queue: an event, or a flush marker that completes once
/// everything queued before it is in Redis. Events are stored inline on purpose: a
/// publish call copies into a preallocated slot and never allocates.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Item {
    Event { event: Event, emit_ms: u64 },
    Flush(Sender<()>),
}

/// Counters shared between the handle and the writer thread.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub published: AtomicU64,
    pub rejected_full: AtomicU64,
    pub delivered: AtomicU64,
    pub duplicates_skipped: AtomicU64,
    pub spooled: AtomicU64,
    pub spool_bytes: AtomicU64,
    pub next_seq: AtomicU64,
    pub next_tick_seq: AtomicU64,
    pub redis_up: AtomicBool,
    /// The writer is parked (or about to): a publish must unpark it.
    pub sleeping: AtomicBool,
    /// Close was called: the writer drains and stops.
    pub closing: AtomicBool,
}

/// Wall clock, ms since 1970 UTC.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A producer: a bounded queue in front of one writer thread.
///
/// Publish calls may come from any number of threads at once; each copies the
/// record into the queue and returns (no I/O, no lock held across anything slow).
/// Closing (in Rust: dropping) delivers or spools what is queued.
pub struct Producer {
    tx: Sender<Item>,
    shared: Arc<Shared>,
    /// The writer thread, to unpark it.
    writer: std::thread::Thread,
    thread: Option<JoinHandle<()>>,
    _lock: DirLock,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Producer {
    /// Check the configuration, lock and recover the spool directory, start the
    /// writer thread. Does not wait for Redis: the writer connects in the
    /// background, and events queue (then spool) until it does.
    pub fn open(config: ProducerConfig) -> Result<Producer, OpenError> {
        config.check().map_err(OpenError::Config)?;
        let client = redis::Client::open(config.redis_url.as_str())
            .map_err(|e| OpenError::Config(format!("redis_url: {e}")))?;
        let dir = config.spool_dir.clone();
        let io = |source| OpenError::Io {
            path: dir.clone(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(io)?;
        let lock = DirLock::acquire(&dir).map_err(io)?;
        let (state_file, state) = StateFile::open(&dir).map_err(io)?;
        let segment_max = (config.spool_max_bytes / 8).clamp(1 << 20, 64 << 20);
        let (spool, recovered) = Spool::open(&dir, state.read, segment_max).map_err(io)?;

        let (tx, rx): (Sender<Item>, Receiver<Item>) = bounded(config.queue_capacity);
        let shared = Arc::new(Shared::default());
        let writer = Writer::new(
            config,
            client,
            rx,
            Arc::clone(&shared),
            spool,
            recovered,
            state_file,
            state,
        );
        let thread = std::thread::Builder::new()
            .name("tc-producer".into())
            .spawn(move || writer.run())
            .map_err(io)?;
        Ok(Producer {
            tx,
            shared,
            writer: thread.thread().clone(),
            thread: Some(thread),
            _lock: lock,
        })
    }

    /// Queue a validated event. Never blocks.
    pub fn publish(&self, event: Event) -> Result<(), PublishError> {
        let item = Item::Event {
            event,
            emit_ms: now_ms(),
        };
        match self.tx.try_send(item) {
            Ok(()) => {
                self.shared.published.fetch_add(1, Relaxed);
                self.wake_writer();
                Ok(())
            }
            Err(TrySendError::Full(_)) => {
                self.shared.rejected_full.fetch_add(1, Relaxed);
                Err(PublishError::Full)
            }
            Err(TrySendError::Disconnected(_)) => Err(PublishError::Closed),
        }
    }

    /// A deal, with the IB chain to pay (empty: tradecast computes it). The
    /// record's own `ib_commissions` pointer is ignored here.
    pub fn publish_deal(&self, deal: &Deal, ib: &[IbCommission]) -> Result<(), PublishError> {
        self.publish(Event::deal(deal, ib).map_err(PublishError::Invalid)?)
    }

    pub fn publish_position(&self, position: &Position) -> Result<(), PublishError> {
        self.publish(Event::position(position).map_err(PublishError::Invalid)?)
    }

    pub fn publish_order(&self, order: &Order) -> Result<(), PublishError> {
        self.publish(Event::order(order).map_err(PublishError::Invalid)?)
    }

    pub fn publish_account(&self, account: &Account) -> Result<(), PublishError> {
        self.publish(Event::account(account).map_err(PublishError::Invalid)?)
    }

    pub fn publish_margin_call(&self, risk: &Risk) -> Result<(), PublishError> {
        self.publish(Event::margin_call(risk).map_err(PublishError::Invalid)?)
    }

    pub fn publish_stop_out(&self, risk: &Risk) -> Result<(), PublishError> {
        self.publish(Event::stop_out(risk).map_err(PublishError::Invalid)?)
    }

    pub fn publish_tick(&self, tick: &Tick) -> Result<(), PublishError> {
        self.publish(Event::tick(tick).map_err(PublishError::Invalid)?)
    }

    pub fn publish_ib_link(&self, link: &IbLink) -> Result<(), PublishError> {
        self.publish(Event::ib_link(link).map_err(PublishError::Invalid)?)
    }

    pub fn publish_symbol(&self, symbol: &Symbol) -> Result<(), PublishError> {
        self.publish(Event::symbol(symbol).map_err(PublishError::Invalid)?)
    }

    /// Wait until every event published before this call is in Redis (or
    /// `timeout` passes). Blocks the caller: not for trade-server callbacks.
    pub fn flush(&self, timeout: Duration) -> Result<(), FlushError> {
        let deadline = std::time::Instant::now() + timeout;
        let (done_tx, done_rx) = bounded(1);
        match self.tx.send_deadline(Item::Flush(done_tx), deadline) {
            Ok(()) => self.wake_writer(),
            Err(crossbeam_channel::SendTimeoutError::Timeout(_)) => {
                return Err(FlushError::Timeout);
            }
            Err(crossbeam_channel::SendTimeoutError::Disconnected(_)) => {
                return Err(FlushError::Closed);
            }
        }
        match done_rx.recv_deadline(deadline) {
            Ok(()) => Ok(()),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => Err(FlushError::Timeout),
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => Err(FlushError::Closed),
        }
    }

    /// The current counters.
    pub fn stats(&self) -> Stats {
        let s = &self.shared;
        Stats {
            published: s.published.load(Relaxed),
            rejected_full: s.rejected_full.load(Relaxed),
            queued: self.tx.len() as u64,
            delivered: s.delivered.load(Relaxed),
            duplicates_skipped: s.duplicates_skipped.load(Relaxed),
            spooled: s.spooled.load(Relaxed),
            spool_bytes: s.spool_bytes.load(Relaxed),
            next_seq: s.next_seq.load(Relaxed),
            next_tick_seq: s.next_tick_seq.load(Relaxed),
            redis_up: u32::from(s.redis_up.load(Relaxed)),
        }
    }

    /// Stop: the writer delivers what is queued (for up to `close_timeout`), spools
    /// the rest, fsyncs, records a clean stop and exits. Nothing accepted is lost:
    /// the next open replays the spool first.
    pub fn close(self) {}

    /// After queuing: unpark the writer if it is parked (the other half of the
    /// Dekker handshake in `Writer::take`). Lock-free; a futex wake only when the
    /// writer actually sleeps.
    fn wake_writer(&self) {
        fence(SeqCst);
        if self.shared.sleeping.load(SeqCst) {
            self.writer.unpark();
        }
    }

    fn shutdown(&mut self) {
        // Replace the sender with a dead one (the writer then sees the queue
        // disconnect once it has drained it), flag the close, wake the writer.
        let (dead, _) = bounded(0);
        drop(std::mem::replace(&mut self.tx, dead));
        self.shared.closing.store(true, SeqCst);
        self.writer.unpark();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// An exclusive lock on the spool directory (`lock` file, `flock` on Unix), so that
/// two producers never interleave one spool. Released when dropped (or when the
/// process dies).
#[derive(Debug)]
struct DirLock {
    _file: std::fs::File,
}

impl DirLock {
    fn acquire(dir: &std::path::Path) -> std::io::Result<DirLock> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("lock"))?;
        #[cfg(unix)]
        {
            use std::os::unix::io::AsRawFd;
            // SAFETY: flock on a descriptor we own.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
                let e = std::io::Error::last_os_error();
                return Err(std::io::Error::new(
                    e.kind(),
                    format!("locked by another producer ({e})"),
                ));
            }
        }
        Ok(DirLock { _file: file })
    }
}
