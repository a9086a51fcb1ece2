//! The C ABI: `tc_producer_open`, `tc_publish_*`, `tc_producer_flush`,
//! `tc_producer_close`, `tc_producer_stats`, `tc_last_error`.
//!
//! Every function catches panics (none is expected) so that nothing unwinds into
//! the trade server, and reports failures as an `int` code plus a message that
//! `tc_last_error()` returns on the same thread.

use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Duration;

use crate::producer::{Fsync, LogFn, LogLevel, Producer, ProducerConfig, PublishError, Stats};
use crate::records::*;

/// The log callback of `tc_config.log`.
type LogCallback = unsafe extern "C" fn(user: *mut c_void, level: i32, message: *const c_char);

/// Configuration of `tc_producer_open`. Zero / NULL fields take their defaults, so
/// `tc_config cfg = {0};` plus the three required strings is a working config.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Required: `redis://host:port/db`.
    pub redis_url: *const c_char,
    /// Required: the trade server's id, the `src` of trade events (≤ 255 bytes).
    pub source: *const c_char,
    /// The `src` of ticks, with its own seq counter (NULL: `<source>/ticks`).
    pub ticks_source: *const c_char,
    /// NULL: `tc:events`.
    pub events_stream: *const c_char,
    /// NULL: `tc:ticks`.
    pub ticks_stream: *const c_char,
    /// Required: directory of the spool and the seq counters (created if missing).
    pub spool_dir: *const c_char,
    /// 0: one events stream; N: `<events>:{login mod N}` (as `tradecast --partitions`).
    pub partitions: u32,
    /// Events the in-memory queue holds (0: 16384).
    pub queue_capacity: u32,
    /// Events per pipelined batch (0: 512).
    pub batch_max: u32,
    /// 0: 500 ms.
    pub connect_timeout_ms: u32,
    /// One Redis round trip (0: 2000 ms).
    pub io_timeout_ms: u32,
    /// How long close may deliver before it spools the rest (0: 2000 ms).
    pub close_timeout_ms: u32,
    /// `TC_FSYNC_BATCH` (0, default), `TC_FSYNC_INTERVAL` or `TC_FSYNC_NEVER`.
    pub fsync: u32,
    /// For `TC_FSYNC_INTERVAL` (0: 1000 ms).
    pub fsync_interval_ms: u32,
    /// The trade server's time zone, minutes east of UTC (`IMTConServer::TimeZone()`).
    pub tz_offset_minutes: i32,
    /// Unreplayed spool bytes at which the writer stops taking events (0: 1 GiB).
    pub spool_max_bytes: u64,
    /// `XADD MAXLEN ~ n` on every stream (0: no trimming).
    pub stream_maxlen: u64,
    /// Optional log callback: `level` is `TC_LOG_ERROR`, `TC_LOG_WARN` or
    /// `TC_LOG_INFO`; `message` is valid during the call only. Called on the
    /// producer's writer thread.
    pub log: Option<unsafe extern "C" fn(user: *mut c_void, level: i32, message: *const c_char)>,
    /// Passed back to `log`.
    pub log_user: *mut c_void,
}

impl Default for Config {
    fn default() -> Self {
        // SAFETY: integers, NULL pointers and a None function pointer are all zeros.
        unsafe { std::mem::zeroed() }
    }
}

/// The last error of this thread.
enum LastError {
    None,
    Static(&'static CStr),
    Owned(CString),
}

thread_local! {
    static LAST_ERROR: RefCell<LastError> = const { RefCell::new(LastError::None) };
}

fn set_error(message: &str) {
    let c = CString::new(message.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = LastError::Owned(c));
}

fn set_static_error(message: &'static CStr) {
    LAST_ERROR.with(|e| *e.borrow_mut() = LastError::Static(message));
}

/// Run `f`, turning a panic into `fallback` and an error message.
fn guard<T>(fallback: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
        set_static_error(c"internal error (panic) in tradecast-producer");
        fallback
    })
}

fn publish_result(result: Result<(), PublishError>) -> i32 {
    match result {
        Ok(()) => TC_OK,
        Err(PublishError::Full) => {
            // The overload path: no allocation.
            set_static_error(c"queue full: Redis cannot keep up and the spool is full");
            TC_ERR_FULL
        }
        Err(e) => {
            set_error(&e.to_string());
            e.code()
        }
    }
}

fn null_argument() -> i32 {
    set_static_error(c"NULL argument");
    TC_ERR_INVALID
}

/// A C string field of the config: `Ok(None)` for NULL.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string.
unsafe fn config_str(p: *const c_char, name: &str) -> Result<Option<String>, String> {
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: the caller's contract.
    let s = unsafe { CStr::from_ptr(p) };
    s.to_str()
        .map(|s| Some(s.to_owned()))
        .map_err(|_| format!("{name} is not UTF-8"))
}

/// The C log callback and its user pointer, callable from the writer thread.
struct CLog {
    f: LogCallback,
    user: *mut c_void,
}

// SAFETY: the plugin hands the callback and its pointer over for use on the writer
// thread (documented on `tc_config.log`).
unsafe impl Send for CLog {}
unsafe impl Sync for CLog {}

impl CLog {
    fn call(&self, level: LogLevel, message: &str) {
        let c = CString::new(message.replace('\0', " ")).unwrap_or_default();
        // SAFETY: the plugin's callback, with a valid NUL-terminated message.
        unsafe { (self.f)(self.user, level as i32, c.as_ptr()) };
    }
}

fn ms_or(value: u32, default_ms: u64) -> Duration {
    Duration::from_millis(if value == 0 {
        default_ms
    } else {
        u64::from(value)
    })
}

/// # Safety
/// The string pointers of `c` are NULL or valid NUL-terminated strings.
unsafe fn producer_config(c: &Config) -> Result<ProducerConfig, String> {
    // SAFETY (all `config_str` calls): the caller's contract.
    let required = |p, name: &str| -> Result<String, String> {
        unsafe { config_str(p, name) }?
            .filter(|s| !s.is_empty())
            .ok_or_else(|| format!("{name} is required"))
    };
    let redis_url = required(c.redis_url, "redis_url")?;
    let source = required(c.source, "source")?;
    let spool_dir = required(c.spool_dir, "spool_dir")?;
    let mut config = ProducerConfig::new(&redis_url, &source, spool_dir);
    if let Some(s) = unsafe { config_str(c.ticks_source, "ticks_source") }? {
        config.ticks_source = s;
    }
    if let Some(s) = unsafe { config_str(c.events_stream, "events_stream") }? {
        config.events_stream = s;
    }
    if let Some(s) = unsafe { config_str(c.ticks_stream, "ticks_stream") }? {
        config.ticks_stream = s;
    }
    config.partitions = c.partitions;
    if c.queue_capacity > 0 {
        config.queue_capacity = c.queue_capacity as usize;
    }
    if c.batch_max > 0 {
        config.batch_max = c.batch_max as usize;
    }
    config.connect_timeout = ms_or(c.connect_timeout_ms, 500);
    config.io_timeout = ms_or(c.io_timeout_ms, 2000);
    config.close_timeout = ms_or(c.close_timeout_ms, 2000);
    config.fsync = match c.fsync {
        TC_FSYNC_BATCH => Fsync::Batch,
        TC_FSYNC_INTERVAL => Fsync::Interval(ms_or(c.fsync_interval_ms, 1000)),
        TC_FSYNC_NEVER => Fsync::Never,
        other => return Err(format!("fsync: unknown policy {other}")),
    };
    config.tz_offset_minutes = c.tz_offset_minutes;
    if c.spool_max_bytes > 0 {
        config.spool_max_bytes = c.spool_max_bytes;
    }
    config.stream_maxlen = c.stream_maxlen;
    if let Some(f) = c.log {
        let clog = CLog {
            f,
            user: c.log_user,
        };
        let log: LogFn = Arc::new(move |level, message| clog.call(level, message));
        config.log = Some(log);
    }
    Ok(config)
}

/// Open a producer. Returns NULL on failure; `tc_last_error()` says why (a bad
/// config, or a spool directory that cannot be created or is locked by another
/// producer). Does not wait for Redis.
///
/// # Safety
/// `config` is NULL or points to a valid `tc_config` whose strings are NULL or
/// NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tc_producer_open(config: *const Config) -> *mut Producer {
    guard(std::ptr::null_mut(), || {
        // SAFETY: the caller's contract.
        let Some(c) = (unsafe { config.as_ref() }) else {
            null_argument();
            return std::ptr::null_mut();
        };
        // SAFETY: the caller's contract.
        let config = match unsafe { producer_config(c) } {
            Ok(config) => config,
            Err(e) => {
                set_error(&format!("invalid configuration: {e}"));
                return std::ptr::null_mut();
            }
        };
        match Producer::open(config) {
            Ok(p) => Box::into_raw(Box::new(p)),
            Err(e) => {
                set_error(&e.to_string());
                std::ptr::null_mut()
            }
        }
    })
}

/// The body of every `tc_publish_*` but the deal's.
///
/// # Safety
/// `producer` is NULL or an open handle; `record` is NULL or valid for reads.
unsafe fn publish_with<T>(
    producer: *mut Producer,
    record: *const T,
    publish: impl FnOnce(&Producer, &T) -> Result<(), PublishError>,
) -> i32 {
    guard(TC_ERR_INVALID, || {
        // SAFETY: the caller's contract.
        let (Some(p), Some(r)) = (unsafe { producer.as_ref() }, unsafe { record.as_ref() }) else {
            return null_argument();
        };
        publish_result(publish(p, r))
    })
}

/// Publish a position event (`op`: `TC_POSITION_OPEN`, `_UPDATE`, `_CLOSE`).
///
/// Copies the record into the queue and returns `TC_OK`, `TC_ERR_FULL` (queue full,
/// nothing taken), `TC_ERR_INVALID` (see `tc_last_error()`) or `TC_ERR_CLOSED`.
/// Never blocks, never does I/O; safe from any thread.
///
/// # Safety
/// `producer` is NULL or an open handle; `position` is NULL or valid for reads.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tc_publish_position(
    producer: *mut Producer,
    position: *const Position,
) -> i32 {
    // SAFETY: the caller's contract.
    unsafe { publish_with(producer, position, Producer::publish_position) }
}

/// Publish an order event (`op`: `TC_ORDER_ADD`, `_UPDATE`, `_DELETE`).
///
/// Copies the record into the queue and returns `TC_OK`, `TC_ERR_FULL` (queue full,
/// nothing taken), `TC_ERR_INVALID` (see `tc_last_error()`) or `TC_ERR_CLOSED`.
/// Never blocks, never does I/O; safe from any thread.
///
/// # Safety
/// `producer` is NULL or an open handle; `order` is NULL or valid for reads.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tc_publish_order(producer: *mut Producer, order: *const Order) -> i32 {
    // SAFETY: the caller's contract.
    unsafe { publish_with(producer, order, Producer::publish_order) }
}

/// Publish an account: the holder and its money state.
///
/// Copies the record into the queue and returns `TC_OK`, `TC_ERR_FULL` (queue full,
/// nothing taken), `TC_ERR_INVALID` (see `tc_last_error()`) or `TC_ERR_CLOSED`.
/// Never blocks, never does I/O; safe from any thread.
///
/// # Safety
/// `producer` is NULL or an open handle; `account` is NULL or valid for reads.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tc_publish_account(
    producer: *mut Producer,
    account: *const Account,
) -> i32 {
    // SAFETY: the caller's contract.
    unsafe { publish_with(producer, account, Producer::publish_account) }
}

/// Publish a tick (to the tick stream, under the tick source).
///
/// Copies the record into the queue and returns `TC_OK`, `TC_ERR_FULL` (queue full,
/// nothing taken), `TC_ERR_INVALID` (see `tc_last_error()`) or `TC_ERR_CLOSED`.
/// Never blocks, never does I/O; safe from any thread.
///
/// # Safety
/// `producer` is NULL or an open handle; `tick` is NULL or valid for reads.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tc_publish_tick(producer: *mut Producer, tick: *const Tick) -> i32 {
    // SAFETY: the caller's contract.
    unsafe { publish_with(producer, tick, Producer::publish_tick) }
}

/// Publish a link of the IB tree (`op`: `TC_IB_LINK_SET`, `TC_IB_LINK_REMOVE`).
///
/// Copies the record into the queue and returns `TC_OK`, `TC_ERR_FULL` (queue full,
/// nothing taken), `TC_ERR_INVALID` (see `tc_last_error()`) or `TC_ERR_CLOSED`.
/// Never blocks, never does I/O; safe from any thread.
///
/// # Safety
/// `producer` is NULL or an open handle; `link` is NULL or valid for reads.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tc_publish_ib_link(producer: *mut Producer, link: *const IbLink) -> i32 {
    // SAFETY: the caller's contract.
    unsafe { publish_with(producer, link, Producer::publish_ib_link) }
}

/// Publish a symbol's specification (its price group and currencies).
///
/// Copies the record into the queue and returns `TC_OK`, `TC_ERR_FULL` (queue full,
/// nothing taken), `TC_ERR_INVALID` (see `tc_last_error()`) or `TC_ERR_CLOSED`.
/// Never blocks, never does I/O; safe from any thread.
///
/// # Safety
/// `producer` is NULL or an open handle; `symbol` is NULL or valid for reads.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tc_publish_symbol(producer: *mut Producer, symbol: *const Symbol) -> i32 {
    // SAFETY: the caller's contract.
    unsafe { publish_with(producer, symbol, Producer::publish_symbol) }
}

/// Publish a margin-call crossing (`op`: `TC_RISK_ENTER`, `TC_RISK_LEAVE`).
///
/// Copies the record into the queue and returns `TC_OK`, `TC_ERR_FULL` (queue full,
/// nothing taken), `TC_ERR_INVALID` (see `tc_last_error()`) or `TC_ERR_CLOSED`.
/// Never blocks, never does I/O; safe from any thread.
///
/// # Safety
/// `producer` is NULL or an open handle; `risk` is NULL or valid for reads.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tc_publish_margin_call(producer: *mut Producer, risk: *const Risk) -> i32 {
    // SAFETY: the caller's contract.
    unsafe { publish_with(producer, risk, Producer::publish_margin_call) }
}

/// Publish a stop-out crossing (`op`: `TC_RISK_ENTER`, `TC_RISK_LEAVE`).
///
/// Copies the record into the queue and returns `TC_OK`, `TC_ERR_FULL` (queue full,
/// nothing taken), `TC_ERR_INVALID` (see `tc_last_error()`) or `TC_ERR_CLOSED`.
/// Never blocks, never does I/O; safe from any thread.
///
/// # Safety
/// `producer` is NULL or an open handle; `risk` is NULL or valid for reads.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tc_publish_stop_out(producer: *mut Producer, risk: *const Risk) -> i32 {
    // SAFETY: the caller's contract.
    unsafe { publish_with(producer, risk, Producer::publish_stop_out) }
}

/// Publish a deal. Its `ib_commissions` array (if any) is copied during the call.
///
/// Returns `TC_OK`, `TC_ERR_FULL`, `TC_ERR_INVALID` or `TC_ERR_CLOSED`; never
/// blocks, never does I/O; safe from any thread.
///
/// # Safety
/// `producer` is NULL or an open handle; `deal` is NULL or valid for reads, and its
/// `ib_commissions` is NULL or points to `ib_commissions_count` elements.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tc_publish_deal(producer: *mut Producer, deal: *const Deal) -> i32 {
    guard(TC_ERR_INVALID, || {
        // SAFETY: the caller's contract.
        let (Some(p), Some(d)) = (unsafe { producer.as_ref() }, unsafe { deal.as_ref() }) else {
            return null_argument();
        };
        let ib: &[IbCommission] = if d.ib_commissions.is_null() || d.ib_commissions_count == 0 {
            &[]
        } else {
            // SAFETY: the caller's contract.
            unsafe { std::slice::from_raw_parts(d.ib_commissions, d.ib_commissions_count as usize) }
        };
        publish_result(p.publish_deal(d, ib))
    })
}

/// Wait up to `timeout_ms` until every event published before the call is in Redis:
/// `TC_OK`, or `TC_ERR_TIMEOUT` (e.g. Redis is down: the events wait in the spool).
/// Blocks: call it from a plugin's shutdown or a maintenance thread, not from a
/// trade-server callback.
///
/// # Safety
/// `producer` is NULL or an open handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tc_producer_flush(producer: *mut Producer, timeout_ms: u32) -> i32 {
    guard(TC_ERR_INVALID, || {
        // SAFETY: the caller's contract.
        let Some(p) = (unsafe { producer.as_ref() }) else {
            return null_argument();
        };
        match p.flush(Duration::from_millis(u64::from(timeout_ms))) {
            Ok(()) => TC_OK,
            Err(crate::producer::FlushError::Timeout) => {
                set_static_error(c"flush timed out: events are still queued or spooled");
                TC_ERR_TIMEOUT
            }
            Err(crate::producer::FlushError::Closed) => {
                set_static_error(c"producer closed");
                TC_ERR_CLOSED
            }
        }
    })
}

/// Copy the producer's counters into `*out`.
///
/// # Safety
/// `producer` is NULL or an open handle; `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tc_producer_stats(producer: *mut Producer, out: *mut Stats) -> i32 {
    guard(TC_ERR_INVALID, || {
        // SAFETY: the caller's contract.
        let (Some(p), Some(out)) = (unsafe { producer.as_ref() }, unsafe { out.as_mut() }) else {
            return null_argument();
        };
        *out = p.stats();
        TC_OK
    })
}

/// Close and free the producer: deliver what is queued (up to `close_timeout_ms`),
/// spool the rest, fsync, stop the writer thread. NULL is ignored. No other thread
/// may use the handle during or after the call.
///
/// # Safety
/// `producer` is NULL or an open handle, not used again afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn tc_producer_close(producer: *mut Producer) {
    guard((), || {
        if !producer.is_null() {
            // SAFETY: the handle came from `Box::into_raw` in `tc_producer_open`.
            drop(unsafe { Box::from_raw(producer) });
        }
    })
}

/// The message of this thread's last failed call ("" if none). Valid until the
/// next call into the library on the same thread.
#[unsafe(no_mangle)]
pub extern "C" fn tc_last_error() -> *const c_char {
    LAST_ERROR.with(|e| match &*e.borrow() {
        LastError::None => c"".as_ptr(),
        LastError::Static(s) => s.as_ptr(),
        LastError::Owned(s) => s.as_ptr(),
    })
}

/// `TC_ABI_VERSION` of the library actually loaded.
#[unsafe(no_mangle)]
pub extern "C" fn tc_abi_version() -> u32 {
    TC_ABI_VERSION
}
