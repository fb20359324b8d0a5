// Hard binning of probabilities per (image, class) for the calibration metrics, plus the counts the Dice
// score needs. Deterministic: no float atomics. Pass 1 (`partials`) gives every workgroup a chunk of
// 256 x 64 voxels of one (image, class) row; each invocation accumulates private per-bin sums, then a
// workgroup tree reduction (fixed order) writes one partial record per workgroup. Pass 2 (`finish`) sums
// the partials of each row in chunk order.
//
// Bin k is (e_k, e_{k+1}] with the f32 edges `linspace(0, 1 + eps, M + 1)` passed in `edges` (bucketize with
// right=False); bin 0 also holds p <= 0. Values outside [0, 1] are clamped (value and bin) and counted;
// non-finite values are skipped and counted.
//
// Partial record (u32, stride M + 6): per bin `count | (sum_y << 16)` (both <= 16384 per workgroup), then
// tp, pred, truth, clamped, nonfinite, bad_label. Float partials (stride M): per-bin sum of p.
// Final record (u32, stride 2M + 6): count[M], sum_y[M], tp, pred, truth, clamped, nonfinite, bad_label;
// final floats (stride M): sum_p[M].

struct Params {
    voxels: u32,       // voxels per image
    channels: u32,     // channels of the probability tensor
    class_offset: u32, // first channel evaluated (1 when the background is excluded)
    classes: u32,      // channels evaluated
    bins: u32,         // M
    chunks: u32,       // workgroups per (image, class) row in pass 1
    groups: u32,       // pass 1: rows * chunks; pass 2: rows
    _pad: u32,
}

const WG: u32 = 256u;
const PER_THREAD: u32 = 64u;
const NSCALAR: u32 = 6u;
const LANES: u32 = 16u; // values reduced together per round of the tree

@group(0) @binding(0) var<uniform> params: Params;

var<workgroup> red: array<u32, 4096>; // LANES x WG

fn group_id(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.y * nwg.x + wid.x;
}

// ---------------------------------------------------------------------------------------------------------
// Pass 1

@group(0) @binding(1) var<storage, read> probs: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<i32>;
@group(0) @binding(3) var<storage, read> edges: array<f32>;
@group(0) @binding(4) var<storage, read_write> part_u: array<u32>;
@group(0) @binding(5) var<storage, read_write> part_f: array<f32>;

// The hard bin of q in [0, 1]: a guess from q * M (off by at most one), corrected against the exact edges.
fn bin_of(q: f32, m: u32) -> u32 {
    var k = u32(clamp(q * f32(m), 0.0, f32(m - 1u)));
    for (var i = 0u; i < 2u; i++) {
        if (k > 0u && q <= edges[k]) {
            k -= 1u;
        }
    }
    for (var i = 0u; i < 2u; i++) {
        if (k + 1u < m && q > edges[k + 1u]) {
            k += 1u;
        }
    }
    return k;
}

fn tree_u(lid: u32) {
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        workgroupBarrier();
        if (lid < s) {
            for (var j = 0u; j < LANES; j++) {
                red[j * WG + lid] += red[j * WG + lid + s];
            }
        }
    }
    workgroupBarrier();
}

fn tree_f(lid: u32) {
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        workgroupBarrier();
        if (lid < s) {
            for (var j = 0u; j < LANES; j++) {
                let a = bitcast<f32>(red[j * WG + lid]);
                let b = bitcast<f32>(red[j * WG + lid + s]);
                red[j * WG + lid] = bitcast<u32>(a + b);
            }
        }
    }
    workgroupBarrier();
}

@compute @workgroup_size(256)
fn partials(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let g = group_id(wid, nwg);
    if (g >= params.groups) {
        return;
    }
    let m = params.bins;
    let row = g / params.chunks;
    let chunk = g - row * params.chunks;
    let n = row / params.classes;
    let c = row - n * params.classes + params.class_offset;
    let nv = params.voxels;
    let pbase = (n * params.channels + c) * nv;
    let lbase = n * nv;

    var packed: array<u32, 256>;
    var sump: array<f32, 256>;
    for (var k = 0u; k < m; k++) {
        packed[k] = 0u;
        sump[k] = 0.0;
    }
    var sc: array<u32, 6>; // tp, pred, truth, clamped, nonfinite, bad_label
    for (var j = 0u; j < NSCALAR; j++) {
        sc[j] = 0u;
    }

    let start = chunk * WG * PER_THREAD;
    for (var i = 0u; i < PER_THREAD; i++) {
        let v = start + i * WG + lid;
        if (v < nv) {
            let p = probs[pbase + v];
            let lab = labels[lbase + v];
            if (lab < 0 || u32(lab) >= params.channels) {
                sc[5] += 1u;
            }
            let y = select(0u, 1u, lab >= 0 && u32(lab) == c);
            if ((bitcast<u32>(p) & 0x7f800000u) == 0x7f800000u) {
                sc[4] += 1u;
                continue;
            }
            if (p < 0.0 || p > 1.0) {
                sc[3] += 1u;
            }
            let q = clamp(p, 0.0, 1.0);
            let k = bin_of(q, m);
            packed[k] += 1u + (y << 16u);
            sump[k] += q;
            let hit = select(0u, 1u, p >= 0.5);
            sc[0] += hit * y;
            sc[1] += hit;
            sc[2] += y;
        }
    }

    let stride_u = m + NSCALAR;
    for (var k0 = 0u; k0 < m; k0 += LANES) {
        for (var j = 0u; j < LANES; j++) {
            let k = k0 + j;
            red[j * WG + lid] = select(0u, packed[min(k, 255u)], k < m);
        }
        tree_u(lid);
        if (lid < LANES && k0 + lid < m) {
            part_u[g * stride_u + k0 + lid] = red[lid * WG];
        }
        workgroupBarrier(); // the results are read before the next round overwrites them
        for (var j = 0u; j < LANES; j++) {
            let k = k0 + j;
            red[j * WG + lid] = bitcast<u32>(select(0.0, sump[min(k, 255u)], k < m));
        }
        tree_f(lid);
        if (lid < LANES && k0 + lid < m) {
            part_f[g * m + k0 + lid] = bitcast<f32>(red[lid * WG]);
        }
        workgroupBarrier();
    }
    for (var j = 0u; j < LANES; j++) {
        red[j * WG + lid] = select(0u, sc[min(j, NSCALAR - 1u)], j < NSCALAR);
    }
    tree_u(lid);
    if (lid < NSCALAR) {
        part_u[g * stride_u + m + lid] = red[lid * WG];
    }
}

// ---------------------------------------------------------------------------------------------------------
// Pass 2: one workgroup per row; invocation s sums slot s of the row's partials in chunk order.

@group(0) @binding(1) var<storage, read> in_u: array<u32>;
@group(0) @binding(2) var<storage, read> in_f: array<f32>;
@group(0) @binding(3) var<storage, read_write> out_u: array<u32>;
@group(0) @binding(4) var<storage, read_write> out_f: array<f32>;

@compute @workgroup_size(256)
fn finish(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let row = group_id(wid, nwg);
    if (row >= params.groups) {
        return;
    }
    let m = params.bins;
    let chunks = params.chunks;
    let stride_u = m + NSCALAR;
    let out_stride = 2u * m + NSCALAR;
    for (var s = lid; s < m + NSCALAR; s += WG) {
        if (s < m) {
            var cnt = 0u;
            var sy = 0u;
            var sp = 0.0;
            for (var ch = 0u; ch < chunks; ch++) {
                let pr = row * chunks + ch;
                let pu = in_u[pr * stride_u + s];
                cnt += pu & 0xffffu;
                sy += pu >> 16u;
                sp += in_f[pr * m + s];
            }
            out_u[row * out_stride + s] = cnt;
            out_u[row * out_stride + m + s] = sy;
            out_f[row * m + s] = sp;
        } else {
            var t = 0u;
            for (var ch = 0u; ch < chunks; ch++) {
                t += in_u[(row * chunks + ch) * stride_u + s];
            }
            out_u[row * out_stride + m + s] = t;
        }
    }
}
