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
    /// Compiled without wgpu's injected bounds checks (about 2x faster in loop-heavy kernels) and without
    /// zero-initialised workgroup memory (which the GL back end emulates with code slow enough to compile
    /// that a kernel with a few KiB of workgroup memory takes many seconds). Only for files whose kernels
    /// guard every index themselves and write workgroup memory before reading it, as their tests prove on
    /// small odd shapes.
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

/// 3D/2D convolution: forward, input-gradient and weight-gradient gather kernels (register-tiled).
pub const CONV: Shader = Shader {
    name: "conv.wgsl",
    source: include_str!("../shaders/conv.wgsl"),
    preludes: &[""],
    trusted: true,
};

/// The convolution kernels with subgroup broadcasts of the shared operand (adapters with subgroups of at
/// least 8 invocations).
pub const CONV_SUBGROUP: Shader = Shader {
    name: "conv_subgroup.wgsl",
    source: include_str!("../shaders/conv_subgroup.wgsl"),
    preludes: &[""],
    trusted: true,
};

/// Deterministic two-pass row reductions (norm statistics, bias and affine gradients, split-K sums).
pub const REDUCE: Shader = Shader {
    name: "reduce.wgsl",
    source: include_str!("../shaders/reduce.wgsl"),
    preludes: &[""],
    trusted: false,
};

/// Group / instance normalisation with affine, forward and backward.
pub const NORM: Shader = Shader {
    name: "norm.wgsl",
    source: include_str!("../shaders/norm.wgsl"),
    preludes: &[""],
    trusted: false,
};

/// ReLU, its backward, and element-wise add.
pub const ELEMENTWISE: Shader = Shader {
    name: "elementwise.wgsl",
    source: include_str!("../shaders/elementwise.wgsl"),
    preludes: &[""],
    trusted: false,
};

/// Trilinear / bilinear upsampling (align_corners = false) and its gather backward.
pub const UPSAMPLE: Shader = Shader {
    name: "upsample.wgsl",
    source: include_str!("../shaders/upsample.wgsl"),
    preludes: &[""],
    trusted: false,
};

/// The AdamW optimiser step.
pub const ADAMW: Shader = Shader {
    name: "adamw.wgsl",
    source: include_str!("../shaders/adamw.wgsl"),
    preludes: &[""],
    trusted: false,
};

/// Every shader the library uses.
pub const ALL: &[Shader] = &[
    SOFTMAX,
    PROBE,
    CONV,
    CONV_SUBGROUP,
    REDUCE,
    NORM,
    ELEMENTWISE,
    UPSAMPLE,
    ADAMW,
];
