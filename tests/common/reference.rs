//! f64 CPU reference implementations of what the kernels compute. Written from the maths of the mL1-ACE
//! reference code (the project's reference notes), independently of the shaders.

/// Softmax over axis 1 of an `[n, c, v]` array of f32 values, in f64.
pub fn softmax(x: &[f32], n: usize, c: usize, v: usize) -> Vec<f64> {
    let x: Vec<f64> = x.iter().map(|&z| z as f64).collect();
    super::ace_ref::softmax(&x, n, c, v)
}

/// dL/dz = p (g - sum_c p_c g_c) over axis 1 of `[n, c, v]`.
pub fn softmax_backward(p: &[f64], g: &[f64], n: usize, c: usize, v: usize) -> Vec<f64> {
    let mut out = vec![0.0; p.len()];
    for b in 0..n {
        for i in 0..v {
            let at = |k: usize| (b * c + k) * v + i;
            let dot: f64 = (0..c).map(|k| p[at(k)] * g[at(k)]).sum();
            for k in 0..c {
                out[at(k)] = p[at(k)] * (g[at(k)] - dot);
            }
        }
    }
    out
}
