//! A first end-to-end check: a trader sees a position open and close.
mod support;

use serde_json::json;
use support::*;
use tradecast_protocol::Role;

#[tokio::test]
async fn trader_sees_position_lifecycle() {
    let server = Server::start(&[]);
    let (mut trader, welcome) = server.connect(42, Role::Client).await;
    assert_eq!(
        welcome["channels"],
        json!(["portfolio:42", "orders:42", "prices:forex"])
    );
    let initial = read_initial(&mut trader, 3).await;
    assert!(
        initial.iter().any(|m| m["type"] == "portfolio_full"),
        "{initial:?}"
    );
    let (status, body) = server
        .post_events(&json!([
            {"v":1,"type":"account","src":"t","seq":1,"ts":1,"login":42,"name":"Ann","ccy":"USD","leverage":100,"balance":1000.0,"credit":0.0},
            {"v":1,"type":"position","op":"open","src":"t","seq":2,"ts":2,"login":42,"position_id":7,"symbol":"EURUSD","side":"buy","vol":10000,"price_open":1.1,"digits":5,"contract_size":100000},
            {"v":1,"type":"position","op":"close","src":"t","seq":3,"ts":3,"login":42,"position_id":7,"close_deal":99}
        ]))
        .await;
    assert_eq!(status, 200, "{body}");
    let (opened, _) = trader.recv_until("position_opened", WAIT).await.unwrap();
    assert_eq!(opened["id"], 7);
    let (closed, _) = trader.recv_until("position_closed", WAIT).await.unwrap();
    assert_eq!(closed["id"], 7);
    assert!(closed["seq"].as_u64().unwrap() > opened["seq"].as_u64().unwrap());
}
