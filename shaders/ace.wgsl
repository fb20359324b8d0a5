// mL1-ACE, the per-voxel passes: `stats` bins every voxel of every class (hard: square bins, soft: triangular
// kernels) and writes per-workgroup partial sums; `grad` writes d loss / d input from the per-bin coefficients.
// Layout: input [images, C, V] (logits or probabilities), labels [images, V] (class indices) or [images, C, V]
// (one-hot). The prelude defines `logit_t` (f32 or f16), `label_t` and `ONEHOT`.

struct Params {
    channels: u32,      // C
    voxels: u32,        // V
    num_bins: u32,      // M
    class_start: u32,   // 0, or 1 when the background channel is left out
    classes_out: u32,   // C' = C - class_start
    group_start: u32,   // stats: first output class of this dispatch's class group
    group_size: u32,    // stats: classes in the group
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
    bin_count: u32,     // stats: bins in the range (group_size x bin_count <= SLOTS)
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> input: array<logit_t>;
@group(0) @binding(2) var<storage, read> labels: array<label_t>;
// Hard: the M + 1 bin edges. Soft: the M kernel centres.
@group(0) @binding(3) var<storage, read> edges: array<f32>;
// stats: per-workgroup partials [image, workgroup, C', M] of (weight, weight * p, weight * y, 0).
// grad: per-bin coefficients [image, C', M] of (a_k, mean_p - mean_y, 0, 0).
@group(0) @binding(4) var<storage, read_write> table: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> upstream: array<f32>;
@group(0) @binding(6) var<storage, read_write> grad_out: array<logit_t>;

const WG: u32 = 256u;
const MAXC: u32 = 32u;       // most channels (private arrays)
const CLAMPED: u32 = 0x10000u; // soft: all weight to one end bin

const SWG: u32 = 64u;         // stats workgroup size
const SLOTS: u32 = 128u;      // private histogram slots: classes in the group x bins in the range
const ROUND: u32 = 16u;       // slots combined per round through workgroup memory
var<workgroup> red: array<vec4<f32>, 1024>; // ROUND x SWG

// Softmax statistics of one voxel (max and 1 / sum of exp), so p_c = exp(z_c - max) / sum; `base` indexes
// channel 0. For probability input, (0, 1) so that p_c = z_c... handled by prob_of.
fn softmax_stats(base: u32) -> vec2<f32> {
    if (P.softmax == 0u) {
        return vec2<f32>(0.0, 1.0);
    }
    let C = P.channels;
    let V = P.voxels;
    var m = -3.40282347e38;
    for (var c = 0u; c < C; c++) {
        m = max(m, f32(input[base + c * V]));
    }
    var s = 0.0;
    for (var c = 0u; c < C; c++) {
        s += exp(f32(input[base + c * V]) - m);
    }
    return vec2<f32>(m, 1.0 / s);
}

fn prob_of(base: u32, c: u32, st: vec2<f32>) -> f32 {
    let z = f32(input[base + c * P.voxels]);
    if (P.softmax == 0u) {
        return z;
    }
    return exp(z - st.x) * st.y;
}

// Probabilities of all C channels of one voxel; `base` indexes channel 0.
fn load_probs(base: u32, p: ptr<function, array<f32, 32>>) {
    let C = P.channels;
    let V = P.voxels;
    if (P.softmax == 0u) {
        for (var c = 0u; c < C; c++) {
            (*p)[c] = f32(input[base + c * V]);
        }
        return;
    }
    var m = -3.40282347e38;
    for (var c = 0u; c < C; c++) {
        let z = f32(input[base + c * V]);
        (*p)[c] = z;
        m = max(m, z);
    }
    var s = 0.0;
    for (var c = 0u; c < C; c++) {
        let e = exp((*p)[c] - m);
        (*p)[c] = e;
        s += e;
    }
    let inv = 1.0 / s;
    for (var c = 0u; c < C; c++) {
        (*p)[c] *= inv;
    }
}

// Label value y in {0, 1} (or a soft one-hot value) of class c; `b` and `v` are window-relative.
fn label_y(b: u32, c: u32, v: u32) -> f32 {
    if (ONEHOT) {
        return f32(labels[P.label_shift + (b * P.channels + c) * P.voxels + v]);
    }
    return select(0.0, 1.0, u32(labels[P.label_shift + b * P.voxels + v]) == c);
}

// Hard bin: the number of inner edges e_1..e_M strictly below p (torch.bucketize, right=False), at most M - 1.
fn hard_bin(p: f32) -> u32 {
    let M = P.num_bins;
    var k = min(u32(max(p * f32(M), 0.0)), M - 1u);
    loop {
        if (k > 0u && p <= edges[k]) { k -= 1u; } else { break; }
    }
    loop {
        if (k + 1u < M && p > edges[k + 1u]) { k += 1u; } else { break; }
    }
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
    var k = min(u32(max((p - edges[0]) / P.delta, 0.0)), M - 2u);
    loop {
        if (k > 0u && p <= edges[k]) { k -= 1u; } else { break; }
    }
    loop {
        if (k + 2u < M && p > edges[k + 1u]) { k += 1u; } else { break; }
    }
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

// Pass 1. Each workgroup takes `iters` x SWG voxels of one image; every invocation accumulates its own
// voxels' (weight, weight * p, weight * y) into a private histogram over the group's classes and the bins
// [bin_start, bin_start + bin_count); the workgroup then sums the histograms with a fixed-shape tree and
// writes one partial per slot. No atomics: the same input gives the same bits on every run.
@compute @workgroup_size(64)
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
    let G = P.group_size;
    let NB = P.bin_count;
    let B0 = P.bin_start;
    var acc: array<vec4<f32>, SLOTS>;
    for (var it = 0u; it < P.iters; it++) {
        let v = (tile * P.iters + it) * SWG + lid;
        if (v < V) {
            let base = P.input_shift + b * P.channels * V + v;
            let st = softmax_stats(base);
            for (var g = 0u; g < G; g++) {
                let c = P.class_start + P.group_start + g;
                let pc = prob_of(base, c, st);
                let y = label_y(b, c, v);
                if (P.soft == 0u) {
                    let k = hard_bin(pc) - B0;
                    if (k < NB) {
                        acc[g * NB + k] += vec4<f32>(1.0, pc, y, 0.0);
                    }
                } else {
                    let sp = soft_pair(soft_code(pc), pc);
                    let k0 = sp.k0 - B0;
                    let k1 = sp.k1 - B0;
                    if (k0 < NB) {
                        acc[g * NB + k0] += vec4<f32>(sp.w.x, sp.w.x * pc, sp.w.x * y, 0.0);
                    }
                    if (k1 < NB) {
                        acc[g * NB + k1] += vec4<f32>(sp.w.y, sp.w.y * pc, sp.w.y * y, 0.0);
                    }
                }
            }
        }
    }
    let slots = G * NB;
    let row = (P.first_image + b) * P.wg_per_image + tile;
    for (var r = 0u; r < slots; r += ROUND) {
        for (var j = 0u; j < ROUND; j++) {
            var a = vec4<f32>(0.0);
            if (r + j < slots) {
                a = acc[r + j];
            }
            red[j * SWG + lid] = a;
        }
        workgroupBarrier();
        // Two fixed-order steps: 64 invocations each sum a quarter of one slot's 64 values, then 16 sum the
        // quarters (fewer barriers than a binary tree).
        let q = lid & 3u;
        let j = lid >> 2u;
        var part = vec4<f32>(0.0);
        for (var i = 0u; i < SWG / 4u; i++) {
            part += red[j * SWG + q * (SWG / 4u) + i];
        }
        workgroupBarrier();
        red[lid] = part;
        workgroupBarrier();
        let s = r + lid;
        if (lid < ROUND && s < slots) {
            let total = red[4u * lid] + red[4u * lid + 1u] + red[4u * lid + 2u] + red[4u * lid + 3u];
            let g = s / NB;
            let k = B0 + s - g * NB;
            table[(row * P.classes_out + P.group_start + g) * M + k] = total;
        }
        workgroupBarrier();
    }
}

// Pass 3: d loss / d p from the bin coefficients, chained through the softmax Jacobian when the input is
// logits: dz_j = p_j (g_j - sum_c p_c g_c). One invocation per voxel.
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
    let base = P.input_shift + b * C * V + v;
    var p: array<f32, 32>;
    load_probs(base, &p);
    var g: array<f32, 32>;
    var dot = 0.0;
    for (var c = 0u; c < C; c++) {
        var gc = 0.0;
        if (c >= P.class_start) {
            let bc = (P.first_image + b) * P.classes_out + (c - P.class_start);
            let row = bc * M;
            let pc = p[c];
            if (P.soft == 0u) {
                gc = table[row + hard_bin(pc)].x;
            } else {
                let sp = soft_pair(soft_code(pc), pc);
                let r = pc - label_y(b, c, v);
                let c0 = table[row + sp.k0];
                let c1 = table[row + sp.k1];
                gc = c0.x * (sp.w.x + sp.w.z * (r - c0.y)) + c1.x * (sp.w.y + sp.w.w * (r - c1.y));
            }
            gc *= upstream[bc * P.up_stride];
        }
        g[c] = gc;
        dot += p[c] * gc;
    }
    for (var c = 0u; c < C; c++) {
        var d = g[c];
        if (P.softmax == 1u) {
            d = p[c] * (g[c] - dot);
        }
        grad_out[base + c * V] = logit_t(d);
    }
}
