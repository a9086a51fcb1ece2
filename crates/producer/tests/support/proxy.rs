//! A small TCP proxy on loopback in front of Redis, for faults a real Redis does not
//! produce on demand: latency (every chunk forwarded late) and a lost reply (the
//! request reaches Redis, the answer never comes back and the connection drops).
//!
//! Plain threads and blocking sockets: two pumps per connection. Stops (and closes
//! every connection) when dropped.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::SeqCst};
use std::thread::JoinHandle;
use std::time::Duration;

#[derive(Default)]
struct Faults {
    /// Microseconds each forwarded chunk waits.
    delay_us: AtomicU64,
    /// Replies still to swallow (each also drops its connection).
    drop_replies: AtomicU32,
    stop: AtomicBool,
}

pub struct Proxy {
    pub addr: SocketAddr,
    faults: Arc<Faults>,
    acceptor: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Listen on a free loopback port, forwarding to `upstream`.
    pub fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let faults = Arc::new(Faults::default());
        let f = Arc::clone(&faults);
        let acceptor = std::thread::spawn(move || {
            while !f.stop.load(SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let _ = client.set_nonblocking(false);
                        let Ok(server) = TcpStream::connect(upstream) else {
                            continue;
                        };
                        let _ = client.set_nodelay(true);
                        let _ = server.set_nodelay(true);
                        spawn_pumps(client, server, Arc::clone(&f));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Proxy {
            addr,
            faults,
            acceptor: Some(acceptor),
        }
    }

    pub fn url(&self) -> String {
        format!("redis://{}/", self.addr)
    }

    /// Delay every forwarded chunk, in both directions, by `delay`.
    pub fn set_delay(&self, delay: Duration) {
        self.faults.delay_us.store(delay.as_micros() as u64, SeqCst);
    }

    /// Swallow the next `n` replies from Redis, dropping the connection each time.
    pub fn drop_replies(&self, n: u32) {
        self.faults.drop_replies.store(n, SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.faults.stop.store(true, SeqCst);
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
    }
}

fn spawn_pumps(client: TcpStream, server: TcpStream, faults: Arc<Faults>) {
    let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    let f2 = Arc::clone(&faults);
    std::thread::spawn(move || pump(client, server, faults, false));
    std::thread::spawn(move || pump(s2, c2, f2, true));
}

/// Copy `from` → `to` until either side closes; `replies` marks the Redis → client
/// direction, where replies may be swallowed.
fn pump(mut from: TcpStream, mut to: TcpStream, faults: Arc<Faults>, replies: bool) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(50)));
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if faults.stop.load(SeqCst) {
            break;
        }
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(_) => break,
        };
        if replies
            && faults
                .drop_replies
                .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            break; // the reply is lost, and the connection with it
        }
        let delay = faults.delay_us.load(SeqCst);
        if delay > 0 {
            std::thread::sleep(Duration::from_micros(delay));
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
