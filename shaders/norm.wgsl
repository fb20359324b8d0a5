// Group normalisation with a per-channel affine (instance norm is the case groups = channels), over
// [N, C, V] tensors whose group g of image n is the contiguous run of channels g*cg .. (g+1)*cg.
// Statistics come from reduce.wgsl: stats[i] = mean, stats[ng + i] = biased variance of group i = n*G + g.

struct Params {
    channels: u32,
    voxels: u32,
    cg: u32,      // channels per group
    ng: u32,      // images x groups
    total: u32,   // images x channels x voxels
    images: u32,
    eps: f32,
    inv_len: f32, // 1 / (cg * voxels)
    relu: u32,    // forward: apply max(., 0) to the output; backward: the norm fed a ReLU (mask dy by its output)
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

const WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;

fn linear_id(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.y * nwg.x + wid.x) * WG + lid;
}

@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> stats: array<f32>;
@group(0) @binding(3) var<storage, read> gamma: array<f32>;
@group(0) @binding(4) var<storage, read> beta: array<f32>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;

// Element kernels run one workgroup per CHUNK elements of one row (n, c), so the row's channel, group and
// statistics are found once per invocation rather than by integer divisions per element (slow where
// vector integer division is emulated, as on CPU drivers).
const PER: u32 = 16u;
const CHUNK: u32 = 4096u; // WG * PER

struct Row {
    row: u32,   // n * C + c
    c: u32,
    g: u32,     // statistics index n * G + c / cg
    start: u32, // first element of this workgroup's chunk within the row
    valid: bool,
}

fn row_of(wid: vec3<u32>, nwg: vec3<u32>) -> Row {
    let w = wid.y * nwg.x + wid.x;
    let chunks = (p.voxels + CHUNK - 1u) / CHUNK;
    let row = w / chunks;
    var r: Row;
    r.row = row;
    r.c = row % p.channels;
    r.g = row / p.cg;
    r.start = (w - row * chunks) * CHUNK;
    r.valid = row < p.total / p.voxels;
    return r;
}

// y = (x - mean) / sqrt(var + eps) * gamma[c] + beta[c], then max(y, 0) with `relu`
@compute @workgroup_size(256)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let r = row_of(wid, nwg);
    if (!r.valid) {
        return;
    }
    let mean = stats[r.g];
    let rstd = inverseSqrt(stats[p.ng + r.g] + p.eps);
    let ga = gamma[r.c];
    let be = beta[r.c];
    let base = r.row * p.voxels;
    for (var k = 0u; k < PER; k++) {
        let v = r.start + k * WG + lid;
        if (v < p.voxels) {
            let o = (x[base + v] - mean) * rstd * ga + be;
            y[base + v] = select(o, max(o, 0.0), p.relu != 0u);
        }
    }
}

@group(0) @binding(1) var<storage, read> sdy: array<f32>;   // per (n, c): sum dy
@group(0) @binding(2) var<storage, read> sdyx: array<f32>;  // per (n, c): sum dy * xhat
@group(0) @binding(3) var<storage, read> gam: array<f32>;
@group(0) @binding(4) var<storage, read_write> coef: array<f32>; // [A (ng), B (ng)]

// Per group: A = mean over the group of gamma*dy, B = mean of gamma*dy*xhat.
@compute @workgroup_size(256)
fn group_coef(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i >= p.ng) {
        return;
    }
    var a = 0.0;
    var b = 0.0;
    for (var k = 0u; k < p.cg; k++) {
        let row = i * p.cg + k;
        let g = gam[row % p.channels];
        a += g * sdy[row];
        b += g * sdyx[row];
    }
    coef[i] = a * p.inv_len;
    coef[p.ng + i] = b * p.inv_len;
}

@group(0) @binding(1) var<storage, read> bx: array<f32>;
@group(0) @binding(2) var<storage, read> bdy: array<f32>;
@group(0) @binding(3) var<storage, read> bstats: array<f32>;
@group(0) @binding(4) var<storage, read> bgamma: array<f32>;
@group(0) @binding(5) var<storage, read> bcoef: array<f32>;
@group(0) @binding(6) var<storage, read_write> dx: array<f32>;
@group(0) @binding(7) var<storage, read> bmask: array<f32>; // with `relu`: the ReLU's output (dy counts where > 0)

// dx = rstd * (gamma[c] * dy - A - xhat * B)
@compute @workgroup_size(256)
fn backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let r = row_of(wid, nwg);
    if (!r.valid) {
        return;
    }
    let mean = bstats[r.g];
    let rstd = inverseSqrt(bstats[p.ng + r.g] + p.eps);
    let ga = bgamma[r.c];
    let a = bcoef[r.g];
    let b = bcoef[p.ng + r.g];
    let base = r.row * p.voxels;
    for (var k = 0u; k < PER; k++) {
        let v = r.start + k * WG + lid;
        if (v < p.voxels) {
            let i = base + v;
            let xhat = (bx[i] - mean) * rstd;
            var g = bdy[i];
            if (p.relu != 0u) {
                g = select(0.0, g, bmask[i] > 0.0);
            }
            dx[i] = rstd * (ga * g - a - xhat * b);
        }
    }
}
