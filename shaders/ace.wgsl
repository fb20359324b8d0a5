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
    group_size: u32,    // stats: classes in the group (<= CG)
    wg_per_image: u32,  // stats: workgroups per image
    images: u32,        // images in this dispatch (a window of the tensors)
    first_image: u32,   // absolute index of the window's first image
    input_shift: u32,   // elements between the input window's start and its first image
    label_shift: u32,   // same for the labels window
    soft: u32,          // 1: soft (triangular) binning
    softmax: u32,       // 1: input holds logits; 0: probabilities
    iters: u32,         // stats: tiles of WG voxels per workgroup
    up_stride: u32,     // grad: 0 for a scalar upstream gradient, 1 for one per (image, class)
    delta: f32,         // soft: kernel half-width (1 + eps) / M
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
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
const CG: u32 = 4u;          // classes binned together by one stats workgroup
const MAXC: u32 = 32u;       // most channels (private arrays)
const NONE: u32 = 0xffffffffu;
const CLAMPED: u32 = 0x10000u; // soft: all weight to one end bin

var<workgroup> sh_code: array<u32, 1024>; // CG * WG: bin code per (group class, tile voxel)
var<workgroup> sh_p: array<f32, 1024>;
var<workgroup> sh_y: array<f32, 1024>;

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

// Kernel weight w_k(p) and its derivative, for a voxel with soft code `code`, in bin k.
fn soft_weight(code: u32, p: f32, k: u32) -> vec2<f32> {
    let k0 = code & 0xffffu;
    if ((code & CLAMPED) != 0u) {
        return select(vec2<f32>(0.0), vec2<f32>(1.0, 0.0), k == k0);
    }
    if (k == k0) {
        return vec2<f32>(max(0.0, 1.0 - (p - edges[k0]) / P.delta), -1.0 / P.delta);
    }
    if (k == k0 + 1u) {
        return vec2<f32>(max(0.0, 1.0 - (edges[k0 + 1u] - p) / P.delta), 1.0 / P.delta);
    }
    return vec2<f32>(0.0);
}

// What tile entry `e` adds to bin k: (weight, weight * p, weight * y).
fn contribution(e: u32, k: u32) -> vec3<f32> {
    let code = sh_code[e];
    if (code == NONE) {
        return vec3<f32>(0.0);
    }
    let p = sh_p[e];
    var w = 0.0;
    if (P.soft == 0u) {
        w = select(0.0, 1.0, code == k);
    } else {
        w = soft_weight(code, p, k).x;
    }
    return vec3<f32>(w, w * p, w * sh_y[e]);
}

// Pass 1. Each workgroup takes `iters` tiles of WG voxels of one image. Per tile, every invocation bins its
// voxel for the group's classes into workgroup memory; then each (class, bin) slot is owned by R invocations
// that each sum a fixed segment of the tile, so sums need no atomics and are the same bits on every run.
@compute @workgroup_size(256)
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
    let slots = G * M;
    // R invocations per slot when the slots fit the workgroup, else up to 4 slots per invocation.
    var R = 1u;
    if (slots <= WG) {
        R = WG / slots;
    }
    let seg_len = (WG + R - 1u) / R;
    var acc: array<vec3<f32>, 4>;
    for (var q = 0u; q < 4u; q++) {
        acc[q] = vec3<f32>(0.0);
    }

    for (var it = 0u; it < P.iters; it++) {
        let v = (tile * P.iters + it) * WG + lid;
        if (v < V) {
            var p: array<f32, 32>;
            load_probs(P.input_shift + b * P.channels * V + v, &p);
            for (var g = 0u; g < G; g++) {
                let c = P.class_start + P.group_start + g;
                let pc = p[c];
                var code = 0u;
                if (P.soft == 0u) {
                    code = hard_bin(pc);
                } else {
                    code = soft_code(pc);
                }
                sh_code[g * WG + lid] = code;
                sh_p[g * WG + lid] = pc;
                sh_y[g * WG + lid] = label_y(b, c, v);
            }
        } else {
            for (var g = 0u; g < G; g++) {
                sh_code[g * WG + lid] = NONE;
            }
        }
        workgroupBarrier();
        if (slots <= WG) {
            if (lid < slots * R) {
                let s = lid / R;
                let e0 = (lid - s * R) * seg_len;
                let e1 = min(e0 + seg_len, WG);
                let g = s / M;
                let k = s - g * M;
                for (var e = e0; e < e1; e++) {
                    acc[0] += contribution(g * WG + e, k);
                }
            }
        } else {
            for (var q = 0u; q < 4u; q++) {
                let s = lid + q * WG;
                if (s < slots) {
                    let g = s / M;
                    let k = s - g * M;
                    for (var e = 0u; e < WG; e++) {
                        acc[q] += contribution(g * WG + e, k);
                    }
                }
            }
        }
        workgroupBarrier();
    }

    let row = (P.first_image + b) * P.wg_per_image + tile;
    if (slots <= WG) {
        // Combine each slot's R segment sums in a fixed order.
        sh_p[lid] = acc[0].x;
        sh_y[lid] = acc[0].y;
        sh_code[lid] = bitcast<u32>(acc[0].z);
        workgroupBarrier();
        if (lid < slots) {
            var t = vec3<f32>(0.0);
            for (var r = 0u; r < R; r++) {
                let i = lid * R + r;
                t += vec3<f32>(sh_p[i], sh_y[i], bitcast<f32>(sh_code[i]));
            }
            let g = lid / M;
            let k = lid - g * M;
            table[(row * P.classes_out + P.group_start + g) * M + k] = vec4<f32>(t, 0.0);
        }
    } else {
        for (var q = 0u; q < 4u; q++) {
            let s = lid + q * WG;
            if (s < slots) {
                let g = s / M;
                let k = s - g * M;
                table[(row * P.classes_out + P.group_start + g) * M + k] = vec4<f32>(acc[q], 0.0);
            }
        }
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
                let code = soft_code(pc);
                let k0 = code & 0xffffu;
                let y = label_y(b, c, v);
                for (var k = k0; k < min(k0 + 2u, M); k++) {
                    let w = soft_weight(code, pc, k);
                    let coef = table[row + k];
                    gc += coef.x * (w.x + w.y * ((pc - y) - coef.y));
                }
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
