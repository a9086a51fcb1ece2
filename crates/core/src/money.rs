//! Units: integer volumes to lots, money to cents.

/// MT5 volumes are integers in 1/10000 lot.
pub const VOLUME_PER_LOT: f64 = 10_000.0;

/// A wire volume (1/10000 lot) in lots.
pub fn lots(vol: u64) -> f64 {
    vol as f64 / VOLUME_PER_LOT
}

/// Round money to cents (the account currency's 2 digits), half away from zero.
///
/// The tiny nudge absorbs binary representation error, so that 163.875 computed as
/// 163.87499999999997 still rounds to 163.88 as a human would.
pub fn cents(amount: f64) -> f64 {
    let scaled = amount * 100.0;
    let nudged = scaled + scaled.signum() * 1e-7;
    let rounded = nudged.round() / 100.0;
    // Avoid "-0.0" on the wire.
    if rounded == 0.0 { 0.0 } else { rounded }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_to_cents() {
        assert_eq!(cents(163.874_117), 163.87);
        assert_eq!(cents(0.005), 0.01);
        assert_eq!(cents(-0.004), 0.0);
        assert_eq!(cents(1.0 / 3.0), 0.33);
        assert_eq!(lots(150_000), 15.0);
    }
}
