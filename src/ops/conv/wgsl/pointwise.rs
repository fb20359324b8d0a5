//! The 1x1x1 convolutions at stride 1 without padding as channel matrix products, in both modules:
//! `forward_pointwise` (`y[n, co, v] = sum_ci w[co, ci] x[n, ci, v]`), `backward_data_pointwise`
//! (`dx[n, ci, v] = sum_co w[co, ci] dy[n, co, v]`) and the weight gradient (`pointwise.wgsl`).
//!
//! Every invocation of a workgroup owns the same result channels, so the weights it reads are the same
//! for all of them (uniform loads: one read per workgroup step, no subgroup broadcast or staging needed)
//! and each reduction step is one gathered value per column for `4 x quads` fused multiply-adds. Each
//! result is reduced over its channels in ascending order from zero, as the general kernels do for a
//! one-tap kernel, so both paths give the same bits.

use super::pass::Pass;
use super::*;
use crate::ops::conv::tiles::Entry;

/// The forward and input-gradient matrix-product kernels of `cols` columns x `quads` vec4s of result
/// channels per invocation.
pub(super) fn pointwise(cols: usize, quads: usize) -> String {
    Pass::BOTH
        .iter()
        .map(|&pass| pointwise_pass(pass, cols, quads))
        .collect()
}

fn pointwise_pass(pass: Pass, cols: usize, quads: usize) -> String {
    let (entry, weight_row, weight_step, what) = match pass {
        // w[co, ci] at co * cin + ci: a result row is cin apart, a reduction step 1.
        Pass::Forward => (
            Entry::ForwardPointwise,
            "cin",
            "1u",
            "y over voxels; reduced: x's channels",
        ),
        Pass::BackwardData => (
            Entry::BackwardDataPointwise,
            "1u",
            "cin",
            "dx over voxels; `src` is dy, reduced: its channels",
        ),
    };
    let name = entry.name();
    let (cred, mlim) = (pass.reduced(), pass.results());
    let rows = 4 * quads;
    // Rows of w past the last result channel read the last one: their results are never stored.
    let row_offsets = join(
        (0..rows)
            .map(|m| format!("    let wr{m} = min(m0 + {m}u, {mlim} - 1u) * {weight_row};"))
            .collect(),
    );
    let columns = per_column(cols, |j| {
        let off = j * WORKGROUP;
        format!(
            "    let col{j} = tile_index(wid, nwg) * COLS + lid + {off}u;
    let valid{j} = col{j} < p.dims.x * vox;
    let cc{j} = select(0u, col{j}, valid{j});
    let n{j} = cc{j} / vox;
    let v{j} = cc{j} - n{j} * vox;
    let sb{j} = n{j} * {cred} * vox + v{j};"
        )
    });
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
    let fmas = per_column(cols, |j| {
        let mut s = format!("        let x{j} = vec4<f32>(src[sb{j} + cs]);");
        for q in 0..quads {
            let _ = write!(s, "\n        acc{j}_{q} = fma(w{q}, x{j}, acc{j}_{q});");
        }
        s
    });
    let (bias, out, bias_name) = match pass {
        Pass::Forward => (bias_read("bv", "TM"), FORWARD_OUT, Some("bv")),
        Pass::BackwardData => (String::new(), "out3", None),
    };
    let stores = store(
        cols,
        quads,
        out,
        mlim,
        &|j| format!("n{j} * {mlim} * vox + v{j}"),
        "vox",
        bias_name,
    );
    let acc = acc_decl(cols, quads);
    format!(
        "
// {what}: a 1x1x1 kernel at stride 1 without padding.
@compute @workgroup_size(64)
fn {name}(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {{
{SIZES}
    let vox = ovox;
    let m0 = wid.y * TM;
{row_offsets}
{columns}
{acc}
    for (var c = 0u; c < {cred}; c++) {{
        let wc = c * {weight_step};
        let cs = c * vox;
{weights}
{fmas}
    }}
{bias}{stores}"
    )
}
