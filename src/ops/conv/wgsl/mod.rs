//! WGSL source of the convolution kernels, generated at run time for one set of tile sizes.
//!
//! WGSL has no macros, and LLVM-based drivers keep unrolled accumulators in registers only when the code is
//! unrolled in the source, so each register tile (columns x channels per invocation) is its own text. The
//! tile sizes live in [`ConvTiles`], which both this generator and the launches (`super::launch`) read.
//! Here: the module's assembly and the stores every kernel uses; `pass.rs` (what the forward and
//! input-gradient kernels differ in), `weights.rs` (the weight-gradient kernels' shared parts),
//! `portable.rs` (workgroup-memory kernels), `subgroup.rs` (subgroup-broadcast kernels), `phase.rs` (the
//! strided input gradient of both), `pointwise.rs` (the 1x1x1 kernels); the fixed text in `common.wgsl`,
//! `portable.wgsl`, `subgroup.wgsl`.

use std::fmt::Write as _;

use super::tiles::{ConvTiles, ROW_TAPS, STAGE, SUBGROUP_LANES, VOXEL_CHUNK, WORKGROUP};

mod pass;
mod phase;
mod pointwise;
mod portable;
mod subgroup;
mod weights;

use phase::{phase_data, phase_data_subgroup, phase_row_subgroup};
use portable::portable;
use subgroup::subgroup;

/// The header both modules share: `Params`, the bindings, the tile constants, `put_forward`.
const COMMON: &str = include_str!("common.wgsl");
/// The portable module's header: its comment, staged-weight constants and `stage_weights`.
const PORTABLE_HEADER: &str = include_str!("portable.wgsl");
/// The subgroup module's header comment.
const SUBGROUP_HEADER: &str = include_str!("subgroup.wgsl");

impl ConvTiles {
    /// The WGSL module of these tiles: the module's header, the shared header, its kernels, the phase
    /// kernel, the 1x1x1 kernels (forward, input and weight gradients), the row kernels at stride 2 along W
    /// and, in the subgroup module, the 1x1x1 weight gradient over vec4 blocks, the stride-2 forward and
    /// weight-gradient row kernels with vec4 windows, and the stride-2 input-gradient row kernels (gathered
    /// and vec4 windows).
    pub fn source(&self) -> String {
        let (header, kernels, phase, row_stride2) = if self.subgroup {
            (
                SUBGROUP_HEADER,
                subgroup(
                    self.cols,
                    self.quads,
                    self.row_cols,
                    self.row_quads,
                    self.row_kernel_rows,
                ),
                phase_data_subgroup(self.cols, self.quads),
                subgroup::row_stride2(
                    self.row_cols,
                    self.row_quads,
                    self.row_kernel_rows,
                    self.quads,
                ),
            )
        } else {
            (
                PORTABLE_HEADER,
                portable(self.cols, self.quads, self.row_cols, self.row_kernel_rows),
                phase_data(self.cols, self.quads),
                portable::row_stride2(self.row_cols, self.quads, self.row_kernel_rows),
            )
        };
        let values = [
            ("TM", self.channels()),
            ("Q", self.quads),
            ("TN", self.cols),
            ("COLS", self.workgroup_cols()),
            ("TNW", self.row_cols),
            ("RM", self.row_channels()),
            ("TR", self.row_kernel_rows),
            ("STAGE", STAGE),
            ("WTILE", STAGE * self.quads),
        ];
        fill(header, &values)
            + "\n"
            + &fill(COMMON, &values)
            + &kernels
            + &phase
            + &pointwise::pointwise(self)
            + &if self.subgroup {
                pointwise::pointwise_weight_subgroup(self.pointwise_weight_tile())
            } else {
                pointwise::pointwise_weight()
            }
            + &row_stride2
            + &if self.subgroup {
                pointwise::pointwise_weight_subgroup_vec4(self.pointwise_weight_tile())
                    + &subgroup::row_stride2_vec4(
                        self.row_cols,
                        self.row_quads,
                        self.row_kernel_rows,
                        self.quads,
                    )
                    + &phase_row_subgroup(self.row_cols, self.row_quads, false)
                    + &phase_row_subgroup(self.row_cols, self.row_quads, true)
            } else {
                String::new()
            }
    }
}

/// `template` with each `{NAME}` replaced by its value.
fn fill(template: &str, values: &[(&str, usize)]) -> String {
    let mut s = template.to_string();
    for (name, value) in values {
        s = s.replace(&format!("{{{name}}}"), &value.to_string());
    }
    debug_assert!(!s.contains("{T"), "a placeholder is left in {s}");
    s
}

/// The sizes every kernel reads first, under the names its body uses.
const SIZES: &str = "    let cin = p.dims.y;
    let cout = p.dims.z;
    let ivox = p.isz.w;
    let ovox = p.osz.w;";

fn join(v: Vec<String>) -> String {
    v.join("\n")
}

/// Channels of a `4 quads` tile that each lane of a group of 8 owns in the vec4 kernels: lane l owns
/// channels `m0 + l own + c` (`c < own`), at least one (lanes past a smaller tile own none).
fn lane_channels(quads: usize) -> usize {
    (4 * quads / SUBGROUP_LANES).max(1)
}

/// For each channel c a lane owns ([`lane_channels`]), one line each: `{ok}{c}`, whether it is in the tile
/// and below `lim`, and `{row}{c}`, that channel times `stride` (0 where it is not).
fn owned_channels(quads: usize, ok: &str, row: &str, lim: &str, stride: &str) -> String {
    let (tm, own) = (4 * quads, lane_channels(quads));
    let mut s = String::new();
    for c in 0..own {
        let m = format!("m0 + lane * {own}u + {c}u");
        let _ = writeln!(
            s,
            "    let {ok}{c} = lane * {own}u + {c}u < {tm}u && {m} < {lim};"
        );
        let _ = writeln!(s, "    let {row}{c} = select(0u, {m}, {ok}{c}) * {stride};");
    }
    s
}

/// Two lines: the aligned vec4s `{name}lo{i}` and `{name}hi{i}` of `view` at `index` and `index + 1`,
/// zero where `ok` is false.
fn vec4_pair(ind: &str, name: &str, i: usize, view: &str, index: &str, ok: &str) -> String {
    let mut s = String::new();
    for (h, add) in [("lo", ""), ("hi", " + 1u")] {
        let _ = writeln!(
            s,
            "{ind}let {name}{h}{i} = select(vec4<f32>(0.0), {view}[select(0u, {index}{add}, {ok})], {ok});"
        );
    }
    s
}

/// `text(j)` for each of `cols` columns, one after the other (joined by newlines, none at the end).
fn per_column(cols: usize, text: impl Fn(usize) -> String) -> String {
    join((0..cols).map(text).collect())
}

/// Accumulator declarations `acc{j}_{q}` for `cols` columns x `quads` vec4s.
fn acc_decl(cols: usize, quads: usize) -> String {
    let mut v = Vec::new();
    for j in 0..cols {
        for q in 0..quads {
            v.push(format!("    var acc{j}_{q} = vec4<f32>(0.0);"));
        }
    }
    join(v)
}

/// The forward kernels' output (binding 4); their results are written through `put_forward`.
const FORWARD_OUT: &str = "out4";

/// The WGSL statement writing result value `v` at index `i` of `out`.
fn write_result(out: &str, i: &str, v: &str) -> String {
    if out == FORWARD_OUT {
        format!("put_forward({i}, {v});")
    } else {
        format!("{out}[{i}] = {v};")
    }
}

/// Where a kernel's results go: result channel m of a column at `{base} + (m0 + m) * {stride}` of `out`,
/// where `m0 + m < lim`.
struct Target<'a> {
    out: &'a str,
    lim: &'a str,
    base: &'a str,
    stride: &'a str,
}

impl Target<'_> {
    /// The guarded stores of `cols` columns, and the function's closing brace: column j (if `valid{j}`), after
    /// the statements `prelude(j)`, stores for each accumulator group `(acc, tail)` of `groups(j)` and each
    /// result channel m = 4q + r the value `{acc}{q}[r]` (plus `bias[m]` where given) at the target's index
    /// followed by `tail`.
    fn stores(
        &self,
        cols: usize,
        quads: usize,
        bias: Option<&str>,
        prelude: &dyn Fn(usize) -> String,
        groups: &dyn Fn(usize) -> Vec<(String, String)>,
    ) -> String {
        let Target {
            out,
            lim,
            base,
            stride,
        } = self;
        let mut s = String::new();
        for j in 0..cols {
            let _ = write!(s, "    if (valid{j}) {{\n{}", prelude(j));
            for (acc, tail) in groups(j) {
                for q in 0..quads {
                    for r in 0..4 {
                        let m = q * 4 + r;
                        let extra = bias.map_or(String::new(), |b| format!(" + {b}[{m}]"));
                        let write = write_result(
                            out,
                            &format!("{base} + (m0 + {m}u) * {stride}{tail}"),
                            &format!("{acc}{q}[{r}]{extra}"),
                        );
                        let _ = writeln!(s, "        if (m0 + {m}u < {lim}) {{ {write} }}");
                    }
                }
            }
            s += "    }\n";
        }
        s + "}\n"
    }
}

/// The guarded stores of the general and row kernels (plus `bias[m]` where given; closes the function):
/// column j's results at `base(j) + (m0 + m) * stride` of `out`, channels below `lim`.
fn store(
    cols: usize,
    quads: usize,
    out: &str,
    lim: &str,
    base: &dyn Fn(usize) -> String,
    stride: &str,
    bias: Option<&str>,
) -> String {
    let target = Target {
        out,
        lim,
        base: "obase",
        stride,
    };
    target.stores(
        cols,
        quads,
        bias,
        &|j| format!("        let obase = {};\n", base(j)),
        &|j| vec![(format!("acc{j}_"), String::new())],
    )
}

/// The bias read of the forward kernels into `name` (an array of `len` channels from `m0`).
fn bias_read(name: &str, len: &str) -> String {
    format!(
        "    var {name} = array<f32, {len}>();
    if (p.dims.w != 0u) {{
        for (var m = 0u; m < {len}; m++) {{
            if (m0 + m < cout) {{
                {name}[m] = bias[m0 + m];
            }}
        }}
    }}
"
    )
}

#[cfg(test)]
mod tests {
    use crate::ops::conv::tiles::selectable_tiles;

    /// FNV-1a (64-bit) of each selectable variant's WGSL. A refactor keeps this list; a deliberate kernel
    /// change updates it in the same commit (the failure message prints the new list). FNV-1a is written out
    /// because `DefaultHasher`'s algorithm may change between Rust releases.
    const DIGESTS: &[(&str, u64)] = &[
        ("conv-sg-c2x8-r8x8x1", 0x137c163e9517f845),
        ("conv-sg-c4x8-r8x8x1", 0x751d08ccfcf338f3),
        ("conv-sg-c2x16-r8x8x1", 0x421ad5c604a62eca),
        ("conv-sg-c4x16-r8x8x1", 0xed7e6094b174a7e4),
        ("conv-wg-c2x8-r4x8x1", 0x6bc5b9450ad28aee),
        ("conv-wg-c4x8-r4x8x1", 0x1d401c23262caffa),
        ("conv-wg-c2x16-r4x16x1", 0x8d85dc3673dc9bd1),
        ("conv-wg-c4x16-r4x16x1", 0x2a9a722a37601db1),
        ("conv-wg-c2x4-r4x4x1", 0x52c5cf84ac8da51f),
        ("conv-wg-c4x4-r4x4x1", 0xf6d8160569015b15),
    ];

    fn fnv1a(text: &str) -> u64 {
        let mut hash = 0xcbf2_9ce4_8422_2325_u64;
        for byte in text.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        hash
    }

    #[test]
    fn fnv1a_matches_the_published_test_vectors() {
        assert_eq!(fnv1a(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a("foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn generated_wgsl_of_every_selectable_variant_is_unchanged() {
        let now: Vec<(String, u64)> = selectable_tiles()
            .iter()
            .map(|t| (t.id(), fnv1a(&t.source())))
            .collect();
        let expected: Vec<(String, u64)> = DIGESTS
            .iter()
            .map(|&(id, digest)| (id.to_string(), digest))
            .collect();
        let list: String = now
            .iter()
            .map(|(id, digest)| format!("        (\"{id}\", 0x{digest:016x}),\n"))
            .collect();
        assert_eq!(
            now, expected,
            "the generated WGSL changed; if on purpose, the new list is:\n{list}"
        );
    }
}
