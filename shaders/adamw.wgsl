// AdamW (PyTorch's algorithm, decoupled weight decay), one invocation per parameter element, over a run
// of `n` elements: from `base` of the gradients and parameters (one parameter's own buffers, or buffers
// packing many) and from `moment_base` of the moments (packed for all parameters):
//   p -= lr * wd * p;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
//   p -= (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps),  bc_i = 1 - b_i^step.

struct Params {
    n: u32,       // elements to update
    base: u32,    // first element of the gradients and parameters
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    bc1: f32,
    bc2_sqrt: f32,
    moment_base: u32, // first element of the moments
    _pad1: u32,
    _pad2: u32,
}

const WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> grad: array<f32>;
@group(0) @binding(2) var<storage, read_write> param: array<f32>;
@group(0) @binding(3) var<storage, read_write> m1: array<f32>;
@group(0) @binding(4) var<storage, read_write> m2: array<f32>;

@compute @workgroup_size(256)
fn step(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let k = (wid.y * nwg.x + wid.x) * WG + lid;
    if (k >= p.n) {
        return;
    }
    let i = p.base + k;
    let j = p.moment_base + k;
    let g = grad[i];
    var w = param[i];
    w -= p.lr * p.weight_decay * w;
    let m = p.beta1 * m1[j] + (1.0 - p.beta1) * g;
    let v = p.beta2 * m2[j] + (1.0 - p.beta2) * g * g;
    m1[j] = m;
    m2[j] = v;
    w -= (p.lr / p.bc1) * m / (sqrt(v) / p.bc2_sqrt + p.eps);
    param[i] = w;
}
