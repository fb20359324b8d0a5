// Fused segmentation losses, the per-voxel passes. `stats` reads the input and labels once and accumulates
// every statistic the losses need: mL1-ACE bins (hard: square bins, soft: triangular kernels), Dice sums and
// cross-entropy sums, as per-workgroup partials. `grad` writes d loss / d input in one more pass from the
// coefficients that `loss_reduce.wgsl:finalize` derived from those statistics.
// Layout: input [images, C, V] (logits or probabilities), labels [images, V] (class indices) or [images, C, V]
// (one-hot). The prelude defines `logit_t` (f32 or f16), `label_t` and `ONEHOT`. An image over one storage
// binding is bound in pieces of whole stats tiles, each [1, C, L] (its channels copied together): V is then the
// piece's L, and `tile_offset` (stats) or `first_image` (grad) places the piece, so every tile's partials and
// every voxel's gradient are those of the whole image.
//
// The shape of the problem is fixed per pipeline (override constants): the class loops unroll, a voxel's
// channels live in registers, each input value and label is loaded once, and switched-off terms compile away.

override CH: u32 = 4u;           // channels C, 1..=MAXC
override GROUP: u32 = 4u;        // stats: ACE classes binned by this dispatch (0: none)
override SOFT: bool = false;     // soft (triangular) binning
override SOFTMAX: bool = true;   // the input holds logits (false: probabilities)
override USE_DICE: bool = false;
override USE_CE: bool = false;
override EXTRA: bool = false;    // stats: this dispatch also sums the Dice and cross-entropy statistics
override SWG: u32 = 16u;         // stats: invocations per workgroup
override HIST: u32 = 2048u;      // stats: slots per invocation x SWG, the vec4 entries of `hist`

struct Params {
    voxels: u32,        // V
    num_bins: u32,      // M
    class_start: u32,   // ACE: 0, or 1 when the background channel is left out
    classes_out: u32,   // ACE: C' = C - class_start (0 when ACE is off)
    group_start: u32,   // stats: first ACE class of this dispatch's class group
    wg_per_image: u32,  // workgroups per image
    images: u32,        // images in this dispatch (a window of the tensors)
    first_image: u32,   // absolute index of the window's first image
    input_shift: u32,   // elements between the input window's start and its first image
    label_shift: u32,   // same for the labels window
    iters: u32,         // stats: voxels per invocation (SWG apart)
    up_stride: u32,     // grad: 0 for a scalar upstream gradient, 1 for one per (image, class)
    delta: f32,         // soft: kernel half-width (1 + eps) / M
    half_step: f32,     // soft: (1 + eps) / (2 M), the step of the grid the centres are taken from
    bin_start: u32,     // stats: first bin of this dispatch's range
    bin_count: u32,     // stats: bins in the range
    extra_offset: u32,  // stats: where the extra partials start in `table`; grad: the Dice coefficients
    ce_offset: u32,     // grad: where the cross-entropy coefficients start in `table`
    ignore_index: u32,  // cross-entropy: voxels with this label count for nothing
    squared_pred: u32,  // Dice: 1 for sums of p^2 and y^2, 0 for sums of p and y
    dice_start: u32,    // Dice: 0, or 1 when the background channel is left out
    jaccard: u32,       // Dice: 1 for the Jaccard (IoU) form
    dice_batch: u32,    // Dice: 1 when sums run over the whole batch (one coefficient per class)
    weight_offset: u32, // cross-entropy: where the C class weights start in `edges`
    ce_smoothing: u32,  // cross-entropy: 1 if label smoothing is on (the smoothing sum is needed)
    tile_offset: u32,   // stats: the partial row of this dispatch's first tile beyond the image's (a piece of
                        // one image bound alone: its image's first row plus the piece's first tile)
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> input: array<logit_t>;
@group(0) @binding(2) var<storage, read> labels: array<label_t>;
// Hard: the M + 1 bin edges (soft centres are computed), then from `weight_offset` C cross-entropy weights.
@group(0) @binding(3) var<storage, read> edges: array<f32>;
// stats: per-workgroup partials: ACE [image, workgroup, C', M] of (weight, weight * p, weight * y, 0), then
// from `extra_offset` [image, workgroup, C + 1]: per channel the Dice sums (sum p y, sum y^2, sum p^2, 0), and
// the cross-entropy sums (weighted nll, smoothing term, weight, 0).
// grad: ACE coefficients [image, C', M]: hard (a_k, d_k, 0, 0), d_k = mean_p - mean_y; soft, per segment,
// (a_{k+1}, a_k - a_{k+1}, a_k d_k - a_{k+1} d_{k+1}, 0) (see `loss_reduce.wgsl:finalize`); Dice
// coefficients from `extra_offset`, [image or 1, C] of (A, B, 0, 0) with d Dice / d p = A y + B d(den)/dp;
// cross-entropy from `ce_offset`: (scale, 1 - smoothing, smoothing / C, sum of class weights).
@group(0) @binding(4) var<storage, read_write> table: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> upstream: array<f32>;
@group(0) @binding(6) var<storage, read_write> grad_out: array<logit_t>;

const WG: u32 = 256u;
const MAXC: u32 = 32u;
const TOP: f32 = 1.00000011920928955; // 1 + eps, the last edge
// Hard bins: floor(p M) is the bin unless p M lies this close to an integer (the edges k (1 + eps) / M, rounded
// to f32, sit within 1e-4 of k / M for M <= 256); only then are the exact edges read.
const NEAR_EDGE: f32 = 0.0009765625;
// Hard bins with class-index labels keep the count and the label count in one slot: count + PACK * count_y,
// exact in f32 while counts stay below PACK (at most 2048 voxels per invocation: below 2^24 in all).
const PACK: f32 = 4096.0;

// Stats: each invocation owns HIST / SWG histogram slots (vec4) in workgroup memory, slot s of invocation i
// at s * SWG + i (no two invocations touch the same entry; no atomics). Per bin or segment:
//   hard bins: one slot, (count, sum p, sum y, 0); with index labels (count + PACK * label count, sum p, -, -)
//   soft bins: one segment k (voxels with c_k < p <= c_{k+1}, which touch bins k and k + 1) takes two slots:
//     index labels: (sum w0, sum w0 p, sum w1, sum w1 p) over the voxels with label value 0, then over those
//     with 1 (a voxel updates one slot of 4 values); one-hot: that over all voxels, then (sum w0 y, sum w1 y).
//   Bin k = segment k's first halves + segment k - 1's second halves.
// Workgroup memory rather than private arrays: dynamically indexed private arrays compile to huge if-ladders
// on some GL drivers (minutes on llvmpipe). The host sizes HIST and SWG to the adapter's workgroup memory.
var<workgroup> hist: array<vec4<f32>, HIST>;

// Hard bins with index labels pack the label count into the count (see PACK).
fn packed() -> bool {
    return !SOFT && !ONEHOT;
}

// One voxel: its class probabilities (or the input itself for probability input), its log-probabilities
// (logits only) and its label values.
struct Voxel {
    p: array<f32, MAXC>,
    logp: array<f32, MAXC>,
    y: array<f32, MAXC>,
    label: u32, // index labels: the class (one-hot: unused)
}

// `b` and `v` are window-relative; `base` indexes channel 0 of the voxel in `input`.
fn load_voxel(b: u32, v: u32, base: u32, want_logp: bool) -> Voxel {
    let V = P.voxels;
    var x: Voxel;
    for (var c = 0u; c < CH; c++) {
        x.p[c] = f32(input[base + c * V]);
    }
    if (SOFTMAX) {
        var m = x.p[0];
        for (var c = 1u; c < CH; c++) {
            m = max(m, x.p[c]);
        }
        var s = 0.0;
        for (var c = 0u; c < CH; c++) {
            let d = x.p[c] - m;
            x.logp[c] = d;
            let e = exp(d);
            x.p[c] = e;
            s += e;
        }
        let inv = 1.0 / s;
        for (var c = 0u; c < CH; c++) {
            x.p[c] *= inv;
        }
        if (want_logp) {
            let lse = log(s);
            for (var c = 0u; c < CH; c++) {
                x.logp[c] -= lse;
            }
        }
    }
    if (ONEHOT) {
        for (var c = 0u; c < CH; c++) {
            x.y[c] = f32(labels[P.label_shift + (b * CH + c) * V + v]);
        }
    } else {
        x.label = u32(labels[P.label_shift + b * V + v]);
        for (var c = 0u; c < CH; c++) {
            x.y[c] = select(0.0, 1.0, x.label == c);
        }
    }
    return x;
}

// Hard bin: the number of inner edges e_1..e_M strictly below p (torch.bucketize, right=False), at most M - 1.
fn hard_bin(p: f32) -> u32 {
    let M = P.num_bins;
    let t = p * f32(M);
    var k = min(u32(max(t, 0.0)), M - 1u);
    let f = fract(t);
    if (f < NEAR_EDGE || f > 1.0 - NEAR_EDGE) {
        // Near an edge (also p <= 0 and p >= 1): one correction step each way against the exact edges.
        k -= select(0u, 1u, k > 0u && p <= edges[k]);
        k += select(0u, 1u, k + 1u < M && p > edges[k + 1u]);
    }
    return k;
}

// Soft-binning centre k, computed as the reference's grid linspace(0, 1 + eps, 2M + 1) computes its entry
// 2k + 1 (its first half counts up from 0, its second half down from 1 + eps).
fn centre(k: u32) -> f32 {
    let j = 2u * k + 1u;
    let M = P.num_bins;
    return select(TOP - P.half_step * f32(2u * M - j), P.half_step * f32(j), j < M);
}

// The segment of a soft-binned p, k with c_k < p <= c_{k+1} (it touches bins k and k + 1), its kernel weights
// there (w0, w1) and d w1 / d p = -d w0 / d p. At or below the first centre all weight goes to bin 0
// (w = (1, 0)), above the last to bin M - 1 (k = M - 2, w = (0, 1)), with derivative 0.
struct SoftPair {
    k: u32,
    w: vec3<f32>,
}

fn soft_pair(p: f32) -> SoftPair {
    let M = P.num_bins;
    if (M == 1u) {
        return SoftPair(0u, vec3<f32>(1.0, 0.0, 0.0));
    }
    let inv = 1.0 / P.delta;
    let first = centre(0u);
    // floor(t) is the segment unless t lies near an integer (the centres sit within a few ulp of
    // first + k delta); only then one correction step each way against the centres themselves.
    let t = max((p - first) * inv, 0.0);
    var k = min(u32(t), M - 2u);
    let f = fract(t);
    if (f < NEAR_EDGE || f > 1.0 - NEAR_EDGE) {
        k -= select(0u, 1u, k > 0u && p <= centre(k));
        k += select(0u, 1u, k + 2u < M && p > centre(k + 1u));
    }
    var w = vec3<f32>(max(0.0, 1.0 - (p - centre(k)) * inv), max(0.0, 1.0 - (centre(k + 1u) - p) * inv), inv);
    w = select(w, vec3<f32>(1.0, 0.0, 0.0), !(p > first));
    w = select(w, vec3<f32>(0.0, 1.0, 0.0), p > centre(M - 1u));
    return SoftPair(k, w);
}

// Cross-entropy class weight w_c (1 without weights), stored after the bin edges.
fn ce_weight(c: u32) -> f32 {
    return edges[P.weight_offset + c];
}

// Pass 1. Each workgroup takes `iters` x SWG voxels of one image; every invocation accumulates its own voxels
// into its own slots (ACE bins of the group's classes over [bin_start, bin_start + bin_count)) and, with
// EXTRA, the Dice and cross-entropy sums in registers; the workgroup then sums each slot over its invocations
// in a fixed order and writes one partial per slot. No atomics: the same input gives the same bits every run.
@compute @workgroup_size(SWG)
fn stats(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let wg = wid.y * nwg.x + wid.x;
    if (wg >= P.images * P.wg_per_image) {
        return;
    }
    let b = wg / P.wg_per_image;
    let tile = wg - b * P.wg_per_image;
    let V = P.voxels;
    let M = P.num_bins;
    let NB = P.bin_count;
    let B0 = P.bin_start;
    let g0 = P.class_start + P.group_start;
    // Slots per class: the bins, or for soft bins the segments B0 - 1 .. B0 + NB - 1.
    let per_class = select(NB, 2u * (NB + 1u), SOFT);
    for (var s = 0u; s < GROUP * per_class; s++) {
        hist[s * SWG + lid] = vec4<f32>(0.0);
    }
    var dice: array<vec3<f32>, MAXC>;
    var ce = vec3<f32>(0.0);
    var cw: array<f32, MAXC>; // cross-entropy class weights, read once
    if (EXTRA && USE_CE) {
        for (var c = 0u; c < CH; c++) {
            cw[c] = ce_weight(c);
        }
    }
    for (var it = 0u; it < P.iters; it++) {
        let v = (tile * P.iters + it) * SWG + lid;
        if (v >= V) {
            break;
        }
        let x = load_voxel(b, v, P.input_shift + b * CH * V + v, EXTRA && USE_CE);
        for (var c = 0u; c < CH; c++) {
            if (c < g0 || c >= g0 + GROUP) {
                continue;
            }
            let g = c - g0;
            let pc = x.p[c];
            let y = x.y[c];
            if (!SOFT) {
                let k = hard_bin(pc) - B0;
                if (k < NB) {
                    let i = (g * NB + k) * SWG + lid;
                    if (packed()) {
                        hist[i] += vec4<f32>(1.0 + PACK * y, pc, 0.0, 0.0);
                    } else {
                        hist[i] += vec4<f32>(1.0, pc, y, 0.0);
                    }
                }
            } else {
                let sp = soft_pair(pc);
                let k = sp.k + 1u - B0;
                if (k <= NB) {
                    let halves = vec4<f32>(sp.w.x, sp.w.x * pc, sp.w.y, sp.w.y * pc);
                    let i = (g * per_class + 2u * k) * SWG + lid;
                    if (ONEHOT) {
                        hist[i] += halves;
                        hist[i + SWG].x += sp.w.x * y;
                        hist[i + SWG].y += sp.w.y * y;
                    } else {
                        hist[i + select(0u, SWG, y != 0.0)] += halves;
                    }
                }
            }
        }
        if (EXTRA && USE_DICE) {
            for (var c = 0u; c < CH; c++) {
                let pc = x.p[c];
                let y = x.y[c];
                if (P.squared_pred == 1u) {
                    dice[c] += vec3<f32>(pc * y, y * y, pc * pc);
                } else {
                    dice[c] += vec3<f32>(pc * y, y, pc);
                }
            }
        }
        if (EXTRA && USE_CE) {
            // (weighted nll, smoothing term sum_c w_c (-log p_c), weight)
            if (ONEHOT) {
                for (var c = 0u; c < CH; c++) {
                    let nl = -x.logp[c] * cw[c];
                    ce += vec3<f32>(nl * x.y[c], nl, 0.0);
                }
                ce.z += 1.0;
            } else if (x.label != P.ignore_index && x.label < CH) {
                var smoothing = 0.0;
                var nll = 0.0;
                var w = 0.0;
                for (var c = 0u; c < CH; c++) {
                    let wc = cw[c];
                    if (P.ce_smoothing == 1u) {
                        smoothing -= x.logp[c] * wc;
                    }
                    if (x.label == c) {
                        nll = -x.logp[c] * wc;
                        w = wc;
                    }
                }
                ce += vec3<f32>(nll, smoothing, w);
            }
        }
    }

    // Combine: invocation i sums output slots i, i + SWG, ... over the workgroup's invocations in a fixed order.
    workgroupBarrier();
    let row = (P.first_image + b) * P.wg_per_image + P.tile_offset + tile;
    for (var s = lid; s < GROUP * NB; s += SWG) {
        let g = s / NB;
        let k = s - g * NB;
        var total = vec4<f32>(0.0);
        for (var j = 0u; j < SWG; j++) {
            if (!SOFT) {
                let i = s * SWG + j;
                let a = hist[i];
                if (packed()) {
                    let ny = floor(a.x / PACK);
                    total += vec4<f32>(a.x - PACK * ny, a.y, ny, 0.0);
                } else {
                    total += vec4<f32>(a.xyz, 0.0);
                }
            } else {
                // Segment k's first halves and segment k - 1's second halves (slot pairs k + 1 and k).
                let first = (g * per_class + 2u * (k + 1u)) * SWG + j;
                let second = (g * per_class + 2u * k) * SWG + j;
                let f0 = hist[first];
                let f1 = hist[first + SWG];
                let s0 = hist[second];
                let s1 = hist[second + SWG];
                if (ONEHOT) {
                    total += vec4<f32>(f0.x + s0.z, f0.y + s0.w, f1.x + s1.y, 0.0);
                } else {
                    total += vec4<f32>(f0.x + f1.x + s0.z + s1.z, f0.y + f1.y + s0.w + s1.w, f1.x + s1.z, 0.0);
                }
            }
        }
        table[(row * P.classes_out + P.group_start + g) * M + B0 + k] = total;
    }
    if (EXTRA) {
        // The Dice and cross-entropy sums reuse the histogram memory once the bins are out.
        workgroupBarrier();
        for (var c = 0u; c < CH; c++) {
            let d = select(vec3<f32>(0.0), dice[c], USE_DICE && c >= P.dice_start);
            hist[c * SWG + lid] = vec4<f32>(d, 0.0);
        }
        hist[CH * SWG + lid] = vec4<f32>(ce, 0.0);
        workgroupBarrier();
        for (var s = lid; s <= CH; s += SWG) {
            var total = vec4<f32>(0.0);
            for (var j = 0u; j < SWG; j++) {
                total += hist[s * SWG + j];
            }
            table[P.extra_offset + row * (CH + 1u) + s] = total;
        }
    }
}

// Pass 3: d loss / d p from the coefficients (ACE bins, Dice sums), chained through the softmax Jacobian when
// the input is logits, dz_j = p_j (g_j - sum_c p_c g_c), plus the cross-entropy gradient, which is already
// with respect to the logits. Each invocation takes GV voxels, WG apart, of one image; the per-image
// coefficients are read once, before them.
const GV: u32 = 8u;

@compute @workgroup_size(256)
fn grad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let wg = wid.y * nwg.x + wid.x;
    let b = wg / P.wg_per_image;
    if (b >= P.images) {
        return;
    }
    let tile = wg - b * P.wg_per_image;
    let V = P.voxels;
    let M = P.num_bins;
    let ab = P.first_image + b;
    var dice_row = ab * CH;
    if (P.dice_batch == 1u) {
        dice_row = 0u;
    }
    // Per class: the ACE coefficient row and upstream gradient, the Dice coefficients (A, B) scaled by the
    // upstream gradient, the cross-entropy weight.
    var ace_row: array<u32, MAXC>;
    var ace_up: array<f32, MAXC>;
    var dice_k: array<vec2<f32>, MAXC>;
    var cw: array<f32, MAXC>;
    var ce = vec4<f32>(0.0);
    for (var c = 0u; c < CH; c++) {
        if (P.classes_out > 0u && c >= P.class_start) {
            let bc = ab * P.classes_out + (c - P.class_start);
            ace_row[c] = bc * M;
            ace_up[c] = upstream[bc * P.up_stride];
        }
        if (USE_DICE && c >= P.dice_start) {
            dice_k[c] = table[P.extra_offset + dice_row + c].xy * upstream[0];
        }
        if (USE_CE) {
            cw[c] = ce_weight(c);
        }
    }
    if (USE_CE) {
        ce = table[P.ce_offset];
        ce.x *= upstream[0];
    }
    for (var i = 0u; i < GV; i++) {
        let v = (tile * GV + i) * WG + lid;
        if (v >= V) {
            break;
        }
        let base = P.input_shift + b * CH * V + v;
        let x = load_voxel(b, v, base, false);
        var g: array<f32, MAXC>;
        var dot = 0.0;
        for (var c = 0u; c < CH; c++) {
            let pc = x.p[c];
            var gc = 0.0;
            if (P.classes_out > 0u && c >= P.class_start) {
                let row = ace_row[c];
                var ga = 0.0;
                if (!SOFT) {
                    ga = table[row + hard_bin(pc)].x;
                } else {
                    let sp = soft_pair(pc);
                    let r = pc - x.y[c];
                    // Bins k and k + 1 from one entry (see `loss_reduce.wgsl:finalize`).
                    let e = table[row + sp.k].xyz;
                    ga = e.x + e.y * sp.w.x + (e.z - e.y * r) * sp.w.z;
                }
                gc = ga * ace_up[c];
            }
            if (USE_DICE && c >= P.dice_start) {
                let y = x.y[c];
                var dden = 1.0;
                if (P.squared_pred == 1u) {
                    dden = 2.0 * pc;
                }
                if (P.jaccard == 1u) {
                    dden = 2.0 * (dden - y);
                }
                gc += dice_k[c].x * y + dice_k[c].y * dden;
            }
            g[c] = gc;
            dot += pc * gc;
        }
        var ce_scale = ce.x;
        var w_label = 0.0; // index labels: w_y
        var wq = 0.0;      // one-hot: sum_c w_c q_c
        if (USE_CE) {
            if (ONEHOT) {
                for (var c = 0u; c < CH; c++) {
                    wq += cw[c] * (ce.y * x.y[c] + ce.z);
                }
            } else {
                if (x.label == P.ignore_index || x.label >= CH) {
                    ce_scale = 0.0;
                }
                for (var c = 0u; c < CH; c++) {
                    w_label = select(w_label, cw[c], x.label == c);
                }
            }
        }
        for (var c = 0u; c < CH; c++) {
            var d = g[c];
            if (SOFTMAX) {
                d = x.p[c] * (g[c] - dot);
            }
            if (USE_CE) {
                // index labels: (1 - s) w_y (p_j - [j = y]) + (s / C)(p_j sum_c w_c - w_j)
                // one-hot: p_j sum_c w_c q_c - w_j q_j, with q = (1 - s) y + s / C
                var dc = 0.0;
                if (ONEHOT) {
                    dc = x.p[c] * wq - cw[c] * (ce.y * x.y[c] + ce.z);
                } else {
                    dc = ce.y * w_label * (x.p[c] - x.y[c]) + ce.z * (x.p[c] * ce.w - cw[c]);
                }
                d += ce_scale * dc;
            }
            grad_out[base + c * V] = logit_t(d);
        }
    }
}
