// Softmax over the channel axis of an [images, channels, voxels] tensor, one invocation per voxel.
// Layout is row-major NC(spatial): channel c of voxel v in image b sits at (b * channels + c) * voxels + v,
// so neighbouring invocations touch neighbouring addresses (coalesced) for every channel.

struct Params {
    channels: u32,
    voxels: u32,
    images: u32,      // images in this dispatch (a window of the tensor)
    elem_offset: u32, // elements between the bound window's start and the first image
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

const WG: u32 = 256u;

fn linear_id(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.y * nwg.x + wid.x) * WG + lid;
}

// Forward: `a` = logits, `out` = probabilities. One pass keeps a running max and a rescaled sum
// (online softmax), a second writes exp(z - max) / sum: logits are read twice, probabilities written once.
@compute @workgroup_size(256)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let t = linear_id(wid, nwg, lid);
    let V = params.voxels;
    if (t >= params.images * V) {
        return;
    }
    let b = t / V;
    let base = params.elem_offset + b * params.channels * V + (t - b * V);
    var m = -3.40282347e38;
    var s = 0.0;
    for (var c = 0u; c < params.channels; c++) {
        let z = a[base + c * V];
        if (z > m) {
            s = s * exp(m - z) + 1.0;
            m = z;
        } else {
            s += exp(z - m);
        }
    }
    let inv = 1.0 / s;
    for (var c = 0u; c < params.channels; c++) {
        let i = base + c * V;
        out[i] = exp(a[i] - m) * inv;
    }
}

@group(0) @binding(3) var<storage, read> grad_p: array<f32>;

// Backward: `a` = probabilities p, `grad_p` = dL/dp, `out` = dL/dz = p * (g - sum_c p_c g_c).
@compute @workgroup_size(256)
fn backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let t = linear_id(wid, nwg, lid);
    let V = params.voxels;
    if (t >= params.images * V) {
        return;
    }
    let b = t / V;
    let base = params.elem_offset + b * params.channels * V + (t - b * V);
    var dot = 0.0;
    for (var c = 0u; c < params.channels; c++) {
        let i = base + c * V;
        dot += a[i] * grad_p[i];
    }
    for (var c = 0u; c < params.channels; c++) {
        let i = base + c * V;
        out[i] = a[i] * (grad_p[i] - dot);
    }
}
