//! The emitters both modules' weight-gradient kernels share: the general kernels' weight entries and the row
//! kernel's kernel rows as columns, the voxels reduced over, the stores into the per-split partials.

use super::*;
use crate::ops::conv::tiles::Entry;

/// The weight-gradient row kernel's entry for stride `sw` along W (1 or 2).
pub(super) fn weight_row_entry(sw: usize) -> Entry {
    if sw == 2 {
        Entry::BackwardWeightRowStride2
    } else {
        Entry::BackwardWeightRow
    }
}

/// The weight-gradient kernels' stores into the partials of split wid.z (closes the function): column j's
/// accumulator groups `groups(j)` after the statements `prelude(j)`.
fn weight_store(
    cols: usize,
    quads: usize,
    prelude: &dyn Fn(usize) -> String,
    groups: &dyn Fn(usize) -> Vec<(String, String)>,
) -> String {
    let target = Target {
        out: "out3",
        lim: "cout",
        base: "pbase",
        stride: "ecount",
    };
    String::from("    let pbase = wid.z * cout * ecount;\n")
        + &target.stores(cols, quads, None, prelude, groups)
}

/// The general weight-gradient kernels' stores: column j is weight entry e{j}.
pub(super) fn entry_store(cols: usize, quads: usize) -> String {
    weight_store(cols, quads, &|_| String::new(), &|j| {
        vec![(format!("acc{j}_"), format!(" + e{j}"))]
    })
}

/// The sizes the weight-gradient kernels read first: the weight entries, the result channels' first `m0`
/// and the voxels of split wid.z (and, for the row kernels, the kernel rows `kdh`).
pub(super) fn weight_sizes(kernel_rows: bool) -> String {
    let kdh = if kernel_rows {
        "\n    let kdh = p.ksz.x * p.ksz.y;"
    } else {
        ""
    };
    format!(
        "{SIZES}
    let kvol = p.ksz.w;
    let ecount = cin * kvol;{kdh}
    let m0 = wid.y * TM;
    let total = p.dims.x * ovox;
    let v_begin = wid.z * p.chunk.z;
    let v_end = min(total, v_begin + p.chunk.z);
"
    )
}

/// The general weight-gradient kernels' columns: column j is weight entry e{j} = (ci{j}, tap t{j}), decoded
/// by `taps(j)` into the tap's (kd, kh, kw) and its offset coff{j} in the input.
pub(super) fn weight_entries(cols: usize, taps: &dyn Fn(usize) -> String) -> String {
    per_column(cols, |j| {
        let off = j * WORKGROUP;
        format!(
            "    let e{j} = wid.x * COLS + lid + {off}u;
    let valid{j} = e{j} < ecount;
    let ec{j} = select(0u, e{j}, valid{j});
    let ci{j} = ec{j} / kvol;
    let t{j} = ec{j} - ci{j} * kvol;
{}",
            taps(j)
        )
    })
}

/// Output voxel `col` of a weight-gradient kernel: its image n and voxel v, its window's corner (z0, y0, x0)
/// in the input (x0 from `x0`), `info` (the corner and its flat input offset, declared by `decl`) and ybase,
/// its offset in dy.
pub(super) fn voxel_geometry(ind: &str, col: &str, x0: &str, decl: &str) -> String {
    format!(
        "{ind}let n = {col} / ovox;
{ind}let v = {col} - n * ovox;
{ind}let oz = v / hw;
{ind}let r = v - oz * hw;
{ind}let oy = r / p.osz.z;
{ind}let ox = r - oy * p.osz.z;
{ind}let z0 = i32(oz * p.stride.x) - i32(p.pad.x);
{ind}let y0 = i32(oy * p.stride.y) - i32(p.pad.y);
{ind}let x0 = {x0} - i32(p.pad.z);
{ind}{decl}info = vec4<i32>(z0, y0, x0, i32(n * cin * ivox) + (z0 * i32(p.isz.y) + y0) * i32(p.isz.z) + x0);
{ind}let ybase = n * cout * ovox + v;
"
    )
}

/// Input values along W one kernel row's taps read over a row segment of 8 voxels at stride `sw` along W
/// (the weight-gradient row kernels' window: 10 at stride 1, 17 at stride 2).
pub(super) fn segment_window(sw: usize) -> usize {
    sw * (SUBGROUP_LANES - 1) + ROW_TAPS
}

/// The window corner along W of output column `ox` at stride `sw` (before the padding is taken off).
pub(super) fn row_corner(sw: usize) -> String {
    if sw == 1 {
        "i32(ox)".to_string()
    } else {
        format!("i32(ox * {sw}u)")
    }
}

/// Gathers each kernel row's window of [`segment_window`] input values along W (zero outside the input).
pub(super) fn row_window_loads(ind: &str, rows: usize, sw: usize) -> String {
    let mut s = String::new();
    for j in 0..rows {
        let _ = writeln!(s, "{ind}let okr{j} = valid{j} && in_range(vi.x + kd{j}, p.isz.x) && in_range(vi.y + kh{j}, p.isz.y);");
        let _ = writeln!(s, "{ind}let rb{j} = vi.w + coff{j};");
        for i in 0..segment_window(sw) {
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

/// [`row_window_loads`] at stride 2 with padding 1 where the input's rows are a multiple of 4 long: each
/// kernel row's window from its second value on (row element 2 ox, a multiple of 4) is 4 aligned vec4s, each
/// in or past the row as a whole, and its first value is the last of the vec4 before (one entry point cannot
/// bind both views of `src`). The same values.
pub(super) fn row_window_loads_vec4(ind: &str, rows: usize) -> String {
    let window = segment_window(2);
    let mut s = String::new();
    for j in 0..rows {
        let _ = writeln!(s, "{ind}let okr{j} = valid{j} && in_range(vi.x + kd{j}, p.isz.x) && in_range(vi.y + kh{j}, p.isz.y);");
        let _ = writeln!(s, "{ind}let a{j} = u32(vi.w + coff{j} + 1) / 4u;");
        let _ = writeln!(s, "{ind}let ok{j}_0 = okr{j} && in_range(vi.z, p.isz.z);");
        let _ = writeln!(
            s,
            "{ind}let xw{j}_0 = select(0.0, src4[select(1u, a{j}, ok{j}_0) - 1u][3], ok{j}_0);"
        );
        for v in 0..(window - 1) / 4 {
            let _ = writeln!(
                s,
                "{ind}let okv{j}_{v} = okr{j} && in_range(vi.z + {}, p.isz.z);",
                1 + 4 * v
            );
            let _ = writeln!(
                s,
                "{ind}let xv{j}_{v} = select(vec4<f32>(0.0), src4[select(0u, a{j} + {v}u, okv{j}_{v})], okv{j}_{v});"
            );
            for c in 0..4 {
                let _ = writeln!(s, "{ind}let xw{j}_{} = xv{j}_{v}[{c}];", 1 + 4 * v + c);
            }
        }
    }
    s
}

/// The weight-gradient row kernels' reduction steps: step `k` loads each channel operand `{operand}{q}`
/// (`load(k, q)`) and accumulates it into every kernel row's taps, tap kw of row j with window value
/// `sw k + kw` (stride `sw` along W).
#[allow(clippy::too_many_arguments)]
pub(super) fn row_weight_steps(
    ind: &str,
    steps: usize,
    sw: usize,
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
        for j in 0..rows {
            for kw in 0..ROW_TAPS {
                let x = sw * k + kw;
                for q in 0..quads {
                    let acc = format!("acc{j}_{kw}_{q}");
                    let _ = writeln!(
                        s,
                        "{ind}    {acc} = fma({operand}{q}, vec4<f32>(xw{j}_{x}), {acc});"
                    );
                }
            }
        }
        let _ = writeln!(s, "{ind}}}");
    }
    s
}

/// Writes each kernel row's accumulators to the weight-gradient partials (closes the function).
pub(super) fn row_weight_store(rows: usize, quads: usize) -> String {
    weight_store(
        rows,
        quads,
        &|j| format!("        let e = ci{j} * kvol + rr{j} * {ROW_TAPS}u;\n"),
        &|j| {
            (0..ROW_TAPS)
                .map(|kw| (format!("acc{j}_{kw}_"), format!(" + e + {kw}u")))
                .collect()
        },
    )
}

/// Declarations of the weight-gradient row kernels' kernel rows and accumulators.
pub(super) fn row_weight_setup(rows: usize, quads: usize) -> String {
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
