//! The data pipeline's random numbers: a sequential generator whose whole state is one `u64` (so a
//! training run can checkpoint and resume it bit for bit), and counter-based hashes for per-voxel noise
//! (so every voxel's draw depends on its position only, never on the order voxels are visited).

/// SplitMix64 finaliser: a bijective 64-bit mix with full avalanche.
#[inline]
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// The random bits of element `index` of the stream `key` (a counter-based generator).
#[inline]
pub(crate) fn hash_at(key: u64, index: u64) -> u64 {
    mix64(key ^ index.wrapping_mul(GOLDEN))
}

/// An approximately standard-normal value from 64 random bits: the sum of four 16-bit uniforms
/// (Irwin-Hall, n = 4), centred and scaled to unit variance. Bounded by +-3.46; no transcendental call.
#[inline]
pub(crate) fn normal_from_bits(bits: u64) -> f32 {
    const SCALE: f32 = 1.0 / 65536.0;
    let s = (bits & 0xFFFF) + ((bits >> 16) & 0xFFFF) + ((bits >> 32) & 0xFFFF) + (bits >> 48);
    // Each 16-bit part is uniform on {0, ..., 65535}: mean 32767.5, variance (65536^2 - 1) / 12.
    // Four of them: mean 131070, standard deviation ~ 65536 * sqrt(1/3).
    ((s as f32) - 131_070.0) * SCALE * 1.732_050_8
}

/// Uniform in [0, 1) from 64 random bits (24 bits of f32 precision).
#[inline]
pub(crate) fn unit_from_bits(bits: u64) -> f32 {
    (bits >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
}

/// A small seeded generator (SplitMix64) whose full state is one `u64`.
///
/// Save it with [`DataRng::state`] and restore it with [`DataRng::from_state`]: the restored generator
/// draws exactly the numbers the saved one would have drawn next, so a resumed training run samples the
/// same batches as an uninterrupted one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataRng {
    state: u64,
}

impl DataRng {
    /// A generator from a seed (the seed is the initial state).
    pub fn new(seed: u64) -> Self {
        DataRng { state: seed }
    }

    /// A generator continuing from a state saved with [`DataRng::state`].
    pub fn from_state(state: u64) -> Self {
        DataRng { state }
    }

    /// The full state of the generator.
    pub fn state(&self) -> u64 {
        self.state
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN);
        mix64(self.state)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    /// Uniform integer in `0..n` (`n` > 0), without modulo bias worth speaking of (multiply-shift).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.uniform() < p
    }

    /// Standard normal (Box-Muller; one value per call).
    pub fn normal(&mut self) -> f64 {
        let u = 1.0 - self.uniform(); // (0, 1]
        let v = self.uniform();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}
