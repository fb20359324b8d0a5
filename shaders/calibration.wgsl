// Hard binning of probabilities per (image, class) for the calibration metrics, plus the counts the Dice
// score needs. Deterministic without float atomics: pass 1 (`partials`) gives every workgroup a chunk of
// 256 x 64 voxels of one (image, class) row and accumulates that chunk's histogram in workgroup memory with
// *integer* atomics only (exact, so the order does not matter): per bin `count | (sum_y << 16)` in one u32,
// and the sum of p as 64-bit fixed point (p * 2^49 split into two u32 words, with carry). Pass 2 (`finish`)
// sums the per-workgroup partials of each row in chunk order. (An earlier version kept private per-bin arrays
// per invocation; GL drivers lower dynamically indexed private arrays into code that takes minutes to compile.)
//
// Bin k is (e_k, e_{k+1}] with the f32 edges `linspace(0, 1 + eps, M + 1)` passed in `edges` (bucketize with
// right=False); bin 0 also holds p <= 0. Values outside [0, 1] are clamped (value and bin) and counted;
// non-finite values are skipped and counted.
//
// Partial record (u32, stride M + 6): per bin `count | (sum_y << 16)` (both <= 16384 per workgroup), then
// tp, pred, truth, clamped, nonfinite, bad_label. Float partials (stride M): per-bin sum of p. Record
// `row * row_chunks + chunk` holds chunk `chunk` of (image, class) row `row`. An image too large for one
// binding is binned in pieces of whole chunks (one dispatch each, `chunk_offset` and `row_offset` placing
// its records), so every chunk's record, and therefore the result, is the one the whole image gives.
// Final record (u32, stride 2M + 6): count[M], sum_y[M], tp, pred, truth, clamped, nonfinite, bad_label;
// final floats (stride M): sum_p[M].

struct Params {
    voxels: u32,       // voxels per image (pass 1: of the bound images, or of the bound piece of one image)
    channels: u32,     // channels of the probability tensor
    class_offset: u32, // first channel evaluated (1 when the background is excluded)
    classes: u32,      // channels evaluated
    bins: u32,         // M
    chunks: u32,       // pass 1: workgroups per (image, class) row of this dispatch
    groups: u32,       // pass 1: rows * chunks; pass 2: rows
    row_chunks: u32,   // chunk records per row in the partials (pass 2 sums them in order)
    chunk_offset: u32, // pass 1: the chunk of its row this dispatch's first chunk is (a piece's place)
    row_offset: u32,   // pass 1: the row this dispatch's first row is (a piece's image * classes)
    _pad0: u32,
    _pad1: u32,
}

const WG: u32 = 256u;
const PER_THREAD: u32 = 64u;
const NSCALAR: u32 = 6u;
const MAXB: u32 = 256u;
// Fixed point for the sum of p: hi word in units of 2^-17, lo word in units of 2^-49. A chunk sums at most
// 2^14 values <= 1, so the total stays below 2^63.
const HI_SCALE: f32 = 131072.0;     // 2^17
const LO_SCALE: f32 = 4294967296.0; // 2^32

@group(0) @binding(0) var<uniform> params: Params;

var<workgroup> wg_packed: array<atomic<u32>, 256>;
var<workgroup> wg_hi: array<atomic<u32>, 256>;
var<workgroup> wg_lo: array<atomic<u32>, 256>;
var<workgroup> wg_scalar: array<atomic<u32>, 6>;

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
    var k = min(u32(clamp(q * f32(m), 0.0, f32(m - 1u))), m - 1u);
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

@compute @workgroup_size(256)
fn partials(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let g = group_id(wid, nwg);
    if (g >= params.groups) {
        return;
    }
    let m = min(params.bins, MAXB);
    let row = g / params.chunks;
    let chunk = g - row * params.chunks;
    let n = row / params.classes;
    let c = row - n * params.classes + params.class_offset;
    let nv = params.voxels;
    let pbase = (n * params.channels + c) * nv;
    let lbase = n * nv;

    atomicStore(&wg_packed[lid], 0u);
    atomicStore(&wg_hi[lid], 0u);
    atomicStore(&wg_lo[lid], 0u);
    if (lid < NSCALAR) {
        atomicStore(&wg_scalar[lid], 0u);
    }
    workgroupBarrier();

    var tp = 0u;
    var pred = 0u;
    var truth = 0u;
    var clamped = 0u;
    var nonfinite = 0u;
    var bad = 0u;
    let start = chunk * WG * PER_THREAD;
    for (var i = 0u; i < PER_THREAD; i++) {
        let v = start + i * WG + lid;
        if (v < nv) {
            let p = probs[pbase + v];
            let lab = labels[lbase + v];
            if (lab < 0 || u32(lab) >= params.channels) {
                bad += 1u;
            }
            let y = select(0u, 1u, lab >= 0 && u32(lab) == c);
            if ((bitcast<u32>(p) & 0x7f800000u) == 0x7f800000u) {
                nonfinite += 1u;
                continue;
            }
            if (p < 0.0 || p > 1.0) {
                clamped += 1u;
            }
            let q = clamp(p, 0.0, 1.0);
            let k = bin_of(q, m);
            atomicAdd(&wg_packed[k], 1u + (y << 16u));
            // q * 2^49 = hi * 2^32 + lo, both exact for q >= 2^-26 (truncated below 2^-49 otherwise).
            let scaled = q * HI_SCALE;
            let whole = floor(scaled);
            let hi = u32(whole);
            let lo = u32((scaled - whole) * LO_SCALE);
            let old = atomicAdd(&wg_lo[k], lo);
            let carry = select(0u, 1u, old > 0xffffffffu - lo);
            if (hi + carry != 0u) {
                atomicAdd(&wg_hi[k], hi + carry);
            }
            let hit = select(0u, 1u, p >= 0.5);
            tp += hit * y;
            pred += hit;
            truth += y;
        }
    }
    atomicAdd(&wg_scalar[0], tp);
    atomicAdd(&wg_scalar[1], pred);
    atomicAdd(&wg_scalar[2], truth);
    atomicAdd(&wg_scalar[3], clamped);
    atomicAdd(&wg_scalar[4], nonfinite);
    atomicAdd(&wg_scalar[5], bad);
    workgroupBarrier();

    let stride_u = m + NSCALAR;
    let rec = (params.row_offset + row) * params.row_chunks + params.chunk_offset + chunk;
    if (lid < m) {
        part_u[rec * stride_u + lid] = atomicLoad(&wg_packed[lid]);
        let hi = f32(atomicLoad(&wg_hi[lid]));
        let lo = f32(atomicLoad(&wg_lo[lid]));
        part_f[rec * m + lid] = hi / HI_SCALE + lo / (HI_SCALE * LO_SCALE);
    }
    if (lid < NSCALAR) {
        part_u[rec * stride_u + m + lid] = atomicLoad(&wg_scalar[lid]);
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
    let chunks = params.row_chunks;
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
