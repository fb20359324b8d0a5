//! The portable module: operands shared by the workgroup are staged in workgroup memory.

use super::pass::{window_gathers, Pass, STRIDES};
use super::weights::*;
use super::*;
use crate::ops::conv::tiles::Entry;

/// The portable module's kernels (after `portable.wgsl` and `common.wgsl`): operands shared by the workgroup
/// are staged in workgroup memory.
pub(super) fn portable(tn: usize, q: usize, tnw: usize, tr: usize) -> String {
    Pass::BOTH.map(|pass| general(pass, tn, q)).concat()
        + &backward_weight(tn, q)
        + &Pass::BOTH.map(|pass| row(pass, tnw, q, 1)).concat()
        + &backward_weight_row(tr, q, 1)
}

/// The row kernels at stride 2 along W, forward and weight gradient (appended after the 1x1x1 kernels).
pub(super) fn row_stride2(tnw: usize, q: usize, tr: usize) -> String {
    row(Pass::Forward, tnw, q, 2) + &backward_weight_row(tr, q, 2)
}

/// The portable kernels' gathers of a reduction step: each column's value at `off{j} + co` (zero where
/// `ok{j}` is false).
pub(super) fn staged_loads(ind: &str, cols: usize) -> String {
    per_column(cols, |j| {
        format!("{ind}let xv{j} = select(0.0, src[select(0u, off{j} + co, ok{j})], ok{j});")
    })
}

/// The portable kernels' products of a reduction step: the staged weights `{tile}[wb + q]` times each
/// column's value.
pub(super) fn staged_fmas(ind: &str, cols: usize, quads: usize, tile: &str) -> String {
    let mut s = Vec::new();
    for q in 0..quads {
        s.push(format!("{ind}let w{q} = {tile}[wb + {q}u];"));
    }
    for j in 0..cols {
        for q in 0..quads {
            s.push(format!(
                "{ind}acc{j}_{q} = fma(w{q}, vec4<f32>(xv{j}), acc{j}_{q});"
            ));
        }
    }
    join(s)
}

/// The forward or input-gradient kernel of the general tiles: `tn` columns x `4 q` channels per invocation,
/// the weights staged chunk by chunk of (reduced channel, tap) pairs.
fn general(pass: Pass, tn: usize, q: usize) -> String {
    let (comment, strides, stage) = match pass {
        Pass::Forward => ("", String::new(), "cin, 1u, m0, cout"),
        Pass::BackwardData => (
            "// dx over input voxels (columns); `src` is dy, the reduced channel is the output channel.\n",
            String::from(STRIDES) + "\n",
            "1u, cin, m0, cin",
        ),
    };
    let name = pass.entry(false).name();
    let align = " ".repeat(name.len() + 4);
    let cred = pass.reduced();
    let rstride = pass.reduced_stride();
    format!(
        "
{comment}@compute @workgroup_size(64)
fn {name}(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
{align}@builtin(local_invocation_index) lid: u32) {{
{SIZES}
    let m0 = wid.y * TM;
{strides}{}
{}
    let chn = p.chunk.x;
    let tn = p.chunk.y;
    let kvol = p.ksz.w;
    let khw = p.ksz.y * p.ksz.z;
{}
    for (var t0 = 0u; t0 < kvol; t0 += tn) {{
        let tcount = min(tn, kvol - t0);
        for (var c0 = 0u; c0 < {cred}; c0 += chn) {{
            let cn = min(chn, {cred} - c0);
            workgroupBarrier();
            stage_weights({stage}, c0, cn, t0, tn, lid);
            workgroupBarrier();
            for (var tl = 0u; tl < tcount; tl++) {{
                let t = t0 + tl;
                let kd = t / khw;
                let kr = t - kd * khw;
                let kh = kr / p.ksz.z;
                let kw = kr - kh * p.ksz.z;
{}
                for (var cl = 0u; cl < cn; cl++) {{
                    let co = cl * {rstride};
{}
                    let wb = (cl * tn + tl) * Q;
{}
                }}
            }}
        }}
    }}
{}",
        pass.decode(tn),
        pass.origins(tn),
        acc_decl(tn, q),
        pass.taps(&" ".repeat(16), tn, "", &format!(" + c0 * {rstride}")),
        staged_loads("                    ", tn),
        staged_fmas("                    ", tn, q, "wtile"),
        pass.store(tn, q, "b")
    )
}

/// The staging loop of the weight-gradient kernels: per chunk of VCH voxels, each voxel's geometry (its window
/// corner from `x0`) into `vbase` and its output gradient for the TM channels into `dytile` (voxels past the
/// split zeroed where `zero_rest`).
fn stage_voxels(x0: &str, zero_rest: bool) -> String {
    let rest = if zero_rest {
        " else {
                for (var q = 0u; q < Q; q++) {
                    dytile[k * Q + q] = vec4<f32>(0.0);
                }
            }"
    } else {
        ""
    };
    format!(
        "    for (var v0 = v_begin; v0 < v_end; v0 += VCH) {{
        let vn = min(VCH, v_end - v0);
        workgroupBarrier();
        for (var k = lid; k < VCH; k += WGS) {{
            let col = v0 + k;
            var info = vec4<i32>(0);
            if (k < vn) {{
{}                for (var m = 0u; m < TM; m++) {{
                    var g = 0.0;
                    if (m0 + m < cout) {{
                        g = wts[ybase + (m0 + m) * ovox];
                    }}
                    dytile[k * Q + m / 4u][m % 4u] = g;
                }}
            }}{rest}
            vbase[k] = info;
        }}
        workgroupBarrier();
",
        voxel_geometry("                ", "col", x0, "")
    )
}

/// The weight gradient of the general tiles: columns are weight entries, the output gradient and the voxels'
/// geometry staged per chunk of voxels.
fn backward_weight(tn: usize, q: usize) -> String {
    let backward_weight = Entry::BackwardWeight.name();
    let dytile = VOXEL_CHUNK * q;
    let mut out = format!(
        "
// backward_weight: `src` is x, `wts` is dy (the staged operand), `out3` the per-split partials.
const VCH: u32 = {VOXEL_CHUNK}u; // voxels staged per chunk
var<workgroup> dytile: array<vec4<f32>, {dytile}>; // [voxel][TM out channels]
var<workgroup> vbase: array<vec4<i32>, {VOXEL_CHUNK}>;  // per voxel: z0, y0, x0, flat x offset of (z0, y0, x0)

@compute @workgroup_size(64)
fn {backward_weight}(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {{
{}    let khw = p.ksz.y * p.ksz.z;
{}
    let hw = p.osz.y * p.osz.z;
{}
",
        weight_sizes(false),
        weight_entries(tn, &|j| format!(
            "    let kd{j} = t{j} / khw;
    let kr{j} = t{j} - kd{j} * khw;
    let kh{j} = kr{j} / p.ksz.z;
    let kw{j} = kr{j} - kh{j} * p.ksz.z;
    let coff{j} = i32(ci{j} * ivox + (kd{j} * p.isz.y + kh{j}) * p.isz.z + kw{j});"
        )),
        acc_decl(tn, q)
    );
    out += &stage_voxels("i32(ox * p.stride.z)", false);
    out += "        for (var k = 0u; k < vn; k++) {\n            let info = vbase[k];\n";
    out += &per_column(tn, |j| {
        format!(
            "            let ok{j} = valid{j} && in_range(info.x + i32(kd{j}), p.isz.x) && in_range(info.y + i32(kh{j}), p.isz.y)
                && in_range(info.z + i32(kw{j}), p.isz.z);
            let xv{j} = select(0.0, src[select(0u, u32(info.w + coff{j}), ok{j})], ok{j});"
        )
    });
    let _ = write!(
        out,
        "
            let wb = k * Q;
{}
        }}
    }}
",
        staged_fmas("            ", tn, q, "dytile")
    );
    out + &entry_store(tn, q)
}

/// The forward or input-gradient row kernel (stride 1, 3 taps along W): `tnw` consecutive results of a row
/// per invocation reading one window of gathered values per reduced channel.
fn row(pass: Pass, tnw: usize, q: usize, sw: usize) -> String {
    let win = Pass::row_window_len(tnw, sw);
    let kw_n = ROW_TAPS;
    let (comment, stage_args) = match pass {
        Pass::Forward => (
            format!("forward for stride {sw} and {kw_n} taps along W: {tnw} consecutive results of a row per invocation, the {kw_n} taps\n// along W reading one window of {win} gathered values per input channel."),
            "cin, 1u, m0, cout",
        ),
        Pass::BackwardData => (
            String::from("backward_data for stride 1 and 3 taps along W (as forward_row)."),
            "1u, cin, m0, cin",
        ),
    };
    let name = pass.row_entry(sw).name();
    let mut s = format!(
        "
// {comment}
@compute @workgroup_size(64)
fn {name}(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {{
{SIZES}
    let m0 = wid.y * TM;
    let cred = {};
{}
    let kdh = p.ksz.x * p.ksz.y;
{}
    for (var r = 0u; r < kdh; r++) {{
        let kd = r / p.ksz.y;
        let kh = r - kd * p.ksz.y;
{}
        for (var c0 = 0u; c0 < cred; c0 += STAGE / {kw_n}u) {{
            let cn = min(STAGE / {kw_n}u, cred - c0);
            workgroupBarrier();
            stage_weights({stage_args}, c0, cn, r * {kw_n}u, {kw_n}u, lid);
            workgroupBarrier();
            for (var cl = 0u; cl < cn; cl++) {{
                let co = (c0 + cl) * {};
{}",
        pass.reduced(),
        pass.row_origins(tnw, sw),
        acc_decl(tnw, q),
        pass.row_window(win),
        pass.reduced_stride(),
        window_gathers("                ", win, "co")
    );
    s += &pass.row_step(tnw, sw, q, "w", &|kw, qq| {
        format!("wtile[(cl * {kw_n}u + {kw}u) * Q + {qq}u]")
    });
    s += "            }\n        }\n    }\n";
    if pass == Pass::Forward {
        s += &bias_read("b", "TM");
    }
    s + &pass.row_store(tnw, q, pass.results(), "b")
}

/// The weight-gradient row kernel (stride 1, 3 taps along W, output rows a multiple of 8): columns are
/// kernel rows, `tr` per invocation, each group of 8 staged voxels one row segment.
fn backward_weight_row(tr: usize, q: usize, sw: usize) -> String {
    let backward_weight_row = weight_row_entry(sw).name();
    let window = segment_window(sw);
    let (kw_n, g) = (ROW_TAPS, SUBGROUP_LANES);
    let mut out = format!(
        "
// backward_weight for stride {sw} and {kw_n} taps along W, output rows a multiple of {g}: columns are kernel rows
// (ci, kd, kh), {tr} per invocation with their {kw_n} taps; each aligned group of {g} staged voxels is one row segment,
// whose {g} x {kw_n} steps of a kernel row read one window of {window} gathered values.
@compute @workgroup_size(64)
fn {backward_weight_row}(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {{
{}    let hw = p.osz.y * p.osz.z;
{}
",
        weight_sizes(true),
        row_weight_setup(tr, q)
    );
    out += &stage_voxels(&row_corner(sw), true);
    let _ = writeln!(
        out,
        "        for (var k0 = 0u; k0 < vn; k0 += {g}u) {{\n            let vi = vbase[k0];"
    );
    out += &row_window_loads("            ", tr, sw);
    out += &row_weight_steps("            ", g, sw, tr, q, "g", &|k, qq| {
        format!("dytile[(k0 + {k}u) * Q + {qq}u]")
    });
    out += "        }\n    }\n";
    out + &row_weight_store(tr, q)
}
