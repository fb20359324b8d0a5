//! The 1x1x1 convolutions at stride 1 without padding as channel matrix products, in both modules:
//! `forward_pointwise` (`y[n, co, v] = sum_ci w[co, ci] x[n, ci, v]`), `backward_data_pointwise`
//! (`dx[n, ci, v] = sum_co w[co, ci] dy[n, co, v]`) and the weight gradient `backward_weight_pointwise`.
//!
//! Every invocation of a workgroup owns the same result channels, so the weights it reads are the same
//! for all of them: the subgroup module loads 8 reduced channels' weights once per 8 lanes, as aligned
//! vec4s of rows of w (of w transposed for the forward), and shuffles them to every lane; the portable
//! module reads them as uniform loads. Each invocation owns four consecutive voxels, so each reduction step
//! is one vec4 load (coalesced on GPUs) for `16 x quads` fused multiply-adds. The result channel tiles of
//! one voxel tile are consecutive workgroups (`wid.x`), so that they read its source while it is in cache.
//! Each result is reduced over its channels in ascending order from zero, as the general kernels do for a
//! one-tap kernel, so both paths give the same bits.

use super::pass::Pass;
use super::*;
use crate::ops::conv::tiles::{
    ConvTiles, Entry, POINTWISE_COLS, POINTWISE_IN, POINTWISE_OUT, POINTWISE_ROUNDS,
    POINTWISE_ROUND_SUMS,
};

/// The forward and input-gradient matrix-product kernels of [`POINTWISE_COLS`] voxels x `t.quads` vec4s of
/// result channels per invocation (and, in the subgroup module, the wide entries of [`ConvTiles::wide_quads`]),
/// and the source's vec4 view they read.
pub(super) fn pointwise(t: &ConvTiles) -> String {
    let subgroup = t.subgroup;
    let view = "
// The source as vec4s, for the 1x1x1 matrix products (one load of four voxels per lane and step), and
// their results (one store of four voxels per channel).
@group(0) @binding(1) var<storage, read> src4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> out3v: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> out4v: array<vec4<f32>>;

// The forward products write through here (as `put_forward`, four voxels at vec4 index i).
fn put_forward4(i: u32, v: vec4<f32>) {
    if (p.stride.w != 0u) {
        let r = 4u * i;
        out4v[i] = v + vec4<f32>(res[r], res[r + 1u], res[r + 2u], res[r + 3u]);
    } else {
        out4v[i] = v;
    }
}
";
    // The weights (the output gradient for the weight gradient) as vec4s, in the subgroup module.
    let view = if subgroup {
        view.to_string() + "@group(0) @binding(2) var<storage, read> wts4: array<vec4<f32>>;\n"
    } else {
        view.to_string()
    };
    // The subgroup module also has the wide entries ([`ConvTiles::wide_products`]).
    let widths: &[bool] = if subgroup { &[false, true] } else { &[false] };
    let mut s = view;
    for &wide in widths {
        for &pass in Pass::BOTH.iter() {
            let quads = if wide { t.wide_quads() } else { t.quads };
            s += &pointwise_pass(pass, quads, subgroup, wide);
        }
    }
    s
}

fn pointwise_pass(pass: Pass, quads: usize, subgroup: bool, wide: bool) -> String {
    let (entry, weight_row, weight_step, what) = match pass {
        // w[co, ci] at co * cin + ci: a result row is cin apart, a reduction step 1.
        Pass::Forward => (
            if wide {
                Entry::ForwardPointwiseWide
            } else {
                Entry::ForwardPointwise
            },
            "cin",
            "1u",
            "y over voxels; reduced: x's channels",
        ),
        Pass::BackwardData => (
            if wide {
                Entry::BackwardDataPointwiseWide
            } else {
                Entry::BackwardDataPointwise
            },
            "1u",
            "cin",
            "dx over voxels; `src` is dy, reduced: its channels",
        ),
    };
    let name = entry.name();
    // The result channels per workgroup: the module's `TM`, twice it for the wide entries.
    let tm = if wide {
        format!("{}u", 4 * quads)
    } else {
        "TM".to_string()
    };
    let (cred, mlim) = (pass.reduced(), pass.results());
    // Column j of a lane is voxel 4 x (its quad) + j: the four are one aligned vec4 of `src4`, and all in
    // one image (the launch requires voxels a multiple of 4).
    let columns = format!(
        "    let quad = (wid.z * nwg.y + wid.y) * WGS + lid;
    let col0 = quad * 4u;
    let valid = col0 < p.dims.x * vox;
    let cc = select(0u, col0, valid);
    let n = cc / vox;
    let v = cc - n * vox;
    let sb = n * {cred} * vox + v;
{}",
        per_column(POINTWISE_COLS, |j| format!(
            "    let valid{j} = valid;\n    let n{j} = n;\n    let v{j} = v + {j}u;"
        ))
    );
    // One reduction step at `cs`: the four voxels' values, times the weights `{w}{q}`.
    let fmas = |ind: &str, w: &str| {
        let mut s = format!("{ind}let xq = src4[(sb + cs) / 4u];");
        for j in 0..POINTWISE_COLS {
            let _ = write!(s, "\n{ind}let x{j} = vec4<f32>(xq[{j}]);");
            for q in 0..quads {
                let _ = write!(s, "\n{ind}acc{j}_{q} = fma({w}{q}, x{j}, acc{j}_{q});");
            }
        }
        s
    };
    let reduction = if subgroup {
        pointwise_vec4_weights(pass, quads, &fmas("            ", "b"))
    } else {
        // Rows of w past the last result channel read the last one: their results are never stored.
        let row_offsets = join(
            (0..4 * quads)
                .map(|m| format!("    let wr{m} = min(m0 + {m}u, {mlim} - 1u) * {weight_row};"))
                .collect(),
        );
        let weights = join(
            (0..quads)
                .map(|q| {
                    let lanes: Vec<String> = (0..4)
                        .map(|r| format!("wts[wr{} + wc]", 4 * q + r))
                        .collect();
                    format!("        let w{q} = vec4<f32>({});", lanes.join(", "))
                })
                .collect(),
        );
        format!(
            "{row_offsets}
    for (var c = 0u; c < {cred}; c++) {{
        let wc = c * {weight_step};
        let cs = c * vox;
{weights}
{}
    }}",
            fmas("        ", "w")
        )
    };
    let bias = match pass {
        Pass::Forward => bias_read("bv", &tm),
        Pass::BackwardData => String::new(),
    };
    let stores = vec4_stores(pass, quads);
    let acc = acc_decl(POINTWISE_COLS, quads);
    let sgid = if subgroup {
        ", @builtin(subgroup_invocation_id) sgid: u32"
    } else {
        ""
    };
    format!(
        "
// {what}: a 1x1x1 kernel at stride 1 without padding.
@compute @workgroup_size(64)
fn {name}(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32{sgid}) {{
{SIZES}
    let vox = ovox;
    let m0 = wid.x * {tm};
{columns}
{acc}
{reduction}
{bias}{stores}"
    )
}

/// The subgroup module's reduction of the 1x1x1 products, 8 reduced channels at a time (`step` is one
/// channel's accumulation with the weights `b{q}`). The weights arrive as aligned vec4s (one memory
/// access for four, where lavapipe runs each lane's access as a scalar sequence of its own): lane k loads
/// the `4 quads` result channels' weights of reduced channel c0 + k and step k shuffles them from lane k.
/// For the input gradient they are a row of w (the launch requires input channels a multiple of 4, so
/// each vec4 lies below `cin` or past it as a whole); for the forward a row of w transposed, which the
/// launch writes with the output channels rounded up to 4 (zeros past them). A whole group of 8 channels
/// runs accumulator by accumulator (each takes its 8 steps in a row), a last shorter group step by step
/// under a guard per step. The same weights, the same sums in the same order as the general kernels.
fn pointwise_vec4_weights(pass: Pass, quads: usize, step: &str) -> String {
    let sg = SUBGROUP_LANES;
    let (cred, mlim) = (pass.reduced(), pass.results());
    let mut s = format!(
        "    let lane = sgid % {sg}u;
    let cred = {cred};
    let mlim = {mlim};
"
    );
    // A result row of the weights the lanes read: the input gradient's are w's rows (input channels
    // long); the forward's are w transposed, output channels rounded up to 4 (the launch reorders w).
    let row = match pass {
        Pass::Forward => "((cout + 3u) / 4u * 4u)",
        Pass::BackwardData => "cin",
    };
    let mut loads =
        format!("        let cl = c0 + lane;\n        let wrow = (cl * {row} + m0) / 4u;\n");
    let mut shuffles = String::new();
    for q in 0..quads {
        let _ = writeln!(
            loads,
            "        let ok{q} = cl < cred && m0 + {}u < mlim;",
            4 * q
        );
        let _ = writeln!(loads, "        let wl{q} = select(vec4<f32>(0.0), wts4[select(0u, wrow + {q}u, ok{q})], ok{q});");
        let _ = writeln!(
            shuffles,
            "            let b{q} = subgroupShuffle(wl{q}, k);"
        );
    }
    let _ = write!(
        s,
        "    for (var c0 = 0u; c0 < cred; c0 += {sg}u) {{
{loads}        let kn = min({sg}u, cred - c0);
"
    );
    // A whole group of 8 channels: each accumulator takes its 8 steps in a row, the same order of its sum.
    // On lavapipe the 64 accumulators live on the stack, so a step-by-step group loads, blends and stores
    // every one of them 8 times; this way once. Forward 14.9 -> 11.1 ms, input gradient 15.3 -> 10.4 ms
    // (`conv3d_*_k1s1`, 4 alternating runs, medians).
    let _ = writeln!(s, "        if (kn == {sg}u) {{");
    for k in 0..sg {
        let _ = writeln!(
            s,
            "            let xq{k} = src4[(sb + (c0 + {k}u) * vox) / 4u];"
        );
    }
    for q in 0..quads {
        s += "            {\n";
        for k in 0..sg {
            let _ = writeln!(
                s,
                "                let b{k} = subgroupShuffle(wl{q}, {k}u);"
            );
        }
        for j in 0..POINTWISE_COLS {
            for k in 0..sg {
                let _ = writeln!(
                    s,
                    "                acc{j}_{q} = fma(b{k}, vec4<f32>(xq{k}[{j}]), acc{j}_{q});"
                );
            }
        }
        s += "            }\n";
    }
    s += "        } else {\n";
    // The shorter group's 8 steps written out (k a constant in each): their shuffles read constant lanes.
    // Unlike the 3x3x3 kernels' tiles (see `broadcast_steps`) these gain from it: on lavapipe the products ran 10-20%
    // faster so (alternating runs, `conv3d_*_k1s1`), though their 64 accumulators live on the stack either
    // way (BENCHMARKS.md, "What llvmpipe makes of the products").
    for k in 0..sg {
        let _ = write!(
            s,
            "        if ({k}u < kn) {{
            let k = {k}u;
            let cs = (c0 + k) * vox;
{shuffles}{step}
        }}
"
        );
    }
    s + "        }\n    }"
}

/// The 1x1x1 weight gradient (`backward_weight_pointwise`), `dw[co, ci] = sum_v dy[n, co, v] x[n, ci, v]`:
/// a workgroup owns [`POINTWISE_OUT`] output x [`POINTWISE_IN`] input channels (`wid.y`) and the voxels of
/// split `wid.x` (`chunk.z` of them, over images); lane l sums voxels l, l + 64, ... in ascending order,
/// then the 64 lanes' sums are added in a fixed tree and written to the split's partials. Each lane reads
/// one voxel of 4 + 16 channels per step for 64 fused multiply-adds. The channel tile does not enter the
/// order of any sum, so every tiling gives the same bits.
pub(super) fn pointwise_weight() -> String {
    let (outs, quads) = (POINTWISE_OUT, POINTWISE_IN / 4);
    // Channels past the last one read the last one: their sums are never stored.
    let x_rows = join(
        (0..POINTWISE_IN)
            .map(|k| format!("    let xr{k} = min(ci0 + {k}u, cin - 1u) * vox;"))
            .collect(),
    );
    let g_rows = join(
        (0..outs)
            .map(|o| format!("    let gr{o} = min(co0 + {o}u, cout - 1u) * vox;"))
            .collect(),
    );
    let mut acc = Vec::new();
    for o in 0..outs {
        for q in 0..quads {
            acc.push(format!("    var a{o}_{q} = vec4<f32>(0.0);"));
        }
    }
    let acc = join(acc);
    let mut step = String::new();
    for q in 0..quads {
        let lanes: Vec<String> = (0..4)
            .map(|r| format!("src[xb + xr{}]", 4 * q + r))
            .collect();
        let _ = writeln!(step, "        let x{q} = vec4<f32>({});", lanes.join(", "));
    }
    for o in 0..outs {
        let _ = writeln!(step, "        let g{o} = vec4<f32>(wts[gb + gr{o}]);");
        for q in 0..quads {
            let _ = writeln!(step, "        a{o}_{q} = fma(g{o}, x{q}, a{o}_{q});");
        }
    }
    // The tree runs in rounds over a share of the accumulators each, which keeps `pwsum` small.
    let per_round = POINTWISE_ROUND_SUMS;
    let mut rounds = String::new();
    for round in 0..POINTWISE_ROUNDS {
        let q0 = round * quads / POINTWISE_ROUNDS;
        let mut put = String::new();
        let mut i = 0;
        for o in 0..outs {
            for q in q0..q0 + quads / POINTWISE_ROUNDS {
                let _ = writeln!(put, "    pwsum[lid * {per_round}u + {i}u] = a{o}_{q};");
                i += 1;
            }
        }
        let qr = quads / POINTWISE_ROUNDS;
        let _ = write!(
            rounds,
            "{barrier}{put}    for (var h = 32u; h > 0u; h = h / 2u) {{
        workgroupBarrier();
        if (lid < h) {{
            for (var i = 0u; i < {per_round}u; i++) {{
                pwsum[lid * {per_round}u + i] = pwsum[lid * {per_round}u + i] + pwsum[(lid + h) * {per_round}u + i];
            }}
        }}
    }}
    workgroupBarrier();
    if (lid < {per_round}u) {{
        // Lane 0's sums: output channel lid / {qr}, input channels from 4 * ({q0} + lid % {qr}).
        let co = co0 + lid / {qr}u;
        let ci = ci0 + 4u * ({q0}u + lid % {qr}u);
        let sum = pwsum[lid];
        if (co < cout) {{
            for (var r = 0u; r < 4u; r++) {{
                if (ci + r < cin) {{
                    out3[e0 + co * cin + ci + r] = sum[r];
                }}
            }}
        }}
    }}
",
            barrier = if round == 0 {
                ""
            } else {
                "    workgroupBarrier();\n"
            },
        );
    }
    format!(
        "
var<workgroup> pwsum: array<vec4<f32>, {lane_sums}>; // lane x (output channel, input quad) of one round

// dw of a 1x1x1 kernel at stride 1 without padding, per voxel split.
@compute @workgroup_size(64)
fn {name}(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {{
    let cin = p.dims.y;
    let cout = p.dims.z;
    let vox = p.osz.w;
    let total = p.dims.x * vox;
    let cit = (cin + {cin_tile}u) / {POINTWISE_IN}u;
    let co0 = (wid.y / cit) * {outs}u;
    let ci0 = (wid.y % cit) * {POINTWISE_IN}u;
    let v_begin = wid.x * p.chunk.z;
    let v_end = min(total, v_begin + p.chunk.z);
    let e0 = wid.x * cout * cin;
{x_rows}
{g_rows}
{acc}
    // Voxel `col` of the split is voxel v of image n; both advance by 64 per step without a division.
    var col = v_begin + lid;
    var n = col / vox;
    var v = col - n * vox;
    for (; col < v_end; col += 64u) {{
        let xb = n * cin * vox + v;
        let gb = n * cout * vox + v;
{step}        v += 64u;
        while (v >= vox) {{
            v -= vox;
            n += 1u;
        }}
    }}
{rounds}}}
",
        name = Entry::BackwardWeightPointwise.name(),
        lane_sums = WORKGROUP * per_round,
        cin_tile = POINTWISE_IN - 1,
    )
}

/// The subgroup module's 1x1x1 weight gradient (`backward_weight_pointwise`), as its general weight-gradient
/// kernel runs without the taps: each group of 8 lanes owns one voxel split (`chunk.z` voxels), `4 quads`
/// output channels and 8 x `cols` input channels (`ConvTiles::pointwise_weight_tile` gives `(quads, cols)`);
/// the groups of the dispatch run through (split, channel tile) with the channel tiles of one split
/// consecutive, so that a split's voxels, read by all its tiles, are read while still in cache (on lavapipe
/// 12.0 -> 9.3 ms, `conv3d_bwd_weight_k1s1`, where a workgroup's groups were 8 splits of one tile). Lane k of
/// a group loads dy of voxel `v0 + k` for the output channels, and the group steps through its 8 voxels with
/// shuffles, each lane gathering x of its input channels. Every sum runs over its split's voxels in
/// ascending order from zero, so every channel tiling gives the same bits; the splits' partials are added in
/// order afterwards.
pub(super) fn pointwise_weight_subgroup((quads, cols): (usize, usize)) -> String {
    let sg = SUBGROUP_LANES;
    let mut s = pointwise_weight_prologue(Entry::BackwardWeightPointwise, quads, cols);
    s += &format!(
        "
    // Every group runs the same {sg}-voxel blocks (a count uniform over the workgroup); voxels past its
    // split's end read as zero.
    for (var v0 = v_begin; v0 < v_begin + p.chunk.z; v0 += {sg}u) {{
        let col = v0 + lane;
        let vok = col < v_end;
        let cv = select(0u, col, vok);
        let n = cv / vox;
        let v = cv - n * vox;
        let xb = n * cin * vox + v;
        let yb = n * cout * vox + v;
"
    );
    for q in 0..quads {
        let comps: Vec<String> = (0..4)
            .map(|r| {
                let m = 4 * q + r;
                format!("select(0.0, wts[select(0u, yb + (m0 + {m}u) * vox, vok && m0 + {m}u < cout)], vok && m0 + {m}u < cout)")
            })
            .collect();
        let _ = writeln!(s, "        let wl{q} = vec4<f32>({});", comps.join(", "));
    }
    let _ = writeln!(s, "        for (var k = 0u; k < {sg}u; k++) {{");
    let _ = writeln!(s, "            let ok = v0 + k < v_end;");
    let _ = writeln!(s, "            let xk = subgroupShuffle(xb, first + k);");
    for q in 0..quads {
        let _ = writeln!(
            s,
            "            let b{q} = subgroupShuffle(wl{q}, first + k);"
        );
    }
    s += &pointwise_weight_fmas(quads, cols, &|j| {
        format!("select(0.0, src[select(0u, xk + xr{j}, ok)], ok)")
    });
    s += "        }\n    }\n";
    s + &pointwise_weight_stores(quads, cols)
}

/// The subgroup module's 1x1x1 weight gradient for images whose voxels are a multiple of 8
/// (`backward_weight_pointwise_vec4`): the tiles, splits and sums of [`pointwise_weight_subgroup`], but
/// each 8-voxel block is read as aligned vec4s (splits are multiples of 8 voxels, so a block lies in one
/// image and is valid or past the split's end as a whole): each lane loads its input channels' x and its
/// share of the output channels' dy (`4 quads / 8` channels, at least one) at the block's 8 voxels, two
/// vec4s each, and step k takes component k of them, dy shuffled from the lane that owns it. A vec4 load
/// is one memory access for four voxels where the gathers of the general kernel are four (on lavapipe each
/// lane's access is a scalar sequence of its own). The products and their order are those of
/// [`pointwise_weight_subgroup`], so both give the same bits.
pub(super) fn pointwise_weight_subgroup_vec4((quads, cols): (usize, usize)) -> String {
    let sg = SUBGROUP_LANES;
    let mut s = pointwise_weight_prologue(Entry::BackwardWeightPointwiseVec4, quads, cols);
    s.push('\n');
    s += &owned_channels(quads, "gok", "gr", "cout", "vox");
    s += &format!(
        "
    // Every group runs the same {sg}-voxel blocks (a count uniform over the workgroup); blocks past its
    // split's end read as zero.
    for (var v0 = v_begin; v0 < v_begin + p.chunk.z; v0 += {sg}u) {{
        let vok = v0 < v_end;
        let cv = select(0u, v0, vok);
        let n = cv / vox;
        let v = cv - n * vox;
        let xb = (n * cin * vox + v) / 4u;
        let yb = (n * cout * vox + v) / 4u;
"
    );
    let ind = "        ";
    for j in 0..cols {
        s += &vec4_pair(ind, "x", j, "src4", &format!("xb + xr{j} / 4u"), "vok");
    }
    for c in 0..lane_channels(quads) {
        let ok = format!("vok && gok{c}");
        s += &vec4_pair(ind, "g", c, "wts4", &format!("yb + gr{c} / 4u"), &ok);
    }
    // The 8 voxel steps written out (k a constant in each), so that picking step k's component of the vec4
    // pairs is a constant extract: 13.9 -> 12.1 ms on lavapipe (`conv3d_bwd_weight_k1s1`, alternating runs).
    let body = owned_operands(quads)
        + &pointwise_weight_fmas(quads, cols, &|j| format!("select(xlo{j}, xhi{j}, hi)[kc]"));
    for k in 0..sg {
        let _ = writeln!(s, "        {{\n            let k = {k}u;\n{body}        }}");
    }
    s += "    }\n";
    s + &pointwise_weight_stores(quads, cols)
}

/// The dy operands `b{q}` of voxel step k of the vec4 weight gradient, where each lane holds its owned
/// channels' ([`lane_channels`]) dy over the block's 8 voxels as vec4 pairs `glo{c}`, `ghi{c}`: `hi` and
/// `kc` pick step k's component, `d{c}` is it, and channel m's value comes from lane `m / own` of the
/// group (from `first`).
fn owned_operands(quads: usize) -> String {
    let own = lane_channels(quads);
    let mut s = String::from("            let hi = k >= 4u;\n            let kc = k % 4u;\n");
    for c in 0..own {
        let _ = writeln!(s, "            let d{c} = select(glo{c}, ghi{c}, hi)[kc];");
    }
    for q in 0..quads {
        let comps: Vec<String> = (0..4)
            .map(|r| {
                let m = 4 * q + r;
                format!("subgroupShuffle(d{}, first + {}u)", m % own, m / own)
            })
            .collect();
        let _ = writeln!(s, "            let b{q} = vec4<f32>({});", comps.join(", "));
    }
    s
}

/// The head of both subgroup 1x1x1 weight-gradient kernels, through the accumulators: sizes, the group's
/// split, the workgroup's output channels `m0..`, the lane's input channels `ci0..` and their rows `xr{j}`
/// (clamped to the last channel: sums past it are never stored).
fn pointwise_weight_prologue(entry: Entry, quads: usize, cols: usize) -> String {
    let sg = SUBGROUP_LANES;
    let mut s = format!(
        "
// dw of a 1x1x1 kernel at stride 1 without padding, per voxel split: one split per group of {sg} lanes.
@compute @workgroup_size(64)
fn {name}(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32, @builtin(subgroup_invocation_id) sgid: u32) {{
    let cin = p.dims.y;
    let cout = p.dims.z;
    let vox = p.osz.w;
    let total = p.dims.x * vox;
    let lane = sgid % {sg}u;
    let first = sgid - lane;
    // Group `grp` of the dispatch is (split, channel tile), the channel tiles of one split consecutive.
    let ci_tiles = (cin + {per_wg}u - 1u) / {per_wg}u;
    let tiles = ci_tiles * ((cout + {tm}u - 1u) / {tm}u);
    let grp = tile_index(wid, nwg) * {groups}u + lid / {sg}u;
    let split = grp / tiles;
    let tile = grp - split * tiles;
    let v_begin = split * p.chunk.z;
    let v_end = min(total, v_begin + p.chunk.z);
    let m0 = (tile / ci_tiles) * {tm}u;
    let ci0 = (tile % ci_tiles) * {per_wg}u + lane * {cols}u;
",
        name = entry.name(),
        groups = WORKGROUP / sg,
        tm = 4 * quads,
        per_wg = sg * cols,
    );
    for j in 0..cols {
        let _ = writeln!(s, "    let xr{j} = min(ci0 + {j}u, cin - 1u) * vox;");
    }
    s + &acc_decl(cols, quads)
}

/// One voxel step of both subgroup 1x1x1 weight-gradient kernels: input channel j's value `x{j}` (the
/// expression `x(j)`) times the shuffled dy `b{q}`.
fn pointwise_weight_fmas(quads: usize, cols: usize, x: &dyn Fn(usize) -> String) -> String {
    let mut s = String::new();
    for j in 0..cols {
        let _ = writeln!(s, "            let x{j} = {};", x(j));
        for q in 0..quads {
            let _ = writeln!(
                s,
                "            acc{j}_{q} = fma(b{q}, vec4<f32>(x{j}), acc{j}_{q});"
            );
        }
    }
    s
}

/// The stores of both subgroup 1x1x1 weight-gradient kernels: the split's partial sums (closes the function).
fn pointwise_weight_stores(quads: usize, cols: usize) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "    if (split * p.chunk.z >= total) {{\n        return;\n    }}"
    );
    let _ = writeln!(s, "    let pbase = split * cout * cin;");
    for j in 0..cols {
        let _ = writeln!(s, "    if (ci0 + {j}u < cin) {{");
        for q in 0..quads {
            for r in 0..4 {
                let m = 4 * q + r;
                let _ = writeln!(
                    s,
                    "        if (m0 + {m}u < cout) {{ out3[pbase + (m0 + {m}u) * cin + ci0 + {j}u] = acc{j}_{q}[{r}]; }}"
                );
            }
        }
        s += "    }\n";
    }
    s + "}\n"
}

/// The 1x1x1 products' stores (closing the function): each result channel's four voxels, one aligned vec4
/// (the forward's plus its bias, through `put_forward4`); the same values as four scalar stores.
fn vec4_stores(pass: Pass, quads: usize) -> String {
    let mlim = pass.results();
    let mut s = format!("    if (valid) {{\n        let obase = (n * {mlim} * vox + v) / 4u;\n");
    for q in 0..quads {
        for r in 0..4 {
            let m = 4 * q + r;
            let value = format!(
                "vec4<f32>({})",
                (0..POINTWISE_COLS)
                    .map(|j| format!("acc{j}_{q}[{r}]"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let index = format!("obase + (m0 + {m}u) * vox / 4u");
            let write = match pass {
                Pass::Forward => format!("put_forward4({index}, {value} + bv[{m}]);"),
                Pass::BackwardData => format!("out3v[{index}] = {value};"),
            };
            let _ = writeln!(s, "        if (m0 + {m}u < {mlim}) {{ {write} }}");
        }
    }
    s + "    }\n}\n"
}
