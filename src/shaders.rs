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

/// Hard binning of probabilities per (image, class) for the calibration metrics and the Dice counts:
/// per-workgroup partials, then a fixed-order pass.
pub const CALIBRATION: Shader = Shader {
    name: "calibration.wgsl",
    source: include_str!("../shaders/calibration.wgsl"),
    preludes: &[""],
    trusted: false,
};

/// Temperature scaling: NLL and its derivatives in 1/T as per-workgroup partials, and logit scaling.
pub const TEMPERATURE: Shader = Shader {
    name: "temperature.wgsl",
    source: include_str!("../shaders/temperature.wgsl"),
    preludes: &[""],
    trusted: false,
};

/// Every shader the library uses.
pub const ALL: &[Shader] = &[SOFTMAX, PROBE, CALIBRATION, TEMPERATURE];
