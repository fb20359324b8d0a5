// Sliding-window inference (MONAI's `sliding_window_inference`): accumulating one window's prediction
// times the importance map into one slab of the output sums and the importance into the slab's count map,
// and the final division with the crop back to the input's size. The windows are gathered on the host
// (zero outside the input, which is MONAI's constant padding). Every spatial shape is 3D (2D and 1D
// inputs have leading axes of 1); a slab is a box of the padded volume (a range of rows of the first
// spatial axis, all of the others), in its own buffer.
//
// One accumulate dispatch handles one window and one slab, and the dispatches run in window order, so
// every output voxel sums its windows in the same order as MONAI whatever the slabs (deterministic, no
// atomics).

const WG: u32 = 256u;

fn linear_id(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.y * nwg.x + wid.x) * WG + lid;
}

// (z, y, x) of voxel v in a volume of size s (d, h, w).
fn unflatten(v: u32, s: vec3<u32>) -> vec3<u32> {
    let hw = s.y * s.z;
    let z = v / hw;
    let r = v - z * hw;
    let y = r / s.z;
    return vec3<u32>(z, y, r - y * s.z);
}

// Index of voxel l in a volume of size s.
fn flatten(l: vec3<u32>, s: vec3<u32>) -> u32 {
    return (l.x * s.y + l.y) * s.z + l.z;
}

struct AccParams {
    roi: vec4<u32>,   // window depth, height, width, voxels
    start: vec4<u32>, // window start (padded coordinates), its index in the predicted batch
    lo: vec4<u32>,    // the slab's first voxel (padded coordinates), output channels
    slab: vec4<u32>,  // slab depth, height, width, voxels
}

@group(0) @binding(0) var<uniform> pa: AccParams;
@group(0) @binding(1) var<storage, read> pred: array<f32>;
@group(0) @binding(2) var<storage, read> importance: array<f32>;
@group(0) @binding(3) var<storage, read_write> acc: array<f32>;
@group(0) @binding(4) var<storage, read_write> count: array<f32>;

// acc[c, start + v - lo] += pred[j, c, v] * importance[v] and count[start + v - lo] += importance[v] for the
// window voxels v inside the slab. One invocation per (channel, window voxel): a window covers each output
// voxel once, so no two invocations of a dispatch touch the same element.
@compute @workgroup_size(256)
fn accumulate(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    let cout = pa.lo.w;
    if (i >= cout * pa.roi.w) {
        return;
    }
    let c = i / pa.roi.w;
    let v = i - c * pa.roi.w;
    let q = pa.start.xyz + unflatten(v, pa.roi.xyz); // padded coordinates
    if (any(q < pa.lo.xyz) || any(q >= pa.lo.xyz + pa.slab.xyz)) {
        return; // another slab's part of the window
    }
    let sv = flatten(q - pa.lo.xyz, pa.slab.xyz);
    let imp = importance[v];
    // MONAI rounds the product before adding it.
    let weighted = pred[(pa.start.w * cout + c) * pa.roi.w + v] * imp;
    let o = c * pa.slab.w + sv;
    acc[o] = acc[o] + weighted;
    if (c == 0u) {
        count[sv] = count[sv] + imp;
    }
}

struct FinishParams {
    osz: vec4<u32>,   // output piece depth, height, width, voxels
    shift: vec4<u32>, // slab coordinates of the piece's first voxel, output channels
    slab: vec4<u32>,  // slab depth, height, width, voxels
}

@group(0) @binding(0) var<uniform> pf: FinishParams;
@group(0) @binding(1) var<storage, read> sums: array<f32>;
@group(0) @binding(2) var<storage, read> counts: array<f32>;
@group(0) @binding(3) var<storage, read_write> result: array<f32>;

// result[c, v] = sums[c, shift + v] / counts[shift + v]: the blend and the crop to the input's size.
@compute @workgroup_size(256)
fn finish(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i >= pf.shift.w * pf.osz.w) {
        return;
    }
    let c = i / pf.osz.w;
    let v = i - c * pf.osz.w;
    let sv = flatten(unflatten(v, pf.osz.xyz) + pf.shift.xyz, pf.slab.xyz);
    result[i] = sums[c * pf.slab.w + sv] / counts[sv];
}
