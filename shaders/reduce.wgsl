// Deterministic two-pass row reductions for norm statistics, norm/bias gradients and split-K sums.
// Pass 1 (`row_partials`): workgroup (row, chunk) sums 4096 elements of one row (128 per invocation in order,
// then a fixed tree over its 32 invocations in workgroup memory) into partials[row * chunks + chunk]. Few
// invocations and tree levels: barriers are what costs most on CPU drivers. Pass 2 (`row_finish`): one invocation
// per output row adds its partials in a fixed order, optionally also over an outer axis (images).
// `sum_splits` adds per-split partial results of the weight gradient in split order.

struct Params {
    rows: u32,     // pass 1: rows; pass 2: output rows R; sum_splits: elements
    len: u32,      // pass 1: elements per row; sum_splits: splits
    chunks: u32,   // chunks per row
    mode: u32,     // row_partials: 0 sum a, 1 sum (a - mean)^2; row_partials_pair: 1 masks dy
    div: u32,      // pass 1: row / div = statistics index; pass 2: outer count
    nstat: u32,    // row_partials_pair: statistics count (variance at pstats[nstat + i]); pass 2: output offset
    eps: f32,      // row_partials_pair: variance epsilon; pass 2: scale
    _pad: u32,
}

const WG: u32 = 256u;       // row_finish, sum_splits
const RWG: u32 = 32u;       // row_partials
const PER: u32 = 128u;
const CHUNK: u32 = 4096u;   // RWG * PER

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> stats: array<f32>;
@group(0) @binding(3) var<storage, read_write> partials: array<f32>;

var<workgroup> tree: array<f32, 32>;
var<workgroup> tree2: array<f32, 32>;

// Workgroup w of pass 1 sums chunk `chunk` of row `row`.
struct Chunk {
    w: u32,
    row: u32,
    chunk: u32,
    in_range: bool,
}

fn chunk_of(wid: vec3<u32>, nwg: vec3<u32>) -> Chunk {
    var c: Chunk;
    c.w = wid.y * nwg.x + wid.x;
    c.in_range = c.w < p.rows * p.chunks;
    c.row = c.w / max(p.chunks, 1u);
    c.chunk = c.w - c.row * p.chunks;
    return c;
}

// The fixed tree over the 32 invocations' sums, for two sums at once. Only invocation 0's return value is the
// totals (it made the last additions itself, so no barrier is needed after them).
fn tree_sums(lid: u32, s: f32, s2: f32) -> vec2<f32> {
    tree[lid] = s;
    tree2[lid] = s2;
    for (var half = RWG / 2u; half > 0u; half /= 2u) {
        workgroupBarrier();
        if (lid < half) {
            tree[lid] += tree[lid + half];
            tree2[lid] += tree2[lid + half];
        }
    }
    return vec2<f32>(tree[0], tree2[0]);
}

@compute @workgroup_size(32)
fn row_partials(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let c = chunk_of(wid, nwg);
    var s = 0.0;
    if (c.in_range) {
        let si = c.row / p.div;
        var mean = 0.0;
        if (p.mode != 0u) {
            mean = stats[si];
        }
        let base = c.row * p.len;
        let start = c.chunk * CHUNK + lid;
        for (var k = 0u; k < PER; k++) {
            let i = start + k * RWG;
            if (i < p.len) {
                let x = a[base + i];
                if (p.mode == 0u) {
                    s += x;
                } else {
                    let d = x - mean;
                    s += d * d;
                }
            }
        }
    }
    let t = tree_sums(lid, s, 0.0);
    if (lid == 0u && c.in_range) {
        partials[c.w] = t.x;
    }
}

@group(0) @binding(1) var<storage, read> pdy: array<f32>;
@group(0) @binding(2) var<storage, read> px: array<f32>;
@group(0) @binding(3) var<storage, read> pstats: array<f32>;
@group(0) @binding(4) var<storage, read_write> psums: array<f32>;
@group(0) @binding(5) var<storage, read> pmask: array<f32>;
@group(0) @binding(6) var<storage, read_write> pprods: array<f32>;

// A norm's backward sums in one read of dy and x: psums gets sum dy, pprods sum dy * (x - mean) * rstd, each in
// the order and tree of `row_partials`. With mode 1, dy is first zeroed where pmask <= 0 (the ReLU that followed
// the norm: pmask is its output).
@compute @workgroup_size(32)
fn row_partials_pair(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    let c = chunk_of(wid, nwg);
    var s = 0.0;
    var s2 = 0.0;
    if (c.in_range) {
        let si = c.row / p.div;
        let mean = pstats[si];
        let rstd = inverseSqrt(pstats[p.nstat + si] + p.eps);
        let base = c.row * p.len;
        let start = c.chunk * CHUNK + lid;
        for (var k = 0u; k < PER; k++) {
            let i = start + k * RWG;
            if (i < p.len) {
                var g = pdy[base + i];
                if (p.mode != 0u) {
                    g = select(0.0, g, pmask[base + i] > 0.0);
                }
                s += g;
                s2 += g * (px[base + i] - mean) * rstd;
            }
        }
    }
    let t = tree_sums(lid, s, s2);
    if (lid == 0u && c.in_range) {
        psums[c.w] = t.x;
        pprods[c.w] = t.y;
    }
}

@group(0) @binding(1) var<storage, read> parts: array<f32>;
@group(0) @binding(2) var<storage, read_write> sums: array<f32>;

@compute @workgroup_size(256)
fn row_finish(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let r = (wid.y * nwg.x + wid.x) * WG + lid;
    if (r >= p.rows) {
        return;
    }
    var s = 0.0;
    for (var o = 0u; o < p.div; o++) {
        let base = (o * p.rows + r) * p.chunks;
        for (var c = 0u; c < p.chunks; c++) {
            s += parts[base + c];
        }
    }
    sums[p.nstat + r] = s * p.eps;
}

@compute @workgroup_size(256)
fn sum_splits(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let e = (wid.y * nwg.x + wid.x) * WG + lid;
    if (e >= p.rows) {
        return;
    }
    var s = 0.0;
    for (var k = 0u; k < p.len; k++) {
        s += parts[k * p.rows + e];
    }
    sums[e] = s;
}
