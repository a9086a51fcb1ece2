//! The writer thread: the only place that does I/O.
//!
//! It takes events from the queue in batches, gives each its `seq` from the
//! source's counter, serialises the ingest JSON and then either
//!
//! - delivers the batch to Redis in one pipeline ([`Sink::deliver`]), when Redis is
//!   up and the spool is empty, or
//! - appends it to the spool, when Redis is down or the spool still holds older
//!   events (so that nothing overtakes them).
//!
//! Between batches it reconnects to Redis (with backoff: 50 ms doubling to 1 s)
//! and replays the spool in order, one batch at a time, while still taking new
//! events from the queue into the spool behind the backlog. A batch whose delivery
//! failed goes to the spool too: the idempotent script makes the resend harmless if
//! Redis had applied it after all.

use std::sync::Arc;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::atomic::fence;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError};

use crate::event::{Envelope, Event};
use crate::producer::{Fsync, Item, LogLevel, ProducerConfig, Shared};
use crate::sink::Sink;
use crate::spool::{Pos, Record, Recovered, Spool};
use crate::state::{State, StateFile};

/// Seqs reserved (fsynced in the state file) ahead of use.
const RESERVE: u64 = 1024;
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Longest idle wait: bounds how late periodic work (fsync interval) runs.
const IDLE: Duration = Duration::from_millis(500);
/// Pause before retrying a failed spool write (disk full, …).
const SPOOL_RETRY: Duration = Duration::from_millis(100);

/// Which counter an event uses.
#[derive(Clone, Copy)]
enum Feed {
    Events = 0,
    Ticks = 1,
}

pub(crate) struct Writer {
    config: ProducerConfig,
    client: redis::Client,
    rx: Receiver<Item>,
    shared: Arc<Shared>,
    sink: Option<Sink>,
    next_attempt: Instant,
    backoff: Duration,
    /// Why Redis is down, while it is (logged once per outage).
    down_reason: Option<String>,
    spool: Spool,
    recovered: Recovered,
    state_file: StateFile,
    state: State,
    state_dirty: bool,
    /// Index in `state.counters` of each feed's counter.
    counter: [usize; 2],
    srcs: [Arc<str>; 2],
    /// Events streams (one, or one per partition), then the tick stream.
    events_streams: Vec<Arc<str>>,
    ticks_stream: Arc<str>,
    /// Flushes waiting for the spool to be replayed up to a position.
    flushes: Vec<(Pos, Sender<()>)>,
    last_sync: Instant,
    taken: Vec<(Event, u64)>,
    batch: Vec<Record>,
    replay: Vec<Record>,
}

impl Writer {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        config: ProducerConfig,
        client: redis::Client,
        rx: Receiver<Item>,
        shared: Arc<Shared>,
        spool: Spool,
        recovered: Recovered,
        state_file: StateFile,
        mut state: State,
    ) -> Writer {
        let events_streams: Vec<Arc<str>> = if config.partitions == 0 {
            vec![Arc::from(config.events_stream.as_str())]
        } else {
            (0..config.partitions)
                .map(|n| Arc::from(format!("{}:{{{n}}}", config.events_stream)))
                .collect()
        };
        let ticks_stream: Arc<str> = Arc::from(config.ticks_stream.as_str());
        let srcs: [Arc<str>; 2] = [
            Arc::from(config.source.as_str()),
            Arc::from(config.ticks_source.as_str()),
        ];
        // Create both counters first, then take their indexes (they may be one).
        state.counter(&srcs[0]);
        state.counter(&srcs[1]);
        let index = |s: &State, src: &str| {
            s.counters
                .iter()
                .position(|c| c.src == src)
                .expect("created above")
        };
        let counter = [index(&state, &srcs[0]), index(&state, &srcs[1])];
        Writer {
            config,
            client,
            rx,
            shared,
            sink: None,
            next_attempt: Instant::now(),
            backoff: BACKOFF_MIN,
            down_reason: None,
            spool,
            recovered,
            state_file,
            state,
            state_dirty: false,
            counter,
            srcs,
            events_streams,
            ticks_stream,
            flushes: Vec::new(),
            last_sync: Instant::now(),
            taken: Vec::new(),
            batch: Vec::new(),
            replay: Vec::new(),
        }
    }

    fn log(&self, level: LogLevel, message: &str) {
        if let Some(log) = &self.config.log {
            log(level, message);
        }
    }

    pub(crate) fn run(mut self) {
        background_priority();
        self.startup();
        loop {
            let closed = self.take();
            if !self.taken.is_empty() {
                let taken = std::mem::take(&mut self.taken);
                self.handle(taken, false);
            }
            self.maintain();
            if closed {
                break;
            }
        }
        self.shutdown();
    }

    /// Resume the counters (see `state.rs`) and mark the state unclean.
    fn startup(&mut self) {
        let was_clean = self.state.clean;
        self.try_connect();
        let mut from_redis = [0u64; 2];
        let mut asked_redis = false;
        if let Some(sink) = &mut self.sink {
            let mut all = self.events_streams.clone();
            all.push(Arc::clone(&self.ticks_stream));
            let events = sink.high_water_of(&all, &self.srcs[0]);
            let ticks = sink.high_water_of(&all, &self.srcs[1]);
            if let (Ok(e), Ok(t)) = (events, ticks) {
                from_redis = [e, t];
                asked_redis = true;
            }
        }
        for feed in [Feed::Events, Feed::Ticks] {
            let src = self.srcs[feed as usize].to_string();
            let spooled = self.recovered.last_seq.get(&src).copied().unwrap_or(0);
            let c = &mut self.state.counters[self.counter[feed as usize]];
            let mut next = c.next.max(spooled + 1).max(from_redis[feed as usize] + 1);
            if !was_clean && !asked_redis {
                // Redis cannot tell what it already has: never reuse a number.
                next = next.max(c.reserved + 1);
            }
            c.next = next.max(1);
            c.reserved = c.reserved.max(c.next - 1);
        }
        if self.recovered.records > 0 {
            let message = format!(
                "spool holds {} events from before the restart; replaying them first",
                self.recovered.records
            );
            self.log(LogLevel::Info, &message);
        }
        if self.recovered.discarded_bytes > 0 {
            let message = format!(
                "spool: cut {} bytes of a torn or corrupt record",
                self.recovered.discarded_bytes
            );
            self.log(LogLevel::Warn, &message);
        }
        self.state.clean = false;
        self.state.read = self.spool.read_pos();
        self.save_state(true);
        self.publish_stats();
    }

    /// May the writer take more events from the queue? Not while the spool is over
    /// its limit (the queue then fills and publishes fail fast with `Full`).
    fn accepting(&self) -> bool {
        let direct = self.sink.is_some() && self.spool.is_empty();
        direct || self.spool.live_bytes() < self.config.spool_max_bytes
    }

    /// How long to wait for the next event.
    fn wait(&self) -> Duration {
        if self.sink.is_some() && !self.spool.is_empty() {
            return Duration::ZERO; // replay to do
        }
        let mut wait = IDLE;
        if self.sink.is_none() {
            wait = wait.min(self.next_attempt.saturating_duration_since(Instant::now()));
        }
        if let Fsync::Interval(every) = self.config.fsync
            && self.spool.unsynced()
        {
            wait = wait.min((self.last_sync + every).saturating_duration_since(Instant::now()));
        }
        wait
    }

    /// Wait for and take up to `batch_max` events into `self.taken`, stopping after
    /// a flush marker (handled once the events before it are). Returns true once the
    /// producer is closing.
    ///
    /// The writer never blocks inside the channel: it polls it and parks itself
    /// (`park_timeout`), and a publish call that finds it parked unparks it. So the
    /// publish path shares no lock with this thread (a channel's blocking receive
    /// would make every send take the channel's waker lock, and a descheduled writer
    /// holding it would stall the trade server's thread).
    fn take(&mut self) -> bool {
        let accepting = self.accepting();
        let mut first = None;
        if accepting {
            match self.rx.try_recv() {
                Ok(item) => first = Some(item),
                Err(TryRecvError::Empty) => {}
                Err(TryRecvError::Disconnected) => return true,
            }
        }
        if first.is_none() {
            let wait = self.wait();
            if !wait.is_zero() {
                // Dekker with `Producer::wake_writer`: either the publisher sees
                // `sleeping` and unparks, or this thread sees its event. While not
                // accepting, publishers need not wake it (close always does).
                if accepting {
                    self.shared.sleeping.store(true, SeqCst);
                    fence(SeqCst);
                }
                let idle = !accepting || self.rx.is_empty();
                if idle && !self.shared.closing.load(SeqCst) {
                    std::thread::park_timeout(wait);
                }
                self.shared.sleeping.store(false, SeqCst);
            }
            if self.shared.closing.load(SeqCst) {
                return true;
            }
            if accepting {
                match self.rx.try_recv() {
                    Ok(item) => first = Some(item),
                    Err(TryRecvError::Empty) => {}
                    Err(TryRecvError::Disconnected) => return true,
                }
            }
        }
        let mut next = first;
        while let Some(item) = next {
            match item {
                Item::Event { event, emit_ms } => self.taken.push((event, emit_ms)),
                Item::Flush(done) => {
                    let taken = std::mem::take(&mut self.taken);
                    self.handle(taken, false);
                    self.flush_marker(done);
                }
            }
            if self.taken.len() >= self.config.batch_max {
                break;
            }
            next = match self.rx.try_recv() {
                Ok(item) => Some(item),
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Disconnected) => return true,
            };
        }
        false
    }

    /// Number, serialise and deliver (or spool) a batch of events.
    fn handle(&mut self, taken: Vec<(Event, u64)>, closing: bool) {
        if taken.is_empty() {
            self.taken = taken;
            return;
        }
        self.reserve(&taken);
        let mut batch = std::mem::take(&mut self.batch);
        batch.clear();
        for (event, emit_ms) in &taken {
            let feed = if event.is_tick() {
                Feed::Ticks
            } else {
                Feed::Events
            };
            let c = &mut self.state.counters[self.counter[feed as usize]];
            let seq = c.next;
            c.next += 1;
            let stream = match (event.is_tick(), event.login()) {
                (true, _) => Arc::clone(&self.ticks_stream),
                (false, login) => {
                    let n = self.events_streams.len() as u64;
                    Arc::clone(&self.events_streams[(login.unwrap_or(0) % n) as usize])
                }
            };
            let mut d = String::with_capacity(320);
            event.write_json(
                &Envelope {
                    src: &self.srcs[feed as usize],
                    seq,
                    emit_ms: *emit_ms,
                    tz_offset_minutes: self.config.tz_offset_minutes,
                },
                &mut d,
            );
            batch.push(Record {
                stream,
                src: Arc::clone(&self.srcs[feed as usize]),
                seq,
                d,
            });
        }
        self.state_dirty = true;
        let mut taken = taken;
        taken.clear();
        self.taken = taken;

        let direct = self.sink.is_some() && self.spool.is_empty();
        if direct {
            let sink = self.sink.as_mut().expect("checked");
            match sink.deliver(&batch) {
                Ok(done) => self.delivered(done.added, done.skipped),
                Err(e) => {
                    self.down(&e);
                    self.spool_append(&batch, closing);
                }
            }
        } else {
            self.spool_append(&batch, closing);
        }
        self.batch = batch;
        // Before any flush marker behind this batch completes.
        self.publish_stats();
    }

    /// Make sure the counters' reservations cover the seqs this batch takes.
    fn reserve(&mut self, taken: &[(Event, u64)]) {
        let ticks = taken.iter().filter(|(e, _)| e.is_tick()).count() as u64;
        let need = [taken.len() as u64 - ticks, ticks];
        let mut bumped = false;
        for feed in [Feed::Events, Feed::Ticks] {
            let c = &mut self.state.counters[self.counter[feed as usize]];
            let last = c.next + need[feed as usize];
            if last > c.reserved {
                c.reserved = last + RESERVE;
                bumped = true;
            }
        }
        if bumped {
            self.save_state(true);
        }
    }

    fn delivered(&mut self, added: u64, skipped: u64) {
        self.shared.delivered.fetch_add(added + skipped, Relaxed);
        self.shared.duplicates_skipped.fetch_add(skipped, Relaxed);
    }

    /// Append to the spool, retrying on disk errors (the queue absorbs events in the
    /// meantime, then publishes fail with `Full`). While closing, give up after the
    /// close timeout (the events are then lost, and logged as such).
    fn spool_append(&mut self, records: &[Record], closing: bool) {
        let started = Instant::now();
        let mut logged = false;
        loop {
            match self.spool.append(records) {
                Ok(()) => break,
                Err(e) => {
                    if !logged {
                        let message = format!("cannot write the spool: {e}; retrying");
                        self.log(LogLevel::Error, &message);
                        logged = true;
                    }
                    if closing && started.elapsed() > self.config.close_timeout {
                        let message = format!(
                            "closing: {} events could not be spooled and are lost",
                            records.len()
                        );
                        self.log(LogLevel::Error, &message);
                        return;
                    }
                    std::thread::sleep(SPOOL_RETRY);
                }
            }
        }
        self.shared.spooled.fetch_add(records.len() as u64, Relaxed);
        if self.config.fsync == Fsync::Batch {
            self.sync_spool();
        }
    }

    fn sync_spool(&mut self) {
        if let Err(e) = self.spool.sync() {
            let message = format!("fsync of the spool failed: {e}");
            self.log(LogLevel::Error, &message);
        }
        self.last_sync = Instant::now();
    }

    /// A flush marker, after the events before it were handled: done now if nothing
    /// waits in the spool, else when replay passes the spool's current end.
    fn flush_marker(&mut self, done: Sender<()>) {
        if self.spool.is_empty() {
            let _ = done.send(());
        } else {
            self.flushes.push((self.spool.end_pos(), done));
        }
    }

    /// Everything between batches: reconnect, replay, fsync, flushes, state, stats.
    fn maintain(&mut self) {
        if self.sink.is_none() && Instant::now() >= self.next_attempt {
            self.try_connect();
        }
        if self.sink.is_some() && !self.spool.is_empty() {
            self.replay_some();
        }
        if let Fsync::Interval(every) = self.config.fsync
            && self.spool.unsynced()
            && self.last_sync.elapsed() >= every
        {
            self.sync_spool();
        }
        if !self.flushes.is_empty() {
            let read = self.spool.read_pos();
            let empty = self.spool.is_empty();
            self.flushes.retain(|(pos, done)| {
                if empty || read >= *pos {
                    let _ = done.send(());
                    false
                } else {
                    true
                }
            });
        }
        if self.state_dirty {
            self.save_state(false);
        }
        self.publish_stats();
    }

    /// Send the next batch of the spool; on success move the read position on.
    fn replay_some(&mut self) {
        let mut replay = std::mem::take(&mut self.replay);
        replay.clear();
        let end = match self.spool.peek(self.config.batch_max, &mut replay) {
            Ok(end) => end,
            Err(e) => {
                let message = format!("cannot read the spool: {e}");
                self.log(LogLevel::Error, &message);
                self.replay = replay;
                return;
            }
        };
        let sink = self.sink.as_mut().expect("called with a sink");
        match sink.deliver(&replay) {
            Ok(done) => {
                self.delivered(done.added, done.skipped);
                if let Err(e) = self.spool.commit(end) {
                    let message = format!("cannot delete a replayed spool segment: {e}");
                    self.log(LogLevel::Error, &message);
                }
                self.state.read = self.spool.read_pos();
                self.state_dirty = true;
                if self.spool.is_empty() {
                    self.log(LogLevel::Info, "spool replayed: delivering directly again");
                }
            }
            Err(e) => self.down(&e),
        }
        self.replay = replay;
    }

    fn try_connect(&mut self) {
        match Sink::connect(
            &self.client,
            self.config.connect_timeout,
            self.config.io_timeout,
            self.config.stream_maxlen,
        ) {
            Ok(sink) => {
                self.sink = Some(sink);
                self.backoff = BACKOFF_MIN;
                self.shared.redis_up.store(true, Relaxed);
                if self.down_reason.take().is_some() {
                    let message = if self.spool.is_empty() {
                        "Redis reachable again".to_owned()
                    } else {
                        format!(
                            "Redis reachable again: replaying {} spooled bytes",
                            self.spool.live_bytes()
                        )
                    };
                    self.log(LogLevel::Info, &message);
                }
            }
            Err(e) => {
                self.down(&e);
            }
        }
    }

    /// Redis failed: drop the connection, schedule a reconnect, say so once.
    fn down(&mut self, error: &redis::RedisError) {
        self.sink = None;
        self.shared.redis_up.store(false, Relaxed);
        self.next_attempt = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        let reason = error.to_string();
        if self.down_reason.as_deref() != Some(reason.as_str()) {
            let message = format!("Redis unavailable ({reason}): spooling events");
            self.log(LogLevel::Warn, &message);
            self.down_reason = Some(reason);
        }
    }

    fn save_state(&mut self, sync: bool) {
        if let Err(e) = self.state_file.save(&mut self.state, sync) {
            let message = format!("cannot write the state file: {e}");
            self.log(LogLevel::Error, &message);
        }
        self.state_dirty = false;
    }

    fn publish_stats(&self) {
        let s = &self.shared;
        s.spool_bytes.store(self.spool.live_bytes(), Relaxed);
        s.next_seq
            .store(self.state.counters[self.counter[0]].next, Relaxed);
        s.next_tick_seq
            .store(self.state.counters[self.counter[1]].next, Relaxed);
    }

    /// Close: drain the queue (delivering while Redis answers and the close timeout
    /// lasts, spooling otherwise, whatever the spool limit), replay what time allows,
    /// fsync, and record a clean stop.
    fn shutdown(&mut self) {
        let deadline = Instant::now() + self.config.close_timeout;
        loop {
            let mut taken = std::mem::take(&mut self.taken);
            let mut marker = None;
            while taken.len() < self.config.batch_max {
                match self.rx.try_recv() {
                    Ok(Item::Event { event, emit_ms }) => taken.push((event, emit_ms)),
                    Ok(Item::Flush(done)) => {
                        marker = Some(done);
                        break;
                    }
                    Err(_) => break,
                }
            }
            let more = !taken.is_empty() || marker.is_some();
            if Instant::now() >= deadline && self.sink.is_some() {
                // Out of time: everything else goes to the spool.
                self.sink = None;
                self.shared.redis_up.store(false, Relaxed);
            }
            self.handle(taken, true);
            if let Some(done) = marker {
                self.flush_marker(done);
            }
            if !more {
                break;
            }
        }
        while self.sink.is_some() && !self.spool.is_empty() && Instant::now() < deadline {
            self.replay_some();
        }
        self.sync_spool();
        let read = self.spool.read_pos();
        let empty = self.spool.is_empty();
        for (pos, done) in self.flushes.drain(..) {
            if empty || read >= pos {
                let _ = done.send(());
            }
        }
        self.state.read = read;
        self.state.clean = true;
        self.save_state(true);
        self.publish_stats();
        if !empty {
            let message = format!(
                "closed with {} bytes in the spool: they are replayed first on the next open",
                self.spool.live_bytes()
            );
            self.log(LogLevel::Info, &message);
        }
    }
}

/// Make the writer a background thread for the scheduler, so that waking it (a
/// publish into an empty queue) never preempts the trade server's thread that
/// published. On Linux: `SCHED_BATCH`, which the kernel never lets preempt a normal
/// thread on wakeup. Elsewhere nothing is changed (on Windows a plugin may lower the
/// thread's priority itself).
fn background_priority() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: pid 0 is the calling thread; the parameter is valid for SCHED_BATCH.
        // Failure (e.g. a seccomp policy) only loses the optimisation.
        let _ = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
    }
}
