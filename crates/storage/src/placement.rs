//! Where a new object goes: the order in which providers are tried.

use std::collections::HashMap;

use crate::Provider;

/// The placement policy (`CLIPSTASH_PLACEMENT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Placement {
    /// Any provider, at random (the original's `select_random_provider`).
    Random,
    /// The lowest fraction of quota used first (no quota counts as empty).
    LeastUsed,
    /// Configuration order: the first with room.
    Ordered,
}

impl Placement {
    /// The providers in the order to try them, given each one's bytes in use.
    pub fn order<'a>(
        self,
        providers: &'a [Provider],
        used: &HashMap<String, i64>,
    ) -> Vec<&'a Provider> {
        let mut order: Vec<&Provider> = providers.iter().collect();
        match self {
            Placement::Ordered => {}
            Placement::Random => fastrand::shuffle(&mut order),
            Placement::LeastUsed => {
                let fraction = |p: &Provider| match p.quota_bytes() {
                    0 => 0.0,
                    q => *used.get(p.name().as_str()).unwrap_or(&0) as f64 / q as f64,
                };
                order.sort_by(|a, b| fraction(a).total_cmp(&fraction(b)));
            }
        }
        order
    }
}
