// Trilinear (or bilinear, depth scale 1) upsampling by integer factors with align_corners = false, as
// PyTorch computes it: source = max((o + 0.5) / scale - 0.5, 0), i0 = floor, i1 = min(i0 + 1, in - 1).
// The backward pass is a gather over the outputs that read each input voxel (deterministic, no atomics).

struct Params {
    isz: vec4<u32>,   // input depth, height, width, voxels
    osz: vec4<u32>,   // output depth, height, width, voxels
    scale: vec4<u32>, // depth, height, width, images x channels
}

const WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

fn linear_id(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.y * nwg.x + wid.x) * WG + lid;
}

struct Taps {
    i0: u32,
    i1: u32,
    l1: f32, // weight of i1; i0 has 1 - l1
}

fn taps(o: u32, scale: u32, n: u32) -> Taps {
    var t: Taps;
    let s = max((f32(o) + 0.5) / f32(scale) - 0.5, 0.0);
    t.i0 = min(u32(floor(s)), n - 1u);
    t.i1 = min(t.i0 + 1u, n - 1u);
    t.l1 = s - f32(t.i0);
    return t;
}

// Weight of input index i in output o along one axis.
fn weight(o: u32, i: u32, scale: u32, n: u32) -> f32 {
    let t = taps(o, scale, n);
    var w = 0.0;
    if (t.i0 == i) {
        w += 1.0 - t.l1;
    }
    if (t.i1 == i) {
        w += t.l1;
    }
    return w;
}

@compute @workgroup_size(256)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i >= p.scale.w * p.osz.w) {
        return;
    }
    let nc = i / p.osz.w;
    let v = i - nc * p.osz.w;
    let ohw = p.osz.y * p.osz.z;
    let oz = v / ohw;
    let r = v - oz * ohw;
    let oy = r / p.osz.z;
    let ox = r - oy * p.osz.z;
    let tz = taps(oz, p.scale.x, p.isz.x);
    let ty = taps(oy, p.scale.y, p.isz.y);
    let tx = taps(ox, p.scale.z, p.isz.z);
    let base = nc * p.isz.w;
    let H = p.isz.y;
    let W = p.isz.z;
    let r00 = base + (tz.i0 * H + ty.i0) * W;
    let r01 = base + (tz.i0 * H + ty.i1) * W;
    let r10 = base + (tz.i1 * H + ty.i0) * W;
    let r11 = base + (tz.i1 * H + ty.i1) * W;
    let lx = tx.l1;
    let c00 = mix(src[r00 + tx.i0], src[r00 + tx.i1], lx);
    let c01 = mix(src[r01 + tx.i0], src[r01 + tx.i1], lx);
    let c10 = mix(src[r10 + tx.i0], src[r10 + tx.i1], lx);
    let c11 = mix(src[r11 + tx.i0], src[r11 + tx.i1], lx);
    dst[i] = mix(mix(c00, c01, ty.l1), mix(c10, c11, ty.l1), tz.l1);
}

// Output range along one axis that can read input index i: o in [lo, hi).
fn out_range(i: u32, scale: u32, n_in: u32, n_out: u32) -> vec2<u32> {
    let lo = select(0u, i * scale - scale, i * scale >= scale);
    let hi = min(n_out, (i + 2u) * scale);
    return vec2<u32>(lo, hi);
}

@compute @workgroup_size(256)
fn backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i >= p.scale.w * p.isz.w) {
        return;
    }
    let nc = i / p.isz.w;
    let v = i - nc * p.isz.w;
    let ihw = p.isz.y * p.isz.z;
    let iz = v / ihw;
    let r = v - iz * ihw;
    let iy = r / p.isz.z;
    let ix = r - iy * p.isz.z;
    let rz = out_range(iz, p.scale.x, p.isz.x, p.osz.x);
    let ry = out_range(iy, p.scale.y, p.isz.y, p.osz.y);
    let rx = out_range(ix, p.scale.z, p.isz.z, p.osz.z);
    let base = nc * p.osz.w;
    var s = 0.0;
    for (var oz = rz.x; oz < rz.y; oz++) {
        let wz = weight(oz, iz, p.scale.x, p.isz.x);
        if (wz == 0.0) {
            continue;
        }
        for (var oy = ry.x; oy < ry.y; oy++) {
            let wy = weight(oy, iy, p.scale.y, p.isz.y);
            if (wy == 0.0) {
                continue;
            }
            let row = base + (oz * p.osz.y + oy) * p.osz.z;
            var sx = 0.0;
            for (var ox = rx.x; ox < rx.y; ox++) {
                sx += weight(ox, ix, p.scale.z, p.isz.z) * src[row + ox];
            }
            s += wz * wy * sx;
        }
    }
    dst[i] = s;
}
