//! The WGSL sources, one file per kernel family, and the preludes each is compiled with.
//!
//! A prelude is text put before the file (an `enable` directive, type aliases); every (file, prelude) pair
//! the library compiles is listed here, so the naga test validates exactly what runs. The convolution
//! kernels are not files: they are generated at run time per tile variant (`ops::conv`), and the naga
//! test validates every variant the selection can return.

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
    /// Whether wgpu zero-fills workgroup memory before each dispatch (WGSL's default). Files whose kernels
    /// write every workgroup variable before reading it set this to false: on GL the zero-fill becomes one
    /// huge array constructor per variable that llvmpipe takes minutes to compile.
    pub zero_workgroup_memory: bool,
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
    zero_workgroup_memory: true,
};

/// Micro-kernels that measure what the adapter can do: copy and read bandwidth, f32 FMA rate.
pub const PROBE: Shader = Shader {
    name: "probe.wgsl",
    source: include_str!("../shaders/probe.wgsl"),
    preludes: &[""],
    trusted: false,
    zero_workgroup_memory: true,
};

/// The f16 FMA-rate micro-kernel (only where the adapter has SHADER_F16).
pub const PROBE_F16: Shader = Shader {
    name: "probe_f16.wgsl",
    source: include_str!("../shaders/probe_f16.wgsl"),
    preludes: &["enable f16;"],
    trusted: false,
    zero_workgroup_memory: true,
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

/// Fused losses, per-voxel passes: every statistic (ACE bins, Dice and cross-entropy sums), and the gradient.
pub const LOSS_VOXEL: Shader = Shader {
    name: "loss_voxel.wgsl",
    source: include_str!("../shaders/loss_voxel.wgsl"),
    preludes: &LOSS_PRELUDES,
    trusted: true,
    zero_workgroup_memory: false,
};

/// Fused losses, small passes: fixed-order reduction of partials, the losses and the gradient coefficients.
pub const LOSS_REDUCE: Shader = Shader {
    name: "loss_reduce.wgsl",
    source: include_str!("../shaders/loss_reduce.wgsl"),
    preludes: &[""],
    trusted: false,
    zero_workgroup_memory: false,
};

/// Nearest-exact resampling of label maps (deep supervision).
pub const RESAMPLE: Shader = Shader {
    name: "resample.wgsl",
    source: include_str!("../shaders/resample.wgsl"),
    preludes: &[""],
    trusted: false,
    zero_workgroup_memory: true,
};

/// Resampling of 3D volumes through an affine output-to-input voxel map, trilinear or nearest (border
/// padding, as MONAI's `SpatialResample`).
pub const AFFINE_RESAMPLE: Shader = Shader {
    name: "affine_resample.wgsl",
    source: include_str!("../shaders/affine_resample.wgsl"),
    preludes: &[""],
    trusted: false,
    zero_workgroup_memory: true,
};

/// The augmentation's intensity kernels: hashed Gaussian noise, per-volume statistics, brightness /
/// contrast / gamma, separable Gaussian smoothing, simulated low resolution.
pub const AUGMENT: Shader = Shader {
    name: "augment.wgsl",
    source: include_str!("../shaders/augment.wgsl"),
    preludes: &[""],
    trusted: false,
    zero_workgroup_memory: true,
};

/// Hard binning of probabilities per (image, class) for the calibration metrics and the Dice counts:
/// per-workgroup partials, then a fixed-order pass.
pub const CALIBRATION: Shader = Shader {
    name: "calibration.wgsl",
    source: include_str!("../shaders/calibration.wgsl"),
    preludes: &[""],
    trusted: false,
    zero_workgroup_memory: true,
};

/// Temperature scaling: NLL and its derivatives in 1/T as per-workgroup partials, and logit scaling.
pub const TEMPERATURE: Shader = Shader {
    name: "temperature.wgsl",
    source: include_str!("../shaders/temperature.wgsl"),
    preludes: &[""],
    trusted: false,
    zero_workgroup_memory: true,
};

/// Deterministic two-pass row reductions (norm statistics, bias and affine gradients, split-K sums).
pub const REDUCE: Shader = Shader {
    name: "reduce.wgsl",
    source: include_str!("../shaders/reduce.wgsl"),
    preludes: &[""],
    trusted: false,
    zero_workgroup_memory: true,
};

/// Group / instance normalisation with affine, forward and backward.
pub const NORM: Shader = Shader {
    name: "norm.wgsl",
    source: include_str!("../shaders/norm.wgsl"),
    preludes: &[""],
    trusted: false,
    zero_workgroup_memory: true,
};

/// ReLU, its backward, and element-wise add.
pub const ELEMENTWISE: Shader = Shader {
    name: "elementwise.wgsl",
    source: include_str!("../shaders/elementwise.wgsl"),
    preludes: &[""],
    trusted: false,
    zero_workgroup_memory: true,
};

/// Trilinear / bilinear upsampling (align_corners = false) and its gather backward.
pub const UPSAMPLE: Shader = Shader {
    name: "upsample.wgsl",
    source: include_str!("../shaders/upsample.wgsl"),
    preludes: &[""],
    trusted: false,
    zero_workgroup_memory: true,
};

/// The AdamW optimiser step.
pub const ADAMW: Shader = Shader {
    name: "adamw.wgsl",
    source: include_str!("../shaders/adamw.wgsl"),
    preludes: &[""],
    trusted: false,
    zero_workgroup_memory: true,
};

/// Sliding-window inference: importance-weighted accumulation of each window into the output slabs it
/// meets, in window order, and the final division with the crop.
pub const SLIDING_WINDOW: Shader = Shader {
    name: "sliding_window.wgsl",
    source: include_str!("../shaders/sliding_window.wgsl"),
    preludes: &[""],
    trusted: false,
    zero_workgroup_memory: true,
};

/// Every shader the library uses.
pub const ALL: &[Shader] = &[
    SOFTMAX,
    PROBE,
    PROBE_F16,
    LOSS_VOXEL,
    LOSS_REDUCE,
    RESAMPLE,
    AFFINE_RESAMPLE,
    AUGMENT,
    CALIBRATION,
    TEMPERATURE,
    REDUCE,
    NORM,
    ELEMENTWISE,
    UPSAMPLE,
    ADAMW,
    SLIDING_WINDOW,
];

/// The check that a `#[repr(C)]` struct and its WGSL mirror agree, by naga's reflection of the WGSL: the
/// same size, and every 4-byte value (fields, or elements of array and vector fields) at the same offset,
/// padding (names starting with `_`) left out. `fields` is (name, offset, size) per Rust field, in order; see
/// [`assert_layout!`].
#[cfg(test)]
pub(crate) fn assert_wgsl_layout(
    source: &str,
    name: &str,
    size: usize,
    fields: &[(&str, usize, usize)],
) {
    let module = naga::front::wgsl::parse_str(source)
        .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(source)));
    let ty = module
        .types
        .iter()
        .find(|(_, t)| t.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no struct {name} in the WGSL"))
        .1;
    let naga::TypeInner::Struct { members, span } = &ty.inner else {
        panic!("{name} is not a struct in the WGSL");
    };
    let mut wgsl = Vec::new();
    for m in members {
        let member = m.name.as_deref().unwrap_or("?");
        let values = match module.types[m.ty].inner {
            naga::TypeInner::Scalar(s) if s.width == 4 => 1,
            naga::TypeInner::Vector { size, scalar } if scalar.width == 4 => size as usize,
            ref other => panic!("{name}.{member}: {other:?} is not a 4-byte scalar or vector"),
        };
        if !member.starts_with('_') {
            wgsl.extend((0..values).map(|k| (member, m.offset as usize + 4 * k)));
        }
    }
    let rust: Vec<(&str, usize)> = fields
        .iter()
        .filter(|(field, _, _)| !field.starts_with('_'))
        .flat_map(|&(field, offset, bytes)| (0..bytes / 4).map(move |k| (field, offset + 4 * k)))
        .collect();
    let offsets = |v: &[(&str, usize)]| v.iter().map(|&(_, o)| o).collect::<Vec<_>>();
    assert_eq!(
        offsets(&wgsl),
        offsets(&rust),
        "{name}: value offsets differ\n  WGSL {wgsl:?}\n  Rust {rust:?}"
    );
    assert_eq!(*span as usize, size, "{name}: size (WGSL left, Rust right)");
}

/// `assert_layout!(RustType, source, "WgslName"; field, field, ...)`: [`assert_wgsl_layout`] with the
/// Rust side's size, offsets and field sizes taken from the type (list every field, padding included).
#[cfg(test)]
macro_rules! assert_layout {
    ($t:ty, $source:expr, $name:expr; $($field:ident),+ $(,)?) => {{
        let zero: $t = bytemuck::Zeroable::zeroed();
        $crate::shaders::assert_wgsl_layout(
            &$source,
            $name,
            std::mem::size_of::<$t>(),
            &[$((
                stringify!($field),
                std::mem::offset_of!($t, $field),
                std::mem::size_of_val(&zero.$field),
            )),+],
        );
    }};
}
#[cfg(test)]
pub(crate) use assert_layout;

#[cfg(test)]
impl Shader {
    /// The source as the library compiles it with its first prelude (what the layout tests parse).
    pub(crate) fn first_variant(&self) -> String {
        self.with_prelude(self.preludes[0])
    }
}

#[cfg(test)]
mod layout_check_tests {
    use bytemuck::{Pod, Zeroable};

    const WGSL: &str = "struct P { a: u32, b: vec3<u32>, _pad: u32, c: f32 }
@group(0) @binding(0) var<uniform> p: P;";

    #[repr(C)]
    #[derive(Clone, Copy, Pod, Zeroable)]
    struct Mirrored {
        a: u32,
        _pad0: [u32; 3],
        b: [u32; 3],
        _pad1: u32,
        c: f32,
        _pad2: [u32; 3],
    }

    #[repr(C)]
    #[derive(Clone, Copy, Pod, Zeroable)]
    struct Unaligned {
        a: u32,
        b: [u32; 3],
        _pad: u32,
        c: f32,
    }

    #[test]
    fn a_mirrored_struct_passes() {
        assert_layout!(Mirrored, WGSL, "P"; a, _pad0, b, _pad1, c, _pad2);
    }

    #[test]
    #[should_panic(expected = "value offsets differ")]
    fn a_vec3_without_its_alignment_is_caught() {
        assert_layout!(Unaligned, WGSL, "P"; a, b, _pad, c);
    }
}
