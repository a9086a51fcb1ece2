//! Ticket numbers, as the trade server hands them out.

/// MT5 numbers orders and deals with separate counters; a position takes the ticket of
/// the order that opened it, so orders and positions share one.
#[derive(Debug)]
pub struct Tickets {
    next_order: u64,
    next_deal: u64,
}

impl Tickets {
    pub fn new() -> Tickets {
        Tickets {
            next_order: 5_000_001,
            next_deal: 7_000_001,
        }
    }

    /// A new order (and position) ticket.
    pub fn order(&mut self) -> u64 {
        self.next_order += 1;
        self.next_order - 1
    }

    /// A new deal ticket.
    pub fn deal(&mut self) -> u64 {
        self.next_deal += 1;
        self.next_deal - 1
    }
}
