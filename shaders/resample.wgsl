// Nearest-exact resampling (PyTorch `interpolate(mode="nearest-exact")`) of [planes, D, H, W] tensors of any
// 4-byte element type (label maps are copied bit for bit): source index = min(floor((dst + 0.5) * in / out),
// in - 1), computed exactly in integers. One invocation per output element.

struct Params {
    planes: u32,
    in_d: u32,
    in_h: u32,
    in_w: u32,
    out_d: u32,
    out_h: u32,
    out_w: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;

fn source_index(o: u32, n_in: u32, n_out: u32) -> u32 {
    return min(((2u * o + 1u) * n_in) / (2u * n_out), n_in - 1u);
}

@compute @workgroup_size(256)
fn nearest_exact(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let t = (wid.y * nwg.x + wid.x) * 256u + lid;
    let per_plane = P.out_d * P.out_h * P.out_w;
    if (t >= P.planes * per_plane) {
        return;
    }
    let plane = t / per_plane;
    var r = t - plane * per_plane;
    let od = r / (P.out_h * P.out_w);
    r -= od * P.out_h * P.out_w;
    let oh = r / P.out_w;
    let ow = r - oh * P.out_w;
    let id = source_index(od, P.in_d, P.out_d);
    let ih = source_index(oh, P.in_h, P.out_h);
    let iw = source_index(ow, P.in_w, P.out_w);
    dst[t] = src[((plane * P.in_d + id) * P.in_h + ih) * P.in_w + iw];
}
