//! The subgroup module: operands shared by the workgroup are broadcast across 8 lanes.

use super::pass::{window_gathers, Pass, STRIDES};
use super::weights::*;
use super::*;
use crate::ops::conv::tiles::Entry;

/// The subgroup module's kernels (after `subgroup.wgsl` and `common.wgsl`): operands shared by the workgroup
/// are broadcast across 8 lanes.
pub(super) fn subgroup(tn: usize, q: usize, tnw: usize, qw: usize, tr: usize) -> String {
    Pass::BOTH.map(|pass| general(pass, tn, q)).concat()
        + &backward_weight(tn, q)
        + &Pass::BOTH.map(|pass| row(pass, tnw, qw, 1, false)).concat()
        + &backward_weight_row(tr, q, 1)
}

/// The row kernels at stride 2 along W, forward and weight gradient (appended after the 1x1x1 kernels).
pub(super) fn row_stride2(tnw: usize, qw: usize, tr: usize, q: usize) -> String {
    row(Pass::Forward, tnw, qw, 2, false) + &backward_weight_row(tr, q, 2)
}

/// The forward and weight-gradient row kernels at stride 2 along W whose windows are read as aligned vec4s
/// (`forward_row_s2_vec4`, `backward_weight_row_s2_vec4`; the input's rows a multiple of 4 long, padding 1
/// along W; appended last).
pub(super) fn row_stride2_vec4(tnw: usize, qw: usize, tr: usize, q: usize) -> String {
    row(Pass::Forward, tnw, qw, 2, true) + &backward_weight_row_vec4(tr, q)
}

/// One reduction step of the general subgroup kernels after the broadcasts: each column's value gathered
/// at `off{j} + cs` (zero where `ok{j}x` is false) and accumulated with the broadcast weights `b{q}`.
fn column_fmas(ind: &str, tn: usize, q: usize) -> String {
    let mut s = Vec::new();
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

/// Lane `lane` of each group of 8 loads the weights `wts[widx(m)]` of reduced channel `c0 + lane` for the
/// result channels (zero past `cred` and `mlim`).
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

/// The reduction over the channels `cred` of one tap of the general and phase kernels, 8 at a time: the lanes
/// load the weights `wts[widx(m)]`, then 8 broadcast steps, channel `c` gathered at `c * rstride`. Leaves
/// the channel loop open.
pub(super) fn broadcast_reduction(
    tn: usize,
    q: usize,
    widx: &dyn Fn(usize) -> String,
    rstride: &str,
) -> String {
    broadcast_steps("        ", q, widx, rstride, &|ind| column_fmas(ind, tn, q))
}

/// The channel loop of the subgroup kernels at indent `ind`, 8 reduced channels at a time: lane k of each
/// 8 loads the weights `wts[widx(m)]` of channel `c0 + k`, then for each of the 8 channels `c` (below
/// `cred`) `cs = c * rstride`, the weights `b{q}` shuffled from lane k and the statements `step(indent)`.
/// Leaves the channel loop open.
fn broadcast_steps(
    ind: &str,
    q: usize,
    widx: &dyn Fn(usize) -> String,
    rstride: &str,
    step: &dyn Fn(&str) -> String,
) -> String {
    let sg = SUBGROUP_LANES;
    let (in1, in2) = (format!("{ind}    "), format!("{ind}        "));
    let mut s = format!(
        "{ind}for (var c0 = 0u; c0 < cred; c0 += {sg}u) {{\n{}\n",
        weight_lane_loads(&in1, q, widx)
    );
    // A loop over the 8 lanes with a shuffle by its counter, not 8 unrolled broadcasts: LLVM-based drivers
    // (lavapipe) keep the one loop body's tile in registers, where 8 copies of it spill (1.5-2x faster there).
    let _ = writeln!(
        s,
        "{in1}for (var k = 0u; k < min({sg}u, cred - c0); k++) {{"
    );
    let _ = writeln!(s, "{in2}let cs = (c0 + k) * {rstride};");
    for qq in 0..q {
        let _ = writeln!(s, "{in2}let b{qq} = subgroupShuffle(wl{qq}, k);");
    }
    s += &step(&in2);
    let _ = write!(s, "\n{in1}}}\n");
    s
}

/// The forward or input-gradient kernel of the general tiles: `tn` columns x `4 q` channels per invocation,
/// the weights of 8 reduced channels loaded by 8 lanes and broadcast.
fn general(pass: Pass, tn: usize, q: usize) -> String {
    let sg = SUBGROUP_LANES;
    let (comment, strides, widx): (_, _, &dyn Fn(usize) -> String) = match pass {
        Pass::Forward => (
            "y over output voxels (columns); reduced channel = input channel.",
            "",
            &|m| format!("((m0 + {m}u) * cin + cl) * kvol + t"),
        ),
        Pass::BackwardData => (
            "dx over input voxels (columns); `src` is dy, reduced channel = output channel.",
            STRIDES,
            &|m| format!("(cl * cin + m0 + {m}u) * kvol + t"),
        ),
    };
    let strides = if strides.is_empty() {
        String::new()
    } else {
        format!("\n{strides}")
    };
    let name = pass.entry(false).name();
    format!(
        "
// {comment}
@compute @workgroup_size(64)
fn {name}(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32, @builtin(subgroup_invocation_id) sgid: u32) {{
{SIZES}
    let m0 = wid.y * TM;
    let lane = sgid % {sg}u;
    let cred = {};
    let mlim = {};
{}
{}{strides}
    let kvol = p.ksz.w;
    let khw = p.ksz.y * p.ksz.z;
{}
    for (var t = 0u; t < kvol; t++) {{
        let kd = t / khw;
        let kr = t - kd * khw;
        let kh = kr / p.ksz.z;
        let kw = kr - kh * p.ksz.z;
{}
{}        }}
    }}
{}",
        pass.reduced(),
        pass.results(),
        pass.decode(tn),
        pass.origins(tn),
        acc_decl(tn, q),
        pass.taps("        ", tn, "x", ""),
        broadcast_reduction(tn, q, widx, pass.reduced_stride()),
        pass.store(tn, q, "bv")
    )
}

/// The lanes' loads of the weight-gradient kernels: lane l takes voxel `v0 + l` of the split (its geometry
/// with the window corner from `x0`) and its output gradient `wl{q}` for the TM channels.
fn voxel_lanes(q: usize, x0: &str) -> String {
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
    format!(
        "        let col = v0 + lane;
        let vok = col < v_end;
        let cv = select(v_begin, col, vok);
{}{}",
        voxel_geometry("        ", "cv", x0, "let "),
        join(wq)
    )
}

/// [`voxel_lanes`] for the vec4 weight-gradient row kernel: the lanes' geometry as there, and instead of
/// each lane's dy of its voxel, each lane's dy of its channels (`gok{c}`, `gr{c}` from `owned_channels`)
/// over the segment's 8 voxels as two aligned vec4s `glo{c}`, `ghi{c}` (the segment is one row's, in one
/// image; rows are a multiple of 8, so `gr{c}` is a multiple of 4).
fn segment_lanes_vec4(quads: usize, x0: &str) -> String {
    let mut s = format!(
        "        let col = v0 + lane;
        let vok = col < v_end;
        let cv = select(v_begin, col, vok);
{}        let yseg = (ybase - lane) / 4u;
",
        voxel_geometry("        ", "cv", x0, "let ")
    );
    for c in 0..lane_channels(quads) {
        let ok = format!("vok && gok{c}");
        s += &vec4_pair(
            "        ",
            "g",
            c,
            "wts4",
            &format!("yseg + gr{c} / 4u"),
            &ok,
        );
    }
    s
}

/// The weight gradient of the general tiles: columns are weight entries e = ci * kvol + tap; the reduction
/// runs over the voxels of split wid.z, 8 at a time, each lane's voxel broadcast in turn.
fn backward_weight(tn: usize, q: usize) -> String {
    let backward_weight = Entry::BackwardWeight.name();
    let sg = SUBGROUP_LANES;
    let mut out = format!(
        "
// backward_weight: columns are weight entries e = ci * kvol + tap, `src` is x, `wts` is dy, `out3` the
// per-split partials; the reduction runs over the voxels of split wid.z, 8 at a time.
@compute @workgroup_size(64)
fn {backward_weight}(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32,
                   @builtin(subgroup_invocation_id) sgid: u32) {{
{}    let khw = p.ksz.y * p.ksz.z;
    let hw = p.osz.y * p.osz.z;
    let lane = sgid % {sg}u;
{}
{}
    // A subgroup whose lanes own no weight entry leaves at once (as in the row kernel).
    if (!subgroupAny(valid0)) {{
        return;
    }}
    for (var v0 = v_begin; v0 < v_end; v0 += {sg}u) {{
{}
",
        weight_sizes(false),
        weight_entries(tn, &|j| format!(
            "    let kd{j} = i32(t{j} / khw);
    let kr{j} = t{j} - (t{j} / khw) * khw;
    let kh{j} = i32(kr{j} / p.ksz.z);
    let kw{j} = i32(kr{j} - (kr{j} / p.ksz.z) * p.ksz.z);
    let coff{j} = i32(ci{j} * ivox) + (kd{j} * i32(p.isz.y) + kh{j}) * i32(p.isz.z) + kw{j};"
        )),
        acc_decl(tn, q),
        voxel_lanes(q, "i32(ox * p.stride.z)")
    );
    // One loop over the 8 lanes' voxels with shuffles by its counter (see `broadcast_steps`).
    let _ = writeln!(
        out,
        "        for (var k = 0u; k < min({sg}u, v_end - v0); k++) {{"
    );
    let _ = writeln!(out, "            let vi = subgroupShuffle(info, k);");
    for qq in 0..q {
        let _ = writeln!(out, "            let b{qq} = subgroupShuffle(wl{qq}, k);");
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
    out += "        }\n    }\n";
    out + &entry_store(tn, q)
}

/// The forward or input-gradient row kernel (stride 1, 3 taps along W): `tnw` consecutive results
/// of a row and `4 qw` channels per invocation, stepping through a group of 8 lanes' weights with
/// subgroupShuffle. With `vec4_window` (the forward at stride 2, padding 1, input rows a multiple of 4):
/// the window's first value x0 = 2 xs - 1 is gathered and the other `2 tnw` (from 2 xs, a multiple of 4)
/// are read as `tnw / 2` aligned vec4s, each in or past the row as a whole: one memory access for four
/// values (on lavapipe each lane's access is a scalar sequence of its own). Same values, same sums.
fn row(pass: Pass, tnw: usize, qw: usize, sw: usize, vec4_window: bool) -> String {
    let sg = SUBGROUP_LANES;
    let kw_n = ROW_TAPS;
    let win = Pass::row_window_len(tnw, sw);
    let rm = 4 * qw;
    let (comment, widx): (_, &dyn Fn(usize, usize) -> String) = match pass {
        Pass::Forward => ("forward, row kernel (see forward).", &|mm, kw| {
            format!("((m0 + {mm}u) * cin + cl) * kvol + t + {kw}u")
        }),
        Pass::BackwardData => (
            "backward_data, row kernel (see backward_data).",
            &|mm, kw| format!("(cl * cin + m0 + {mm}u) * kvol + t + {kw}u"),
        ),
    };
    let name = if vec4_window {
        assert!(pass == Pass::Forward && sw == 2 && tnw.is_multiple_of(2));
        Entry::ForwardRowStride2Vec4.name()
    } else {
        pass.row_entry(sw).name()
    };
    let vec4s = (win - 1) / 4;
    let cred = pass.reduced();
    let mlim = pass.results();
    let redstride = pass.reduced_stride();
    // These kernels index their columns with the workgroup size written out.
    let rowcode = pass
        .row_origins(tnw, sw)
        .replace("* WGS + lid", "* 64u + lid");
    let mut s = format!(
        "
// {comment}
// Stride {sw} along W and {kw_n} taps along W: each invocation owns {tnw} consecutive results of a row and {rm}
// channels; one window of {win} gathered values per reduced channel serves all {kw_n} taps along W.
{}{rowcode}
    let kvol = p.ksz.w;
    let kdh = p.ksz.x * p.ksz.y;
{}
    for (var r = 0u; r < kdh; r++) {{
        let kd = r / p.ksz.y;
        let kh = r - kd * p.ksz.y;
        let t = r * {kw_n}u;
{}
        for (var c0 = 0u; c0 < cred; c0 += {sg}u) {{
            let cl = c0 + lane;
            let cok = cl < cred;
",
        row_kernel_head(name, rm, cred, mlim),
        acc_decl(tnw, qw),
        pass.row_window(win)
    );
    if vec4_window {
        // rb + 1 is the row's element 2 xs (a multiple of 4 wherever okr holds).
        let _ = writeln!(s, "        let a4 = u32(rb + 1) / 4u;");
        for v in 0..vec4s {
            let _ = writeln!(
                s,
                "        let vok{v} = okr && in_range(x0 + {}, p.isz.z);",
                1 + 4 * v
            );
        }
    }
    s += &row_weight_loads("            ", qw, widx);
    let _ = writeln!(
        s,
        "            for (var k = 0u; k < min({sg}u, cred - c0); k++) {{"
    );
    let _ = writeln!(s, "                let cs = (c0 + k) * {redstride};");
    if vec4_window {
        // x0 is the last element of the vec4 before a4 (one entry point cannot bind both views of `src`).
        let _ = writeln!(s, "                let cs4 = cs / 4u;");
        let _ = writeln!(
            s,
            "                let xw0 = select(0.0, src4[select(1u, a4 + cs4, wok0) - 1u][3], wok0);"
        );
        for v in 0..vec4s {
            let _ = writeln!(
                s,
                "                let xv{v} = select(vec4<f32>(0.0), src4[select(0u, a4 + cs4 + {v}u, vok{v})], vok{v});"
            );
            for c in 0..4 {
                let _ = writeln!(s, "                let xw{} = xv{v}[{c}];", 1 + 4 * v + c);
            }
        }
    } else {
        s += &window_gathers("                ", win, "cs");
    }
    s += &pass.row_step(tnw, sw, qw, "b", &|kw, qq| {
        format!("subgroupShuffle(wl{kw}_{qq}, k)")
    });
    s += "            }\n";
    s += "        }\n    }\n";
    if pass == Pass::Forward {
        s += &bias_read("bv", &rm.to_string());
        // The Python original wrote the loop bound as `{4*QW}u`.
        s = s.replace(&format!("m < {rm}; m++"), &format!("m < {rm}u; m++"));
    }
    s + &pass.row_store(tnw, qw, "mlim", "bv")
}

/// The opening of a subgroup row kernel `name` of `rm` result channels per workgroup: its signature, the
/// sizes, the channel tile's first channel `m0`, the lane in its group of 8, and the reduced and result
/// channel counts `cred` and `mlim`.
pub(super) fn row_kernel_head(name: &str, rm: usize, cred: &str, mlim: &str) -> String {
    let sg = SUBGROUP_LANES;
    format!(
        "@compute @workgroup_size(64)
fn {name}(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32, @builtin(subgroup_invocation_id) sgid: u32) {{
{SIZES}
    let m0 = wid.y * {rm}u;
    let lane = sgid % {sg}u;
    let cred = {cred};
    let mlim = {mlim};
"
    )
}

/// The row kernels' weight loads at indent `ind`: lane `lane` loads `wl{kw}_{q}`, the weights `wts[widx(m,
/// kw)]` of its reduced channel `cl` (valid where `cok`) for each tap kw along W and each result channel m of
/// the `4 quads` (zero past `mlim`), with the channel masks `ok0_{m}`.
fn row_weight_loads(ind: &str, quads: usize, widx: &dyn Fn(usize, usize) -> String) -> String {
    let mut s = String::new();
    for kw in 0..ROW_TAPS {
        for qq in 0..quads {
            let mut comps = Vec::new();
            for rr in 0..4 {
                let mm = qq * 4 + rr;
                if kw == 0 {
                    let _ = writeln!(s, "{ind}let ok{kw}_{mm} = cok && m0 + {mm}u < mlim;");
                }
                comps.push(format!(
                    "select(0.0, wts[select(0u, {}, ok0_{mm})], ok0_{mm})",
                    widx(mm, kw)
                ));
            }
            let _ = writeln!(s, "{ind}let wl{kw}_{qq} = vec4<f32>({});", comps.join(", "));
        }
    }
    s
}

/// The weight-gradient row kernel (stride 1, 3 taps along W, output rows a multiple of 8): columns are
/// kernel rows, `tr` per invocation; each group of 8 lanes' voxels is one row segment.
fn backward_weight_row(tr: usize, q: usize, sw: usize) -> String {
    weight_row_kernel(tr, q, sw, false)
}

/// The stride-2 weight-gradient row kernel with its windows read as vec4s (`row_window_loads_vec4`) and
/// each segment's output gradient as vec4s per lane and channel (`segment_lanes_vec4`), shared by
/// broadcasts: the same values, the same sums.
fn backward_weight_row_vec4(tr: usize, q: usize) -> String {
    weight_row_kernel(tr, q, 2, true)
}

/// [`backward_weight_row`], with `vec4_window` the windows of [`row_window_loads_vec4`].
fn weight_row_kernel(tr: usize, q: usize, sw: usize, vec4_window: bool) -> String {
    let backward_weight_row = if vec4_window {
        Entry::BackwardWeightRowStride2Vec4.name()
    } else {
        weight_row_entry(sw).name()
    };
    let window = segment_window(sw);
    let (kw_n, sg) = (ROW_TAPS, SUBGROUP_LANES);
    let mut out = format!(
        "
// backward_weight, row kernel (see backward_weight): stride {sw} and {kw_n} taps along W, output rows a multiple of
// {sg} long, so each group of {sg} voxels is one row segment and the {kw_n} taps along W of a kernel row read one
// window of {window} gathered values. Columns are kernel rows (ci, kd, kh); {tr} per invocation.
@compute @workgroup_size(64)
fn {backward_weight_row}(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32,
                       @builtin(subgroup_invocation_id) sgid: u32) {{
{}    let hw = p.osz.y * p.osz.z;
    let lane = sgid % {sg}u;
{}
    // A subgroup with no kernel row of its own leaves at once (its lanes share nothing with others), so a
    // call with few rows costs what its rows need, not whole workgroups.
    if (!subgroupAny(valid0)) {{
        return;
    }}
    for (var v0 = v_begin; v0 < v_end; v0 += {sg}u) {{
{}
        let vi = subgroupBroadcast(info, 0u);
",
        weight_sizes(true),
        row_weight_setup(tr, q)
            + &if vec4_window {
                "\n".to_string() + owned_channels(q, "gok", "gr", "cout", "ovox").trim_end()
            } else {
                String::new()
            },
        if vec4_window {
            segment_lanes_vec4(q, &row_corner(sw))
        } else {
            voxel_lanes(q, &row_corner(sw))
        }
    );
    out += &if vec4_window {
        row_window_loads_vec4("        ", tr)
    } else {
        row_window_loads("        ", tr, sw)
    };
    let own = lane_channels(q);
    out += &row_weight_steps("        ", sg, sw, tr, q, "b", &|k, qq| {
        if !vec4_window {
            return format!("subgroupBroadcast(wl{qq}, {k}u)");
        }
        // dy of channel m at voxel k: component k % 4 of the lo (k < 4) or hi vec4 of lane m / own.
        let h = if k < 4 { "lo" } else { "hi" };
        let comps: Vec<String> = (0..4)
            .map(|r| {
                let m = 4 * qq + r;
                format!(
                    "subgroupBroadcast(g{h}{}[{}], {}u)",
                    m % own,
                    k % 4,
                    m / own
                )
            })
            .collect();
        format!("vec4<f32>({})", comps.join(", "))
    });
    out += "    }\n";
    out + &row_weight_store(tr, q)
}
