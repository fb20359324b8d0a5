//! The portable module: operands shared by the workgroup are staged in workgroup memory.

use super::*;
use crate::ops::conv::tiles::Entry;

/// The portable module's kernels (after `portable.wgsl` and `common.wgsl`): operands shared by the workgroup
/// are staged in workgroup memory.
pub(super) fn portable(tn: usize, q: usize, tnw: usize, tr: usize) -> String {
    let forward = Entry::Forward.name();
    let backward_data = Entry::BackwardData.name();
    let backward_weight = Entry::BackwardWeight.name();
    let backward_weight_row = Entry::BackwardWeightRow.name();
    let mut out = String::new();
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
fn {forward}(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {{
{SIZES}
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
fn {backward_data}(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {{
{SIZES}
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
fn {backward_weight}(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {{
{SIZES}
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
{SIZES}
    let m0 = wid.y * TM;
    let cred = {cred};
{rowcode}
    let kdh = p.ksz.x * p.ksz.y;
"
        );
        s += &acc_decl(tnw, q);
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
        Entry::ForwardRow.name(),
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
        Entry::BackwardDataRow.name(),
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
fn {backward_weight_row}(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {{
{SIZES}
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
    out += &row_weight_steps("            ", g, tr, q, "g", &|k, qq| {
        format!("dytile[(k0 + {k}u) * Q + {qq}u]")
    });
    out += "        }\n    }\n";
    out += &row_weight_store(tr, q);
    out
}
