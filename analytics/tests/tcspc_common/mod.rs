//! Photon draws shared by the TCSPC fit tests: the arrival time of one fluorescence photon.

use rand::rngs::StdRng;
use rand::Rng;
use rand_distr::{Distribution, Exp, Normal};

/// One photon's micro time in ns: a component chosen by its photon fraction, its exponential
/// delay added to a Gaussian IRF draw, folded over the sync period (earlier pulses' tails).
pub fn decay_photon_ns(
    rng: &mut StdRng,
    irf: &Normal<f64>,
    components: &[Exp<f64>],
    fractions: &[f64],
    period_ns: f64,
) -> f64 {
    let mut u: f64 = rng.random();
    let mut c = 0;
    while c + 1 < fractions.len() && u >= fractions[c] {
        u -= fractions[c];
        c += 1;
    }
    (irf.sample(rng) + components[c].sample(rng)).rem_euclid(period_ns)
}
