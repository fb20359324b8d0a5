//! The WGSL sources, one file per kernel family, and the preludes each is compiled with.
//!
//! A prelude is text put before the file (an `enable` directive, type aliases); every (file, prelude) pair
//! the library compiles is listed here, so the naga test validates exactly what runs.

/// A WGSL file and the preludes the library compiles it with.
#[derive(Clone, Copy, Debug)]
pub struct Shader {
    /// File name under `shaders/`.
    pub name: &'static str,
    /// The file's text.
    pub source: &'static str,
    /// Preludes it is compiled with (at least one; `""` for none).
    pub preludes: &'static [&'static str],
    /// Compiled without wgpu's injected bounds checks (about 2x faster in loop-heavy kernels). Only for
    /// files whose kernels guard every index themselves, as their tests prove on small odd shapes.
    pub trusted: bool,
}

impl Shader {
    /// The full source for one prelude.
    pub fn with_prelude(&self, prelude: &str) -> String {
        let mut s = String::with_capacity(prelude.len() + self.source.len() + 1);
        s.push_str(prelude);
        s.push('\n');
        s.push_str(self.source);
        s
    }
}

/// Softmax over the channel axis, forward and backward.
pub const SOFTMAX: Shader = Shader {
    name: "softmax.wgsl",
    source: include_str!("../shaders/softmax.wgsl"),
    preludes: &[""],
    trusted: false,
};

/// Micro-kernels that measure what the adapter can do: copy bandwidth and FMA rate.
pub const PROBE: Shader = Shader {
    name: "probe.wgsl",
    source: include_str!("../shaders/probe.wgsl"),
    preludes: &[""],
    trusted: false,
};

/// Preludes of the per-voxel loss kernels: input precision (f32/f16) x label form (indices/one-hot).
pub const LOSS_PRELUDES: [&str; 4] = [
    "alias logit_t = f32;\nalias label_t = u32;\nconst ONEHOT: bool = false;",
    "alias logit_t = f32;\nalias label_t = f32;\nconst ONEHOT: bool = true;",
    "enable f16;\nalias logit_t = f16;\nalias label_t = u32;\nconst ONEHOT: bool = false;",
    "enable f16;\nalias logit_t = f16;\nalias label_t = f32;\nconst ONEHOT: bool = true;",
];

/// The prelude of [`LOSS_PRELUDES`] for an input precision and label form.
pub fn loss_prelude(f16: bool, onehot: bool) -> &'static str {
    LOSS_PRELUDES[usize::from(f16) * 2 + usize::from(onehot)]
}

/// mL1-ACE per-voxel passes: binning statistics and the gradient.
pub const ACE: Shader = Shader {
    name: "ace.wgsl",
    source: include_str!("../shaders/ace.wgsl"),
    preludes: &LOSS_PRELUDES,
    trusted: true,
};

/// mL1-ACE small passes: fixed-order reduction of partials, per-bin coefficients and the loss.
pub const ACE_REDUCE: Shader = Shader {
    name: "ace_reduce.wgsl",
    source: include_str!("../shaders/ace_reduce.wgsl"),
    preludes: &[""],
    trusted: false,
};

/// Every shader the library uses.
pub const ALL: &[Shader] = &[SOFTMAX, PROBE, ACE, ACE_REDUCE];
