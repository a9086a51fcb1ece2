//! The testkit against real `redis-server` processes: a standalone server that is
//! killed and restarted, and a 3-master cluster.

use std::net::TcpStream;

use tradecast_testkit::{RedisCluster, RedisServer, free_port};

#[test]
fn free_ports_are_distinct_and_never_the_default_redis_port() {
    let ports: Vec<u16> = (0..20).map(|_| free_port()).collect();
    let mut unique = ports.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), ports.len(), "{ports:?}");
    assert!(!ports.contains(&6379));
}

#[test]
fn a_server_answers_and_survives_kill_and_restart() {
    let mut redis = RedisServer::start();
    let port = redis.port();
    assert_ne!(port, 6379);
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{port}/"));
    assert_eq!(redis.cli(&["PING"]), "PONG");
    assert_eq!(redis.cli(&["SET", "k", "v"]), "OK");
    assert_eq!(redis.cli(&["GET", "k"]), "v");
    // Error replies come back as text rather than panicking.
    assert!(redis.cli(&["NOSUCHCOMMAND"]).starts_with("ERR"));

    redis.kill();
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err(), "killed");
    redis.kill(); // idempotent

    redis.restart();
    assert_eq!(redis.port(), port, "same port");
    assert_eq!(redis.cli(&["PING"]), "PONG");
    assert_eq!(redis.cli(&["EXISTS", "k"]), "0", "empty after restart");

    // A restart while running works too.
    redis.cli(&["SET", "k", "v"]);
    redis.restart();
    assert_eq!(redis.cli(&["DBSIZE"]), "0");

    let dir = redis.dir().to_owned();
    assert!(dir.join("redis.log").exists(), "logs go to a file");
    drop(redis);
    assert!(!dir.exists(), "the scratch directory is removed");
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err(), "dropped");
}

#[test]
fn a_three_master_cluster_is_ok() {
    let cluster = RedisCluster::start(3);
    let ports = cluster.ports();
    assert_eq!(ports.len(), 3);
    assert_eq!(
        cluster.urls(),
        ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}/"))
            .collect::<Vec<_>>()
    );
    for &port in &ports {
        let info = std::process::Command::new("redis-cli")
            .args(["-p", &port.to_string(), "CLUSTER", "INFO"])
            .output()
            .expect("redis-cli runs");
        let info = String::from_utf8_lossy(&info.stdout);
        assert!(info.contains("cluster_state:ok"), "{port}: {info}");
        assert!(info.contains("cluster_known_nodes:3"), "{port}: {info}");
        assert!(
            info.contains("cluster_slots_assigned:16384"),
            "{port}: {info}"
        );
    }
    drop(cluster);
    for port in ports {
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err(), "{port}");
    }
}
