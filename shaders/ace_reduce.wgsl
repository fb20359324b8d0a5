// mL1-ACE, the small passes: `reduce` sums the per-workgroup partials of `ace.wgsl:stats` in a fixed order;
// `finalize` turns bin sums into per-(image, class) ACE, the loss, and the per-bin gradient coefficients.

struct Params {
    images: u32,        // B
    classes_out: u32,   // C'
    num_bins: u32,      // M
    partial_rows: u32,  // reduce: workgroups per image in the stats pass
    soft: u32,
    ignore_empty: u32,  // 1: a class absent from an image's labels gets ACE 0 (still counted in the mean)
    reduction: u32,     // 0 mean, 1 sum, 2 none
    _pad0: u32,
    empty_weight: f32,  // soft: bins with total weight below this are dropped
    _pad1: u32,
    _pad2: u32,
    _pad3: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
// reduce: partials [B, rows, C', M]; finalize: bin sums [B, C', M] of (weight, weight * p, weight * y, 0).
@group(0) @binding(1) var<storage, read> src: array<vec4<f32>>;
// reduce: bin sums [B, C', M]; finalize: coefficients [B, C', M] of (a_k, mean_p - mean_y, 0, 0).
@group(0) @binding(2) var<storage, read_write> dst: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> per_image_class: array<f32>;
@group(0) @binding(4) var<storage, read_write> bin_weight: array<f32>;
@group(0) @binding(5) var<storage, read_write> bin_sum_p: array<f32>;
@group(0) @binding(6) var<storage, read_write> bin_sum_y: array<f32>;
@group(0) @binding(7) var<storage, read> class_weight: array<f32>;
@group(0) @binding(8) var<storage, read_write> loss: array<f32>;

const WG: u32 = 256u;
var<workgroup> sh: array<vec4<f32>, 256>;

// One workgroup per (image, class, bin): invocation i sums rows i, i + WG, ..., then a tree in fixed order.
@compute @workgroup_size(256)
fn reduce(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let o = wid.y * nwg.x + wid.x;
    let per_image = P.classes_out * P.num_bins;
    if (o >= P.images * per_image) {
        return;
    }
    let b = o / per_image;
    let ck = o - b * per_image;
    var s = vec4<f32>(0.0);
    for (var r = lid; r < P.partial_rows; r += WG) {
        s += src[(b * P.partial_rows + r) * per_image + ck];
    }
    sh[lid] = s;
    workgroupBarrier();
    for (var n = WG / 2u; n > 0u; n /= 2u) {
        if (lid < n) {
            sh[lid] += sh[lid + n];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        dst[o] = sh[0];
    }
}

// One workgroup: invocation i handles (image, class) pairs i, i + WG, ...; the loss is their sum in a fixed order.
@compute @workgroup_size(256)
fn finalize(@builtin(local_invocation_index) lid: u32) {
    let M = P.num_bins;
    let n = P.images * P.classes_out;
    var red_scale = 1.0;
    if (P.reduction == 0u) {
        red_scale = 1.0 / f32(n);
    }
    var total = 0.0;
    for (var bc = lid; bc < n; bc += WG) {
        let row = bc * M;
        var kept = 0u;
        var gaps = 0.0;
        var y_total = 0.0;
        for (var k = 0u; k < M; k++) {
            let s = src[row + k];
            bin_weight[row + k] = s.x;
            bin_sum_p[row + k] = s.y;
            bin_sum_y[row + k] = s.z;
            y_total += s.z;
            var keep = s.x > 0.5;
            if (P.soft == 1u) {
                keep = s.x >= P.empty_weight;
            }
            if (keep) {
                kept += 1u;
                gaps += abs(s.y / s.x - s.z / s.x);
            }
        }
        let c = bc % P.classes_out;
        var mask = 1.0;
        if (P.ignore_empty == 1u && !(y_total > 0.0)) {
            mask = 0.0;
        }
        let weight = class_weight[c] * mask;
        let ace = gaps / f32(max(kept, 1u)) * weight;
        per_image_class[bc] = ace;
        total += ace;
        // d loss / d p_i = a_k [w_k + w'_k ((p_i - y_i) - d_k)] for soft, a_k for hard.
        let scale = red_scale * weight / f32(max(kept, 1u));
        for (var k = 0u; k < M; k++) {
            let s = src[row + k];
            var keep = s.x > 0.5;
            if (P.soft == 1u) {
                keep = s.x >= P.empty_weight;
            }
            var coef = vec4<f32>(0.0);
            if (keep) {
                let d = s.y / s.x - s.z / s.x;
                coef = vec4<f32>(scale * sign(d) / s.x, d, 0.0, 0.0);
            }
            dst[row + k] = coef;
        }
    }
    sh[lid] = vec4<f32>(total, 0.0, 0.0, 0.0);
    workgroupBarrier();
    for (var h = WG / 2u; h > 0u; h /= 2u) {
        if (lid < h) {
            sh[lid] += sh[lid + h];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        loss[0] = sh[0].x * red_scale;
    }
}
