//! What the forward and input-gradient kernels (general and row tiles) differ in, in both modules: the
//! columns they decode, the taps they read and where their results go.

use super::*;
use crate::ops::conv::tiles::Entry;

/// The two passes the general and row kernels are written for. Forward: results are output voxels,
/// reduced over the input channels of `src` (x). Input gradient: results are input voxels, reduced over the
/// output channels of `src` (dy); the transposed convolution's forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Pass {
    Forward,
    BackwardData,
}

impl Pass {
    /// Both passes, in the order of the generated text.
    pub(super) const BOTH: [Pass; 2] = [Pass::Forward, Pass::BackwardData];

    /// The entry point of the general kernel or, where `row`, of the row kernel.
    pub(super) fn entry(self, row: bool) -> Entry {
        match (self, row) {
            (Pass::Forward, false) => Entry::Forward,
            (Pass::Forward, true) => Entry::ForwardRow,
            (Pass::BackwardData, false) => Entry::BackwardData,
            (Pass::BackwardData, true) => Entry::BackwardDataRow,
        }
    }

    /// The row kernel of this pass for stride `sw` along W (2 only for the forward pass).
    pub(super) fn row_entry(self, sw: usize) -> Entry {
        match (self, sw) {
            (Pass::Forward, 2) => Entry::ForwardRowStride2,
            (Pass::Forward, _) => Entry::ForwardRow,
            (Pass::BackwardData, _) => Entry::BackwardDataRow,
        }
    }

    /// Values along W one row segment of `tnw` results reads for 3 taps at stride `sw`.
    pub(super) fn row_window_len(tnw: usize, sw: usize) -> usize {
        sw * (tnw - 1) + ROW_TAPS
    }

    /// The channels reduced over.
    pub(super) fn reduced(self) -> &'static str {
        match self {
            Pass::Forward => "cin",
            Pass::BackwardData => "cout",
        }
    }

    /// The result channels.
    pub(super) fn results(self) -> &'static str {
        match self {
            Pass::Forward => "cout",
            Pass::BackwardData => "cin",
        }
    }

    /// Elements between two reduced channels of `src` (its voxels per channel).
    pub(super) fn reduced_stride(self) -> &'static str {
        match self {
            Pass::Forward => "ivox",
            Pass::BackwardData => "ovox",
        }
    }

    /// The general kernels' column decoding: column j of the invocation -> image n{j}, voxel v{j} of the
    /// results and its (zz, yy, xx).
    pub(super) fn decode(self, cols: usize) -> String {
        let (sz, total) = match self {
            Pass::Forward => ("p.osz", "p.dims.x * ovox"),
            Pass::BackwardData => ("p.isz", "p.dims.x * ivox"),
        };
        per_column(cols, |j| {
            let off = j * WORKGROUP;
            format!(
                "    let col{j} = tile_index(wid, nwg) * COLS + lid + {off}u;
    let valid{j} = col{j} < {total};
    let cc{j} = select(0u, col{j}, valid{j});
    let n{j} = cc{j} / {sz}.w;
    let v{j} = cc{j} - n{j} * {sz}.w;
    let zz{j} = v{j} / ({sz}.y * {sz}.z);
    let rr{j} = v{j} - zz{j} * ({sz}.y * {sz}.z);
    let yy{j} = rr{j} / {sz}.z;
    let xx{j} = rr{j} - yy{j} * {sz}.z;"
            )
        })
    }

    /// The general kernels' column origins. Forward: output voxel j's window corner (z0_j, y0_j, x0_j) in
    /// the input and its image's offset xb{j}; input gradient: input voxel j shifted by the padding and its
    /// image's offset yb{j} in dy.
    pub(super) fn origins(self, cols: usize) -> String {
        per_column(cols, |j| match self {
            Pass::Forward => format!(
                "    let z0_{j} = i32(zz{j} * p.stride.x) - i32(p.pad.x);
    let y0_{j} = i32(yy{j} * p.stride.y) - i32(p.pad.y);
    let x0_{j} = i32(xx{j} * p.stride.z) - i32(p.pad.z);
    let xb{j} = i32(n{j} * cin * ivox);"
            ),
            Pass::BackwardData => format!(
                "    let z0_{j} = i32(zz{j} + p.pad.x);
    let y0_{j} = i32(yy{j} + p.pad.y);
    let x0_{j} = i32(xx{j} + p.pad.z);
    let yb{j} = i32(n{j} * cout * ovox);"
            ),
        })
    }

    /// The general kernels' tap (kd, kh, kw) of each column: the voxel of `src` it reads (forward: inside the
    /// input; input gradient: where the division by the stride is exact and inside the output), whether it
    /// is read (`ok{j}` followed by `ok`: the subgroup kernels name it `ok{j}x`, since their `ok{m}` are
    /// channel masks) and its offset (plus `chunk`, the portable kernels' channel chunk).
    pub(super) fn taps(self, ind: &str, cols: usize, ok: &str, chunk: &str) -> String {
        per_column(cols, |j| {
            match self {
            Pass::Forward => format!(
                "{ind}let iz{j} = z0_{j} + i32(kd);
{ind}let iy{j} = y0_{j} + i32(kh);
{ind}let ix{j} = x0_{j} + i32(kw);
{ind}let ok{j}{ok} = valid{j} && in_range(iz{j}, p.isz.x) && in_range(iy{j}, p.isz.y) && in_range(ix{j}, p.isz.z);
{ind}let off{j} = u32(xb{j} + (iz{j} * i32(p.isz.y) + iy{j}) * i32(p.isz.z) + ix{j}){chunk};"
            ),
            Pass::BackwardData => format!(
                "{ind}let tz{j} = z0_{j} - i32(kd);
{ind}let ty{j} = y0_{j} - i32(kh);
{ind}let tx{j} = x0_{j} - i32(kw);
{ind}let oz{j} = tz{j} / sd;
{ind}let oy{j} = ty{j} / sh;
{ind}let ox{j} = tx{j} / sw;
{ind}let ok{j}{ok} = valid{j} && oz{j} * sd == tz{j} && oy{j} * sh == ty{j} && ox{j} * sw == tx{j}
{ind}    && in_range(tz{j}, p.osz.x * p.stride.x) && in_range(ty{j}, p.osz.y * p.stride.y)
{ind}    && in_range(tx{j}, p.osz.z * p.stride.z);
{ind}let off{j} = u32(yb{j} + (oz{j} * i32(p.osz.y) + oy{j}) * i32(p.osz.z) + ox{j}){chunk};"
            ),
        }
        })
    }

    /// The general kernels' stores (the forward's with the bias read into `bias`), and the function's
    /// closing brace.
    pub(super) fn store(self, cols: usize, quads: usize, bias: &str) -> String {
        let (read_bias, base): (_, fn(usize) -> String) = match self {
            Pass::Forward => (bias_read(bias, "TM"), |j| {
                format!("n{j} * cout * ovox + v{j}")
            }),
            Pass::BackwardData => (String::new(), |j| format!("n{j} * cin * ivox + v{j}")),
        };
        read_bias + &self.results_at(cols, quads, self.results(), &base, bias)
    }

    /// The row kernels' decoding: the row's results from `xs` (and their validity per result), and the
    /// corner of their window along W. Forward: in the input; input gradient: shifted by the padding and
    /// along W by the taps (so the window runs forwards), with the image's offset in dy.
    pub(super) fn row_origins(self, cols: usize, sw: usize) -> String {
        let sz = match self {
            Pass::Forward => "p.osz",
            Pass::BackwardData => "p.isz",
        };
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
        s += &per_column(cols, |j| {
            format!("    let valid{j} = valid && xs + {j}u < {sz}.z;")
        });
        s + &match self {
            Pass::Forward => format!(
                "
    let z0 = i32(zz * p.stride.x) - i32(p.pad.x);
    let y0 = i32(yy * p.stride.y) - i32(p.pad.y);
    let x0 = i32({}) - i32(p.pad.z);
    let xb = i32(n * cin * ivox);",
                if sw == 1 {
                    "xs".to_string()
                } else {
                    format!("xs * {sw}u")
                }
            ),
            Pass::BackwardData => format!(
                "
    let z0 = i32(zz + p.pad.x);
    let y0 = i32(yy + p.pad.y);
    let x0 = i32(xs + p.pad.z) - {};
    let yb = i32(n * cout * ovox);
    let sd = i32(p.stride.x);
    let sh = i32(p.stride.y);",
                ROW_TAPS - 1
            ),
        }
    }

    /// The row kernels' window of `win` values along W for kernel row (kd, kh): whether the row is read
    /// (`okr`), its offset `rb`, and `wok{i}` / `woff{i}` for each window value.
    pub(super) fn row_window(self, win: usize) -> String {
        let (rows, lim) = match self {
            Pass::Forward => (
                "        let iz = z0 + i32(kd);
        let iy = y0 + i32(kh);
        let okr = valid && in_range(iz, p.isz.x) && in_range(iy, p.isz.y);
        let rb = xb + (iz * i32(p.isz.y) + iy) * i32(p.isz.z) + x0;
",
                "p.isz.z",
            ),
            Pass::BackwardData => (
                "        let tz = z0 - i32(kd);
        let ty = y0 - i32(kh);
        let oz = tz / sd;
        let oy = ty / sh;
        let okr = valid && oz * sd == tz && oy * sh == ty && in_range(tz, p.osz.x * p.stride.x)
            && in_range(ty, p.osz.y * p.stride.y);
        let rb = yb + (oz * i32(p.osz.y) + oy) * i32(p.osz.z) + x0;
",
                "p.osz.z",
            ),
        };
        let mut s = String::from(rows);
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

    /// One reduced channel's step of the row kernels (in their channel loop): the weights
    /// `{operand}{kw}_{q}` = `load(kw, q)` of each tap along W, accumulated with the window into the row's
    /// `tnw` results. Tap kw of result j reads window value `sw j + kw` (forward at stride `sw` along W)
    /// or `j + 2 - kw` (input gradient, stride 1, whose window runs the other way).
    pub(super) fn row_step(
        self,
        tnw: usize,
        sw: usize,
        quads: usize,
        operand: &str,
        load: &dyn Fn(usize, usize) -> String,
    ) -> String {
        let ind = " ".repeat(16);
        let mut s = String::new();
        for kw in 0..ROW_TAPS {
            for q in 0..quads {
                let _ = writeln!(s, "{ind}let {operand}{kw}_{q} = {};", load(kw, q));
            }
        }
        for kw in 0..ROW_TAPS {
            for j in 0..tnw {
                let xi = match self {
                    Pass::Forward => sw * j + kw,
                    Pass::BackwardData => j + ROW_TAPS - 1 - kw,
                };
                for q in 0..quads {
                    let _ = writeln!(
                        s,
                        "{ind}acc{j}_{q} = fma({operand}{kw}_{q}, vec4<f32>(xw{xi}), acc{j}_{q});"
                    );
                }
            }
        }
        s
    }

    /// The row kernels' stores (the forward's plus `bias[m]`), channels below `lim`, and the function's
    /// closing brace.
    pub(super) fn row_store(self, cols: usize, quads: usize, lim: &str, bias: &str) -> String {
        let base: fn(usize) -> String = match self {
            Pass::Forward => {
                |j| format!("n * cout * ovox + (zz * p.osz.y + yy) * p.osz.z + xs + {j}u")
            }
            Pass::BackwardData => {
                |j| format!("n * cin * ivox + (zz * p.isz.y + yy) * p.isz.z + xs + {j}u")
            }
        };
        self.results_at(cols, quads, lim, &base, bias)
    }

    /// Column j's results at `base(j) + (m0 + m) * voxels` of the output (forward, plus `bias[m]`) or of
    /// dx, channels below `lim`; closes the function.
    fn results_at(
        self,
        cols: usize,
        quads: usize,
        lim: &str,
        base: &dyn Fn(usize) -> String,
        bias: &str,
    ) -> String {
        match self {
            Pass::Forward => store(cols, quads, FORWARD_OUT, lim, base, "ovox", Some(bias)),
            Pass::BackwardData => store(cols, quads, "out3", lim, base, "ivox", None),
        }
    }
}

/// The strides of the input-gradient kernels, as signed integers.
pub(super) const STRIDES: &str = "    let sd = i32(p.stride.x);
    let sh = i32(p.stride.y);
    let sw = i32(p.stride.z);";

/// The row kernels' gathers of the window of `win` values along W at reduced channel offset `off` (zero
/// outside the input).
pub(super) fn window_gathers(ind: &str, win: usize, off: &str) -> String {
    let mut s = String::new();
    for i in 0..win {
        let _ = writeln!(
            s,
            "{ind}let xw{i} = select(0.0, src[select(0u, woff{i} + {off}, wok{i})], wok{i});"
        );
    }
    s
}
