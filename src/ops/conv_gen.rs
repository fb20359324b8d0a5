//! WGSL source of the convolution kernels, generated at run time for one set of tile sizes.
//!
//! WGSL has no macros, and LLVM-based drivers keep unrolled accumulators in registers only when the code is
//! unrolled in the source, so each register tile (columns x channels per invocation) is its own text. The
//! tile sizes live in [`ConvTiles`], which both this generator and the launcher (`super::conv`) read.

use std::fmt::Write as _;

/// Lanes that share one operand by subgroup broadcasts (the subgroup kernels use lanes `sgid % 8`).
pub const SUBGROUP_LANES: usize = 8;
/// Invocations per workgroup of every convolution kernel.
pub const WORKGROUP: usize = 64;
/// (channel, tap) pairs staged in workgroup memory per chunk (portable kernels).
pub const STAGE: usize = 216;
/// Voxels staged per chunk by the portable weight-gradient kernels (a multiple of 8).
pub const VOXEL_CHUNK: usize = 128;
/// Taps along W the row kernels are written for (stride 1).
pub const ROW_TAPS: usize = 3;
/// Output x input channels one workgroup of the 1x1x1 weight-gradient kernel owns (4 x 4).
pub const POINTWISE_CHANNELS: usize = 4;
/// Lanes of the 1x1x1 weight-gradient kernel (its fixed-order tree sums this many partials).
const POINTWISE_LANES: usize = 64;

/// Tile sizes of one generated kernel module: everything the generated text and its launcher share.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConvTiles {
    /// Whether the kernels broadcast the shared operand across 8 lanes with subgroup operations (otherwise
    /// it is staged in workgroup memory).
    pub subgroup: bool,
    /// Columns (voxels, or weight entries) per invocation of the general kernels.
    pub cols: usize,
    /// Result channels per invocation (and workgroup) of the general kernels, divided by 4 (vec4 lanes).
    pub quads: usize,
    /// Consecutive results along W per invocation of the row kernels (stride 1, 3 taps along W).
    pub row_cols: usize,
    /// Result channels per workgroup of the forward and input-gradient row kernels, divided by 4.
    pub row_quads: usize,
    /// Kernel rows (ci, kd, kh) per invocation of the weight-gradient row kernel.
    pub row_kernel_rows: usize,
}

impl ConvTiles {
    /// Result channels per workgroup of the general kernels (and of the weight-gradient row kernel).
    pub fn channels(&self) -> usize {
        4 * self.quads
    }

    /// Columns per workgroup of the general kernels.
    pub fn workgroup_cols(&self) -> usize {
        WORKGROUP * self.cols
    }

    /// Result channels per workgroup of the forward and input-gradient row kernels.
    pub fn row_channels(&self) -> usize {
        4 * self.row_quads
    }

    /// A short name of the variant, unique among variants (the pipeline cache's key).
    pub fn id(&self) -> String {
        format!(
            "conv-{}-c{}x{}-r{}x{}x{}",
            if self.subgroup { "sg" } else { "wg" },
            self.cols,
            self.channels(),
            self.row_cols,
            self.row_channels(),
            self.row_kernel_rows
        )
    }

    /// Bytes of workgroup memory the largest entry point of the module uses: staged weights (the portable
    /// kernels and, in both modules, the phase kernel), staged voxels (portable weight gradients), or the
    /// 1x1x1 weight gradient's lane sums.
    pub fn workgroup_bytes(&self) -> usize {
        let weights = STAGE * self.quads * 16;
        let voxels = if self.subgroup {
            0
        } else {
            VOXEL_CHUNK * self.quads * 16 + VOXEL_CHUNK * 16
        };
        weights.max(voxels).max(POINTWISE_LANES * 4 * 16)
    }

    /// The variant of these tiles for one launch with `result_channels` channels per result and `columns`
    /// columns (voxels or weight entries): half the channels per invocation where the call has at most half
    /// of them (an 8-channel layer would otherwise leave half of every accumulator idle), and half the columns
    /// where all of them fit half a workgroup (a 4x4x4 bottleneck would otherwise idle half the workgroup).
    /// Each result is still reduced in the same order, so every variant gives the same bits.
    pub fn for_call(&self, result_channels: usize, columns: usize) -> ConvTiles {
        let mut t = *self;
        if t.quads > 1 && result_channels <= 2 * t.quads {
            t.quads /= 2;
            t.row_quads = t.row_quads.min(t.quads);
        }
        if t.cols > 1 && columns <= WORKGROUP * t.cols / 2 {
            t.cols /= 2;
        }
        t
    }

    /// Every variant [`ConvTiles::for_call`] can return from these tiles (these included).
    pub fn call_variants(&self) -> Vec<ConvTiles> {
        let mut v = Vec::new();
        for channels in [1, usize::MAX] {
            for columns in [1, usize::MAX] {
                let t = self.for_call(channels, columns);
                if !v.contains(&t) {
                    v.push(t);
                }
            }
        }
        v
    }

    /// The WGSL module of these tiles.
    pub fn source(&self) -> String {
        (if self.subgroup {
            subgroup(
                self.cols,
                self.quads,
                self.row_cols,
                self.row_quads,
                self.row_kernel_rows,
            )
        } else {
            portable(self.cols, self.quads, self.row_cols, self.row_kernel_rows)
        }) + FORWARD_RESIDUAL
            + &if self.subgroup {
                phase_data_subgroup(self.cols, self.quads)
            } else {
                phase_data(self.cols, self.quads)
            }
            + POINTWISE_WEIGHT
    }
}

/// The tiles of the subgroup module (adapters with subgroups of at least [`SUBGROUP_LANES`] invocations).
pub const SUBGROUP_TILES: ConvTiles = ConvTiles {
    subgroup: true,
    cols: 4,
    quads: 4,
    row_cols: 8,
    row_quads: 2,
    row_kernel_rows: 1,
};

/// The tiles of the portable module where workgroup memory allows 16 result channels per workgroup. Its row
/// tiles are small on purpose: Mesa's GL driver compiles 8-wide row kernels ~3x slower (~3 s each, cold).
pub const PORTABLE_TILES: ConvTiles = ConvTiles {
    subgroup: false,
    cols: 4,
    quads: 4,
    row_cols: 4,
    row_quads: 4,
    row_kernel_rows: 1,
};

/// The tiles for an adapter: the subgroup module where subgroups of at least [`SUBGROUP_LANES`] invocations
/// exist (its lanes broadcast the shared operand) and its workgroup memory fits, otherwise the portable module
/// with the most result channels per workgroup whose staged operands fit `workgroup_storage` bytes.
pub fn select_tiles(subgroups: bool, subgroup_min_size: u32, workgroup_storage: u32) -> ConvTiles {
    if subgroups
        && subgroup_min_size as usize >= SUBGROUP_LANES
        && SUBGROUP_TILES.workgroup_bytes() <= workgroup_storage as usize
    {
        return SUBGROUP_TILES;
    }
    let mut t = PORTABLE_TILES;
    while t.quads > 1 && t.workgroup_bytes() > workgroup_storage as usize {
        t.quads /= 2;
        t.row_quads = t.quads;
    }
    t
}

/// Every variant [`select_tiles`] can return for any adapter, with each one's [`ConvTiles::for_call`]
/// variants (what the naga test validates).
pub fn selectable_tiles() -> Vec<ConvTiles> {
    let mut bases = vec![SUBGROUP_TILES];
    for storage in [u32::MAX, 16384, 8192, 4096, 0] {
        let t = select_tiles(false, 0, storage);
        if !bases.contains(&t) {
            bases.push(t);
        }
    }
    let mut v = Vec::new();
    for t in bases.iter().flat_map(ConvTiles::call_variants) {
        if !v.contains(&t) {
            v.push(t);
        }
    }
    v
}

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

/// The residual binding and `put_forward` of both modules: a forward launch with `stride.w` = 1 adds the
/// residual tensor to each result as it is written (`y = conv(x) + bias + r`, the same bits as a separate add).
const FORWARD_RESIDUAL: &str = "
@group(0) @binding(5) var<storage, read> res: array<f32>;

fn put_forward(i: u32, v: f32) {
    if (p.stride.w != 0u) {
        out4[i] = v + res[i];
    } else {
        out4[i] = v;
    }
}
";

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

/// The portable module: operands shared by the workgroup are staged in workgroup memory.
fn portable(tn: usize, q: usize, tnw: usize, tr: usize) -> String {
    let m = 4 * q;
    let cols = WORKGROUP * tn;
    let wtile = STAGE * q;
    let mut out = format!(
        "// Convolution over NCDHW tensors (2D runs as depth 1), any kernel size, stride and padding, as three
// deterministic gather kernels (no atomics):
//   forward         y[n, co, o]    = bias[co] + sum_{{ci, tap}} w[co, ci, tap] * x[n, ci, o * s - p + tap]
//   backward_data   dx[n, ci, i]   = sum_{{co, tap}} w[co, ci, tap] * dy[n, co, (i + p - tap) / s]  (exact division)
//   backward_weight part[z, co, e] = sum_{{voxels of split z}} dy[n, co, o] * x[n, ci, o * s - p + tap], e = ci*kvol+tap
// (the transposed convolution's forward is backward_data, its input gradient is forward).
//
// Generated by calibseg's src/ops/conv_gen.rs (tile: {tn} column(s) x {m} channels per invocation; row
// kernels: {tnw} results along W, {tr} kernel row(s) x 3 taps).
//
// Tiling: a workgroup of 64 invocations owns {m} channels of the result and {cols} columns (voxels, or weight
// entries for backward_weight); each invocation keeps {m} channels x {tn} column(s) in registers. The operand
// shared by the whole workgroup (weights; for backward_weight the output gradient and the voxel geometry) is
// staged chunk by chunk in workgroup memory and read at workgroup-uniform addresses (a broadcast); the other
// operand is gathered per column, with the padding/stride tests hoisted out of the channel loop. Every index
// is guarded, so the file is compiled without injected bounds checks.

struct Params {{
    dims: vec4<u32>,   // images, in channels, out channels, has bias
    isz: vec4<u32>,    // input depth, height, width, voxels
    osz: vec4<u32>,    // output depth, height, width, voxels
    ksz: vec4<u32>,    // kernel depth, height, width, taps
    stride: vec4<u32>, // depth, height, width, forward adds the residual (1) or not (0)
    pad: vec4<u32>,    // depth, height, width, _
    chunk: vec4<u32>,  // channels per staged chunk, taps per staged chunk, voxels per split, _
}}

const WGS: u32 = 64u;
const TM: u32 = {m}u;          // result channels per workgroup (and per invocation)
const Q: u32 = {q}u;           // TM / 4
const COLS: u32 = {cols}u;      // columns per workgroup
const STAGE: u32 = 216u;      // (channel, tap) pairs staged per chunk

@group(0) @binding(0) var<uniform> p: Params;

// Staged weights: entry k = (channel in chunk) * taps_in_chunk + tap_in_chunk holds TM result channels.
var<workgroup> wtile: array<vec4<f32>, {wtile}>;

fn tile_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {{
    return wid.z * nwg.x + wid.x;
}}

@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read> wts: array<f32>;

// Stages w[.., .., t0 .. t0+tn) for TM result channels from m0 and reduced channels c0 .. c0+cn; the weight
// index is (m * m_stride + c * c_stride) * taps + tap.
fn stage_weights(m_stride: u32, c_stride: u32, m0: u32, mlim: u32, c0: u32, cn: u32, t0: u32, tn: u32,
                 lid: u32) {{
    let kvol = p.ksz.w;
    let entries = cn * tn;
    for (var m = 0u; m < TM; m++) {{
        let mm = m0 + m;
        for (var k = lid; k < entries; k += WGS) {{
            let c = k / tn;
            let t = k - c * tn;
            var v = 0.0;
            if (mm < mlim) {{
                v = wts[(mm * m_stride + (c0 + c) * c_stride) * kvol + t0 + t];
            }}
            wtile[k * Q + m / 4u][m % 4u] = v;
        }}
    }}
}}

fn in_range(a: i32, lim: u32) -> bool {{
    return u32(a) < lim;
}}

@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> out4: array<f32>;
@group(0) @binding(3) var<storage, read_write> out3: array<f32>;
"
    );
    let fmas = |ind: &str, tile: &str| {
        let mut s = Vec::new();
        for qq in 0..q {
            s.push(format!("{ind}let w{qq} = {tile}[wb + {qq}u];"));
        }
        for j in 0..tn {
            for qq in 0..q {
                s.push(format!(
                    "{ind}acc{j}_{qq} = fma(w{qq}, vec4<f32>(xv{j}), acc{j}_{qq});"
                ));
            }
        }
        join(s)
    };
    let loads = |ind: &str| {
        join(
            (0..tn)
                .map(|j| {
                    format!(
                        "{ind}let xv{j} = select(0.0, src[select(0u, off{j} + co, ok{j})], ok{j});"
                    )
                })
                .collect(),
        )
    };
    let per_j = |f: &dyn Fn(usize) -> String| join((0..tn).map(f).collect());
    let ind20 = " ".repeat(20);

    // forward
    out += &format!(
        "
@compute @workgroup_size(64)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {{
    let cin = p.dims.y;
    let cout = p.dims.z;
    let ivox = p.isz.w;
    let ovox = p.osz.w;
    let m0 = wid.y * TM;
{}
",
        decode(tn, "p.osz", "p.dims.x * ovox")
    );
    out += &per_j(&|j| {
        format!(
            "    let z0_{j} = i32(zz{j} * p.stride.x) - i32(p.pad.x);
    let y0_{j} = i32(yy{j} * p.stride.y) - i32(p.pad.y);
    let x0_{j} = i32(xx{j} * p.stride.z) - i32(p.pad.z);
    let xb{j} = i32(n{j} * cin * ivox);"
        )
    });
    out += &format!(
        "
    let chn = p.chunk.x;
    let tn = p.chunk.y;
    let kvol = p.ksz.w;
    let khw = p.ksz.y * p.ksz.z;
{}
    for (var t0 = 0u; t0 < kvol; t0 += tn) {{
        let tcount = min(tn, kvol - t0);
        for (var c0 = 0u; c0 < cin; c0 += chn) {{
            let cn = min(chn, cin - c0);
            workgroupBarrier();
            stage_weights(cin, 1u, m0, cout, c0, cn, t0, tn, lid);
            workgroupBarrier();
            for (var tl = 0u; tl < tcount; tl++) {{
                let t = t0 + tl;
                let kd = t / khw;
                let kr = t - kd * khw;
                let kh = kr / p.ksz.z;
                let kw = kr - kh * p.ksz.z;
",
        acc_decl(tn, q)
    );
    out += &per_j(&|j| {
        format!(
            "                let iz{j} = z0_{j} + i32(kd);
                let iy{j} = y0_{j} + i32(kh);
                let ix{j} = x0_{j} + i32(kw);
                let ok{j} = valid{j} && in_range(iz{j}, p.isz.x) && in_range(iy{j}, p.isz.y) && in_range(ix{j}, p.isz.z);
                let off{j} = u32(xb{j} + (iz{j} * i32(p.isz.y) + iy{j}) * i32(p.isz.z) + ix{j}) + c0 * ivox;"
        )
    });
    out += &format!(
        "
                for (var cl = 0u; cl < cn; cl++) {{
                    let co = cl * ivox;
{}
                    let wb = (cl * tn + tl) * Q;
{}
                }}
            }}
        }}
    }}
{}{}
}}
",
        loads(&ind20),
        fmas(&ind20, "wtile"),
        bias_read("b", "TM"),
        store(
            "    ",
            tn,
            q,
            FORWARD_OUT,
            "cout",
            &|j| format!("n{j} * cout * ovox + v{j}"),
            "ovox",
            &|m| format!(" + b[{m}]")
        )
    );

    // backward_data
    out += &format!(
        "
// dx over input voxels (columns); `src` is dy, the reduced channel is the output channel.
@compute @workgroup_size(64)
fn backward_data(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {{
    let cin = p.dims.y;
    let cout = p.dims.z;
    let ivox = p.isz.w;
    let ovox = p.osz.w;
    let m0 = wid.y * TM;
    let sd = i32(p.stride.x);
    let sh = i32(p.stride.y);
    let sw = i32(p.stride.z);
{}
",
        decode(tn, "p.isz", "p.dims.x * ivox")
    );
    out += &per_j(&|j| {
        format!(
            "    let z0_{j} = i32(zz{j} + p.pad.x);
    let y0_{j} = i32(yy{j} + p.pad.y);
    let x0_{j} = i32(xx{j} + p.pad.z);
    let yb{j} = i32(n{j} * cout * ovox);"
        )
    });
    out += &format!(
        "
    let chn = p.chunk.x;
    let tn = p.chunk.y;
    let kvol = p.ksz.w;
    let khw = p.ksz.y * p.ksz.z;
{}
    for (var t0 = 0u; t0 < kvol; t0 += tn) {{
        let tcount = min(tn, kvol - t0);
        for (var c0 = 0u; c0 < cout; c0 += chn) {{
            let cn = min(chn, cout - c0);
            workgroupBarrier();
            stage_weights(1u, cin, m0, cin, c0, cn, t0, tn, lid);
            workgroupBarrier();
            for (var tl = 0u; tl < tcount; tl++) {{
                let t = t0 + tl;
                let kd = t / khw;
                let kr = t - kd * khw;
                let kh = kr / p.ksz.z;
                let kw = kr - kh * p.ksz.z;
",
        acc_decl(tn, q)
    );
    out += &per_j(&|j| {
        format!(
            "                let tz{j} = z0_{j} - i32(kd);
                let ty{j} = y0_{j} - i32(kh);
                let tx{j} = x0_{j} - i32(kw);
                let oz{j} = tz{j} / sd;
                let oy{j} = ty{j} / sh;
                let ox{j} = tx{j} / sw;
                let ok{j} = valid{j} && oz{j} * sd == tz{j} && oy{j} * sh == ty{j} && ox{j} * sw == tx{j}
                    && in_range(tz{j}, p.osz.x * p.stride.x) && in_range(ty{j}, p.osz.y * p.stride.y)
                    && in_range(tx{j}, p.osz.z * p.stride.z);
                let off{j} = u32(yb{j} + (oz{j} * i32(p.osz.y) + oy{j}) * i32(p.osz.z) + ox{j}) + c0 * ovox;"
        )
    });
    out += &format!(
        "
                for (var cl = 0u; cl < cn; cl++) {{
                    let co = cl * ovox;
{}
                    let wb = (cl * tn + tl) * Q;
{}
                }}
            }}
        }}
    }}
{}
}}
",
        loads(&ind20),
        fmas(&ind20, "wtile"),
        store(
            "    ",
            tn,
            q,
            "out3",
            "cin",
            &|j| format!("n{j} * cin * ivox + v{j}"),
            "ivox",
            &|_| String::new()
        )
    );

    // backward_weight
    let dytile = VOXEL_CHUNK * q;
    out += &format!(
        "
// backward_weight: `src` is x, `wts` is dy (the staged operand), `out3` the per-split partials.
const VCH: u32 = {VOXEL_CHUNK}u; // voxels staged per chunk
var<workgroup> dytile: array<vec4<f32>, {dytile}>; // [voxel][TM out channels]
var<workgroup> vbase: array<vec4<i32>, {VOXEL_CHUNK}>;  // per voxel: z0, y0, x0, flat x offset of (z0, y0, x0)

@compute @workgroup_size(64)
fn backward_weight(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {{
    let cin = p.dims.y;
    let cout = p.dims.z;
    let ivox = p.isz.w;
    let ovox = p.osz.w;
    let kvol = p.ksz.w;
    let ecount = cin * kvol;
    let m0 = wid.y * TM;
    let total = p.dims.x * ovox;
    let v_begin = wid.z * p.chunk.z;
    let v_end = min(total, v_begin + p.chunk.z);
    let khw = p.ksz.y * p.ksz.z;
"
    );
    out += &per_j(&|j| {
        let off = j * WORKGROUP;
        format!(
            "    let e{j} = wid.x * COLS + lid + {off}u;
    let valid{j} = e{j} < ecount;
    let ec{j} = select(0u, e{j}, valid{j});
    let ci{j} = ec{j} / kvol;
    let t{j} = ec{j} - ci{j} * kvol;
    let kd{j} = t{j} / khw;
    let kr{j} = t{j} - kd{j} * khw;
    let kh{j} = kr{j} / p.ksz.z;
    let kw{j} = kr{j} - kh{j} * p.ksz.z;
    let coff{j} = i32(ci{j} * ivox + (kd{j} * p.isz.y + kh{j}) * p.isz.z + kw{j});"
        )
    });
    out += &format!(
        "
    let hw = p.osz.y * p.osz.z;
{}
    for (var v0 = v_begin; v0 < v_end; v0 += VCH) {{
        let vn = min(VCH, v_end - v0);
        workgroupBarrier();
        for (var k = lid; k < VCH; k += WGS) {{
            let col = v0 + k;
            var info = vec4<i32>(0);
            if (k < vn) {{
                let n = col / ovox;
                let v = col - n * ovox;
                let oz = v / hw;
                let r = v - oz * hw;
                let oy = r / p.osz.z;
                let ox = r - oy * p.osz.z;
                let z0 = i32(oz * p.stride.x) - i32(p.pad.x);
                let y0 = i32(oy * p.stride.y) - i32(p.pad.y);
                let x0 = i32(ox * p.stride.z) - i32(p.pad.z);
                info = vec4<i32>(z0, y0, x0, i32(n * cin * ivox) + (z0 * i32(p.isz.y) + y0) * i32(p.isz.z) + x0);
                let ybase = n * cout * ovox + v;
                for (var m = 0u; m < TM; m++) {{
                    var g = 0.0;
                    if (m0 + m < cout) {{
                        g = wts[ybase + (m0 + m) * ovox];
                    }}
                    dytile[k * Q + m / 4u][m % 4u] = g;
                }}
            }}
            vbase[k] = info;
        }}
        workgroupBarrier();
        for (var k = 0u; k < vn; k++) {{
            let info = vbase[k];
",
        acc_decl(tn, q)
    );
    out += &per_j(&|j| {
        format!(
            "            let ok{j} = valid{j} && in_range(info.x + i32(kd{j}), p.isz.x) && in_range(info.y + i32(kh{j}), p.isz.y)
                && in_range(info.z + i32(kw{j}), p.isz.z);
            let xv{j} = select(0.0, src[select(0u, u32(info.w + coff{j}), ok{j})], ok{j});"
        )
    });
    out += &format!(
        "
            let wb = k * Q;
{}
        }}
    }}
    let pbase = wid.z * cout * ecount;
",
        fmas("            ", "dytile")
    );
    out += &per_j(&|j| {
        let mut s = format!("    if (valid{j}) {{\n");
        let mut v = Vec::new();
        for qq in 0..q {
            for r in 0..4 {
                let mm = qq * 4 + r;
                v.push(format!("        if (m0 + {mm}u < cout) {{ out3[pbase + (m0 + {mm}u) * ecount + e{j}] = acc{j}_{qq}[{r}]; }}"));
            }
        }
        s += &join(v);
        s + "\n    }"
    });
    out += "\n}\n";

    // Row kernels (stride 1, 3 taps along W).
    let win = tnw + ROW_TAPS - 1;
    let kw_n = ROW_TAPS;
    let windowed = |name: &str,
                    comment: &str,
                    cred: &str,
                    mlim: &str,
                    stage_args: &str,
                    rowcode: &str,
                    win_x: &str,
                    xi: &dyn Fn(usize, usize) -> usize,
                    store_base: &dyn Fn(usize) -> String,
                    rstride: &str,
                    redstride: &str,
                    outname: &str,
                    bias: bool| {
        let mut s = format!(
            "
// {comment}
@compute @workgroup_size(64)
fn {name}(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {{
    let cin = p.dims.y;
    let cout = p.dims.z;
    let ivox = p.isz.w;
    let ovox = p.osz.w;
    let m0 = wid.y * TM;
    let cred = {cred};
{rowcode}
    let kdh = p.ksz.x * p.ksz.y;
"
        );
        let mut a = Vec::new();
        for j in 0..tnw {
            for qq in 0..q {
                a.push(format!("    var acc{j}_{qq} = vec4<f32>(0.0);"));
            }
        }
        s += &join(a);
        let _ = write!(
            s,
            "
    for (var r = 0u; r < kdh; r++) {{
        let kd = r / p.ksz.y;
        let kh = r - kd * p.ksz.y;
{win_x}
        for (var c0 = 0u; c0 < cred; c0 += STAGE / {kw_n}u) {{
            let cn = min(STAGE / {kw_n}u, cred - c0);
            workgroupBarrier();
            stage_weights({stage_args}, c0, cn, r * {kw_n}u, {kw_n}u, lid);
            workgroupBarrier();
            for (var cl = 0u; cl < cn; cl++) {{
                let co = (c0 + cl) * {redstride};
"
        );
        s += &window_gathers("                ", win, "co");
        for kw in 0..kw_n {
            for qq in 0..q {
                let _ = writeln!(
                    s,
                    "                let w{kw}_{qq} = wtile[(cl * {kw_n}u + {kw}u) * Q + {qq}u];"
                );
            }
        }
        s += &window_fmas("                ", tnw, q, kw_n, "w", xi);
        s += "            }\n        }\n    }\n";
        if bias {
            s += &bias_read("b", "TM");
        }
        s + &window_stores(
            tnw,
            q,
            bias.then_some("b"),
            mlim,
            outname,
            rstride,
            store_base,
        )
    };

    let fwd_win = String::from(FWD_WINDOW_ROWS) + &window(win, "p.isz.z");
    out += &windowed(
        "forward_row",
        &format!("forward for stride 1 and {kw_n} taps along W: {tnw} consecutive results of a row per invocation, the {kw_n} taps\n// along W reading one window of {win} gathered values per input channel."),
        "cin",
        "cout",
        "cin, 1u, m0, cout",
        &(row_decode(tnw, "p.osz")
            + "
    let z0 = i32(zz * p.stride.x) - i32(p.pad.x);
    let y0 = i32(yy * p.stride.y) - i32(p.pad.y);
    let x0 = i32(xs) - i32(p.pad.z);
    let xb = i32(n * cin * ivox);"),
        &fwd_win,
        &|j, kw| j + kw,
        &|j| format!("n * cout * ovox + (zz * p.osz.y + yy) * p.osz.z + xs + {j}u"),
        "ovox",
        "ivox",
        FORWARD_OUT,
        true,
    );
    let bwd_win = String::from(BWD_WINDOW_ROWS) + &window(win, "p.osz.z");
    out += &windowed(
        "backward_data_row",
        "backward_data for stride 1 and 3 taps along W (as forward_row).",
        "cout",
        "cin",
        "1u, cin, m0, cin",
        &(row_decode(tnw, "p.isz")
            + &format!(
                "
    let z0 = i32(zz + p.pad.x);
    let y0 = i32(yy + p.pad.y);
    let x0 = i32(xs + p.pad.z) - {};
    let yb = i32(n * cout * ovox);
    let sd = i32(p.stride.x);
    let sh = i32(p.stride.y);",
                kw_n - 1
            )),
        &bwd_win,
        &|j, kw| j + kw_n - 1 - kw,
        &|j| format!("n * cin * ivox + (zz * p.isz.y + yy) * p.isz.z + xs + {j}u"),
        "ivox",
        "ovox",
        "out3",
        false,
    );

    // Weight-gradient row kernel.
    let g = SUBGROUP_LANES;
    let rwin = g + kw_n - 1;
    let _ = write!(
        out,
        "
// backward_weight for stride 1 and {kw_n} taps along W, output rows a multiple of {g}: columns are kernel rows
// (ci, kd, kh), {tr} per invocation with their {kw_n} taps; each aligned group of {g} staged voxels is one row segment,
// whose {g} x {kw_n} steps of a kernel row read one window of {rwin} gathered values.
@compute @workgroup_size(64)
fn backward_weight_row(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {{
    let cin = p.dims.y;
    let cout = p.dims.z;
    let ivox = p.isz.w;
    let ovox = p.osz.w;
    let kvol = p.ksz.w;
    let ecount = cin * kvol;
    let kdh = p.ksz.x * p.ksz.y;
    let m0 = wid.y * TM;
    let total = p.dims.x * ovox;
    let v_begin = wid.z * p.chunk.z;
    let v_end = min(total, v_begin + p.chunk.z);
    let hw = p.osz.y * p.osz.z;
{}
    for (var v0 = v_begin; v0 < v_end; v0 += VCH) {{
        let vn = min(VCH, v_end - v0);
        workgroupBarrier();
        for (var k = lid; k < VCH; k += WGS) {{
            let col = v0 + k;
            var info = vec4<i32>(0);
            if (k < vn) {{
                let n = col / ovox;
                let v = col - n * ovox;
                let oz = v / hw;
                let r = v - oz * hw;
                let oy = r / p.osz.z;
                let ox = r - oy * p.osz.z;
                let z0 = i32(oz * p.stride.x) - i32(p.pad.x);
                let y0 = i32(oy * p.stride.y) - i32(p.pad.y);
                let x0 = i32(ox) - i32(p.pad.z);
                info = vec4<i32>(z0, y0, x0, i32(n * cin * ivox) + (z0 * i32(p.isz.y) + y0) * i32(p.isz.z) + x0);
                let ybase = n * cout * ovox + v;
                for (var m = 0u; m < TM; m++) {{
                    var g = 0.0;
                    if (m0 + m < cout) {{
                        g = wts[ybase + (m0 + m) * ovox];
                    }}
                    dytile[k * Q + m / 4u][m % 4u] = g;
                }}
            }} else {{
                for (var q = 0u; q < Q; q++) {{
                    dytile[k * Q + q] = vec4<f32>(0.0);
                }}
            }}
            vbase[k] = info;
        }}
        workgroupBarrier();
        for (var k0 = 0u; k0 < vn; k0 += {g}u) {{
            let vi = vbase[k0];
",
        row_weight_setup(tr, q)
    );
    out += &row_window_loads("            ", tr, rwin);
    for k in 0..g {
        out += "            {\n";
        for qq in 0..q {
            let _ = writeln!(
                out,
                "                let g{qq} = dytile[(k0 + {k}u) * Q + {qq}u];"
            );
        }
        out += &row_fmas("                ", tr, q, k, "g");
        out += "            }\n";
    }
    out += "        }\n    }\n";
    out += &row_weight_store(tr, q);
    out
}

/// Lane `lane` of each group of 8 loads the weights of reduced channel `c0 + lane` for the result channels.
/// One reduction step of the subgroup kernels: lane `k`'s weights broadcast to every lane, each column's
/// value gathered at `off{j} + cs` (zero where `ok{j}x` is false) and accumulated.
fn broadcast_fmas(ind: &str, tn: usize, q: usize, k: usize) -> String {
    let mut s = Vec::new();
    for qq in 0..q {
        s.push(format!("{ind}let b{qq} = subgroupBroadcast(wl{qq}, {k}u);"));
    }
    for j in 0..tn {
        s.push(format!(
            "{ind}let x{j} = select(0.0, src[select(0u, off{j} + cs, ok{j}x)], ok{j}x);"
        ));
        for qq in 0..q {
            s.push(format!(
                "{ind}acc{j}_{qq} = fma(b{qq}, vec4<f32>(x{j}), acc{j}_{qq});"
            ));
        }
    }
    join(s)
}

fn weight_lane_loads(ind: &str, quads: usize, widx: &dyn Fn(usize) -> String) -> String {
    let mut s = vec![
        format!("{ind}let cl = c0 + lane;"),
        format!("{ind}let cok = cl < cred;"),
    ];
    for q in 0..quads {
        let mut comps = Vec::new();
        for r in 0..4 {
            let m = q * 4 + r;
            s.push(format!("{ind}let ok{m} = cok && m0 + {m}u < mlim;"));
            comps.push(format!(
                "select(0.0, wts[select(0u, {}, ok{m})], ok{m})",
                widx(m)
            ));
        }
        s.push(format!("{ind}let wl{q} = vec4<f32>({});", comps.join(", ")));
    }
    join(s)
}

/// The subgroup module: operands shared by the workgroup are broadcast across 8 lanes.
fn subgroup(tn: usize, q: usize, tnw: usize, qw: usize, tr: usize) -> String {
    let sg = SUBGROUP_LANES;
    let m = 4 * q;
    let cols = WORKGROUP * tn;
    let rm = 4 * qw;
    let per_j = |f: &dyn Fn(usize) -> String| join((0..tn).map(f).collect());
    let mut out = format!(
        "// Convolution kernels using subgroup operations (compiled only where the adapter has subgroups of at
// least 8 invocations; the portable module documents the maths). Same bindings, params and results as the
// portable module.
//
// Generated by calibseg's src/ops/conv_gen.rs (tile: {tn} column(s) x {m} channels per invocation; row
// kernels: {tnw} results along W x {rm} channels, {tr} kernel rows x 3 taps x {m} channels).
//
// The operand shared by every invocation (the weights; for backward_weight the output gradient and voxel
// geometry) is read once per group of 8 lanes: lane l loads the entries of reduced channel (or voxel) c0 + l,
// and subgroupBroadcast hands entry k to every lane, so one memory access serves 8 reduction steps. The
// per-column operand is gathered as in the portable module and each invocation keeps {m} channels x {tn} columns in
// registers. Every index is guarded, so the file is compiled without injected bounds checks.
//
// forward_row and backward_data_row are the same kernels for stride 1 and 3 taps along W (the host picks
// them when that holds): an invocation owns {tnw} consecutive results of one row, so the 3 taps along W read
// a sliding window of {tnw} + 2 gathered values per reduced channel instead of 3 x {tnw}; they step through a
// group of 8 lanes' weights with subgroupShuffle in a loop (short code). backward_weight_row
// does the same over the voxels it reduces (output rows a multiple of 8): 8 voxels x 3 taps of a kernel row
// read 10 gathered values instead of 24.

struct Params {{
    dims: vec4<u32>,   // images, in channels, out channels, has bias
    isz: vec4<u32>,    // input depth, height, width, voxels
    osz: vec4<u32>,    // output depth, height, width, voxels
    ksz: vec4<u32>,    // kernel depth, height, width, taps
    stride: vec4<u32>, // depth, height, width, forward adds the residual (1) or not (0)
    pad: vec4<u32>,    // depth, height, width, _
    chunk: vec4<u32>,  // unused, unused, voxels per split, _
}}

const WGS: u32 = 64u;
const TM: u32 = {m}u;          // result channels per workgroup (and per invocation)
const COLS: u32 = {cols}u;      // columns per workgroup

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read> wts: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> out4: array<f32>;
@group(0) @binding(3) var<storage, read_write> out3: array<f32>;

fn tile_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {{
    return wid.z * nwg.x + wid.x;
}}

fn in_range(a: i32, lim: u32) -> bool {{
    return u32(a) < lim;
}}
"
    );
    #[allow(clippy::too_many_arguments)]
    let conv_like = |name: &str,
                     comment: &str,
                     sz: &str,
                     total: &str,
                     cred: &str,
                     mlim: &str,
                     widx: &dyn Fn(usize) -> String,
                     setup: &str,
                     tapcode: &str,
                     storecode: &str,
                     rstride: &str| {
        let mut body = format!(
            "
// {comment}
@compute @workgroup_size(64)
fn {name}(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32, @builtin(subgroup_invocation_id) sgid: u32) {{
    let cin = p.dims.y;
    let cout = p.dims.z;
    let ivox = p.isz.w;
    let ovox = p.osz.w;
    let m0 = wid.y * TM;
    let lane = sgid % {sg}u;
    let cred = {cred};
    let mlim = {mlim};
{}
{setup}
    let kvol = p.ksz.w;
    let khw = p.ksz.y * p.ksz.z;
{}
    for (var t = 0u; t < kvol; t++) {{
        let kd = t / khw;
        let kr = t - kd * khw;
        let kh = kr / p.ksz.z;
        let kw = kr - kh * p.ksz.z;
{tapcode}
        for (var c0 = 0u; c0 < cred; c0 += {sg}u) {{
{}
",
            decode(tn, sz, total),
            acc_decl(tn, q),
            weight_lane_loads("            ", q, widx)
        );
        for k in 0..sg {
            let _ = writeln!(body, "            if (c0 + {k}u < cred) {{");
            let _ = writeln!(body, "                let cs = (c0 + {k}u) * {rstride};");
            body += &broadcast_fmas("                ", tn, q, k);
            body += "\n            }\n";
        }
        let _ = write!(
            body,
            "        }}
    }}
{storecode}
}}
"
        );
        body
    };

    let fwd_setup = per_j(&|j| {
        format!(
            "    let z0_{j} = i32(zz{j} * p.stride.x) - i32(p.pad.x);
    let y0_{j} = i32(yy{j} * p.stride.y) - i32(p.pad.y);
    let x0_{j} = i32(xx{j} * p.stride.z) - i32(p.pad.z);
    let xb{j} = i32(n{j} * cin * ivox);"
        )
    });
    let fwd_tap = per_j(&|j| {
        format!(
            "        let iz{j} = z0_{j} + i32(kd);
        let iy{j} = y0_{j} + i32(kh);
        let ix{j} = x0_{j} + i32(kw);
        let ok{j}x = valid{j} && in_range(iz{j}, p.isz.x) && in_range(iy{j}, p.isz.y) && in_range(ix{j}, p.isz.z);
        let off{j} = u32(xb{j} + (iz{j} * i32(p.isz.y) + iy{j}) * i32(p.isz.z) + ix{j});"
        )
    });
    let fwd_store = bias_read("bv", "TM")
        + &store(
            "    ",
            tn,
            q,
            FORWARD_OUT,
            "cout",
            &|j| format!("n{j} * cout * ovox + v{j}"),
            "ovox",
            &|m| format!(" + bv[{m}]"),
        );
    out += &conv_like(
        "forward",
        "y over output voxels (columns); reduced channel = input channel.",
        "p.osz",
        "p.dims.x * ovox",
        "cin",
        "cout",
        &|m| format!("((m0 + {m}u) * cin + cl) * kvol + t"),
        &fwd_setup,
        &fwd_tap,
        &fwd_store,
        "ivox",
    );

    let bwd_setup = per_j(&|j| {
        format!(
            "    let z0_{j} = i32(zz{j} + p.pad.x);
    let y0_{j} = i32(yy{j} + p.pad.y);
    let x0_{j} = i32(xx{j} + p.pad.z);
    let yb{j} = i32(n{j} * cout * ovox);"
        )
    }) + "
    let sd = i32(p.stride.x);
    let sh = i32(p.stride.y);
    let sw = i32(p.stride.z);";
    let bwd_tap = per_j(&|j| {
        format!(
            "        let tz{j} = z0_{j} - i32(kd);
        let ty{j} = y0_{j} - i32(kh);
        let tx{j} = x0_{j} - i32(kw);
        let oz{j} = tz{j} / sd;
        let oy{j} = ty{j} / sh;
        let ox{j} = tx{j} / sw;
        let ok{j}x = valid{j} && oz{j} * sd == tz{j} && oy{j} * sh == ty{j} && ox{j} * sw == tx{j}
            && in_range(tz{j}, p.osz.x * p.stride.x) && in_range(ty{j}, p.osz.y * p.stride.y)
            && in_range(tx{j}, p.osz.z * p.stride.z);
        let off{j} = u32(yb{j} + (oz{j} * i32(p.osz.y) + oy{j}) * i32(p.osz.z) + ox{j});"
        )
    });
    let bwd_store = store(
        "    ",
        tn,
        q,
        "out3",
        "cin",
        &|j| format!("n{j} * cin * ivox + v{j}"),
        "ivox",
        &|_| String::new(),
    );
    out += &conv_like(
        "backward_data",
        "dx over input voxels (columns); `src` is dy, reduced channel = output channel.",
        "p.isz",
        "p.dims.x * ivox",
        "cout",
        "cin",
        &|m| format!("(cl * cin + m0 + {m}u) * kvol + t"),
        &bwd_setup,
        &bwd_tap,
        &bwd_store,
        "ovox",
    );

    // Weight gradient: lanes load dy for 8 voxels and their geometry, broadcast per voxel.
    let wq: Vec<String> = (0..q)
        .map(|qq| {
            let comps: Vec<String> = (0..4)
                .map(|r| {
                    let mm = qq * 4 + r;
                    format!("select(0.0, wts[select(0u, ybase + (m0 + {mm}u) * ovox, vok && m0 + {mm}u < cout)], vok && m0 + {mm}u < cout)")
                })
                .collect();
            format!("            let wl{qq} = vec4<f32>({});", comps.join(", "))
        })
        .collect();
    let wq = join(wq);
    let _ = write!(
        out,
        "
// backward_weight: columns are weight entries e = ci * kvol + tap, `src` is x, `wts` is dy, `out3` the
// per-split partials; the reduction runs over the voxels of split wid.z, 8 at a time.
@compute @workgroup_size(64)
fn backward_weight(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32,
                   @builtin(subgroup_invocation_id) sgid: u32) {{
    let cin = p.dims.y;
    let cout = p.dims.z;
    let ivox = p.isz.w;
    let ovox = p.osz.w;
    let kvol = p.ksz.w;
    let ecount = cin * kvol;
    let m0 = wid.y * TM;
    let total = p.dims.x * ovox;
    let v_begin = wid.z * p.chunk.z;
    let v_end = min(total, v_begin + p.chunk.z);
    let khw = p.ksz.y * p.ksz.z;
    let hw = p.osz.y * p.osz.z;
    let lane = sgid % {sg}u;
"
    );
    out += &per_j(&|j| {
        let off = j * WORKGROUP;
        format!(
            "    let e{j} = wid.x * COLS + lid + {off}u;
    let valid{j} = e{j} < ecount;
    let ec{j} = select(0u, e{j}, valid{j});
    let ci{j} = ec{j} / kvol;
    let t{j} = ec{j} - ci{j} * kvol;
    let kd{j} = i32(t{j} / khw);
    let kr{j} = t{j} - (t{j} / khw) * khw;
    let kh{j} = i32(kr{j} / p.ksz.z);
    let kw{j} = i32(kr{j} - (kr{j} / p.ksz.z) * p.ksz.z);
    let coff{j} = i32(ci{j} * ivox) + (kd{j} * i32(p.isz.y) + kh{j}) * i32(p.isz.z) + kw{j};"
        )
    });
    let voxel_lanes = |x0: &str| {
        format!(
            "        let col = v0 + lane;
        let vok = col < v_end;
        let cv = select(v_begin, col, vok);
        let n = cv / ovox;
        let v = cv - n * ovox;
        let oz = v / hw;
        let r = v - oz * hw;
        let oy = r / p.osz.z;
        let ox = r - oy * p.osz.z;
        let z0 = i32(oz * p.stride.x) - i32(p.pad.x);
        let y0 = i32(oy * p.stride.y) - i32(p.pad.y);
        let x0 = {x0} - i32(p.pad.z);
        let info = vec4<i32>(z0, y0, x0, i32(n * cin * ivox) + (z0 * i32(p.isz.y) + y0) * i32(p.isz.z) + x0);
        let ybase = n * cout * ovox + v;
"
        )
    };
    let _ = write!(
        out,
        "
{}
    for (var v0 = v_begin; v0 < v_end; v0 += {sg}u) {{
{}{wq}
",
        acc_decl(tn, q),
        voxel_lanes("i32(ox * p.stride.z)")
    );
    for k in 0..sg {
        let _ = writeln!(out, "        if (v0 + {k}u < v_end) {{");
        let _ = writeln!(out, "            let vi = subgroupBroadcast(info, {k}u);");
        for qq in 0..q {
            let _ = writeln!(
                out,
                "            let b{qq} = subgroupBroadcast(wl{qq}, {k}u);"
            );
        }
        for j in 0..tn {
            let _ = writeln!(out, "            let ok{j} = valid{j} && in_range(vi.x + kd{j}, p.isz.x) && in_range(vi.y + kh{j}, p.isz.y) && in_range(vi.z + kw{j}, p.isz.z);");
            let _ = writeln!(
                out,
                "            let x{j} = select(0.0, src[select(0u, u32(vi.w + coff{j}), ok{j})], ok{j});"
            );
            for qq in 0..q {
                let _ = writeln!(
                    out,
                    "            acc{j}_{qq} = fma(b{qq}, vec4<f32>(x{j}), acc{j}_{qq});"
                );
            }
        }
        out += "        }\n";
    }
    out += "    }\n    let pbase = wid.z * cout * ecount;\n";
    out += &per_j(&|j| {
        let mut v = Vec::new();
        for qq in 0..q {
            for r in 0..4 {
                let mm = qq * 4 + r;
                v.push(format!("        if (m0 + {mm}u < cout) {{ out3[pbase + (m0 + {mm}u) * ecount + e{j}] = acc{j}_{qq}[{r}]; }}"));
            }
        }
        format!("    if (valid{j}) {{\n{}\n    }}", join(v))
    });
    out += "\n}\n";

    // Row kernels (stride 1 along W, 3 taps along W).
    let kw_n = ROW_TAPS;
    let win = tnw + kw_n - 1;
    #[allow(clippy::too_many_arguments)]
    let windowed = |name: &str,
                    comment: &str,
                    cred: &str,
                    mlim: &str,
                    widx: &dyn Fn(usize, usize) -> String,
                    rowcode: &str,
                    win_x: &str,
                    xi: &dyn Fn(usize, usize) -> usize,
                    store_base: &dyn Fn(usize) -> String,
                    rstride: &str,
                    redstride: &str,
                    outname: &str,
                    bias: bool| {
        let mut s = format!(
            "
// {comment}
// Stride 1 along W and {kw_n} taps along W: each invocation owns {tnw} consecutive results of a row and {rm}
// channels; one window of {win} gathered values per reduced channel serves all {kw_n} taps along W.
@compute @workgroup_size(64)
fn {name}(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32, @builtin(subgroup_invocation_id) sgid: u32) {{
    let cin = p.dims.y;
    let cout = p.dims.z;
    let ivox = p.isz.w;
    let ovox = p.osz.w;
    let m0 = wid.y * {rm}u;
    let lane = sgid % {sg}u;
    let cred = {cred};
    let mlim = {mlim};
{rowcode}
    let kvol = p.ksz.w;
    let kdh = p.ksz.x * p.ksz.y;
"
        );
        let mut a = Vec::new();
        for j in 0..tnw {
            for qq in 0..qw {
                a.push(format!("    var acc{j}_{qq} = vec4<f32>(0.0);"));
            }
        }
        s += &join(a);
        let _ = write!(
            s,
            "
    for (var r = 0u; r < kdh; r++) {{
        let kd = r / p.ksz.y;
        let kh = r - kd * p.ksz.y;
        let t = r * {kw_n}u;
{win_x}
        for (var c0 = 0u; c0 < cred; c0 += {sg}u) {{
            let cl = c0 + lane;
            let cok = cl < cred;
"
        );
        for kw in 0..kw_n {
            for qq in 0..qw {
                let mut comps = Vec::new();
                for rr in 0..4 {
                    let mm = qq * 4 + rr;
                    if kw == 0 {
                        let _ =
                            writeln!(s, "            let ok{kw}_{mm} = cok && m0 + {mm}u < mlim;");
                    }
                    comps.push(format!(
                        "select(0.0, wts[select(0u, {}, ok0_{mm})], ok0_{mm})",
                        widx(mm, kw)
                    ));
                }
                let _ = writeln!(
                    s,
                    "            let wl{kw}_{qq} = vec4<f32>({});",
                    comps.join(", ")
                );
            }
        }
        let _ = writeln!(
            s,
            "            for (var k = 0u; k < min({sg}u, cred - c0); k++) {{"
        );
        let _ = writeln!(s, "                let cs = (c0 + k) * {redstride};");
        s += &window_gathers("                ", win, "cs");
        for kw in 0..kw_n {
            for qq in 0..qw {
                let _ = writeln!(
                    s,
                    "                let b{kw}_{qq} = subgroupShuffle(wl{kw}_{qq}, k);"
                );
            }
        }
        s += &window_fmas("                ", tnw, qw, kw_n, "b", xi);
        s += "            }\n";
        s += "        }\n    }\n";
        if bias {
            s += &bias_read("bv", &rm.to_string());
            // The Python original wrote the loop bound as `{4*QW}u`.
            s = s.replace(&format!("m < {rm}; m++"), &format!("m < {rm}u; m++"));
        }
        s + &window_stores(
            tnw,
            qw,
            bias.then_some("bv"),
            "mlim",
            outname,
            rstride,
            store_base,
        )
    };
    let row_decode_sg = |sz: &str| row_decode(tnw, sz).replace("* WGS + lid", "* 64u + lid");
    out += &windowed(
        "forward_row",
        "forward, row kernel (see forward).",
        "cin",
        "cout",
        &|mm, kw| format!("((m0 + {mm}u) * cin + cl) * kvol + t + {kw}u"),
        &(row_decode_sg("p.osz")
            + "
    let z0 = i32(zz * p.stride.x) - i32(p.pad.x);
    let y0 = i32(yy * p.stride.y) - i32(p.pad.y);
    let x0 = i32(xs) - i32(p.pad.z);
    let xb = i32(n * cin * ivox);"),
        &(String::from(FWD_WINDOW_ROWS) + &window(win, "p.isz.z")),
        &|j, kw| j + kw,
        &|j| format!("n * cout * ovox + (zz * p.osz.y + yy) * p.osz.z + xs + {j}u"),
        "ovox",
        "ivox",
        FORWARD_OUT,
        true,
    );
    out += &windowed(
        "backward_data_row",
        "backward_data, row kernel (see backward_data).",
        "cout",
        "cin",
        &|mm, kw| format!("(cl * cin + m0 + {mm}u) * kvol + t + {kw}u"),
        &(row_decode_sg("p.isz")
            + &format!(
                "
    let z0 = i32(zz + p.pad.x);
    let y0 = i32(yy + p.pad.y);
    let x0 = i32(xs + p.pad.z) - {};
    let yb = i32(n * cout * ovox);
    let sd = i32(p.stride.x);
    let sh = i32(p.stride.y);",
                kw_n - 1
            )),
        &(String::from(BWD_WINDOW_ROWS) + &window(win, "p.osz.z")),
        &|j, kw| j + kw_n - 1 - kw,
        &|j| format!("n * cin * ivox + (zz * p.isz.y + yy) * p.isz.z + xs + {j}u"),
        "ivox",
        "ovox",
        "out3",
        false,
    );

    // Weight-gradient row kernel.
    let rwin = sg + kw_n - 1;
    let _ = write!(
        out,
        "
// backward_weight, row kernel (see backward_weight): stride 1 and {kw_n} taps along W, output rows a multiple of
// {sg} long, so each group of {sg} voxels is one row segment and the {kw_n} taps along W of a kernel row read one
// window of {rwin} gathered values. Columns are kernel rows (ci, kd, kh); {tr} per invocation.
@compute @workgroup_size(64)
fn backward_weight_row(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32,
                       @builtin(subgroup_invocation_id) sgid: u32) {{
    let cin = p.dims.y;
    let cout = p.dims.z;
    let ivox = p.isz.w;
    let ovox = p.osz.w;
    let kvol = p.ksz.w;
    let ecount = cin * kvol;
    let kdh = p.ksz.x * p.ksz.y;
    let m0 = wid.y * TM;
    let total = p.dims.x * ovox;
    let v_begin = wid.z * p.chunk.z;
    let v_end = min(total, v_begin + p.chunk.z);
    let hw = p.osz.y * p.osz.z;
    let lane = sgid % {sg}u;
{}
    // A subgroup with no kernel row of its own leaves at once (its lanes share nothing with others), so a
    // call with few rows costs what its rows need, not whole workgroups.
    if (!subgroupAny(valid0)) {{
        return;
    }}
    for (var v0 = v_begin; v0 < v_end; v0 += {sg}u) {{
{}{wq}
        let vi = subgroupBroadcast(info, 0u);
",
        row_weight_setup(tr, q),
        voxel_lanes("i32(ox)")
    );
    out += &row_window_loads("        ", tr, rwin);
    for k in 0..sg {
        out += "        {\n";
        for qq in 0..q {
            let _ = writeln!(
                out,
                "            let b{qq} = subgroupBroadcast(wl{qq}, {k}u);"
            );
        }
        out += &row_fmas("            ", tr, q, k, "b");
        out += "        }\n";
    }
    out += "    }\n";
    out += &row_weight_store(tr, q);
    out
}

/// The input gradient for strides over 1 by sub-pixel phase (`backward_data_phase`): the input voxels whose
/// `(i + pad) % stride` agree on every axis (one phase class) take the same taps, those with
/// `(i + pad - tap) % stride == 0`, so each workgroup owns columns of one class and loops over that class's
/// taps only (3x3x3 at stride 2: 1 to 8 of the 27 taps, none masked). Appended to both modules.
fn phase_columns(tn: usize, q: usize, subgroup: bool) -> String {
    let m = 4 * q;
    let ptile = STAGE * q;
    let per_j = |f: &dyn Fn(usize) -> String| join((0..tn).map(f).collect());
    let (staged, lane_arg) = if subgroup {
        (
            "// (weights broadcast from lane loads, as in the module's other kernels)".to_string(),
            ",\n                       @builtin(subgroup_invocation_id) sgid: u32",
        )
    } else {
        (
            format!("var<workgroup> ptile: array<vec4<f32>, {ptile}>; // staged weights: (channel in chunk, class tap) x {m} channels"),
            "",
        )
    };
    let mut s = format!(
        "
// backward_data for strides over 1, one sub-pixel phase class per workgroup: the input voxels i with
// (i + pad) % stride == r on every axis receive the taps t = r + stride * j only, from output voxel
// (i + pad - t) / stride. chunk.x is unused, chunk.w the workgroups per class; the grid's first axis
// enumerates (class, workgroup in class), the second the {m}-channel tiles of the result.
{staged}

// Kernel tap of the class's u-th tap (class phase r, nt taps per axis).
fn phase_tap(u: u32, r: vec3<u32>, nt: vec3<u32>) -> u32 {{
    let jz = u / (nt.y * nt.z);
    let ju = u - jz * nt.y * nt.z;
    let jy = ju / nt.z;
    let jx = ju - jy * nt.z;
    return ((r.x + p.stride.x * jz) * p.ksz.y + r.y + p.stride.y * jy) * p.ksz.z + r.z + p.stride.z * jx;
}}

@compute @workgroup_size(64)
fn backward_data_phase(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_index) lid: u32{lane_arg}) {{
    let cin = p.dims.y;
    let cout = p.dims.z;
    let ivox = p.isz.w;
    let ovox = p.osz.w;
    let kvol = p.ksz.w;
    let m0 = wid.y * {m}u;
    let tile = tile_index(wid, nwg);
    let cls = tile / p.chunk.w;
    let ctile = tile - cls * p.chunk.w;
    let st = p.stride.xyz;
    let r = vec3<u32>(cls / (st.y * st.z), (cls / st.z) % st.y, cls % st.z);
    let i0 = (r + st - p.pad.xyz % st) % st;
    let isz = p.isz.xyz;
    let cnt = select(vec3<u32>(0u), (isz + st - 1u - i0) / st, i0 < isz);
    let cb = vec3<i32>((i0 + p.pad.xyz - r) / st);
    let nt = select(vec3<u32>(0u), (p.ksz.xyz + st - 1u - r) / st, r < p.ksz.xyz);
    let ntaps = nt.x * nt.y * nt.z;
    let cvox = max(cnt.x * cnt.y * cnt.z, 1u);
    let chw = max(cnt.y * cnt.z, 1u);
    let cw = max(cnt.z, 1u);
    // Workgroups past the last class (a grid rounded up to fit the device limit) own no columns.
    let total = select(0u, p.dims.x * cnt.x * cnt.y * cnt.z, cls < st.x * st.y * st.z);
"
    );
    s += &per_j(&|j| {
        let off = j * WORKGROUP;
        format!(
            "    let col{j} = ctile * COLS + lid + {off}u;
    let valid{j} = col{j} < total;
    let cc{j} = select(0u, col{j}, valid{j});
    let n{j} = cc{j} / cvox;
    let v{j} = cc{j} - n{j} * cvox;
    let mz{j} = v{j} / chw;
    let mr{j} = v{j} - mz{j} * chw;
    let my{j} = mr{j} / cw;
    let mx{j} = mr{j} - my{j} * cw;
    let ob{j} = vec3<i32>(vec3<u32>(mz{j}, my{j}, mx{j})) + cb;
    let yb{j} = i32(n{j} * cout * ovox);
    let ii{j} = i0 + st * vec3<u32>(mz{j}, my{j}, mx{j});
    let xo{j} = n{j} * cin * ivox + (ii{j}.x * isz.y + ii{j}.y) * isz.z + ii{j}.z;"
        )
    });
    s
}

fn phase_data(tn: usize, q: usize) -> String {
    let m = 4 * q;
    let per_j = |f: &dyn Fn(usize) -> String| join((0..tn).map(f).collect());
    let mut s = phase_columns(tn, q, false);
    s += "\n";
    s += &acc_decl(tn, q);
    let _ = write!(
        s,
        "
    let tnc = max(min(ntaps, {STAGE}u), 1u);
    let chn = max({STAGE}u / tnc, 1u);
    for (var t0 = 0u; t0 < ntaps; t0 += tnc) {{
        let tcount = min(tnc, ntaps - t0);
        for (var c0 = 0u; c0 < cout; c0 += chn) {{
            let cn = min(chn, cout - c0);
            let entries = cn * tcount;
            workgroupBarrier();
            for (var m = 0u; m < {m}u; m++) {{
                let mm = m0 + m;
                for (var e = lid; e < entries; e += 64u) {{
                    let ce = e / tcount;
                    let t = phase_tap(t0 + e - ce * tcount, r, nt);
                    var w = 0.0;
                    if (mm < cin) {{
                        w = wts[((c0 + ce) * cin + mm) * kvol + t];
                    }}
                    ptile[e * {q}u + m / 4u][m % 4u] = w;
                }}
            }}
            workgroupBarrier();
            for (var tl = 0u; tl < tcount; tl++) {{
                let u = t0 + tl;
                let jz = u / (nt.y * nt.z);
                let ju = u - jz * nt.y * nt.z;
                let jy = ju / nt.z;
                let jt = vec3<i32>(vec3<u32>(jz, jy, ju - jy * nt.z));
"
    );
    s += &per_j(&|j| {
        format!(
            "                let o{j} = ob{j} - jt;
                let ok{j} = valid{j} && in_range(o{j}.x, p.osz.x) && in_range(o{j}.y, p.osz.y) && in_range(o{j}.z, p.osz.z);
                let off{j} = u32(yb{j} + (o{j}.x * i32(p.osz.y) + o{j}.y) * i32(p.osz.z) + o{j}.z) + c0 * ovox;"
        )
    });
    s += "\n                for (var cl = 0u; cl < cn; cl++) {\n                    let co = cl * ovox;\n";
    for j in 0..tn {
        let _ = writeln!(
            s,
            "                    let xv{j} = select(0.0, src[select(0u, off{j} + co, ok{j})], ok{j});"
        );
    }
    let _ = writeln!(s, "                    let wb = (cl * tcount + tl) * {q}u;");
    for qq in 0..q {
        let _ = writeln!(s, "                    let w{qq} = ptile[wb + {qq}u];");
    }
    for j in 0..tn {
        for qq in 0..q {
            let _ = writeln!(
                s,
                "                    acc{j}_{qq} = fma(w{qq}, vec4<f32>(xv{j}), acc{j}_{qq});"
            );
        }
    }
    s += "                }\n            }\n        }\n    }\n";
    s + &phase_store(tn, q)
}

/// The phase kernels' guarded stores of the input gradient (closes the function).
fn phase_store(tn: usize, q: usize) -> String {
    store(
        "    ",
        tn,
        q,
        "out3",
        "cin",
        &|j| format!("xo{j}"),
        "ivox",
        &|_| String::new(),
    ) + "\n}\n"
}

/// The subgroup module's `backward_data_phase`: the columns and taps of [`phase_data`], the weights of 8
/// reduced channels loaded by 8 lanes and broadcast (no workgroup memory, no barriers).
fn phase_data_subgroup(tn: usize, q: usize) -> String {
    let sg = SUBGROUP_LANES;
    let mut s = phase_columns(tn, q, true);
    s += "\n";
    s += &acc_decl(tn, q);
    let _ = write!(
        s,
        "
    let lane = sgid % {sg}u;
    let cred = cout;
    let mlim = cin;
    for (var u = 0u; u < ntaps; u++) {{
        let t = phase_tap(u, r, nt);
        let jz = u / (nt.y * nt.z);
        let ju = u - jz * nt.y * nt.z;
        let jy = ju / nt.z;
        let jt = vec3<i32>(vec3<u32>(jz, jy, ju - jy * nt.z));
"
    );
    for j in 0..tn {
        let _ = writeln!(
            s,
            "        let o{j} = ob{j} - jt;
        let ok{j}x = valid{j} && in_range(o{j}.x, p.osz.x) && in_range(o{j}.y, p.osz.y) && in_range(o{j}.z, p.osz.z);
        let off{j} = u32(yb{j} + (o{j}.x * i32(p.osz.y) + o{j}.y) * i32(p.osz.z) + o{j}.z);"
        );
    }
    let _ = writeln!(s, "        for (var c0 = 0u; c0 < cred; c0 += {sg}u) {{");
    s += &weight_lane_loads("            ", q, &|m| {
        format!("(cl * cin + m0 + {m}u) * kvol + t")
    });
    s += "\n";
    for k in 0..sg {
        let _ = writeln!(s, "            if (c0 + {k}u < cred) {{");
        let _ = writeln!(s, "                let cs = (c0 + {k}u) * ovox;");
        s += &broadcast_fmas("                ", tn, q, k);
        s += "\n            }\n";
    }
    s += "        }\n    }\n";
    s + &phase_store(tn, q)
}

/// The weight gradient of 1x1x1 kernels at stride 1 without padding (`backward_weight_pointwise`): a matrix
/// product over voxels, `dw[co, ci] = sum dy[n, co, v] x[n, ci, v]`. Appended to both modules.
const POINTWISE_WEIGHT: &str = "
// backward_weight for 1x1x1 kernels, stride 1, no padding: a workgroup owns 4 output x 4 input channels
// (wid.y) and the voxels of split wid.x (chunk.z of them, over images); lane l sums voxels l, l + 64, ...,
// then the 64 lanes' sums are added in a fixed tree and written to the split's partials.
var<workgroup> pwsum: array<vec4<f32>, 256>; // lane x output channel -> 4 input channels

@compute @workgroup_size(64)
fn backward_weight_pointwise(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let cin = p.dims.y;
    let cout = p.dims.z;
    let vox = p.osz.w;
    let total = p.dims.x * vox;
    let cit = (cin + 3u) / 4u;
    let co0 = (wid.y / cit) * 4u;
    let ci0 = (wid.y % cit) * 4u;
    let v_begin = wid.x * p.chunk.z;
    let v_end = min(total, v_begin + p.chunk.z);
    let xok = vec4<bool>(ci0 < cin, ci0 + 1u < cin, ci0 + 2u < cin, ci0 + 3u < cin);
    let gok = vec4<bool>(co0 < cout, co0 + 1u < cout, co0 + 2u < cout, co0 + 3u < cout);
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    for (var col = v_begin + lid; col < v_end; col += 64u) {
        let n = col / vox;
        let v = col - n * vox;
        let xb = n * cin * vox + v + ci0 * vox;
        let yb = n * cout * vox + v + co0 * vox;
        let xv = vec4<f32>(select(0.0, src[select(0u, xb, xok.x)], xok.x),
                           select(0.0, src[select(0u, xb + vox, xok.y)], xok.y),
                           select(0.0, src[select(0u, xb + 2u * vox, xok.z)], xok.z),
                           select(0.0, src[select(0u, xb + 3u * vox, xok.w)], xok.w));
        let g0 = select(0.0, wts[select(0u, yb, gok.x)], gok.x);
        let g1 = select(0.0, wts[select(0u, yb + vox, gok.y)], gok.y);
        let g2 = select(0.0, wts[select(0u, yb + 2u * vox, gok.z)], gok.z);
        let g3 = select(0.0, wts[select(0u, yb + 3u * vox, gok.w)], gok.w);
        a0 = fma(vec4<f32>(g0), xv, a0);
        a1 = fma(vec4<f32>(g1), xv, a1);
        a2 = fma(vec4<f32>(g2), xv, a2);
        a3 = fma(vec4<f32>(g3), xv, a3);
    }
    pwsum[lid * 4u] = a0;
    pwsum[lid * 4u + 1u] = a1;
    pwsum[lid * 4u + 2u] = a2;
    pwsum[lid * 4u + 3u] = a3;
    for (var h = 32u; h > 0u; h = h / 2u) {
        workgroupBarrier();
        if (lid < h) {
            for (var i = 0u; i < 4u; i++) {
                pwsum[lid * 4u + i] = pwsum[lid * 4u + i] + pwsum[(lid + h) * 4u + i];
            }
        }
    }
    workgroupBarrier();
    if (lid < 4u && co0 + lid < cout) {
        let sum = pwsum[lid];
        let e = wid.x * cout * cin + (co0 + lid) * cin + ci0;
        for (var i = 0u; i < 4u; i++) {
            if (ci0 + i < cin) {
                out3[e + i] = sum[i];
            }
        }
    }
}
";

#[cfg(test)]
mod tests {
    use super::selectable_tiles;

    /// FNV-1a (64-bit) of each selectable variant's WGSL. A refactor keeps this list; a deliberate kernel
    /// change updates it in the same commit (the failure message prints the new list). FNV-1a is written out
    /// because `DefaultHasher`'s algorithm may change between Rust releases.
    const DIGESTS: &[(&str, u64)] = &[
        ("conv-sg-c2x8-r8x8x1", 0x61ccefef9aaee1bf),
        ("conv-sg-c4x8-r8x8x1", 0x10ea6e9ecbcc7550),
        ("conv-sg-c2x16-r8x8x1", 0xfe4d00e599779579),
        ("conv-sg-c4x16-r8x8x1", 0x9583e3716ca6e58c),
        ("conv-wg-c2x8-r4x8x1", 0xabb0f5bc697f1ec3),
        ("conv-wg-c4x8-r4x8x1", 0x51feb06cc50f3405),
        ("conv-wg-c2x16-r4x16x1", 0x655bbb14f6371e7d),
        ("conv-wg-c4x16-r4x16x1", 0xf745eb70d6929dcb),
        ("conv-wg-c2x4-r4x4x1", 0x70c565cc19d3060f),
        ("conv-wg-c4x4-r4x4x1", 0x123b5aeb6b1075c7),
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
