// Convolution over NCDHW tensors (2D runs as depth 1), any kernel size, stride and padding, as three
// deterministic gather kernels (no atomics):
//   forward         out[n, co, o]  = bias[co] + sum_{ci, tap} w[co, ci, tap] * x[n, ci, o * s - p + tap]
//   backward_data   dx[n, ci, i]   = sum_{co, tap} w[co, ci, tap] * dy[n, co, (i + p - tap) / s]  (exact division)
//   backward_weight part[z, co, e] = sum_{voxels of split z} dy[n, co, o] * x[n, ci, o * s - p + tap], e = ci*kvol+tap
// (the transposed convolution's forward is backward_data, its input gradient is forward).
//
// Tiling: a workgroup owns 16 channels of the result and 256 columns (voxels, or weight entries for
// backward_weight); each invocation keeps 16 channels x 4 columns (64 accumulators) in registers. The operand
// shared by the whole workgroup (weights; for backward_weight the output gradient and the voxel geometry) is
// staged chunk by chunk in workgroup memory and read at workgroup-uniform addresses (a broadcast), the other
// operand is gathered per column with the padding/stride tests hoisted out of the channel loop. Every index
// is guarded, so the file is compiled without injected bounds checks.

struct Params {
    dims: vec4<u32>,   // images, in channels, out channels, has bias
    isz: vec4<u32>,    // input depth, height, width, voxels
    osz: vec4<u32>,    // output depth, height, width, voxels
    ksz: vec4<u32>,    // kernel depth, height, width, taps
    stride: vec4<u32>, // depth, height, width, _
    pad: vec4<u32>,    // depth, height, width, _
    chunk: vec4<u32>,  // channels per staged chunk, taps per staged chunk, voxels per split, _
}

const WGS: u32 = 64u;
const COLS: u32 = 256u; // columns per workgroup: WGS x 4
const STAGE: u32 = 216u; // (channel, tap) pairs staged per chunk

@group(0) @binding(0) var<uniform> p: Params;

// Staged weights: entry k = (channel in chunk) * taps_in_chunk + tap_in_chunk holds 16 result channels.
var<workgroup> wtile: array<vec4<f32>, 864>;

fn tile_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.z * nwg.x + wid.x;
}

// Stages w[.., .., t0 .. t0+tn) for 16 result channels starting at m0 and reduced channels c0 .. c0+cn.
// `transposed` = false: result channel is the weight's first axis (forward); true: its second (data grad).
fn stage_weights(w_idx_m_stride: u32, w_idx_c_stride: u32, m0: u32, mlim: u32, c0: u32, cn: u32,
                 t0: u32, tn: u32, lid: u32) {
    let kvol = p.ksz.w;
    let entries = cn * tn;
    for (var m = 0u; m < 16u; m++) {
        let mm = m0 + m;
        for (var k = lid; k < entries; k += WGS) {
            let c = k / tn;
            let t = k - c * tn;
            var v = 0.0;
            if (mm < mlim) {
                v = load_w((mm * w_idx_m_stride + (c0 + c) * w_idx_c_stride) * kvol + t0 + t);
            }
            wtile[k * 4u + m / 4u][m % 4u] = v;
        }
    }
}

@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read> wts: array<f32>;

fn load_w(i: u32) -> f32 {
    return wts[i];
}

@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> out4: array<f32>;

// Decodes 4 columns (voxels) into image base and coordinates; `valid` marks columns inside the tensor.
struct Cols {
    n: vec4<u32>,
    z: vec4<i32>,
    y: vec4<i32>,
    x: vec4<i32>,
    valid: vec4<bool>,
    v: vec4<u32>,
}

fn decode_cols(first: u32, total: u32, sz: vec4<u32>) -> Cols {
    var c: Cols;
    let col = vec4<u32>(first, first + WGS, first + 2u * WGS, first + 3u * WGS);
    c.valid = col < vec4<u32>(total);
    let cc = select(vec4<u32>(0u), col, c.valid);
    let vox = sz.w;
    c.n = cc / vox;
    c.v = cc - c.n * vox;
    let hw = sz.y * sz.z;
    let z = c.v / hw;
    let r = c.v - z * hw;
    let y = r / sz.z;
    c.z = vec4<i32>(z);
    c.y = vec4<i32>(y);
    c.x = vec4<i32>(r - y * sz.z);
    return c;
}

fn in_range(a: vec4<i32>, lim: u32) -> vec4<bool> {
    return vec4<u32>(a) < vec4<u32>(lim);
}

// One result element gathered per column (zero where masked off), then 16 x 4 FMAs.
@compute @workgroup_size(64)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let cin = p.dims.y;
    let cout = p.dims.z;
    let ivox = p.isz.w;
    let ovox = p.osz.w;
    let total = p.dims.x * ovox;
    let m0 = wid.y * 16u;
    let cols = decode_cols(tile_index(wid, nwg) * COLS + lid, total, p.osz);
    let z0 = cols.z * i32(p.stride.x) - i32(p.pad.x);
    let y0 = cols.y * i32(p.stride.y) - i32(p.pad.y);
    let x0 = cols.x * i32(p.stride.z) - i32(p.pad.z);
    let xbase = vec4<i32>(cols.n * cin * ivox);
    let chn = p.chunk.x;
    let tn = p.chunk.y;
    let kvol = p.ksz.w;
    let khw = p.ksz.y * p.ksz.z;
    var acc: array<vec4<f32>, 16>;
    for (var t0 = 0u; t0 < kvol; t0 += tn) {
        let tcount = min(tn, kvol - t0);
        for (var c0 = 0u; c0 < cin; c0 += chn) {
            let cn = min(chn, cin - c0);
            workgroupBarrier();
            stage_weights(cin, 1u, m0, cout, c0, cn, t0, tn, lid);
            workgroupBarrier();
            for (var tl = 0u; tl < tcount; tl++) {
                let t = t0 + tl;
                let kd = t / khw;
                let kr = t - kd * khw;
                let kh = kr / p.ksz.z;
                let kw = kr - kh * p.ksz.z;
                let iz = z0 + i32(kd);
                let iy = y0 + i32(kh);
                let ix = x0 + i32(kw);
                let ok = cols.valid & in_range(iz, p.isz.x) & in_range(iy, p.isz.y) & in_range(ix, p.isz.z);
                let off = vec4<u32>(xbase + (iz * i32(p.isz.y) + iy) * i32(p.isz.z) + ix + i32(c0 * ivox));
                for (var cl = 0u; cl < cn; cl++) {
                    let co = cl * ivox;
                    var xv = vec4<f32>(0.0);
                    if (ok.x) { xv.x = src[off.x + co]; }
                    if (ok.y) { xv.y = src[off.y + co]; }
                    if (ok.z) { xv.z = src[off.z + co]; }
                    if (ok.w) { xv.w = src[off.w + co]; }
                    let wb = (cl * tn + tl) * 4u;
                    let w0 = wtile[wb];
                    let w1 = wtile[wb + 1u];
                    let w2 = wtile[wb + 2u];
                    let w3 = wtile[wb + 3u];
                    acc[0] = fma(w0, vec4<f32>(xv.x), acc[0]);
                    acc[1] = fma(w1, vec4<f32>(xv.x), acc[1]);
                    acc[2] = fma(w2, vec4<f32>(xv.x), acc[2]);
                    acc[3] = fma(w3, vec4<f32>(xv.x), acc[3]);
                    acc[4] = fma(w0, vec4<f32>(xv.y), acc[4]);
                    acc[5] = fma(w1, vec4<f32>(xv.y), acc[5]);
                    acc[6] = fma(w2, vec4<f32>(xv.y), acc[6]);
                    acc[7] = fma(w3, vec4<f32>(xv.y), acc[7]);
                    acc[8] = fma(w0, vec4<f32>(xv.z), acc[8]);
                    acc[9] = fma(w1, vec4<f32>(xv.z), acc[9]);
                    acc[10] = fma(w2, vec4<f32>(xv.z), acc[10]);
                    acc[11] = fma(w3, vec4<f32>(xv.z), acc[11]);
                    acc[12] = fma(w0, vec4<f32>(xv.w), acc[12]);
                    acc[13] = fma(w1, vec4<f32>(xv.w), acc[13]);
                    acc[14] = fma(w2, vec4<f32>(xv.w), acc[14]);
                    acc[15] = fma(w3, vec4<f32>(xv.w), acc[15]);
                }
            }
        }
    }
    for (var j = 0u; j < 4u; j++) {
        if (!cols.valid[j]) {
            continue;
        }
        let obase = cols.n[j] * cout * ovox + cols.v[j];
        for (var m = 0u; m < 16u; m++) {
            let co = m0 + m;
            if (co < cout) {
                var b = 0.0;
                if (p.dims.w != 0u) {
                    b = bias[co];
                }
                out4[obase + co * ovox] = acc[j * 4u + m / 4u][m % 4u] + b;
            }
        }
    }
}

@group(0) @binding(3) var<storage, read_write> out3: array<f32>;

// dx over input voxels (columns); `src` is dy, the reduced channel is the output channel.
@compute @workgroup_size(64)
fn backward_data(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let cin = p.dims.y;
    let cout = p.dims.z;
    let ivox = p.isz.w;
    let ovox = p.osz.w;
    let total = p.dims.x * ivox;
    let m0 = wid.y * 16u;
    let cols = decode_cols(tile_index(wid, nwg) * COLS + lid, total, p.isz);
    let z0 = cols.z + i32(p.pad.x);
    let y0 = cols.y + i32(p.pad.y);
    let x0 = cols.x + i32(p.pad.z);
    let sd = i32(p.stride.x);
    let sh = i32(p.stride.y);
    let sw = i32(p.stride.z);
    let ybase = vec4<i32>(cols.n * cout * ovox);
    let chn = p.chunk.x;
    let tn = p.chunk.y;
    let kvol = p.ksz.w;
    let khw = p.ksz.y * p.ksz.z;
    var acc: array<vec4<f32>, 16>;
    for (var t0 = 0u; t0 < kvol; t0 += tn) {
        let tcount = min(tn, kvol - t0);
        for (var c0 = 0u; c0 < cout; c0 += chn) {
            let cn = min(chn, cout - c0);
            workgroupBarrier();
            stage_weights(1u, cin, m0, cin, c0, cn, t0, tn, lid);
            workgroupBarrier();
            for (var tl = 0u; tl < tcount; tl++) {
                let t = t0 + tl;
                let kd = t / khw;
                let kr = t - kd * khw;
                let kh = kr / p.ksz.z;
                let kw = kr - kh * p.ksz.z;
                let tz = z0 - i32(kd);
                let ty = y0 - i32(kh);
                let tx = x0 - i32(kw);
                let oz = tz / sd;
                let oy = ty / sh;
                let ox = tx / sw;
                let ok = cols.valid & (oz * sd == tz) & (oy * sh == ty) & (ox * sw == tx)
                    & in_range(tz, p.osz.x * p.stride.x) & in_range(ty, p.osz.y * p.stride.y)
                    & in_range(tx, p.osz.z * p.stride.z);
                let off = vec4<u32>(ybase + (oz * i32(p.osz.y) + oy) * i32(p.osz.z) + ox + i32(c0 * ovox));
                for (var cl = 0u; cl < cn; cl++) {
                    let co = cl * ovox;
                    var xv = vec4<f32>(0.0);
                    if (ok.x) { xv.x = src[off.x + co]; }
                    if (ok.y) { xv.y = src[off.y + co]; }
                    if (ok.z) { xv.z = src[off.z + co]; }
                    if (ok.w) { xv.w = src[off.w + co]; }
                    let wb = (cl * tn + tl) * 4u;
                    let w0 = wtile[wb];
                    let w1 = wtile[wb + 1u];
                    let w2 = wtile[wb + 2u];
                    let w3 = wtile[wb + 3u];
                    acc[0] = fma(w0, vec4<f32>(xv.x), acc[0]);
                    acc[1] = fma(w1, vec4<f32>(xv.x), acc[1]);
                    acc[2] = fma(w2, vec4<f32>(xv.x), acc[2]);
                    acc[3] = fma(w3, vec4<f32>(xv.x), acc[3]);
                    acc[4] = fma(w0, vec4<f32>(xv.y), acc[4]);
                    acc[5] = fma(w1, vec4<f32>(xv.y), acc[5]);
                    acc[6] = fma(w2, vec4<f32>(xv.y), acc[6]);
                    acc[7] = fma(w3, vec4<f32>(xv.y), acc[7]);
                    acc[8] = fma(w0, vec4<f32>(xv.z), acc[8]);
                    acc[9] = fma(w1, vec4<f32>(xv.z), acc[9]);
                    acc[10] = fma(w2, vec4<f32>(xv.z), acc[10]);
                    acc[11] = fma(w3, vec4<f32>(xv.z), acc[11]);
                    acc[12] = fma(w0, vec4<f32>(xv.w), acc[12]);
                    acc[13] = fma(w1, vec4<f32>(xv.w), acc[13]);
                    acc[14] = fma(w2, vec4<f32>(xv.w), acc[14]);
                    acc[15] = fma(w3, vec4<f32>(xv.w), acc[15]);
                }
            }
        }
    }
    for (var j = 0u; j < 4u; j++) {
        if (!cols.valid[j]) {
            continue;
        }
        let obase = cols.n[j] * cin * ivox + cols.v[j];
        for (var m = 0u; m < 16u; m++) {
            let ci = m0 + m;
            if (ci < cin) {
                out3[obase + ci * ivox] = acc[j * 4u + m / 4u][m % 4u];
            }
        }
    }
}

// backward_weight: `src` is x, `wts` is dy (the staged operand), `out3` the per-split partials.
const VCH: u32 = 128u; // voxels staged per chunk
var<workgroup> dytile: array<vec4<f32>, 512>; // [voxel][16 out channels]
var<workgroup> vbase: array<vec4<i32>, 128>;  // per voxel: z0, y0, x0, flat x offset of (z0, y0, x0)

@compute @workgroup_size(64)
fn backward_weight(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let cin = p.dims.y;
    let cout = p.dims.z;
    let ivox = p.isz.w;
    let ovox = p.osz.w;
    let kvol = p.ksz.w;
    let ecount = cin * kvol;
    let m0 = wid.y * 16u;
    let total = p.dims.x * ovox;
    let v_begin = wid.z * p.chunk.z;
    let v_end = min(total, v_begin + p.chunk.z);
    // Columns: weight entries e = ci * kvol + tap.
    let e = vec4<u32>(wid.x * COLS + lid) + vec4<u32>(0u, WGS, 2u * WGS, 3u * WGS);
    let evalid = e < vec4<u32>(ecount);
    let ec = select(vec4<u32>(0u), e, evalid);
    let ci = ec / kvol;
    let t = ec - ci * kvol;
    let khw = p.ksz.y * p.ksz.z;
    let kd = t / khw;
    let kr = t - kd * khw;
    let kh = kr / p.ksz.z;
    let kw = kr - kh * p.ksz.z;
    let kdv = vec4<i32>(kd);
    let khv = vec4<i32>(kh);
    let kwv = vec4<i32>(kw);
    let coff = vec4<i32>(ci * ivox + (kd * p.isz.y + kh) * p.isz.z + kw);
    let hw = p.osz.y * p.osz.z;
    var acc: array<vec4<f32>, 16>;
    for (var v0 = v_begin; v0 < v_end; v0 += VCH) {
        let vn = min(VCH, v_end - v0);
        workgroupBarrier();
        for (var k = lid; k < VCH; k += WGS) {
            let col = v0 + k;
            var info = vec4<i32>(0);
            if (k < vn) {
                let n = col / ovox;
                let v = col - n * ovox;
                let oz = v / hw;
                let r = v - oz * hw;
                let oy = r / p.osz.z;
                let ox = r - oy * p.osz.z;
                let z0 = i32(oz * p.stride.x) - i32(p.pad.x);
                let y0 = i32(oy * p.stride.y) - i32(p.pad.y);
                let x0 = i32(ox * p.stride.z) - i32(p.pad.z);
                info = vec4<i32>(z0, y0, x0, i32(n * cin * ivox) + (z0 * i32(p.isz.y) + y0) * i32(p.isz.z) + x0);
                let ybase = n * cout * ovox + v;
                for (var m = 0u; m < 16u; m++) {
                    var g = 0.0;
                    if (m0 + m < cout) {
                        g = wts[ybase + (m0 + m) * ovox];
                    }
                    dytile[k * 4u + m / 4u][m % 4u] = g;
                }
            }
            vbase[k] = info;
        }
        workgroupBarrier();
        for (var k = 0u; k < vn; k++) {
            let info = vbase[k];
            let iz = vec4<i32>(info.x) + kdv;
            let iy = vec4<i32>(info.y) + khv;
            let ix = vec4<i32>(info.z) + kwv;
            let ok = evalid & in_range(iz, p.isz.x) & in_range(iy, p.isz.y) & in_range(ix, p.isz.z);
            let off = vec4<u32>(vec4<i32>(info.w) + coff);
            var xv = vec4<f32>(0.0);
            if (ok.x) { xv.x = src[off.x]; }
            if (ok.y) { xv.y = src[off.y]; }
            if (ok.z) { xv.z = src[off.z]; }
            if (ok.w) { xv.w = src[off.w]; }
            let w0 = dytile[k * 4u];
            let w1 = dytile[k * 4u + 1u];
            let w2 = dytile[k * 4u + 2u];
            let w3 = dytile[k * 4u + 3u];
            acc[0] = fma(w0, vec4<f32>(xv.x), acc[0]);
            acc[1] = fma(w1, vec4<f32>(xv.x), acc[1]);
            acc[2] = fma(w2, vec4<f32>(xv.x), acc[2]);
            acc[3] = fma(w3, vec4<f32>(xv.x), acc[3]);
            acc[4] = fma(w0, vec4<f32>(xv.y), acc[4]);
            acc[5] = fma(w1, vec4<f32>(xv.y), acc[5]);
            acc[6] = fma(w2, vec4<f32>(xv.y), acc[6]);
            acc[7] = fma(w3, vec4<f32>(xv.y), acc[7]);
            acc[8] = fma(w0, vec4<f32>(xv.z), acc[8]);
            acc[9] = fma(w1, vec4<f32>(xv.z), acc[9]);
            acc[10] = fma(w2, vec4<f32>(xv.z), acc[10]);
            acc[11] = fma(w3, vec4<f32>(xv.z), acc[11]);
            acc[12] = fma(w0, vec4<f32>(xv.w), acc[12]);
            acc[13] = fma(w1, vec4<f32>(xv.w), acc[13]);
            acc[14] = fma(w2, vec4<f32>(xv.w), acc[14]);
            acc[15] = fma(w3, vec4<f32>(xv.w), acc[15]);
        }
    }
    let pbase = wid.z * cout * ecount;
    for (var j = 0u; j < 4u; j++) {
        if (!evalid[j]) {
            continue;
        }
        for (var m = 0u; m < 16u; m++) {
            let co = m0 + m;
            if (co < cout) {
                out3[pbase + co * ecount + e[j]] = acc[j * 4u + m / 4u][m % 4u];
            }
        }
    }
}
