//! Parameter initialisation as PyTorch does it, from a seeded generator of our own.
//!
//! PyTorch initialises `Conv*d` weights with `kaiming_uniform_(a = sqrt(5))`, i.e. U(-b, b) with
//! `b = gain * sqrt(3 / fan_in)`, `gain = sqrt(2 / (1 + a^2))`, which is `b = 1 / sqrt(fan_in)`, and biases
//! with U(-1/sqrt(fan_in), 1/sqrt(fan_in)); `fan_in = weight.shape[1] * prod(kernel)` (for transposed
//! convolutions that is C_out * prod(kernel), PyTorch's convention). Norm weights are ones, biases zeros.
//! The random streams differ from PyTorch's (no Mersenne twister here); the distributions are the same.

/// SplitMix64: a small, seeded, reproducible generator.
#[derive(Clone, Debug)]
pub struct SeededRng(u64);

impl SeededRng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        SeededRng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// `n` values uniform in [-bound, bound).
    pub fn uniform_symmetric(&mut self, n: usize, bound: f64) -> Vec<f32> {
        (0..n)
            .map(|_| ((2.0 * self.uniform() - 1.0) * bound) as f32)
            .collect()
    }
}

/// `kaiming_uniform_(a)` bound for a fan-in: `sqrt(2 / (1 + a^2)) * sqrt(3 / fan_in)`.
pub fn kaiming_uniform_bound(fan_in: usize, a: f64) -> f64 {
    (2.0 / (1.0 + a * a)).sqrt() * (3.0 / fan_in.max(1) as f64).sqrt()
}
