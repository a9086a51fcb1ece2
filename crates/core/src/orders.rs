//! Working orders per login.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tradecast_protocol::Channel;
use tradecast_protocol::ingest::{OrderEvent, OrderOp, OrderState, OrderType};

use crate::effect::encode;
use crate::money::lots;

/// A working order as clients see it (`order_update`, `orders_full.orders`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub id: u64,
    pub symbol: String,
    pub order_type: Option<OrderType>,
    pub state: Option<OrderState>,
    /// Remaining volume, lots.
    pub volume: Option<f64>,
    /// Initial volume, lots.
    pub volume_initial: Option<f64>,
    pub price: Option<f64>,
    pub price_trigger: Option<f64>,
    pub sl: Option<f64>,
    pub tp: Option<f64>,
    pub position_id: Option<u64>,
}

impl Order {
    /// Overwrite the fields the event carries.
    fn merge(&mut self, e: &OrderEvent) {
        if let Some(symbol) = &e.symbol {
            self.symbol = symbol.clone();
        }
        let set = |slot: &mut Option<f64>, value: Option<f64>| *slot = value.or(*slot);
        self.order_type = e.order_type.or(self.order_type);
        self.state = e.state.or(self.state);
        set(&mut self.volume, e.vol_current.map(lots));
        set(&mut self.volume_initial, e.vol_initial.map(lots));
        set(&mut self.price, e.price_order);
        set(&mut self.price_trigger, e.price_trigger);
        set(&mut self.sl, e.sl);
        set(&mut self.tp, e.tp);
        self.position_id = e.position_id.filter(|&id| id != 0).or(self.position_id);
    }
}

/// The `order_update` message body: the operation and the order after it.
#[derive(Debug, Serialize)]
pub struct OrderUpdate<'a> {
    pub op: OrderOp,
    #[serde(flatten)]
    pub order: &'a Order,
}

/// Working orders of every login.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OrderBook {
    by_login: BTreeMap<u64, BTreeMap<u64, Order>>,
}

impl OrderBook {
    /// Apply an order event; returns the order as it is now, or `None` when nothing
    /// changed (a delete of an unknown order, a replayed update).
    pub fn apply(&mut self, e: &OrderEvent) -> Result<Option<Order>, String> {
        let orders = self.by_login.entry(e.login).or_default();
        match e.op {
            OrderOp::Delete => {
                let Some(mut order) = orders.remove(&e.order) else {
                    return Ok(None);
                };
                order.merge(e);
                if orders.is_empty() {
                    self.by_login.remove(&e.login);
                }
                Ok(Some(order))
            }
            OrderOp::Add | OrderOp::Update => {
                let is_new = !orders.contains_key(&e.order);
                let order = match orders.get_mut(&e.order) {
                    Some(order) => order,
                    None => {
                        let Some(symbol) = &e.symbol else {
                            return Err(format!(
                                "order {} is unknown and the update has no symbol",
                                e.order
                            ));
                        };
                        let blank = Order {
                            id: e.order,
                            symbol: symbol.clone(),
                            order_type: None,
                            state: None,
                            volume: None,
                            volume_initial: None,
                            price: None,
                            price_trigger: None,
                            sl: None,
                            tp: None,
                            position_id: None,
                        };
                        orders.entry(e.order).or_insert(blank)
                    }
                };
                let before = order.clone();
                order.merge(e);
                Ok((is_new || *order != before).then(|| order.clone()))
            }
        }
    }

    /// Every login that has (or had) working orders.
    pub fn logins(&self) -> impl Iterator<Item = u64> + '_ {
        self.by_login.keys().copied()
    }

    /// The `orders_full` snapshot of `login`.
    pub fn snapshot(&self, login: u64) -> Bytes {
        #[derive(Serialize)]
        struct Full<'a> {
            login: u64,
            orders: Vec<&'a Order>,
        }
        let orders = self
            .by_login
            .get(&login)
            .map(|o| o.values().collect())
            .unwrap_or_default();
        encode(
            "orders_full",
            &Channel::Orders(login),
            &Full { login, orders },
        )
    }
}
