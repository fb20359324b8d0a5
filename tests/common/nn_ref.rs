//! f64 CPU references for the network layers, written from the definitions (scatter form for the
//! convolution gradients and the transposed convolution, so they do not mirror the GPU's gather kernels).
#![allow(clippy::too_many_arguments, clippy::needless_range_loop)]

/// Convolution geometry in 3D (2D = depth 1).
#[derive(Clone, Copy, Debug)]
pub struct Geo {
    pub n: usize,
    pub cin: usize,
    pub cout: usize,
    pub i: [usize; 3],
    pub k: [usize; 3],
    pub s: [usize; 3],
    pub p: [usize; 3],
}

impl Geo {
    pub fn o(&self) -> [usize; 3] {
        let mut o = [0; 3];
        for a in 0..3 {
            o[a] = (self.i[a] + 2 * self.p[a] - self.k[a]) / self.s[a] + 1;
        }
        o
    }
    pub fn iv(&self) -> usize {
        self.i.iter().product()
    }
    pub fn ov(&self) -> usize {
        self.o().iter().product()
    }
    pub fn kv(&self) -> usize {
        self.k.iter().product()
    }

    /// Calls f(n, co, ci, out voxel, in voxel, tap) for every valid (output, tap) pair.
    fn each(&self, mut f: impl FnMut(usize, usize, usize, usize, usize, usize)) {
        let o = self.o();
        for n in 0..self.n {
            for co in 0..self.cout {
                for ci in 0..self.cin {
                    for oz in 0..o[0] {
                        for oy in 0..o[1] {
                            for ox in 0..o[2] {
                                let ov = (oz * o[1] + oy) * o[2] + ox;
                                for kz in 0..self.k[0] {
                                    for ky in 0..self.k[1] {
                                        for kx in 0..self.k[2] {
                                            let iz =
                                                (oz * self.s[0] + kz) as isize - self.p[0] as isize;
                                            let iy =
                                                (oy * self.s[1] + ky) as isize - self.p[1] as isize;
                                            let ix =
                                                (ox * self.s[2] + kx) as isize - self.p[2] as isize;
                                            if iz < 0
                                                || iy < 0
                                                || ix < 0
                                                || iz >= self.i[0] as isize
                                                || iy >= self.i[1] as isize
                                                || ix >= self.i[2] as isize
                                            {
                                                continue;
                                            }
                                            let iv = ((iz as usize) * self.i[1] + iy as usize)
                                                * self.i[2]
                                                + ix as usize;
                                            let t = (kz * self.k[1] + ky) * self.k[2] + kx;
                                            f(n, co, ci, ov, iv, t);
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    pub fn forward(&self, x: &[f32], w: &[f32], b: Option<&[f32]>) -> Vec<f64> {
        let (iv, ov, kv) = (self.iv(), self.ov(), self.kv());
        let mut y = vec![0.0; self.n * self.cout * ov];
        for n in 0..self.n {
            for co in 0..self.cout {
                for v in 0..ov {
                    y[(n * self.cout + co) * ov + v] = b.map_or(0.0, |b| b[co] as f64);
                }
            }
        }
        self.each(|n, co, ci, o, i, t| {
            y[(n * self.cout + co) * ov + o] +=
                w[(co * self.cin + ci) * kv + t] as f64 * x[(n * self.cin + ci) * iv + i] as f64;
        });
        y
    }

    /// (dx, dw, dbias) by scattering each output gradient along the forward's terms.
    pub fn backward(&self, x: &[f32], w: &[f32], dy: &[f32]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let (iv, ov, kv) = (self.iv(), self.ov(), self.kv());
        let mut dx = vec![0.0; self.n * self.cin * iv];
        let mut dw = vec![0.0; self.cout * self.cin * kv];
        let mut db = vec![0.0; self.cout];
        self.each(|n, co, ci, o, i, t| {
            let g = dy[(n * self.cout + co) * ov + o] as f64;
            dx[(n * self.cin + ci) * iv + i] += g * w[(co * self.cin + ci) * kv + t] as f64;
            dw[(co * self.cin + ci) * kv + t] += g * x[(n * self.cin + ci) * iv + i] as f64;
        });
        for n in 0..self.n {
            for co in 0..self.cout {
                for o in 0..ov {
                    db[co] += dy[(n * self.cout + co) * ov + o] as f64;
                }
            }
        }
        (dx, dw, db)
    }
}

/// Transposed convolution (PyTorch's definition): y[n, co, i*s - p + k] += x[n, ci, i] * w[ci, co, k].
/// `g` describes the input x (cin = x channels, cout = y channels), `op` the output padding.
pub fn conv_transpose(
    g: &Geo,
    op: [usize; 3],
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
) -> (Vec<f64>, [usize; 3]) {
    let mut ys = [0; 3];
    for a in 0..3 {
        ys[a] = (g.i[a] - 1) * g.s[a] + g.k[a] + op[a] - 2 * g.p[a];
    }
    let yv: usize = ys.iter().product();
    let (iv, kv) = (g.iv(), g.kv());
    let mut y = vec![0.0; g.n * g.cout * yv];
    for n in 0..g.n {
        for co in 0..g.cout {
            for v in 0..yv {
                y[(n * g.cout + co) * yv + v] = b.map_or(0.0, |b| b[co] as f64);
            }
        }
    }
    for n in 0..g.n {
        for ci in 0..g.cin {
            for iz in 0..g.i[0] {
                for iy in 0..g.i[1] {
                    for ix in 0..g.i[2] {
                        let xv = x[(n * g.cin + ci) * iv + (iz * g.i[1] + iy) * g.i[2] + ix] as f64;
                        for co in 0..g.cout {
                            for kz in 0..g.k[0] {
                                for ky in 0..g.k[1] {
                                    for kx in 0..g.k[2] {
                                        let z = (iz * g.s[0] + kz) as isize - g.p[0] as isize;
                                        let yy = (iy * g.s[1] + ky) as isize - g.p[1] as isize;
                                        let xx = (ix * g.s[2] + kx) as isize - g.p[2] as isize;
                                        if z < 0
                                            || yy < 0
                                            || xx < 0
                                            || z >= ys[0] as isize
                                            || yy >= ys[1] as isize
                                            || xx >= ys[2] as isize
                                        {
                                            continue;
                                        }
                                        let t = (kz * g.k[1] + ky) * g.k[2] + kx;
                                        let o = ((z as usize) * ys[1] + yy as usize) * ys[2]
                                            + xx as usize;
                                        y[(n * g.cout + co) * yv + o] +=
                                            xv * w[(ci * g.cout + co) * kv + t] as f64;
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    (y, ys)
}

/// Group norm with affine over [n, c, v]; returns y.
pub fn group_norm(
    x: &[f32],
    n: usize,
    c: usize,
    v: usize,
    groups: usize,
    gamma: &[f32],
    beta: &[f32],
    eps: f64,
) -> Vec<f64> {
    let cg = c / groups;
    let mut y = vec![0.0; x.len()];
    for b in 0..n {
        for g in 0..groups {
            let start = (b * c + g * cg) * v;
            let len = cg * v;
            let vals: Vec<f64> = x[start..start + len].iter().map(|&a| a as f64).collect();
            let mean = vals.iter().sum::<f64>() / len as f64;
            let var = vals.iter().map(|a| (a - mean) * (a - mean)).sum::<f64>() / len as f64;
            let rstd = 1.0 / (var + eps).sqrt();
            for (k, a) in vals.iter().enumerate() {
                let ch = g * cg + k / v;
                y[start + k] = (a - mean) * rstd * gamma[ch] as f64 + beta[ch] as f64;
            }
        }
    }
    y
}

/// Backward of [`group_norm`] (closed form): (dx, dgamma, dbeta).
pub fn group_norm_backward(
    x: &[f32],
    dy: &[f32],
    n: usize,
    c: usize,
    v: usize,
    groups: usize,
    gamma: &[f32],
    eps: f64,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let cg = c / groups;
    let len = cg * v;
    let mut dx = vec![0.0; x.len()];
    let mut dgamma = vec![0.0; c];
    let mut dbeta = vec![0.0; c];
    for b in 0..n {
        for g in 0..groups {
            let start = (b * c + g * cg) * v;
            let xs: Vec<f64> = x[start..start + len].iter().map(|&a| a as f64).collect();
            let mean = xs.iter().sum::<f64>() / len as f64;
            let var = xs.iter().map(|a| (a - mean) * (a - mean)).sum::<f64>() / len as f64;
            let rstd = 1.0 / (var + eps).sqrt();
            let xhat: Vec<f64> = xs.iter().map(|a| (a - mean) * rstd).collect();
            let dxhat: Vec<f64> = (0..len)
                .map(|k| dy[start + k] as f64 * gamma[g * cg + k / v] as f64)
                .collect();
            let m1 = dxhat.iter().sum::<f64>() / len as f64;
            let m2 = dxhat.iter().zip(&xhat).map(|(a, b)| a * b).sum::<f64>() / len as f64;
            for k in 0..len {
                dx[start + k] = rstd * (dxhat[k] - m1 - xhat[k] * m2);
                let ch = g * cg + k / v;
                dgamma[ch] += dy[start + k] as f64 * xhat[k];
                dbeta[ch] += dy[start + k] as f64;
            }
        }
    }
    (dx, dgamma, dbeta)
}

/// PyTorch's linear source index for align_corners = false: (i0, i1, weight of i1).
pub fn linear_taps(o: usize, scale: usize, n_in: usize) -> (usize, usize, f64) {
    let s = ((o as f64 + 0.5) / scale as f64 - 0.5).max(0.0);
    let i0 = (s.floor() as usize).min(n_in - 1);
    let i1 = (i0 + 1).min(n_in - 1);
    (i0, i1, s - i0 as f64)
}

/// Upsampling of [nc, d, h, w] by per-axis scales (separable linear interpolation).
pub fn upsample(x: &[f32], nc: usize, i: [usize; 3], s: [usize; 3]) -> Vec<f64> {
    let o = [i[0] * s[0], i[1] * s[1], i[2] * s[2]];
    let (iv, ov) = (i.iter().product::<usize>(), o.iter().product::<usize>());
    let mut y = vec![0.0; nc * ov];
    for b in 0..nc {
        for oz in 0..o[0] {
            let (z0, z1, lz) = linear_taps(oz, s[0], i[0]);
            for oy in 0..o[1] {
                let (y0, y1, ly) = linear_taps(oy, s[1], i[1]);
                for ox in 0..o[2] {
                    let (x0, x1, lx) = linear_taps(ox, s[2], i[2]);
                    let mut acc = 0.0;
                    for (zz, wz) in [(z0, 1.0 - lz), (z1, lz)] {
                        for (yy, wy) in [(y0, 1.0 - ly), (y1, ly)] {
                            for (xx, wx) in [(x0, 1.0 - lx), (x1, lx)] {
                                acc +=
                                    wz * wy * wx * x[b * iv + (zz * i[1] + yy) * i[2] + xx] as f64;
                            }
                        }
                    }
                    y[b * ov + (oz * o[1] + oy) * o[2] + ox] = acc;
                }
            }
        }
    }
    y
}

/// Backward of [`upsample`] by scattering each output gradient to its 8 sources.
pub fn upsample_backward(dy: &[f32], nc: usize, i: [usize; 3], s: [usize; 3]) -> Vec<f64> {
    let o = [i[0] * s[0], i[1] * s[1], i[2] * s[2]];
    let (iv, ov) = (i.iter().product::<usize>(), o.iter().product::<usize>());
    let mut dx = vec![0.0; nc * iv];
    for b in 0..nc {
        for oz in 0..o[0] {
            let (z0, z1, lz) = linear_taps(oz, s[0], i[0]);
            for oy in 0..o[1] {
                let (y0, y1, ly) = linear_taps(oy, s[1], i[1]);
                for ox in 0..o[2] {
                    let (x0, x1, lx) = linear_taps(ox, s[2], i[2]);
                    let g = dy[b * ov + (oz * o[1] + oy) * o[2] + ox] as f64;
                    for (zz, wz) in [(z0, 1.0 - lz), (z1, lz)] {
                        for (yy, wy) in [(y0, 1.0 - ly), (y1, ly)] {
                            for (xx, wx) in [(x0, 1.0 - lx), (x1, lx)] {
                                dx[b * iv + (zz * i[1] + yy) * i[2] + xx] += wz * wy * wx * g;
                            }
                        }
                    }
                }
            }
        }
    }
    dx
}

pub fn to64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&a| a as f64).collect()
}
