// Fused segmentation losses, the small passes: `reduce` sums the per-workgroup partials of
// `loss_voxel.wgsl:stats` in a fixed order; `finalize` turns the sums into the losses (mL1-ACE per image and
// class, Dice, cross-entropy, their weighted total) and into the coefficients the gradient pass needs.

struct Params {
    images: u32,          // B
    classes_out: u32,     // ACE: C' (0 when ACE is off)
    num_bins: u32,        // ACE: M
    partial_rows: u32,    // reduce: workgroups per image in the stats pass
    per_image: u32,       // reduce: slots per image
    src_offset: u32,      // reduce: first partial; finalize: where the Dice / cross-entropy sums start in src
    dst_offset: u32,      // reduce: first output
    soft: u32,
    ignore_empty: u32,    // ACE: 1 if a class absent from an image's labels gets 0 (still counted in the mean)
    ace_reduction: u32,   // 0 mean, 1 sum, 2 none
    channels: u32,        // C
    dice_start: u32,      // Dice: first channel (0 or 1)
    use_dice: u32,
    use_ce: u32,
    dice_reduction: u32,  // 0 mean, 1 sum, 2 none
    dice_batch: u32,      // Dice: 1 when sums run over the whole batch
    jaccard: u32,
    dice_offset: u32,     // finalize: where the Dice coefficients go in dst
    ce_offset: u32,       // finalize: where the cross-entropy coefficients go in dst
    values_dice: u32,     // finalize: where the Dice values go in `values`
    values_loss: u32,     // finalize: where (total, ACE, Dice, cross-entropy) go in `values`
    weight_offset: u32,   // finalize: where the C cross-entropy weights start in `class_weight`
    empty_weight: f32,    // ACE soft: bins with total weight below this are dropped
    smooth_nr: f32,
    smooth_dr: f32,
    label_smoothing: f32,
    lambda_ace: f32,
    lambda_dice: f32,
    lambda_ce: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
// reduce: partials; finalize: sums: ACE [B, C', M] of (weight, weight * p, weight * y, 0), then from
// `src_offset` [B, C + 1] (Dice sums per channel, cross-entropy sums).
@group(0) @binding(1) var<storage, read> src: array<vec4<f32>>;
// reduce: sums; finalize: coefficients for `loss_voxel.wgsl:grad`.
@group(0) @binding(2) var<storage, read_write> dst: array<vec4<f32>>;
// finalize: ACE per (image, class) [B, C'], Dice values from `values_dice`, the 4 losses from `values_loss`.
@group(0) @binding(3) var<storage, read_write> values: array<f32>;
@group(0) @binding(4) var<storage, read_write> bin_weight: array<f32>;
@group(0) @binding(5) var<storage, read_write> bin_sum_p: array<f32>;
@group(0) @binding(6) var<storage, read_write> bin_sum_y: array<f32>;
// ACE class weights [C'], then the cross-entropy weights [C] from `weight_offset`.
@group(0) @binding(7) var<storage, read> class_weight: array<f32>;

const WG: u32 = 256u;
var<workgroup> sh: array<vec4<f32>, 256>;

// One invocation per output slot: the slot's rows summed in a fixed order, in blocks of RB rows whose sums
// are then added (rounding error grows with RB + rows / RB, not with rows). No barriers, no atomics.
const RB: u32 = 32u;

@compute @workgroup_size(64)
fn reduce(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let o = (wid.y * nwg.x + wid.x) * 64u + lid;
    if (o >= P.images * P.per_image) {
        return;
    }
    let b = o / P.per_image;
    let slot = o - b * P.per_image;
    let first = P.src_offset + b * P.partial_rows * P.per_image + slot;
    var total = vec4<f32>(0.0);
    for (var r0 = 0u; r0 < P.partial_rows; r0 += RB) {
        var block = vec4<f32>(0.0);
        for (var r = r0; r < min(r0 + RB, P.partial_rows); r++) {
            block += src[first + r * P.per_image];
        }
        total += block;
    }
    dst[P.dst_offset + o] = total;
}

// The soft-binning gradient entry of the segment between bins with coefficients (a_k, d_k) and (a_{k+1},
// d_{k+1}) (see `finalize`).
fn soft_entry(lo: vec2<f32>, hi: vec2<f32>) -> vec4<f32> {
    return vec4<f32>(hi.x, lo.x - hi.x, lo.x * lo.y - hi.x * hi.y, 0.0);
}

fn reduction_scale(reduction: u32, n: u32) -> f32 {
    if (reduction == 0u) {
        return 1.0 / f32(n);
    }
    return 1.0;
}

fn ace_keep(s: vec4<f32>) -> bool {
    if (P.soft == 1u) {
        return s.x >= P.empty_weight;
    }
    return s.x > 0.5;
}

// Dice from its sums (intersection, ground, prediction), and the coefficients (A, B) of its derivative,
// d f / d p_i = A y_i + B d(den)/d p_i, scaled by `scale`.
fn dice(sums: vec3<f32>, scale: f32) -> vec3<f32> {
    var den = sums.y + sums.z;
    if (P.jaccard == 1u) {
        den = 2.0 * (den - sums.x);
    }
    let num = 2.0 * sums.x + P.smooth_nr;
    let d = den + P.smooth_dr;
    return vec3<f32>(1.0 - num / d, -2.0 / d * scale, num / (d * d) * scale);
}

// One workgroup: invocation i handles pairs i, i + WG, ...; totals are summed by a tree in fixed order.
@compute @workgroup_size(256)
fn finalize(@builtin(local_invocation_index) lid: u32) {
    let M = P.num_bins;
    let C = P.channels;
    let B = P.images;
    let n_ace = B * P.classes_out;
    let ace_scale = reduction_scale(P.ace_reduction, max(n_ace, 1u));
    var total = vec4<f32>(0.0);

    // mL1-ACE per (image, class) and the per-bin coefficients a_k: d ACE / d p_i = a_k for hard binning,
    // a_k [w_k + w'_k ((p_i - y_i) - d_k)] for soft, with d_k = mean_p - mean_y.
    for (var bc = lid; bc < n_ace; bc += WG) {
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
            if (ace_keep(s)) {
                kept += 1u;
                gaps += abs(s.y / s.x - s.z / s.x);
            }
        }
        var mask = 1.0;
        if (P.ignore_empty == 1u && !(y_total > 0.0)) {
            mask = 0.0;
        }
        let weight = class_weight[bc % P.classes_out] * mask;
        let ace = gaps / f32(max(kept, 1u)) * weight;
        values[bc] = ace;
        total.x += ace;
        let scale = P.lambda_ace * ace_scale * weight / f32(max(kept, 1u));
        // Hard: entry k = (a_k, d_k, 0, 0). Soft: a voxel between centres k and k + 1 has
        //   d ACE / d p = a_k (w0 + dw0 (r - d_k)) + a_{k+1} (w1 + dw1 (r - d_{k+1})), r = p - y,
        // and as w1 = 1 - w0, dw1 = -dw0 = 1 / delta (0 when clamped to an end bin), that is
        //   a_{k+1} + (a_k - a_{k+1}) w0 + dw1 ((a_k d_k - a_{k+1} d_{k+1}) - (a_k - a_{k+1}) r):
        // entry k = (a_{k+1}, a_k - a_{k+1}, a_k d_k - a_{k+1} d_{k+1}, 0), with a_M = d_M = 0.
        var prev = vec2<f32>(0.0);
        for (var k = 0u; k < M; k++) {
            let s = src[row + k];
            var coef = vec2<f32>(0.0);
            if (ace_keep(s)) {
                let d = s.y / s.x - s.z / s.x;
                coef = vec2<f32>(scale * sign(d) / s.x, d);
            }
            if (P.soft == 0u) {
                dst[row + k] = vec4<f32>(coef, 0.0, 0.0);
            } else if (k > 0u) {
                dst[row + k - 1u] = soft_entry(prev, coef);
            }
            prev = coef;
        }
        if (P.soft == 1u) {
            dst[row + M - 1u] = soft_entry(prev, vec2<f32>(0.0));
        }
    }

    // Dice per (image, class), or per class over the batch.
    if (P.use_dice == 1u) {
        let cd = C - P.dice_start;
        var n_dice = B * cd;
        if (P.dice_batch == 1u) {
            n_dice = cd;
        }
        let scale = P.lambda_dice * reduction_scale(P.dice_reduction, n_dice);
        for (var i = lid; i < n_dice; i += WG) {
            var sums = vec3<f32>(0.0);
            var row = 0u;
            var c = P.dice_start + i;
            if (P.dice_batch == 1u) {
                for (var b = 0u; b < B; b++) {
                    sums += src[P.src_offset + b * (C + 1u) + c].xyz;
                }
            } else {
                let b = i / cd;
                c = P.dice_start + i - b * cd;
                row = b * C;
                sums = src[P.src_offset + b * (C + 1u) + c].xyz;
            }
            let f = dice(sums, scale);
            values[P.values_dice + i] = f.x;
            total.y += f.x;
            dst[P.dice_offset + row + c] = vec4<f32>(f.y, f.z, 0.0, 0.0);
        }
    }

    sh[lid] = total;
    workgroupBarrier();
    for (var h = WG / 2u; h > 0u; h /= 2u) {
        if (lid < h) {
            sh[lid] += sh[lid + h];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        let ace = sh[0].x * ace_scale;
        var dice_loss = 0.0;
        if (P.use_dice == 1u) {
            var n_dice = B * (C - P.dice_start);
            if (P.dice_batch == 1u) {
                n_dice = C - P.dice_start;
            }
            dice_loss = sh[0].y * reduction_scale(P.dice_reduction, n_dice);
        }
        // Cross-entropy: mean over voxels (weighted by the label's class weight), with label smoothing.
        var ce = 0.0;
        if (P.use_ce == 1u) {
            var sums = vec4<f32>(0.0);
            for (var b = 0u; b < B; b++) {
                sums += src[P.src_offset + b * (C + 1u) + C];
            }
            let s = P.label_smoothing;
            var w_total = 0.0;
            for (var c = 0u; c < C; c++) {
                w_total += class_weight[P.weight_offset + c];
            }
            ce = ((1.0 - s) * sums.x + s / f32(C) * sums.y) / sums.z;
            dst[P.ce_offset] = vec4<f32>(P.lambda_ce / sums.z, 1.0 - s, s / f32(C), w_total);
        }
        let loss = P.lambda_ace * ace + P.lambda_dice * dice_loss + P.lambda_ce * ce;
        values[P.values_loss] = loss;
        values[P.values_loss + 1u] = ace;
        values[P.values_loss + 2u] = dice_loss;
        values[P.values_loss + 3u] = ce;
    }
}
