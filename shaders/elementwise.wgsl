// Element-wise kernels over flat f32 arrays, one invocation per element.

struct Params {
    n: u32,
    voxels: u32,   // bias_add: voxels per channel
    channels: u32, // bias_add: channels
    _pad: u32,
}

const WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read_write> out2: array<f32>;

fn linear_id(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.y * nwg.x + wid.x) * WG + lid;
}

// out = max(a, 0)
@compute @workgroup_size(256)
fn relu(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i < p.n) {
        out2[i] = max(a[i], 0.0);
    }
}

@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out3: array<f32>;

// out = a + b
@compute @workgroup_size(256)
fn add(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i < p.n) {
        out3[i] = a[i] + b[i];
    }
}

// ReLU backward: a = the ReLU's output y, b = dL/dy; out = dL/dx = b where y > 0, else 0.
@compute @workgroup_size(256)
fn relu_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i < p.n) {
        out3[i] = select(0.0, b[i], a[i] > 0.0);
    }
}

@group(0) @binding(1) var<storage, read> bvec: array<f32>;
@group(0) @binding(2) var<storage, read_write> inout: array<f32>;

// In place: inout[n, c, v] += bvec[c].
@compute @workgroup_size(256)
fn bias_add(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i < p.n) {
        inout[i] += bvec[(i / p.voxels) % p.channels];
    }
}

// Weighted sum of K rows of n: a = [K, n], b = the K weights (K = p.channels);
// out[j] = sum over k in order of b[k] * a[k * n + j].
@compute @workgroup_size(256)
fn weighted_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let j = linear_id(wid, nwg, lid);
    if (j < p.n) {
        var s = 0.0;
        for (var k = 0u; k < p.channels; k++) {
            s += b[k] * a[k * p.n + j];
        }
        out3[j] = s;
    }
}

// A vector scaled by each of K weights: a = [n], b = the K weights; out[k * n + j] = b[k] * a[j].
@compute @workgroup_size(256)
fn scale_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i < p.n * p.channels) {
        out3[i] = b[i / p.n] * a[i % p.n];
    }
}

// Convolution weights [C_out, C_in, taps] reordered to [C_out, taps, C_in rounded up to 4], zero past C_in,
// so that 4 result channels of one tap are one aligned vec4 (the stride-2 input-gradient row kernels).
// n: outputs, voxels: taps, channels: C_in.
@compute @workgroup_size(256)
fn conv_weights_tap_major(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                          @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i < p.n) {
        let cin4 = (p.channels + 3u) / 4u * 4u;
        let rest = i / cin4;
        let ci = i - rest * cin4;
        let co = rest / p.voxels;
        let t = rest - co * p.voxels;
        var v = 0.0;
        if (ci < p.channels) {
            v = a[(co * p.channels + ci) * p.voxels + t];
        }
        out2[i] = v;
    }
}
