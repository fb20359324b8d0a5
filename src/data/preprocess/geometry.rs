//! The affine arithmetic of MONAI's spatial transforms, in f64 as MONAI and nibabel do it:
//! `nibabel.orientations` (`io_orientation`, `axcodes2ornt`, `ornt_transform`, `inv_ornt_aff`) for
//! `Orientationd`, and `monai.data.utils` (`zoom_affine`, `compute_shape_offset`) for `Spacingd`.

use crate::error::{Error, Result};

/// MONAI's `AFFINE_TOL`: how close two affines (or voxel sizes) must be to count as the same.
pub const AFFINE_TOL: f64 = 1e-3;

/// A 4x4 affine, row major.
pub type Affine = [[f64; 4]; 4];

/// One row per input axis: the output axis it becomes and whether it is flipped (`-1.0`) or not (`1.0`),
/// as nibabel's orientation arrays.
pub type Ornt = [(usize, f64); 3];

/// `a * b`.
pub fn matmul(a: &Affine, b: &Affine) -> Affine {
    std::array::from_fn(|r| std::array::from_fn(|c| (0..4).map(|k| a[r][k] * b[k][c]).sum()))
}

/// The 4x4 identity.
pub fn identity() -> Affine {
    std::array::from_fn(|r| std::array::from_fn(|c| f64::from(u8::from(r == c))))
}

fn inverse3(m: &[[f64; 3]; 3]) -> Option<[[f64; 3]; 3]> {
    let c = |r: usize, k: usize| {
        let (r1, r2, k1, k2) = ((r + 1) % 3, (r + 2) % 3, (k + 1) % 3, (k + 2) % 3);
        m[r1][k1] * m[r2][k2] - m[r1][k2] * m[r2][k1]
    };
    let det = m[0][0] * c(0, 0) + m[0][1] * c(0, 1) + m[0][2] * c(0, 2);
    if !det.is_finite() || det == 0.0 {
        return None;
    }
    Some(std::array::from_fn(|r| {
        std::array::from_fn(|k| c(k, r) / det)
    }))
}

/// The inverse of an affine (its 3x3 part inverted, the translation undone), `None` when singular.
pub fn inverse(a: &Affine) -> Option<Affine> {
    let m = std::array::from_fn(|r| std::array::from_fn(|c| a[r][c]));
    let inv = inverse3(&m)?;
    let mut out = identity();
    for r in 0..3 {
        for c in 0..3 {
            out[r][c] = inv[r][c];
        }
        out[r][3] = -(0..3).map(|k| inv[r][k] * a[k][3]).sum::<f64>();
    }
    Some(out)
}

/// Voxel sizes of an affine: the norms of its first three columns (MONAI's `affine_to_spacing`).
pub fn spacing(a: &Affine) -> [f64; 3] {
    std::array::from_fn(|c| (0..3).map(|r| a[r][c] * a[r][c]).sum::<f64>().sqrt())
}

/// `nibabel.orientations.io_orientation`: for each voxel axis, the world axis it points along most and
/// its sign, from the orthogonal polar factor of the column-normalised 3x3 part (what nibabel's SVD
/// gives as `P @ Qs`), choosing greedily in axis order.
pub fn io_orientation(a: &Affine) -> Result<Ornt> {
    let zooms = spacing(a);
    let mut rs: [[f64; 3]; 3] = std::array::from_fn(|r| {
        std::array::from_fn(|c| a[r][c] / if zooms[c] == 0.0 { 1.0 } else { zooms[c] })
    });
    // Newton's iteration X <- (X + X^-T) / 2 converges to the orthogonal polar factor.
    for _ in 0..100 {
        let inv = inverse3(&rs)
            .ok_or_else(|| Error::invalid(format!("orientation: the affine {a:?} is singular")))?;
        let next: [[f64; 3]; 3] =
            std::array::from_fn(|r| std::array::from_fn(|c| 0.5 * (rs[r][c] + inv[c][r])));
        let change = (0..9)
            .map(|i| (next[i / 3][i % 3] - rs[i / 3][i % 3]).abs())
            .fold(0.0, f64::max);
        rs = next;
        if change < 1e-15 {
            break;
        }
    }
    let mut ornt = [(0, 1.0); 3];
    for (in_ax, o) in ornt.iter_mut().enumerate() {
        let col: [f64; 3] = std::array::from_fn(|r| rs[r][in_ax]);
        let out_ax = (0..3).fold(0, |best, r| {
            if col[r].abs() > col[best].abs() {
                r
            } else {
                best
            }
        });
        *o = (out_ax, if col[out_ax] < 0.0 { -1.0 } else { 1.0 });
        rs[out_ax] = [0.0; 3];
    }
    Ok(ornt)
}

/// `nibabel.orientations.axcodes2ornt` with MONAI's labels `(("L", "R"), ("P", "A"), ("I", "S"))`:
/// `"RAS"` is `[(0, 1), (1, 1), (2, 1)]`.
pub fn axcodes_to_ornt(axcodes: &str) -> Result<Ornt> {
    let codes: Vec<char> = axcodes.chars().collect();
    let bad = || {
        Error::invalid(format!(
            "orientation: axcodes must be three letters, one of L/R, P/A and I/S each, got {axcodes:?}"
        ))
    };
    if codes.len() != 3 {
        return Err(bad());
    }
    let mut ornt = [(0, 1.0); 3];
    let mut seen = [false; 3];
    for (o, code) in ornt.iter_mut().zip(&codes) {
        let (axis, flip) = match code.to_ascii_uppercase() {
            'L' => (0, -1.0),
            'R' => (0, 1.0),
            'P' => (1, -1.0),
            'A' => (1, 1.0),
            'I' => (2, -1.0),
            'S' => (2, 1.0),
            _ => return Err(bad()),
        };
        if std::mem::replace(&mut seen[axis], true) {
            return Err(bad());
        }
        *o = (axis, flip);
    }
    Ok(ornt)
}

/// `nibabel.orientations.ornt_transform(start, end)`: the orientation taking `start` to `end`.
pub fn ornt_transform(start: &Ornt, end: &Ornt) -> Ornt {
    let mut out = [(0, 1.0); 3];
    for (end_in, &(end_out, end_flip)) in end.iter().enumerate() {
        if let Some(start_in) = start.iter().position(|&(s, _)| s == end_out) {
            out[start_in] = (
                end_in,
                if start[start_in].1 == end_flip {
                    1.0
                } else {
                    -1.0
                },
            );
        }
    }
    out
}

/// `nibabel.orientations.inv_ornt_aff(ornt, shape)`: the voxel map from the reoriented array back to the
/// original one, so the new affine is `affine @ inv_ornt_aff`.
pub fn inv_ornt_aff(ornt: &Ornt, shape: [usize; 3]) -> Affine {
    let mut undo_reorder = [[0.0; 4]; 4];
    for (r, &(axis, _)) in ornt.iter().enumerate() {
        undo_reorder[r][axis] = 1.0;
    }
    undo_reorder[3][3] = 1.0;
    let mut undo_flip = identity();
    for (d, &(_, flip)) in ornt.iter().enumerate() {
        let center = -(shape[d] as f64 - 1.0) / 2.0;
        undo_flip[d][d] = flip;
        undo_flip[d][3] = flip * center - center;
    }
    matmul(&undo_flip, &undo_reorder)
}

/// `monai.data.utils.zoom_affine(affine, pixdim, diagonal=False)`: the affine's rotation (the Q of its QR
/// factorisation, through a Cholesky factor as MONAI computes it) times the new voxel sizes, no translation.
pub fn zoom_affine(a: &Affine, pixdim: [f64; 3]) -> Result<Affine> {
    let rzs: [[f64; 3]; 3] = std::array::from_fn(|r| std::array::from_fn(|c| a[r][c]));
    let gram: [[f64; 3]; 3] = std::array::from_fn(|r| {
        std::array::from_fn(|c| (0..3).map(|k| rzs[k][r] * rzs[k][c]).sum())
    });
    // Lower Cholesky factor L of rzs^T rzs; MONAI's zs is L^T.
    let mut l = [[0.0f64; 3]; 3];
    for i in 0..3 {
        for j in 0..=i {
            let s = gram[i][j] - (0..j).map(|k| l[i][k] * l[j][k]).sum::<f64>();
            if i == j {
                if s <= 0.0 || !s.is_finite() {
                    return Err(Error::invalid(format!(
                        "spacing: the affine {a:?} is singular"
                    )));
                }
                l[i][i] = s.sqrt();
            } else {
                l[i][j] = s / l[j][j];
            }
        }
    }
    let zs: [[f64; 3]; 3] = std::array::from_fn(|r| std::array::from_fn(|c| l[c][r]));
    let zs_inv = inverse3(&zs)
        .ok_or_else(|| Error::invalid(format!("spacing: the affine {a:?} is singular")))?;
    let scale = pixdim.map(|s| if s == 0.0 { 1.0 } else { s.abs() });
    let mut out = identity();
    for r in 0..3 {
        for c in 0..3 {
            let rotation: f64 = (0..3).map(|k| rzs[r][k] * zs_inv[k][c]).sum();
            out[r][c] = rotation * scale[c];
        }
    }
    Ok(out)
}

/// `monai.data.utils.compute_shape_offset(shape, in_affine, out_affine, scale_extent=False)`: the output
/// shape that holds every input voxel centre, and the world position of its first voxel.
pub fn compute_shape_offset(
    shape: [usize; 3],
    in_affine: &Affine,
    out_affine: &Affine,
) -> Result<([usize; 3], [f64; 3])> {
    let out_inv = inverse(out_affine).ok_or_else(|| {
        Error::invalid(format!(
            "spacing: the output affine {out_affine:?} is singular"
        ))
    })?;
    let xform = matmul(&out_inv, in_affine);
    // The corners in meshgrid order (indexing="ij": the last axis fastest).
    let corners: Vec<[f64; 3]> = (0..8)
        .map(|i| {
            std::array::from_fn(|d| {
                if (i >> (2 - d)) & 1 == 1 {
                    shape[d] as f64 - 1.0
                } else {
                    0.0
                }
            })
        })
        .collect();
    let apply = |m: &Affine, p: &[f64; 3]| -> [f64; 4] {
        std::array::from_fn(|r| m[r][0] * p[0] + m[r][1] * p[1] + m[r][2] * p[2] + m[r][3])
    };
    let out: Vec<[f64; 3]> = corners
        .iter()
        .map(|p| {
            let h = apply(&xform, p);
            [h[0] / h[3], h[1] / h[3], h[2] / h[3]]
        })
        .collect();
    let mut out_shape = [0usize; 3];
    for d in 0..3 {
        let lo = out.iter().map(|p| p[d]).fold(f64::INFINITY, f64::min);
        let hi = out.iter().map(|p| p[d]).fold(f64::NEG_INFINITY, f64::max);
        let n = (hi - lo + 1.0).round_ties_even();
        if !n.is_finite() || n < 1.0 || n > (1u64 << 31) as f64 {
            return Err(Error::InvalidShape(format!(
                "spacing: the resampled grid would have {n} voxels along axis {d}"
            )));
        }
        out_shape[d] = n as usize;
    }
    // The first corner that is the minimum along every axis (numpy allclose: 1e-8 absolute, AFFINE_TOL relative).
    let origin = (0..8).find(|&i| {
        (0..3).all(|d| {
            let lo = out
                .iter()
                .map(|p| p[d] - out[i][d])
                .fold(f64::INFINITY, f64::min);
            lo.abs() <= 1e-8
        })
    });
    let offset = match origin {
        Some(i) => {
            let world = apply(in_affine, &corners[i]);
            [world[0], world[1], world[2]]
        }
        // No corner is the minimum on every axis (an oblique grid): centre the output on the input.
        None => std::array::from_fn(|r| {
            (0..3)
                .map(|c| {
                    in_affine[r][c] * shape[c] as f64 / 2.0
                        - out_affine[r][c] * out_shape[c] as f64 / 2.0
                })
                .sum::<f64>()
                + in_affine[r][3]
        }),
    };
    Ok((out_shape, offset))
}
