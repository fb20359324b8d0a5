//! `backward_data_phase`, the input gradient at strides over 1 by sub-pixel phase, for both modules.

use super::portable::{staged_fmas, staged_loads};
use super::subgroup::{broadcast_reduction, row_kernel_head};
use super::*;
use crate::ops::conv::tiles::Entry;

/// The input gradient for strides over 1 by sub-pixel phase (`backward_data_phase`): the input voxels whose
/// `(i + pad) % stride` agree on every axis (one phase class) take the same taps, those with
/// `(i + pad - tap) % stride == 0`, so each workgroup owns columns of one class and loops over that class's
/// taps only (3x3x3 at stride 2: 1 to 8 of the 27 taps, none masked). Appended to both modules.
fn phase_columns(tn: usize, q: usize, subgroup: bool) -> String {
    let backward_data_phase = Entry::BackwardDataPhase.name();
    let m = 4 * q;
    let ptile = STAGE * q;
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
    let class = phase_class(true);
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
fn {backward_data_phase}(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_index) lid: u32{lane_arg}) {{
{SIZES}
    let kvol = p.ksz.w;
    let m0 = wid.y * {m}u;
    let tile = tile_index(wid, nwg);
    let cls = tile / p.chunk.w;
    let ctile = tile - cls * p.chunk.w;
{class}    let ntaps = nt.x * nt.y * nt.z;
    let cvox = max(cnt.x * cnt.y * cnt.z, 1u);
    let chw = max(cnt.y * cnt.z, 1u);
    let cw = max(cnt.z, 1u);
    // Workgroups past the last class (a grid rounded up to fit the device limit) own no columns.
    let total = select(0u, p.dims.x * cnt.x * cnt.y * cnt.z, cls < st.x * st.y * st.z);
"
    );
    s += &per_column(tn, |j| {
        let off = j * WORKGROUP;
        let cols = WORKGROUP * tn;
        format!(
            "    let col{j} = ctile * {cols}u + lid + {off}u;
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
    s + "\n" + &acc_decl(tn, q)
}

/// The phase class `cls` of the phase kernels over D, H and, where `with_w`, W, as WGSL vectors over those
/// axes: the strides `st`, the class's phase `r`, its first input voxel `i0`, the input's size `isz`, the
/// class's voxels `cnt` per axis, the output voxel `cb` of its first voxel's first tap, and its taps `nt`
/// per axis.
fn phase_class(with_w: bool) -> String {
    let (swz, v, r) = if with_w {
        let r = "vec3<u32>(cls / (st.y * st.z), (cls / st.z) % st.y, cls % st.z)";
        ("xyz", "vec3", r)
    } else {
        ("xy", "vec2", "vec2<u32>(cls / st.y, cls % st.y)")
    };
    format!(
        "    let st = p.stride.{swz};
    let r = {r};
    let i0 = (r + st - p.pad.{swz} % st) % st;
    let isz = p.isz.{swz};
    let cnt = select({v}<u32>(0u), (isz + st - 1u - i0) / st, i0 < isz);
    let cb = {v}<i32>((i0 + p.pad.{swz} - r) / st);
    let nt = select({v}<u32>(0u), (p.ksz.{swz} + st - 1u - r) / st, r < p.ksz.{swz});
"
    )
}

/// The phase kernels' class tap u as its steps jt along each axis, and each column's output voxel for it.
fn phase_taps(ind: &str, cols: usize, ok: &str, chunk: &str) -> String {
    format!(
        "{ind}let jz = u / (nt.y * nt.z);
{ind}let ju = u - jz * nt.y * nt.z;
{ind}let jy = ju / nt.z;
{ind}let jt = vec3<i32>(vec3<u32>(jz, jy, ju - jy * nt.z));
"
    ) + &per_column(cols, |j| {
        format!(
            "{ind}let o{j} = ob{j} - jt;
{ind}let ok{j}{ok} = valid{j} && in_range(o{j}.x, p.osz.x) && in_range(o{j}.y, p.osz.y) && in_range(o{j}.z, p.osz.z);
{ind}let off{j} = u32(yb{j} + (o{j}.x * i32(p.osz.y) + o{j}.y) * i32(p.osz.z) + o{j}.z){chunk};"
        )
    })
}

/// The portable module's `backward_data_phase`: the weights of a chunk of (output channel, class tap) pairs
/// staged in workgroup memory.
pub(super) fn phase_data(tn: usize, q: usize) -> String {
    let m = 4 * q;
    let ind = " ".repeat(20);
    let mut s = phase_columns(tn, q, false);
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
{}
                for (var cl = 0u; cl < cn; cl++) {{
                    let co = cl * ovox;
{}
                    let wb = (cl * tcount + tl) * {q}u;
{}
                }}
            }}
        }}
    }}
",
        phase_taps("                ", tn, "", " + c0 * ovox"),
        staged_loads(&ind, tn),
        staged_fmas(&ind, tn, q, "ptile")
    );
    s + &phase_store(tn, q)
}

/// The phase kernels' guarded stores of the input gradient (closes the function).
fn phase_store(tn: usize, q: usize) -> String {
    store(tn, q, "out3", "cin", &|j| format!("xo{j}"), "ivox", None)
}

/// The subgroup module's `backward_data_phase`: the columns and taps of [`phase_data`], the weights of 8
/// reduced channels loaded by 8 lanes and broadcast (no workgroup memory, no barriers).
pub(super) fn phase_data_subgroup(tn: usize, q: usize) -> String {
    let sg = SUBGROUP_LANES;
    let mut s = phase_columns(tn, q, true);
    let _ = write!(
        s,
        "
    let lane = sgid % {sg}u;
    let cred = cout;
    let mlim = cin;
    for (var u = 0u; u < ntaps; u++) {{
        let t = phase_tap(u, r, nt);
{}
{}        }}
    }}
",
        phase_taps("        ", tn, "x", ""),
        broadcast_reduction(
            tn,
            q,
            &|m| format!("(cl * cin + m0 + {m}u) * kvol + t"),
            "ovox"
        )
    );
    s + &phase_store(tn, q)
}

/// The subgroup module's input gradient at stride 2 along W with 3 taps and padding 1 along W
/// (`backward_data_row_s2`, and `_vec4` where `vec4_window`): each invocation owns `tnw` consecutive input
/// voxels of a row from an even `xs`. With padding 1, input voxel `xs + 2e` takes tap 1 from output
/// `xs / 2 + e` and voxel `xs + 2e + 1` taps 0 and 2 from outputs `xs / 2 + e + 1` and `xs / 2 + e`, so
/// one window of `tnw / 2 + 1` values of dy per reduced channel serves all three taps (the phase kernel
/// gathers one value per tap and voxel). Along D and H the workgroups own rows of one sub-pixel phase
/// class, as the phase kernel's columns, so they loop over that class's taps only and the broadcast
/// weights are the workgroup's. Sums per result: the class's (kd, kh) rows in order, in each the output
/// channels, in each the taps along W (the phase kernel sums the taps outside the channels).
pub(super) fn phase_row_subgroup(tnw: usize, qw: usize, vec4_window: bool) -> String {
    assert!(tnw.is_multiple_of(2) && (!vec4_window || tnw.is_multiple_of(8)));
    let sg = SUBGROUP_LANES;
    let rm = 4 * qw;
    let half = tnw / 2;
    let win = half + 1;
    let name = if vec4_window {
        Entry::BackwardDataRowStride2Vec4.name()
    } else {
        Entry::BackwardDataRowStride2.name()
    };
    let head = row_kernel_head(name, rm, "cout", "cin");
    let class = phase_class(false);
    let window_note = if vec4_window {
        "\n// dy's rows are a multiple of 4 long: the window's values before its last are aligned vec4s."
    } else {
        ""
    };
    let mut s = format!(
        "
// backward_data at stride 2 along W (3 taps, padding 1 along W), row kernel: {tnw} consecutive input voxels
// of a row from an even xs per invocation, {rm} channels; voxel xs + 2e takes tap 1 of window value e, voxel
// xs + 2e + 1 taps 0 and 2 of values e + 1 and e (the window is dy's row from xs / 2, {win} values). The
// grid's first axis enumerates (phase class along D and H, workgroup in class), as backward_data_phase.{window_note}
{head}    let kvol = p.ksz.w;
    let tile = tile_index(wid, nwg);
    let cls = tile / p.chunk.w;
    let ctile = tile - cls * p.chunk.w;
{class}    let segs = (p.isz.z + {}u) / {tnw}u;
    let crows = max(cnt.x * cnt.y, 1u);
    let ch = max(cnt.y, 1u);
    // Workgroups past the last class (a grid rounded up to fit the device limit) own no rows.
    let total = select(0u, p.dims.x * cnt.x * cnt.y * segs, cls < st.x * st.y);
    let col = ctile * 64u + lid;
    let valid = col < total;
    let cc = select(0u, col, valid);
    let row = cc / segs;
    let xs = (cc - row * segs) * {tnw}u;
    let n = row / crows;
    let v = row - n * crows;
    let mz = v / ch;
    let my = v - mz * ch;
    let ob = vec2<i32>(vec2<u32>(mz, my)) + cb;
    let zz = i0.x + st.x * mz;
    let yy = i0.y + st.y * my;
    let yb = i32(n * cout * ovox);
    let ow0 = xs / 2u;
{}
{}
    for (var u = 0u; u < nt.x * nt.y; u++) {{
        let jz = u / nt.y;
        let jy = u - jz * nt.y;
        let t = ((r.x + st.x * jz) * p.ksz.y + r.y + st.y * jy) * {ROW_TAPS}u;
        let o = ob - vec2<i32>(vec2<u32>(jz, jy));
        let okr = valid && in_range(o.x, p.osz.x) && in_range(o.y, p.osz.y);
        let rb = yb + (o.x * i32(p.osz.y) + o.y) * i32(p.osz.z) + i32(ow0);
",
        tnw - 1,
        per_column(tnw, |j| format!("    let valid{j} = valid && xs + {j}u < p.isz.z;")),
        acc_decl(tnw, qw),
    );
    if vec4_window {
        let _ = writeln!(s, "        let a4 = u32(rb) / 4u;");
        for v in 0..half / 4 {
            let _ = writeln!(s, "        let vok{v} = okr && ow0 + {}u < p.osz.z;", 4 * v);
        }
        let _ = writeln!(s, "        let wok{half} = okr && ow0 + {half}u < p.osz.z;");
    } else {
        for e in 0..win {
            let _ = writeln!(
                s,
                "        let wok{e} = okr && ow0 + {e}u < p.osz.z;\n        let woff{e} = u32(rb + {e});"
            );
        }
    }
    let _ = write!(
        s,
        "        for (var c0 = 0u; c0 < cred; c0 += {sg}u) {{
            let cl = c0 + lane;
            let cok = cl < cred;
{}            for (var k = 0u; k < min({sg}u, cred - c0); k++) {{
                let cs = (c0 + k) * ovox;
",
        tap_major_weight_loads("            ", qw)
    );
    if vec4_window {
        let ind = " ".repeat(16);
        let _ = writeln!(s, "{ind}let cs4 = cs / 4u;");
        for v in 0..half / 4 {
            let _ = writeln!(
                s,
                "{ind}let xv{v} = select(vec4<f32>(0.0), src4[select(0u, a4 + cs4 + {v}u, vok{v})], vok{v});"
            );
            for c in 0..4 {
                let _ = writeln!(s, "{ind}let xw{} = xv{v}[{c}];", 4 * v + c);
            }
        }
        let _ = writeln!(
            s,
            "{ind}let xw{half} = select(0.0, src4[select(0u, a4 + cs4 + {}u, wok{half})][0], wok{half});",
            half / 4
        );
    } else {
        s += &super::pass::window_gathers("                ", win, "cs");
    }
    let ind = " ".repeat(16);
    for kw in 0..ROW_TAPS {
        for q in 0..qw {
            let _ = writeln!(s, "{ind}let b{kw}_{q} = subgroupShuffle(wl{kw}_{q}, k);");
        }
    }
    for e in 0..half {
        // Voxel 2e: tap 1 of value e; voxel 2e + 1: tap 0 of value e + 1, then tap 2 of value e.
        for (j, kw, xi) in [(2 * e, 1, e), (2 * e + 1, 0, e + 1), (2 * e + 1, 2, e)] {
            for q in 0..qw {
                let _ = writeln!(
                    s,
                    "{ind}acc{j}_{q} = fma(b{kw}_{q}, vec4<f32>(xw{xi}), acc{j}_{q});"
                );
            }
        }
    }
    s += "            }\n        }\n    }\n";
    s + &store(
        tnw,
        qw,
        "out3",
        "mlim",
        &|j| format!("n * cin * ivox + (zz * p.isz.y + yy) * p.isz.z + xs + {j}u"),
        "ivox",
        None,
    )
}

/// The stride-2 input-gradient row kernels' weight loads: lane `lane` loads `wl{kw}_{q}`, result channels
/// `m0 + 4q ..` of its reduced channel `cl` at tap `t + kw`, one aligned vec4 of the tap-major weights
/// (`[C_out, taps, C_in rounded up to 4]`, zero past C_in; the launch reorders them).
fn tap_major_weight_loads(ind: &str, quads: usize) -> String {
    let mut s = format!("{ind}let cin4 = (cin + 3u) / 4u * 4u;\n");
    for q in 0..quads {
        let _ = writeln!(s, "{ind}let wq{q} = cok && m0 + {}u < mlim;", 4 * q);
    }
    for kw in 0..ROW_TAPS {
        for q in 0..quads {
            let _ = writeln!(
                s,
                "{ind}let wl{kw}_{q} = select(vec4<f32>(0.0), wts4[select(0u, ((cl * kvol + t + {kw}u) * cin4 + m0) / 4u + {q}u, wq{q})], wq{q});"
            );
        }
    }
    s
}
