// Temperature scaling: the summed negative log-likelihood of softmax(beta * z) (beta = 1 / T) and its first two
// derivatives in beta, as per-workgroup partials (a fixed-order tree inside the workgroup; the host adds the
// partials in order). Each workgroup covers one chunk of WG * PER_THREAD voxels of one image (image-major, never
// across images), so an image cut into pieces of whole chunks gives the same partials as the whole image. NLL is convex in beta, so the host can run a safeguarded Newton iteration on it.
//
// Per voxel, with s = beta * z, p = softmax(s), y the label:
//   nll = logsumexp(s) - s_y,  d nll / d beta = E_p[z] - z_y,  d2 nll / d beta2 = Var_p[z].
// Partial record (f32, stride 4): nll, gradient, curvature, count of labels outside 0..C.

struct Params {
    voxels: u32,   // voxels per image
    channels: u32, // C
    total: u32,    // elements (scale)
    groups: u32,   // workgroups launched (nll: images * image_groups)
    beta: f32,
    image_groups: u32, // chunks per image (nll)
    _pad0: u32,
    _pad1: u32,
}

const WG: u32 = 256u;
const PER_THREAD: u32 = 8u;

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<i32>;
@group(0) @binding(3) var<storage, read_write> partials: array<f32>;

var<workgroup> red: array<vec4<f32>, 256>;

@compute @workgroup_size(256)
fn nll(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_index) lid: u32) {
    let g = wid.y * nwg.x + wid.x;
    if (g >= params.groups) {
        return;
    }
    let nv = params.voxels;
    let nc = params.channels;
    let beta = params.beta;
    var acc = vec4<f32>(0.0);
    let b = g / params.image_groups;
    let chunk = g - b * params.image_groups;
    for (var i = 0u; i < PER_THREAD; i++) {
        let x = (chunk * PER_THREAD + i) * WG + lid;
        if (x < nv) {
            let base = b * nc * nv + x;
            let lab = labels[b * nv + x];
            if (lab < 0 || u32(lab) >= nc) {
                acc.w += 1.0;
                continue;
            }
            var mx = -3.40282347e38;
            for (var c = 0u; c < nc; c++) {
                mx = max(mx, beta * logits[base + c * nv]);
            }
            var se = 0.0;
            var ez = 0.0;
            var ez2 = 0.0;
            for (var c = 0u; c < nc; c++) {
                let z = logits[base + c * nv];
                let e = exp(beta * z - mx);
                se += e;
                ez += e * z;
                ez2 += e * z * z;
            }
            let mean = ez / se;
            let zy = logits[base + u32(lab) * nv];
            acc.x += log(se) + mx - beta * zy;
            acc.y += mean - zy;
            acc.z += max(ez2 / se - mean * mean, 0.0);
        }
    }
    red[lid] = acc;
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        workgroupBarrier();
        if (lid < s) {
            red[lid] += red[lid + s];
        }
    }
    workgroupBarrier();
    if (lid == 0u) {
        let r = red[0];
        partials[g * 4u + 0u] = r.x;
        partials[g * 4u + 1u] = r.y;
        partials[g * 4u + 2u] = r.z;
        partials[g * 4u + 3u] = r.w;
    }
}

// Applying a fitted temperature: out = beta * logits (element-wise; `total` = element count).
@group(0) @binding(1) var<storage, read> scale_in: array<f32>;
@group(0) @binding(2) var<storage, read_write> scale_out: array<f32>;

@compute @workgroup_size(256)
fn scale(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let t = (wid.y * nwg.x + wid.x) * WG + lid;
    if (t < params.total) {
        scale_out[t] = params.beta * scale_in[t];
    }
}
