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

// y = (x - mean) / sqrt(var + eps) * gamma[c] + beta[c]
@compute @workgroup_size(256)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i >= p.total) {
        return;
    }
    let row = i / p.voxels; // n * C + c
    let c = row % p.channels;
    let g = row / p.cg;
    let rstd = inverseSqrt(stats[p.ng + g] + p.eps);
    y[i] = (x[i] - stats[g]) * rstd * gamma[c] + beta[c];
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

// dx = rstd * (gamma[c] * dy - A - xhat * B)
@compute @workgroup_size(256)
fn backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i >= p.total) {
        return;
    }
    let row = i / p.voxels;
    let c = row % p.channels;
    let g = row / p.cg;
    let rstd = inverseSqrt(bstats[p.ng + g] + p.eps);
    let xhat = (bx[i] - bstats[g]) * rstd;
    dx[i] = rstd * (bgamma[c] * bdy[i] - bcoef[g] - xhat * bcoef[p.ng + g]);
}
