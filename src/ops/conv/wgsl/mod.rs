//! WGSL source of the convolution kernels, generated at run time for one set of tile sizes.
//!
//! WGSL has no macros, and LLVM-based drivers keep unrolled accumulators in registers only when the code is
//! unrolled in the source, so each register tile (columns x channels per invocation) is its own text. The
//! tile sizes live in [`ConvTiles`], which both this generator and the launches (`super::launch`) read.
//! Here: the emitters both modules share; `portable.rs` (workgroup-memory kernels), `subgroup.rs`
//! (subgroup-broadcast kernels), `phase.rs` (the strided input gradient of both), `pointwise.wgsl`.

use std::fmt::Write as _;

use super::tiles::{ConvTiles, ROW_TAPS, STAGE, SUBGROUP_LANES, VOXEL_CHUNK, WORKGROUP};

mod phase;
mod portable;
mod subgroup;

use phase::{phase_data, phase_data_subgroup};
use portable::portable;
use subgroup::subgroup;

/// The weight gradient of 1x1x1 kernels at stride 1 without padding (`backward_weight_pointwise`): a matrix
/// product over voxels, `dw[co, ci] = sum dy[n, co, v] x[n, ci, v]`. Appended to both modules.
const POINTWISE_WEIGHT: &str = include_str!("pointwise.wgsl");

/// The header both modules share: `Params`, the bindings, the tile constants, `put_forward`.
const COMMON: &str = include_str!("common.wgsl");
/// The portable module's header: its comment, staged-weight constants and `stage_weights`.
const PORTABLE_HEADER: &str = include_str!("portable.wgsl");
/// The subgroup module's header comment.
const SUBGROUP_HEADER: &str = include_str!("subgroup.wgsl");

impl ConvTiles {
    /// The WGSL module of these tiles: the module's header, the shared header, its kernels, the phase
    /// kernel and the 1x1x1 weight gradient.
    pub fn source(&self) -> String {
        let (header, kernels, phase) = if self.subgroup {
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
            )
        } else {
            (
                PORTABLE_HEADER,
                portable(self.cols, self.quads, self.row_cols, self.row_kernel_rows),
                phase_data(self.cols, self.quads),
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
            + "\n"
            + POINTWISE_WEIGHT
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

/// Column decoding of the general kernels: column j of the invocation -> image n{j}, voxel v{j} and its
/// (zz, yy, xx) in the size vector `sz`.
fn decode(cols: usize, sz: &str, total: &str) -> String {
    let mut s = Vec::new();
    for j in 0..cols {
        let off = j * WORKGROUP;
        s.push(format!(
            "    let col{j} = tile_index(wid, nwg) * COLS + lid + {off}u;"
        ));
        s.push(format!("    let valid{j} = col{j} < {total};"));
        s.push(format!("    let cc{j} = select(0u, col{j}, valid{j});"));
        s.push(format!("    let n{j} = cc{j} / {sz}.w;"));
        s.push(format!("    let v{j} = cc{j} - n{j} * {sz}.w;"));
        s.push(format!("    let zz{j} = v{j} / ({sz}.y * {sz}.z);"));
        s.push(format!("    let rr{j} = v{j} - zz{j} * ({sz}.y * {sz}.z);"));
        s.push(format!("    let yy{j} = rr{j} / {sz}.z;"));
        s.push(format!("    let xx{j} = rr{j} - yy{j} * {sz}.z;"));
    }
    join(s)
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

/// The guarded stores of the general kernels: `out[obase + (m0 + m) * stride] = acc{j}_{q}[r] (+ extra)`.
#[allow(clippy::too_many_arguments)]
fn store(
    ind: &str,
    cols: usize,
    quads: usize,
    out: &str,
    lim: &str,
    base: &dyn Fn(usize) -> String,
    stride: &str,
    extra: &dyn Fn(usize) -> String,
) -> String {
    let mut s = Vec::new();
    for j in 0..cols {
        s.push(format!("{ind}if (valid{j}) {{"));
        s.push(format!("{ind}    let obase = {};", base(j)));
        for q in 0..quads {
            for r in 0..4 {
                let m = q * 4 + r;
                s.push(format!(
                    "{ind}    if (m0 + {m}u < {lim}) {{ {} }}",
                    write_result(
                        out,
                        &format!("obase + (m0 + {m}u) * {stride}"),
                        &format!("acc{j}_{q}[{r}]{}", extra(m))
                    )
                ));
            }
        }
        s.push(format!("{ind}}}"));
    }
    join(s)
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

// Emitters shared by both modules' forward and input-gradient row kernels.

/// Gathers the window of `win` values along W of reduced channel offset `off` (zero outside the input).
fn window_gathers(ind: &str, win: usize, off: &str) -> String {
    let mut s = String::new();
    for i in 0..win {
        let _ = writeln!(
            s,
            "{ind}let xw{i} = select(0.0, src[select(0u, woff{i} + {off}, wok{i})], wok{i});"
        );
    }
    s
}

/// Accumulates the window into the row's `tnw` results: tap `kw` of result `j` reads window value
/// `xi(j, kw)`, with the weights `{operand}{kw}_{q}`.
fn window_fmas(
    ind: &str,
    tnw: usize,
    quads: usize,
    kw_n: usize,
    operand: &str,
    xi: &dyn Fn(usize, usize) -> usize,
) -> String {
    let mut s = String::new();
    for kw in 0..kw_n {
        for j in 0..tnw {
            for q in 0..quads {
                let _ = writeln!(
                    s,
                    "{ind}acc{j}_{q} = fma({operand}{kw}_{q}, vec4<f32>(xw{}), acc{j}_{q});",
                    xi(j, kw)
                );
            }
        }
    }
    s
}

/// The guarded stores of the row's results (plus `bias[m]` where given; closes the function).
#[allow(clippy::too_many_arguments)]
fn window_stores(
    tnw: usize,
    quads: usize,
    bias: Option<&str>,
    mlim: &str,
    outname: &str,
    rstride: &str,
    store_base: &dyn Fn(usize) -> String,
) -> String {
    let mut s = String::new();
    for j in 0..tnw {
        let _ = writeln!(
            s,
            "    if (valid{j}) {{\n        let obase = {};",
            store_base(j)
        );
        for q in 0..quads {
            for r in 0..4 {
                let m = q * 4 + r;
                let extra = bias.map_or(String::new(), |b| format!(" + {b}[{m}]"));
                let write = write_result(
                    outname,
                    &format!("obase + (m0 + {m}u) * {rstride}"),
                    &format!("acc{j}_{q}[{r}]{extra}"),
                );
                let _ = writeln!(s, "        if (m0 + {m}u < {mlim}) {{ {write} }}");
            }
        }
        s += "    }\n";
    }
    s + "}\n"
}

// Emitters shared by both modules' weight-gradient row kernels.

/// Gathers each kernel row's window of `win` input values along W (zero outside the input).
fn row_window_loads(ind: &str, rows: usize, win: usize) -> String {
    let mut s = String::new();
    for j in 0..rows {
        let _ = writeln!(s, "{ind}let okr{j} = valid{j} && in_range(vi.x + kd{j}, p.isz.x) && in_range(vi.y + kh{j}, p.isz.y);");
        let _ = writeln!(s, "{ind}let rb{j} = vi.w + coff{j};");
        for i in 0..win {
            let _ = writeln!(
                s,
                "{ind}let ok{j}_{i} = okr{j} && in_range(vi.z + {i}, p.isz.z);"
            );
            let _ = writeln!(
                s,
                "{ind}let xw{j}_{i} = select(0.0, src[select(0u, u32(rb{j} + {i}), ok{j}_{i})], ok{j}_{i});"
            );
        }
    }
    s
}

/// Accumulates staged voxel `k` (its channel operand `operand{q}`) into every kernel row's taps.
fn row_fmas(ind: &str, rows: usize, quads: usize, k: usize, operand: &str) -> String {
    let mut s = String::new();
    for j in 0..rows {
        for kw in 0..ROW_TAPS {
            for q in 0..quads {
                let _ = writeln!(
                    s,
                    "{ind}acc{j}_{kw}_{q} = fma({operand}{q}, vec4<f32>(xw{j}_{}), acc{j}_{kw}_{q});",
                    k + kw
                );
            }
        }
    }
    s
}

/// The weight-gradient row kernels' reduction steps: step `k` loads each channel operand `{operand}{q}`
/// (`load(k, q)`) and accumulates it into every kernel row's taps.
fn row_weight_steps(
    ind: &str,
    steps: usize,
    rows: usize,
    quads: usize,
    operand: &str,
    load: &dyn Fn(usize, usize) -> String,
) -> String {
    let mut s = String::new();
    for k in 0..steps {
        let _ = writeln!(s, "{ind}{{");
        for q in 0..quads {
            let _ = writeln!(s, "{ind}    let {operand}{q} = {};", load(k, q));
        }
        s += &row_fmas(&format!("{ind}    "), rows, quads, k, operand);
        let _ = writeln!(s, "{ind}}}");
    }
    s
}

/// Writes each kernel row's accumulators to the weight-gradient partials (closes the function).
fn row_weight_store(rows: usize, quads: usize) -> String {
    let mut s = String::from("    let pbase = wid.z * cout * ecount;\n");
    for j in 0..rows {
        let _ = writeln!(
            s,
            "    if (valid{j}) {{\n        let e = ci{j} * kvol + rr{j} * {ROW_TAPS}u;"
        );
        for kw in 0..ROW_TAPS {
            for q in 0..quads {
                for r in 0..4 {
                    let m = q * 4 + r;
                    let _ = writeln!(s, "        if (m0 + {m}u < cout) {{ out3[pbase + (m0 + {m}u) * ecount + e + {kw}u] = acc{j}_{kw}_{q}[{r}]; }}");
                }
            }
        }
        s.push_str("    }\n");
    }
    s + "}\n"
}

/// Declarations of the weight-gradient row kernels' kernel rows and accumulators.
fn row_weight_setup(rows: usize, quads: usize) -> String {
    let mut v = Vec::new();
    for j in 0..rows {
        let off = j * WORKGROUP;
        let per = WORKGROUP * rows;
        v.push(format!(
            "    let r{j} = wid.x * {per}u + lid + {off}u;
    let valid{j} = r{j} < cin * kdh;
    let rc{j} = select(0u, r{j}, valid{j});
    let ci{j} = rc{j} / kdh;
    let rr{j} = rc{j} - ci{j} * kdh;
    let kd{j} = i32(rr{j} / p.ksz.y);
    let kh{j} = i32(rr{j} - (rr{j} / p.ksz.y) * p.ksz.y);
    let coff{j} = i32(ci{j} * ivox) + (kd{j} * i32(p.isz.y) + kh{j}) * i32(p.isz.z);"
        ));
    }
    let mut a = Vec::new();
    for j in 0..rows {
        for kw in 0..ROW_TAPS {
            for q in 0..quads {
                a.push(format!("    var acc{j}_{kw}_{q} = vec4<f32>(0.0);"));
            }
        }
    }
    join(v) + "\n" + &join(a)
}

/// The window of the row kernels: `wok{i}` / `woff{i}` for `win` values along W from `x0`, `lim` wide.
fn window(win: usize, lim: &str) -> String {
    let mut s = String::new();
    for i in 0..win {
        let _ = write!(
            s,
            "        let wok{i} = okr && in_range(x0 + {i}, {lim});
        let woff{i} = u32(rb + {i});
"
        );
    }
    s
}

const FWD_WINDOW_ROWS: &str = "        let iz = z0 + i32(kd);
        let iy = y0 + i32(kh);
        let okr = valid && in_range(iz, p.isz.x) && in_range(iy, p.isz.y);
        let rb = xb + (iz * i32(p.isz.y) + iy) * i32(p.isz.z) + x0;
";

const BWD_WINDOW_ROWS: &str = "        let tz = z0 - i32(kd);
        let ty = y0 - i32(kh);
        let oz = tz / sd;
        let oy = ty / sh;
        let okr = valid && oz * sd == tz && oy * sh == ty && in_range(tz, p.osz.x * p.stride.x)
            && in_range(ty, p.osz.y * p.stride.y);
        let rb = yb + (oz * i32(p.osz.y) + oy) * i32(p.osz.z) + x0;
";

/// Row decoding of the row kernels: `cols` consecutive results along W of one row of `sz`.
fn row_decode(cols: usize, sz: &str) -> String {
    let mut s = format!(
        "    let segs = ({sz}.z + {}u) / {cols}u;
    let dh = {sz}.x * {sz}.y;
    let col = tile_index(wid, nwg) * WGS + lid;
    let valid = col < p.dims.x * dh * segs;
    let cc = select(0u, col, valid);
    let row = cc / segs;
    let xs = (cc - row * segs) * {cols}u;
    let n = row / dh;
    let rz = row - n * dh;
    let zz = rz / {sz}.y;
    let yy = rz - zz * {sz}.y;
",
        cols - 1
    );
    let v: Vec<String> = (0..cols)
        .map(|j| format!("    let valid{j} = valid && xs + {j}u < {sz}.z;"))
        .collect();
    s += &join(v);
    s
}

#[cfg(test)]
mod tests {
    use crate::ops::conv::tiles::selectable_tiles;

    /// FNV-1a (64-bit) of each selectable variant's WGSL. A refactor keeps this list; a deliberate kernel
    /// change updates it in the same commit (the failure message prints the new list). FNV-1a is written out
    /// because `DefaultHasher`'s algorithm may change between Rust releases.
    const DIGESTS: &[(&str, u64)] = &[
        ("conv-sg-c2x8-r8x8x1", 0x3011801482819b4f),
        ("conv-sg-c4x8-r8x8x1", 0x1822f9cb34bcf394),
        ("conv-sg-c2x16-r8x8x1", 0xafb7a080f372e5d1),
        ("conv-sg-c4x16-r8x8x1", 0x79b267deea215c78),
        ("conv-wg-c2x8-r4x8x1", 0xbf24cf29e50308e1),
        ("conv-wg-c4x8-r4x8x1", 0x47dcd99ddb08834d),
        ("conv-wg-c2x16-r4x16x1", 0x674310c6dc620437),
        ("conv-wg-c4x16-r4x16x1", 0x5d6097a4d3e7edf7),
        ("conv-wg-c2x4-r4x4x1", 0x6a932fdcf3de9111),
        ("conv-wg-c4x4-r4x4x1", 0xebdaa2af58ca2b37),
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
