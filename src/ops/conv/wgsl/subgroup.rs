//! The subgroup module: operands shared by the workgroup are broadcast across 8 lanes.

use super::*;
use crate::ops::conv::tiles::Entry;

/// Lane `lane` of each group of 8 loads the weights of reduced channel `c0 + lane` for the result channels.
/// One reduction step of the subgroup kernels: lane `k`'s weights broadcast to every lane, each column's
/// value gathered at `off{j} + cs` (zero where `ok{j}x` is false) and accumulated.
pub(super) fn broadcast_fmas(ind: &str, tn: usize, q: usize, k: usize) -> String {
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

pub(super) fn weight_lane_loads(ind: &str, quads: usize, widx: &dyn Fn(usize) -> String) -> String {
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

/// The subgroup module's kernels (after `subgroup.wgsl` and `common.wgsl`): operands shared by the workgroup
/// are broadcast across 8 lanes.
pub(super) fn subgroup(tn: usize, q: usize, tnw: usize, qw: usize, tr: usize) -> String {
    let backward_weight = Entry::BackwardWeight.name();
    let backward_weight_row = Entry::BackwardWeightRow.name();
    let sg = SUBGROUP_LANES;
    let rm = 4 * qw;
    let per_j = |f: &dyn Fn(usize) -> String| join((0..tn).map(f).collect());
    let mut out = String::new();
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
{SIZES}
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
        Entry::Forward.name(),
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
        Entry::BackwardData.name(),
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
fn {backward_weight}(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32,
                   @builtin(subgroup_invocation_id) sgid: u32) {{
{SIZES}
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
{SIZES}
    let m0 = wid.y * {rm}u;
    let lane = sgid % {sg}u;
    let cred = {cred};
    let mlim = {mlim};
{rowcode}
    let kvol = p.ksz.w;
    let kdh = p.ksz.x * p.ksz.y;
"
        );
        s += &acc_decl(tnw, qw);
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
        Entry::ForwardRow.name(),
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
        Entry::BackwardDataRow.name(),
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
fn {backward_weight_row}(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32,
                       @builtin(subgroup_invocation_id) sgid: u32) {{
{SIZES}
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
    out += &row_weight_steps("        ", sg, tr, q, "b", &|k, qq| {
        format!("subgroupBroadcast(wl{qq}, {k}u)")
    });
    out += "    }\n";
    out += &row_weight_store(tr, q);
    out
}
