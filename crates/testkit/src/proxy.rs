//! A loopback TCP proxy that misbehaves on command: the network faults of a test.
//!
//! A [`Proxy`] listens on `127.0.0.1:0` and forwards every connection it accepts to
//! a target address, byte for byte, in both directions. While it runs, a test can
//! change what the "network" between the two ends does:
//!
//! - [`delay`](Proxy::delay): every chunk waits a given latency before it is passed
//!   on, in each direction (a request/reply round trip then takes twice as long);
//!   order is kept and nothing is lost, like a slow link;
//! - [`black_hole`](Proxy::black_hole): nothing passes in either direction, on the
//!   connections open now and on those accepted meanwhile, and no socket is closed:
//!   each end sees a peer that went silent without a FIN or a reset (a half-open
//!   connection, a partition). What was sent meanwhile is held, not dropped;
//! - [`heal`](Proxy::heal): forwarding resumes at once, what was held first, like a
//!   partition that ends (TCP would retransmit it);
//! - [`strand`](Proxy::strand): the connections open now never forward another byte
//!   and stay open until the proxy is dropped, whatever comes next, like
//!   connections to a peer that vanished for good; later ones are not affected.
//!
//! ```no_run
//! use std::time::Duration;
//! use tradecast_testkit::{Proxy, RedisServer};
//!
//! let redis = RedisServer::start();
//! let proxy = Proxy::start(([127, 0, 0, 1], redis.port()).into());
//! let url = format!("redis://{}/", proxy.addr()); // give this to the client under test
//! proxy.delay(Duration::from_millis(200)); // every reply now takes 400 ms more
//! proxy.black_hole(); // Redis "vanished": nothing answers, nothing closes
//! proxy.strand(); // the connections open now are dead for good...
//! proxy.heal(); // ...and new ones work again
//! # let _ = url;
//! ```
//!
//! Like the rest of this crate it uses only `std`: each direction of a connection
//! is a reader thread and a writer thread joined by a bounded queue (so a receiver
//! that does not read pushes back on the sender, as TCP would), and works from any
//! test, async or not. Dropping the proxy closes every connection through it.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Bytes read at a time from one end.
const CHUNK: usize = 16 * 1024;
/// Chunks held between the reader and the writer of one direction; beyond, the
/// reader stops reading and the sender's socket buffers fill up.
const QUEUE: usize = 64;
/// How long connecting to the target may take before the accepted client is
/// closed instead.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Stack size of the forwarding threads (they only copy buffers).
const STACK: usize = 128 * 1024;

/// A TCP proxy from a free loopback port to a target (see the module docs).
pub struct Proxy {
    addr: SocketAddr,
    control: Arc<Control>,
    acceptor: Option<JoinHandle<()>>,
}

/// What every thread of the proxy consults before passing a chunk on.
struct Control {
    state: Mutex<State>,
    changed: Condvar,
}

struct State {
    latency: Duration,
    black_hole: bool,
    /// Connections numbered below this are stranded for good.
    stranded_below: u64,
    next_id: u64,
    /// The proxy is being dropped: every thread stops.
    closing: bool,
    /// Both sockets of every open connection, shut down when the proxy is dropped.
    open: HashMap<u64, [TcpStream; 2]>,
}

impl Control {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update(&self, change: impl FnOnce(&mut State)) {
        change(&mut self.lock());
        self.changed.notify_all();
    }

    /// Block until the chunk read at `read_at` on connection `id` may be written;
    /// false when the proxy is closing.
    fn wait_to_forward(&self, id: u64, read_at: Instant) -> bool {
        let mut state = self.lock();
        loop {
            if state.closing {
                return false;
            }
            if state.black_hole || id < state.stranded_below {
                state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            // The latency in force now: lowering it (or healing) releases chunks
            // already waiting.
            let due = read_at + state.latency;
            let now = Instant::now();
            if now >= due {
                return true;
            }
            state = self
                .changed
                .wait_timeout(state, due - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// One direction of connection `id` is done; the second one forgets it.
    fn finished(&self, id: u64, done: &Mutex<u8>) {
        let mut count = done.lock().unwrap_or_else(|e| e.into_inner());
        *count += 1;
        if *count == 2 {
            self.lock().open.remove(&id);
        }
    }
}

/// What a reader hands its writer.
enum Chunk {
    Data(Instant, Vec<u8>),
    /// The source closed its side cleanly (FIN): half-close the destination.
    End(Instant),
    /// The source failed (reset): close both ends.
    Failed,
}

impl Proxy {
    /// Listen on a free port of `127.0.0.1` and forward every connection to `target`.
    ///
    /// Panics if no port can be bound. A connection whose target cannot be reached
    /// within 2 s is closed.
    pub fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap_or_else(|e| panic!("cannot bind the proxy on 127.0.0.1: {e}"));
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let control = Arc::new(Control {
            state: Mutex::new(State {
                latency: Duration::ZERO,
                black_hole: false,
                stranded_below: 0,
                next_id: 0,
                closing: false,
                open: HashMap::new(),
            }),
            changed: Condvar::new(),
        });
        let acceptor = {
            let control = control.clone();
            thread::Builder::new()
                .name(format!("proxy-{}", addr.port()))
                .spawn(move || accept_loop(listener, target, control))
                .expect("spawning the proxy's accept thread")
        };
        Proxy {
            addr,
            control,
            acceptor: Some(acceptor),
        }
    }

    /// Where clients connect: `127.0.0.1:P`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Hold every chunk `latency` before passing it on, in each direction. Chunks
    /// keep their order; `Duration::ZERO` forwards at once again.
    pub fn delay(&self, latency: Duration) {
        self.control.update(|s| s.latency = latency);
    }

    /// Stop forwarding in both directions, on every connection, without closing any
    /// socket. What arrives meanwhile is held until [`heal`](Self::heal).
    pub fn black_hole(&self) {
        self.control.update(|s| s.black_hole = true);
    }

    /// Forward at once again (no black hole, no latency); held bytes go first.
    /// Stranded connections stay stranded.
    pub fn heal(&self) {
        self.control.update(|s| {
            s.black_hole = false;
            s.latency = Duration::ZERO;
        });
    }

    /// Strand every connection open now: it never forwards another byte and is
    /// never closed (until the proxy is dropped), whatever [`heal`](Self::heal)
    /// does later. Connections accepted from now on are not affected.
    pub fn strand(&self) {
        self.control.update(|s| s.stranded_below = s.next_id);
    }

    /// Connections open through the proxy now (stranded ones included).
    pub fn connections(&self) -> usize {
        self.control.lock().open.len()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let open: Vec<[TcpStream; 2]> = {
            let mut state = self.control.lock();
            state.closing = true;
            state.open.drain().map(|(_, sockets)| sockets).collect()
        };
        self.control.changed.notify_all();
        // Wakes readers blocked in `read` and tells both ends the link is gone.
        for sockets in open {
            for socket in sockets {
                let _ = socket.shutdown(Shutdown::Both);
            }
        }
        // Wake the accept loop, which then sees `closing`.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn accept_loop(listener: TcpListener, target: SocketAddr, control: Arc<Control>) {
    for client in listener.incoming() {
        if control.lock().closing {
            return;
        }
        let Ok(client) = client else { continue };
        let Ok(upstream) = TcpStream::connect_timeout(&target, CONNECT_TIMEOUT) else {
            continue; // dropping `client` closes it: the target is unreachable
        };
        if let Err(e) = forward(client, upstream, &control) {
            eprintln!("proxy {}: cannot forward a connection: {e}", target);
        }
    }
}

/// Register the pair and start its four threads.
fn forward(client: TcpStream, upstream: TcpStream, control: &Arc<Control>) -> std::io::Result<()> {
    client.set_nodelay(true)?;
    upstream.set_nodelay(true)?;
    let id = {
        let mut state = control.lock();
        let id = state.next_id;
        state.next_id += 1;
        state
            .open
            .insert(id, [client.try_clone()?, upstream.try_clone()?]);
        id
    };
    let done = Arc::new(Mutex::new(0u8));
    for (from, to) in [(&client, &upstream), (&upstream, &client)] {
        let (tx, rx) = sync_channel(QUEUE);
        let (from, to) = (from.try_clone()?, to.try_clone()?);
        let writer_from = from.try_clone()?;
        let reader_control = control.clone();
        let writer_control = control.clone();
        let done = done.clone();
        thread::Builder::new()
            .name(format!("proxy-read-{id}"))
            .stack_size(STACK)
            .spawn(move || read_side(from, tx, &reader_control))?;
        thread::Builder::new()
            .name(format!("proxy-write-{id}"))
            .stack_size(STACK)
            .spawn(move || {
                write_side(id, to, writer_from, rx, &writer_control);
                writer_control.finished(id, &done);
            })?;
    }
    Ok(())
}

/// Read chunks from `from` and queue them, stamped with when they arrived.
fn read_side(mut from: TcpStream, tx: SyncSender<Chunk>, control: &Control) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        match from.read(&mut buf) {
            Ok(0) => {
                let _ = tx.send(Chunk::End(Instant::now()));
                return;
            }
            Ok(n) => {
                if tx
                    .send(Chunk::Data(Instant::now(), buf[..n].to_vec()))
                    .is_err()
                {
                    return; // the writer gave up: the destination is gone
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => {
                if !control.lock().closing {
                    let _ = tx.send(Chunk::Failed);
                }
                return;
            }
        }
    }
}

/// Write what the reader queued to `to` once the network lets it through.
fn write_side(id: u64, mut to: TcpStream, from: TcpStream, rx: Receiver<Chunk>, control: &Control) {
    for chunk in rx {
        let read_at = match &chunk {
            Chunk::Data(at, _) | Chunk::End(at) => *at,
            Chunk::Failed => Instant::now(),
        };
        if !control.wait_to_forward(id, read_at) {
            return;
        }
        match chunk {
            Chunk::Data(_, data) => {
                if to.write_all(&data).is_err() {
                    // The destination is gone: so is the source's reason to send. Only
                    // stop reading from it: the other direction may still have bytes
                    // for it (a close frame held while the path was cut).
                    let _ = from.shutdown(Shutdown::Read);
                    return;
                }
            }
            Chunk::End(_) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Chunk::Failed => {
                let _ = to.shutdown(Shutdown::Both);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on a free port; it serves every connection until it closes.
    fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                thread::spawn(move || {
                    let mut reader = stream.try_clone().unwrap();
                    let mut writer = stream;
                    let _ = std::io::copy(&mut reader, &mut writer);
                });
            }
        });
        addr
    }

    /// Send `text` and read the echo; `None` if nothing came back within `limit`.
    fn round_trip(stream: &mut TcpStream, text: &[u8], limit: Duration) -> Option<Duration> {
        let started = Instant::now();
        stream.set_read_timeout(Some(limit)).unwrap();
        stream.write_all(text).unwrap();
        let mut got = vec![0u8; text.len()];
        stream.read_exact(&mut got).ok()?;
        assert_eq!(got, text);
        Some(started.elapsed())
    }

    #[test]
    fn forwards_delays_black_holes_heals_and_strands() {
        let proxy = Proxy::start(echo_server());
        let mut a = TcpStream::connect(proxy.addr()).unwrap();
        assert!(
            round_trip(&mut a, b"plain", Duration::from_secs(2)).unwrap()
                < Duration::from_millis(150)
        );

        proxy.delay(Duration::from_millis(100));
        let slow = round_trip(&mut a, b"slow", Duration::from_secs(2)).unwrap();
        assert!(slow >= Duration::from_millis(200), "{slow:?}");

        proxy.black_hole();
        assert!(round_trip(&mut a, b"held", Duration::from_millis(300)).is_none());
        // The black hole closes nothing; healing delivers what was held.
        proxy.heal();
        let mut held = [0u8; 4];
        a.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        a.read_exact(&mut held).unwrap();
        assert_eq!(&held, b"held");

        proxy.strand();
        let mut b = TcpStream::connect(proxy.addr()).unwrap();
        assert!(round_trip(&mut a, b"gone", Duration::from_millis(300)).is_none());
        assert!(round_trip(&mut b, b"new", Duration::from_secs(2)).is_some());
        assert_eq!(proxy.connections(), 2);

        // A clean close passes through (the echo server then closes its side).
        drop(b);
        let deadline = Instant::now() + Duration::from_secs(2);
        while proxy.connections() != 1 {
            assert!(
                Instant::now() < deadline,
                "the closed connection is still listed"
            );
            thread::sleep(Duration::from_millis(10));
        }
    }
}
