// Fused segmentation losses, the per-voxel passes. `stats` reads the input and labels once and accumulates
// every statistic the losses need: mL1-ACE bins (hard: square bins, soft: triangular kernels), Dice sums and
// cross-entropy sums, as per-workgroup partials. `grad` writes d loss / d input in one more pass from the
// coefficients that `loss_reduce.wgsl:finalize` derived from those statistics.
// Layout: input [images, C, V] (logits or probabilities), labels [images, V] (class indices) or [images, C, V]
// (one-hot). The prelude defines `logit_t` (f32 or f16), `label_t` and `ONEHOT`.

struct Params {
    channels: u32,      // C
    voxels: u32,        // V
    num_bins: u32,      // M
    class_start: u32,   // ACE: 0, or 1 when the background channel is left out
    classes_out: u32,   // ACE: C' = C - class_start (0 when ACE is off)
    group_start: u32,   // stats: first ACE class of this dispatch's class group
    group_size: u32,    // stats: ACE classes in the group (0: none)
    wg_per_image: u32,  // stats: workgroups per image
    images: u32,        // images in this dispatch (a window of the tensors)
    first_image: u32,   // absolute index of the window's first image
    input_shift: u32,   // elements between the input window's start and its first image
    label_shift: u32,   // same for the labels window
    soft: u32,          // 1: soft (triangular) binning
    softmax: u32,       // 1: input holds logits; 0: probabilities
    iters: u32,         // stats: voxels per invocation (SWG apart)
    up_stride: u32,     // grad: 0 for a scalar upstream gradient, 1 for one per (image, class)
    delta: f32,         // soft: kernel half-width (1 + eps) / M
    bin_start: u32,     // stats: first bin of this dispatch's range
    bin_count: u32,     // stats: bins in the range
    extra: u32,         // stats: 1 if this dispatch also sums the Dice and cross-entropy statistics
    extra_offset: u32,  // stats: where the extra partials start in `table`; grad: the Dice coefficients
    ce_offset: u32,     // grad: where the cross-entropy coefficients start in `table`
    ignore_index: u32,  // cross-entropy: voxels with this label count for nothing
    squared_pred: u32,  // Dice: 1 for sums of p^2 and y^2, 0 for sums of p and y
    dice_start: u32,    // Dice: 0, or 1 when the background channel is left out
    use_dice: u32,
    use_ce: u32,
    jaccard: u32,       // Dice: 1 for the Jaccard (IoU) form
    dice_batch: u32,    // Dice: 1 when sums run over the whole batch (one coefficient per class)
    weight_offset: u32, // cross-entropy: where the C class weights start in `edges`
    ce_smoothing: u32,  // cross-entropy: 1 if label smoothing is on (the smoothing sum is needed)
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> input: array<logit_t>;
@group(0) @binding(2) var<storage, read> labels: array<label_t>;
// Hard: the M + 1 bin edges. Soft: the M kernel centres. Then, from `weight_offset`, C cross-entropy weights.
@group(0) @binding(3) var<storage, read> edges: array<f32>;
// stats: per-workgroup partials: ACE [image, workgroup, C', M] of (weight, weight * p, weight * y, 0), then
// from `extra_offset` [image, workgroup, C + 1]: per channel the Dice sums (sum p y, sum y^2, sum p^2, 0), and
// the cross-entropy sums (weighted nll, smoothing term, weight, 0).
// grad: ACE coefficients [image, C', M] of (a_k, mean_p - mean_y, 0, 0); Dice coefficients from `extra_offset`,
// [image or 1, C] of (A, B, 0, 0) with d Dice / d p = A y + B d(den)/dp; cross-entropy from `ce_offset`:
// (scale, 1 - smoothing, smoothing / C, sum of class weights).
@group(0) @binding(4) var<storage, read_write> table: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> upstream: array<f32>;
@group(0) @binding(6) var<storage, read_write> grad_out: array<logit_t>;

const WG: u32 = 256u;
const CLAMPED: u32 = 0x10000u; // soft: all weight to one end bin

// Stats: each invocation owns SLOTS histogram slots in workgroup memory (ACE classes x bins, then Dice (C),
// then cross-entropy (1)), slot s of invocation i at s * SWG + i. Workgroup memory rather than a private
// array: dynamically indexed private arrays compile to huge if-ladders on some GL drivers (minutes on
// llvmpipe), and 3 x SLOTS x SWG x 4 bytes = 16,320 fits the 16 KiB every WebGPU device has.
const SWG: u32 = 16u;
const SLOTS: u32 = 85u;
var<workgroup> h_w: array<f32, 1360>; // SLOTS x SWG: weight (count), or the first of 3 Dice / CE sums
var<workgroup> h_p: array<f32, 1360>; // weight * p
var<workgroup> h_y: array<f32, 1360>; // weight * y

fn slot_add(s: u32, lid: u32, a: vec3<f32>) {
    let i = s * SWG + lid;
    h_w[i] += a.x;
    h_p[i] += a.y;
    h_y[i] += a.z;
}

// Softmax statistics of one voxel: (max, 1 / sum exp(z - max), log sum exp(z - max)); `base` indexes channel 0.
fn softmax_stats(base: u32) -> vec3<f32> {
    if (P.softmax == 0u) {
        return vec3<f32>(0.0, 1.0, 0.0);
    }
    let C = P.channels;
    let V = P.voxels;
    // One sweep: a running max and a sum rescaled whenever the max grows (online softmax).
    var m = f32(input[base]);
    var s = 1.0;
    for (var c = 1u; c < C; c++) {
        let z = f32(input[base + c * V]);
        if (z > m) {
            s = s * exp(m - z) + 1.0;
            m = z;
        } else {
            s += exp(z - m);
        }
    }
    var lse = 0.0;
    if (P.use_ce == 1u) {
        lse = log(s);
    }
    return vec3<f32>(m, 1.0 / s, lse);
}

// p_c of one voxel from its softmax statistics (the input itself for probability input).
fn prob_of(base: u32, c: u32, st: vec3<f32>) -> f32 {
    let z = f32(input[base + c * P.voxels]);
    if (P.softmax == 0u) {
        return z;
    }
    return exp(z - st.x) * st.y;
}

// log p_c (log-softmax), for logits only.
fn log_prob_of(base: u32, c: u32, st: vec3<f32>) -> f32 {
    return f32(input[base + c * P.voxels]) - st.x - st.z;
}

// Label value y of class c (0 or 1, or a soft one-hot value); `b` and `v` are window-relative.
fn label_y(b: u32, c: u32, v: u32) -> f32 {
    if (ONEHOT) {
        return f32(labels[P.label_shift + (b * P.channels + c) * P.voxels + v]);
    }
    return select(0.0, 1.0, u32(labels[P.label_shift + b * P.voxels + v]) == c);
}

// Hard bin: the number of inner edges e_1..e_M strictly below p (torch.bucketize, right=False), at most M - 1.
fn hard_bin(p: f32) -> u32 {
    let M = P.num_bins;
    // p * M is within one bin of the answer (the edges are k (1 + eps) / M rounded to f32): one branch-free
    // correction step each way against the exact edges.
    var k = min(u32(max(p * f32(M), 0.0)), M - 1u);
    k -= select(0u, 1u, k > 0u && p <= edges[k]);
    k += select(0u, 1u, k + 1u < M && p > edges[k + 1u]);
    return k;
}

// Soft bin code: k with c_k < p <= c_{k+1} (weight split between k and k + 1), or an end bin | CLAMPED.
fn soft_code(p: f32) -> u32 {
    let M = P.num_bins;
    if (M == 1u || !(p > edges[0])) {
        return CLAMPED;
    }
    if (p > edges[M - 1u]) {
        return (M - 1u) | CLAMPED;
    }
    // As for hard bins: the estimate is within one segment; one correction step each way.
    var k = min(u32(max((p - edges[0]) / P.delta, 0.0)), M - 2u);
    k -= select(0u, 1u, k > 0u && p <= edges[k]);
    k += select(0u, 1u, k + 2u < M && p > edges[k + 1u]);
    return k;
}

// The two bins a voxel with soft code `code` touches, (k0, k1), and its kernel weights and their derivatives
// there, (w0, w1, dw0, dw1). A clamped voxel has all its weight in k0 (k1 = k0 with weight 0).
struct SoftPair {
    k0: u32,
    k1: u32,
    w: vec4<f32>,
}

fn soft_pair(code: u32, p: f32) -> SoftPair {
    let k0 = code & 0xffffu;
    if ((code & CLAMPED) != 0u) {
        return SoftPair(k0, k0, vec4<f32>(1.0, 0.0, 0.0, 0.0));
    }
    let inv = 1.0 / P.delta;
    let w0 = max(0.0, 1.0 - (p - edges[k0]) * inv);
    let w1 = max(0.0, 1.0 - (edges[k0 + 1u] - p) * inv);
    return SoftPair(k0, k0 + 1u, vec4<f32>(w0, w1, -inv, inv));
}

// Adds one voxel's Dice sums of class c to its slot (after the ACE slots).
fn dice_add(c: u32, pc: f32, y: f32, ace_slots: u32, lid: u32) {
    var d = vec3<f32>(pc * y, y, pc);
    if (P.squared_pred == 1u) {
        d = vec3<f32>(pc * y, y * y, pc * pc);
    }
    slot_add(ace_slots + c, lid, d);
}

// Cross-entropy class weight w_c (1 without weights), stored after the bin edges.
fn ce_weight(c: u32) -> f32 {
    return edges[P.weight_offset + c];
}

// Pass 1. Each workgroup takes `iters` x SWG voxels of one image; every invocation accumulates its own voxels
// into its own slots (ACE bins of the group's classes over [bin_start, bin_start + bin_count), then with
// `extra` the Dice and cross-entropy sums); the workgroup then sums each slot over its invocations in a
// fixed order and writes one partial per slot. No atomics: the same input gives the same bits on every run.
@compute @workgroup_size(16)
fn stats(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let wg = wid.y * nwg.x + wid.x;
    if (wg >= P.images * P.wg_per_image) {
        return;
    }
    let b = wg / P.wg_per_image;
    let tile = wg - b * P.wg_per_image;
    let V = P.voxels;
    let C = P.channels;
    let M = P.num_bins;
    let G = P.group_size;
    let NB = P.bin_count;
    let B0 = P.bin_start;
    let ace_slots = G * NB;
    var slots = ace_slots;
    if (P.extra == 1u) {
        slots = ace_slots + C + 1u;
    }
    for (var s = 0u; s < slots; s++) {
        let i = s * SWG + lid;
        h_w[i] = 0.0;
        h_p[i] = 0.0;
        h_y[i] = 0.0;
    }
    for (var it = 0u; it < P.iters; it++) {
        let v = (tile * P.iters + it) * SWG + lid;
        if (v >= V) {
            continue;
        }
        let base = P.input_shift + b * C * V + v;
        let st = softmax_stats(base);
        // Dice sums of the classes this dispatch bins for ACE reuse their p and y.
        let dice_here = P.extra == 1u && P.use_dice == 1u;
        let g0 = P.class_start + P.group_start;
        for (var g = 0u; g < G; g++) {
            let c = P.class_start + P.group_start + g;
            let pc = prob_of(base, c, st);
            let y = label_y(b, c, v);
            if (dice_here && c >= P.dice_start) {
                dice_add(c, pc, y, ace_slots, lid);
            }
            if (P.soft == 0u) {
                let k = hard_bin(pc) - B0;
                if (k < NB) {
                    slot_add(g * NB + k, lid, vec3<f32>(1.0, pc, y));
                }
            } else {
                let sp = soft_pair(soft_code(pc), pc);
                let k0 = sp.k0 - B0;
                let k1 = sp.k1 - B0;
                if (k0 < NB) {
                    slot_add(g * NB + k0, lid, vec3<f32>(sp.w.x, sp.w.x * pc, sp.w.x * y));
                }
                if (k1 < NB) {
                    slot_add(g * NB + k1, lid, vec3<f32>(sp.w.y, sp.w.y * pc, sp.w.y * y));
                }
            }
        }
        if (P.extra == 1u) {
            if (P.use_dice == 1u) {
                for (var c = P.dice_start; c < C; c++) {
                    if (c >= g0 && c < g0 + G) {
                        continue;
                    }
                    dice_add(c, prob_of(base, c, st), label_y(b, c, v), ace_slots, lid);
                }
            }
            if (P.use_ce == 1u) {
                // (weighted nll, smoothing term sum_c w_c (-log p_c), weight)
                var e = vec3<f32>(0.0);
                if (ONEHOT) {
                    for (var c = 0u; c < C; c++) {
                        let nl = -log_prob_of(base, c, st) * ce_weight(c);
                        e += vec3<f32>(nl * label_y(b, c, v), nl, 0.0);
                    }
                    e.z = 1.0;
                } else {
                    let l = u32(labels[P.label_shift + b * V + v]);
                    if (l != P.ignore_index && l < C) {
                        var smoothing = 0.0;
                        if (P.ce_smoothing == 1u) {
                            for (var c = 0u; c < C; c++) {
                                smoothing -= log_prob_of(base, c, st) * ce_weight(c);
                            }
                        }
                        let w = ce_weight(l);
                        e = vec3<f32>(-log_prob_of(base, l, st) * w, smoothing, w);
                    }
                }
                slot_add(ace_slots + C, lid, e);
            }
        }
    }

    // Combine: invocation i sums slots i, i + SWG, ... over the workgroup's invocations in a fixed order.
    workgroupBarrier();
    let row = (P.first_image + b) * P.wg_per_image + tile;
    for (var s = lid; s < slots; s += SWG) {
        var total = vec4<f32>(0.0);
        for (var j = 0u; j < SWG; j++) {
            let i = s * SWG + j;
            total += vec4<f32>(h_w[i], h_p[i], h_y[i], 0.0);
        }
        if (s < ace_slots) {
            let g = s / NB;
            let k = B0 + s - g * NB;
            table[(row * P.classes_out + P.group_start + g) * M + k] = total;
        } else {
            table[P.extra_offset + row * (C + 1u) + (s - ace_slots)] = total;
        }
    }
}

// Pass 3: d loss / d p from the coefficients (ACE bins, Dice sums), chained through the softmax Jacobian when
// the input is logits, dz_j = p_j (g_j - sum_c p_c g_c), plus the cross-entropy gradient, which is already
// with respect to the logits. One invocation per voxel.
@compute @workgroup_size(256)
fn grad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let t = (wid.y * nwg.x + wid.x) * WG + lid;
    let V = P.voxels;
    let C = P.channels;
    let M = P.num_bins;
    if (t >= P.images * V) {
        return;
    }
    let b = t / V;
    let v = t - b * V;
    let ab = P.first_image + b;
    let base = P.input_shift + b * C * V + v;
    let st = softmax_stats(base);
    var p: array<f32, 32>;
    var g: array<f32, 32>;
    var dot = 0.0;
    var dice_row = ab * C;
    if (P.dice_batch == 1u) {
        dice_row = 0u;
    }
    for (var c = 0u; c < C; c++) {
        let pc = prob_of(base, c, st);
        p[c] = pc;
        var gc = 0.0;
        if (P.classes_out > 0u && c >= P.class_start) {
            let bc = ab * P.classes_out + (c - P.class_start);
            let row = bc * M;
            var ga = 0.0;
            if (P.soft == 0u) {
                ga = table[row + hard_bin(pc)].x;
            } else {
                let sp = soft_pair(soft_code(pc), pc);
                let r = pc - label_y(b, c, v);
                let c0 = table[row + sp.k0];
                let c1 = table[row + sp.k1];
                ga = c0.x * (sp.w.x + sp.w.z * (r - c0.y)) + c1.x * (sp.w.y + sp.w.w * (r - c1.y));
            }
            gc = ga * upstream[bc * P.up_stride];
        }
        if (P.use_dice == 1u && c >= P.dice_start) {
            let k = table[P.extra_offset + dice_row + c];
            let y = label_y(b, c, v);
            var dden = 1.0;
            if (P.squared_pred == 1u) {
                dden = 2.0 * pc;
            }
            if (P.jaccard == 1u) {
                dden = 2.0 * (dden - y);
            }
            gc += (k.x * y + k.y * dden) * upstream[0];
        }
        g[c] = gc;
        dot += pc * gc;
    }
    var ce = vec4<f32>(0.0);
    var label = 0xffffffffu;
    if (P.use_ce == 1u) {
        ce = table[P.ce_offset];
        ce.x *= upstream[0];
        if (!ONEHOT) {
            label = u32(labels[P.label_shift + b * V + v]);
            if (label == P.ignore_index || label >= C) {
                ce.x = 0.0;
            }
        }
    }
    var wq = 0.0; // onehot: sum_c w_c q_c
    if (P.use_ce == 1u && ONEHOT) {
        for (var c = 0u; c < C; c++) {
            wq += ce_weight(c) * (ce.y * label_y(b, c, v) + ce.z);
        }
    }
    for (var c = 0u; c < C; c++) {
        var d = g[c];
        if (P.softmax == 1u) {
            d = p[c] * (g[c] - dot);
        }
        if (ce.x != 0.0) {
            // index labels: (1 - s) w_y (p_j - [j = y]) + (s / C)(p_j sum_c w_c - w_j)
            // one-hot: p_j sum_c w_c q_c - w_j q_j, with q = (1 - s) y + s / C
            var dc = 0.0;
            if (ONEHOT) {
                dc = p[c] * wq - ce_weight(c) * (ce.y * label_y(b, c, v) + ce.z);
            } else {
                dc = ce.y * ce_weight(label) * (p[c] - select(0.0, 1.0, c == label))
                    + ce.z * (p[c] * ce.w - ce_weight(c));
            }
            d += ce.x * dc;
        }
        grad_out[base + c * V] = logit_t(d);
    }
}
