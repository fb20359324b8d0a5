// Sliding-window inference (MONAI's `sliding_window_inference`): gathering a batch of windows from the
// input (zero outside it, which is MONAI's constant padding), accumulating one window's prediction times
// the importance map into the output and the importance into the count map, and the final division with
// the crop back to the input's size. Every spatial shape is 3D (2D and 1D inputs have leading axes of 1).
//
// Windows are described by `wins[k] = (image, start d, start h, start w)` in padded coordinates. One
// accumulate dispatch handles one window, and the dispatches run in window order, so every output voxel
// sums its windows in the same order as MONAI (deterministic, no atomics).

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

struct GatherParams {
    isz: vec4<u32>, // input depth, height, width, voxels
    roi: vec4<u32>, // window depth, height, width, voxels
    pad: vec4<u32>, // padding before each axis (depth, height, width), input channels
    win: vec4<u32>, // first window, windows in the batch, elements of the batch, unused
}

@group(0) @binding(0) var<uniform> pg: GatherParams;
@group(0) @binding(1) var<storage, read> wins: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read> img: array<f32>;
@group(0) @binding(3) var<storage, read_write> batch: array<f32>;

// batch[j, c, v] = padded input[image of window first + j, c, start + v] (zero in the padding).
@compute @workgroup_size(256)
fn gather(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i >= pg.win.z) {
        return;
    }
    let cin = pg.pad.w;
    let per_window = cin * pg.roi.w;
    let j = i / per_window;
    let r = i - j * per_window;
    let c = r / pg.roi.w;
    let v = r - c * pg.roi.w;
    let w = wins[pg.win.x + j];
    let q = vec3<u32>(w.y, w.z, w.w) + unflatten(v, pg.roi.xyz); // padded coordinates
    var value = 0.0;
    if (all(q >= pg.pad.xyz) && all(q - pg.pad.xyz < pg.isz.xyz)) {
        let s = q - pg.pad.xyz;
        value = img[(w.x * cin + c) * pg.isz.w + (s.x * pg.isz.y + s.y) * pg.isz.z + s.z];
    }
    batch[i] = value;
}

struct AccParams {
    psz: vec4<u32>, // padded depth, height, width, voxels
    roi: vec4<u32>, // window depth, height, width, voxels
    win: vec4<u32>, // window, its index in the predicted batch, output channels, 1 to add to the count map
}

@group(0) @binding(0) var<uniform> pa: AccParams;
@group(0) @binding(2) var<storage, read> pred: array<f32>;
@group(0) @binding(3) var<storage, read> importance: array<f32>;
@group(0) @binding(4) var<storage, read_write> acc: array<f32>;
@group(0) @binding(5) var<storage, read_write> count: array<f32>;

// acc[image, c, start + v] += pred[j, c, v] * importance[v]; count[start + v] += importance[v] when flagged.
// One invocation per (channel, window voxel): a window covers each output voxel once, so no two
// invocations of a dispatch touch the same element.
@compute @workgroup_size(256)
fn accumulate(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    let cout = pa.win.z;
    if (i >= cout * pa.roi.w) {
        return;
    }
    let c = i / pa.roi.w;
    let v = i - c * pa.roi.w;
    let w = wins[pa.win.x];
    let q = vec3<u32>(w.y, w.z, w.w) + unflatten(v, pa.roi.xyz);
    let pv = (q.x * pa.psz.y + q.y) * pa.psz.z + q.z;
    let imp = importance[v];
    // MONAI rounds the product before adding it.
    let weighted = pred[(pa.win.y * cout + c) * pa.roi.w + v] * imp;
    let o = (w.x * cout + c) * pa.psz.w + pv;
    acc[o] = acc[o] + weighted;
    if (c == 0u && pa.win.w == 1u) {
        count[pv] = count[pv] + imp;
    }
}

struct FinishParams {
    osz: vec4<u32>, // output (input) depth, height, width, voxels
    psz: vec4<u32>, // padded depth, height, width, voxels
    pad: vec4<u32>, // padding before each axis, images x output channels
}

@group(0) @binding(0) var<uniform> pf: FinishParams;
@group(0) @binding(1) var<storage, read> sums: array<f32>;
@group(0) @binding(2) var<storage, read> counts: array<f32>;
@group(0) @binding(3) var<storage, read_write> result: array<f32>;

// result[b, c, v] = sums[b, c, pad + v] / counts[pad + v]: the blend and the crop to the input's size.
@compute @workgroup_size(256)
fn finish(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i >= pf.pad.w * pf.osz.w) {
        return;
    }
    let bc = i / pf.osz.w;
    let v = i - bc * pf.osz.w;
    let q = unflatten(v, pf.osz.xyz) + pf.pad.xyz;
    let pv = (q.x * pf.psz.y + q.y) * pf.psz.z + q.z;
    result[i] = sums[bc * pf.psz.w + pv] / counts[pv];
}
