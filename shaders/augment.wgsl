// The augmentation's intensity kernels on a stack of volumes [V, X, Y, Z] (z fastest), one binding:
// Gaussian noise from a counter-based hash (no state, no atomics), per-volume statistics in a fixed order
// (one workgroup per volume, a fixed tree), brightness / contrast, gamma (optionally of the inverted
// volume, optionally keeping mean and std), one axis of a separable Gaussian smoothing (torch's `reflect`
// padding, as batchgeneratorsv2), and simulated low resolution (nearest-exact down, trilinear up, as
// torch's `interpolate`). Every output value is computed by one invocation in a fixed order, so every
// run gives the same bits.

struct Params {
    dims: vec4<u32>,   // X, Y, Z, volumes
    extra: vec4<u32>,  // smooth: axis; intensity: mode (0 brightness, 1 contrast); gamma: retain stats
}

const WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;
// Per-volume data: noise: (key lo, key hi, std bits, 0); intensity: (factor bits, 0, 0, 0); gamma:
// (gamma bits, invert, 0, 0); smooth: (first weight index, radius, 0, 0) then the weights as f32 bits;
// lowres: (low X, Y, Z, 0).
@group(0) @binding(3) var<storage, read> aux: array<u32>;

fn linear_id(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.y * nwg.x + wid.x) * WG + lid;
}

fn voxels() -> u32 {
    return p.dims.x * p.dims.y * p.dims.z;
}

// lowbias32 (Chris Wellons): a bijective 32-bit mix.
fn mix32(v: u32) -> u32 {
    var x = v;
    x = x ^ (x >> 16u);
    x = x * 0x7feb352du;
    x = x ^ (x >> 15u);
    x = x * 0x846ca68bu;
    x = x ^ (x >> 16u);
    return x;
}

// The last round takes `lo` again: without it, keys differing in the low bit would swap the two counters
// of each voxel (correlated normals).
fn bits_at(lo: u32, hi: u32, counter: u32) -> u32 {
    return mix32(mix32(mix32(counter ^ lo) ^ hi) ^ lo);
}

// x + std * N(0, 1), the normal by Box-Muller from the bits of counters 2k and 2k + 1 of the volume's key
// (k the voxel within the volume): u1 = (top 24 bits + 1) / 2^24 in (0, 1], u2 = top 24 bits / 2^24.
@compute @workgroup_size(256)
fn noise(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    let n = voxels();
    if (i >= n * p.dims.w) {
        return;
    }
    let v = i / n;
    let k = i - v * n;
    let lo = aux[4u * v];
    let hi = aux[4u * v + 1u];
    let sd = bitcast<f32>(aux[4u * v + 2u]);
    if (sd == 0.0) {
        dst[i] = src[i];
        return;
    }
    let u1 = (f32(bits_at(lo, hi, 2u * k) >> 8u) + 1.0) * (1.0 / 16777216.0);
    let u2 = f32(bits_at(lo, hi, 2u * k + 1u) >> 8u) * (1.0 / 16777216.0);
    let z = sqrt(-2.0 * log(u1)) * cos(6.2831853071795864 * u2);
    dst[i] = src[i] + sd * z;
}

var<workgroup> w_sum: array<f32, 256>;
var<workgroup> w_min: array<f32, 256>;
var<workgroup> w_max: array<f32, 256>;

// Sums w_sum over the workgroup by a fixed halving tree (every thread must call it).
fn tree_sum(lid: u32) {
    workgroupBarrier();
    for (var half = WG / 2u; half > 0u; half = half / 2u) {
        if (lid < half) {
            w_sum[lid] = w_sum[lid] + w_sum[lid + half];
        }
        workgroupBarrier();
    }
}

// Per volume (workgroup v): sum, min, max and the sum of squared deviations from the mean into
// dst[4v..4v + 3]. Thread t visits voxels t, t + 256, ... in order, then a fixed halving tree; the
// deviations in a second pass, about the first pass's mean.
@compute @workgroup_size(256)
fn stats(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let v = wid.y * nwg.x + wid.x;
    // Uniform per workgroup, so the barriers below stay in uniform control flow.
    let live = v < p.dims.w;
    let n = voxels();
    let base = min(v, p.dims.w - 1u) * n;
    var s = 0.0;
    var lo = src[base];
    var hi = src[base];
    for (var k = lid; k < n; k += WG) {
        let x = src[base + k];
        s += x;
        lo = min(lo, x);
        hi = max(hi, x);
    }
    w_sum[lid] = s;
    w_min[lid] = lo;
    w_max[lid] = hi;
    workgroupBarrier();
    for (var half = WG / 2u; half > 0u; half = half / 2u) {
        if (lid < half) {
            w_sum[lid] = w_sum[lid] + w_sum[lid + half];
            w_min[lid] = min(w_min[lid], w_min[lid + half]);
            w_max[lid] = max(w_max[lid], w_max[lid + half]);
        }
        workgroupBarrier();
    }
    let total = w_sum[0];
    let mean = total / f32(n);
    workgroupBarrier();
    var d = 0.0;
    for (var k = lid; k < n; k += WG) {
        let e = src[base + k] - mean;
        d += e * e;
    }
    w_sum[lid] = d;
    tree_sum(lid);
    if (lid == 0u && live) {
        dst[4u * v] = total;
        dst[4u * v + 1u] = w_min[0];
        dst[4u * v + 2u] = w_max[0];
        dst[4u * v + 3u] = w_sum[0];
    }
}

@group(0) @binding(4) var<storage, read> vstats: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> vstats2: array<vec4<f32>>;

// Brightness x * f; contrast as batchgeneratorsv2's ContrastTransform (preserve_range): (x - mean) * f +
// mean clipped to the volume's [min, max]. A factor of exactly 1 copies.
@compute @workgroup_size(256)
fn intensity(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    let n = voxels();
    if (i >= n * p.dims.w) {
        return;
    }
    let v = i / n;
    let f = bitcast<f32>(aux[4u * v]);
    let x = src[i];
    var y = x;
    if (f != 1.0) {
        if (p.extra.x == 0u) {
            y = x * f;
        } else {
            let st = vstats[v];
            let mean = st.x / f32(n);
            y = clamp((x - mean) * f + mean, st.y, st.z);
        }
    }
    dst[i] = y;
}

// Mean, unbiased standard deviation, min and max of volume v from its stats, of the volume negated when
// `invert`.
fn moments(st: vec4<f32>, n: u32, invert: bool) -> vec4<f32> {
    let mean = st.x / f32(n);
    let sd = sqrt(st.w / f32(max(n, 2u) - 1u));
    if (invert) {
        return vec4<f32>(-mean, sd, -st.z, -st.y);
    }
    return vec4<f32>(mean, sd, st.y, st.z);
}

// batchgeneratorsv2's GammaTransform on y = (invert ? -x : x): ((y - min) / max(range, 1e-7))^g * range +
// min. With retain stats (extra.x) the value stays in y's sign for `restore`; without, it is negated back.
// A gamma of exactly 1 copies.
@compute @workgroup_size(256)
fn gamma(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    let n = voxels();
    if (i >= n * p.dims.w) {
        return;
    }
    let v = i / n;
    let g = bitcast<f32>(aux[4u * v]);
    let invert = aux[4u * v + 1u] != 0u;
    if (g == 1.0) {
        dst[i] = src[i];
        return;
    }
    let m = moments(vstats[v], n, invert);
    let y = select(src[i], -src[i], invert);
    let range = m.w - m.z;
    let b = max((y - m.z) / max(range, 1e-7), 0.0);
    let out = select(pow(b, g), 0.0, b == 0.0) * range + m.z;
    dst[i] = select(out, -out, invert && p.extra.x == 0u);
}

// Gamma's retain stats: (y - mean_y) * (sd_before / max(sd_y, 1e-7)) + mean_before, then negated back
// when inverted; vstats are the volume's statistics before gamma (of x), vstats2 those of y. Volumes
// whose gamma is 1 copy.
@compute @workgroup_size(256)
fn restore(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    let n = voxels();
    if (i >= n * p.dims.w) {
        return;
    }
    let v = i / n;
    let g = bitcast<f32>(aux[4u * v]);
    let invert = aux[4u * v + 1u] != 0u;
    if (g == 1.0) {
        dst[i] = src[i];
        return;
    }
    let before = moments(vstats[v], n, invert);
    let here = moments(vstats2[v], n, false);
    let y = (src[i] - here.x) * (before.y / max(here.y, 1e-7)) + before.x;
    dst[i] = select(y, -y, invert);
}

// torch's `reflect` padding (d c b | a b c d | c b a), any offset: the index mirrored about the ends
// without repeating them (period 2 (n - 1); a length of 1 reads its only voxel).
fn reflect(i: i32, n: i32) -> i32 {
    if (n == 1) {
        return 0;
    }
    // The mirror is symmetric about 0, so |i| in unsigned arithmetic: GLSL leaves `%` of a negative
    // operand undefined (wgpu's GL back end gave wrong voxels).
    let period = u32(2 * (n - 1));
    let m = i32(u32(abs(i)) % period);
    return select(m, i32(period) - m, m >= n);
}

// One axis (extra.x) of the separable Gaussian: the volume's weights w[0..2r] at offsets -r..r, summed in
// that order. A radius of 0 copies.
@compute @workgroup_size(256)
fn blur(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    let n = voxels();
    if (i >= n * p.dims.w) {
        return;
    }
    let v = i / n;
    let k = i - v * n;
    let first = aux[4u * v];
    let r = i32(aux[4u * v + 1u]);
    if (r == 0) {
        dst[i] = src[i];
        return;
    }
    let yz = p.dims.y * p.dims.z;
    var pos = vec3<u32>(k / yz, (k % yz) / p.dims.z, k % p.dims.z);
    let axis = p.extra.x;
    let len = i32(p.dims[axis]);
    let centre = i32(pos[axis]);
    var acc = 0.0;
    for (var t = -r; t <= r; t++) {
        pos[axis] = u32(reflect(centre + t, len));
        let w = bitcast<f32>(aux[first + u32(t + r)]);
        acc += w * src[v * n + (pos.x * p.dims.y + pos.y) * p.dims.z + pos.z];
    }
    dst[i] = acc;
}

// torch's trilinear source index (align_corners = False): the lower input index, the upper one and the
// weight of the upper, for output index o of an axis scaled by `scale` = in / out over `len` inputs.
fn up_index(o: u32, scale: f32, len: u32) -> vec3<f32> {
    let s = max(scale * (f32(o) + 0.5) - 0.5, 0.0);
    let i0 = min(u32(floor(s)), len - 1u);
    let i1 = select(i0, i0 + 1u, i0 < len - 1u);
    return vec3<f32>(f32(i0), f32(i1), s - f32(i0));
}

// torch's nearest-exact source index of low-resolution index q: floor((q + 0.5) * scale), at most len - 1.
fn down_index(q: u32, scale: f32, len: u32) -> u32 {
    return min(u32(floor((f32(q) + 0.5) * scale)), len - 1u);
}

// Low resolution: the volume taken down to (aux) voxels by nearest-exact and back up by trilinear, read
// straight from the input (no intermediate volume). A low shape equal to the volume's copies.
@compute @workgroup_size(256)
fn lowres(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    let n = voxels();
    if (i >= n * p.dims.w) {
        return;
    }
    let v = i / n;
    let k = i - v * n;
    let low = vec3<u32>(aux[4u * v], aux[4u * v + 1u], aux[4u * v + 2u]);
    let full = p.dims.xyz;
    if (all(low == full)) {
        dst[i] = src[i];
        return;
    }
    let yz = full.y * full.z;
    let o = vec3<u32>(k / yz, (k % yz) / full.z, k % full.z);
    let up = vec3<f32>(low) / vec3<f32>(full);
    let down = vec3<f32>(full) / vec3<f32>(low);
    let ix = up_index(o.x, up.x, low.x);
    let iy = up_index(o.y, up.y, low.y);
    let iz = up_index(o.z, up.z, low.z);
    var xs = array<u32, 2>(down_index(u32(ix.x), down.x, full.x), down_index(u32(ix.y), down.x, full.x));
    var ys = array<u32, 2>(down_index(u32(iy.x), down.y, full.y), down_index(u32(iy.y), down.y, full.y));
    var zs = array<u32, 2>(down_index(u32(iz.x), down.z, full.z), down_index(u32(iz.y), down.z, full.z));
    let base = v * n;
    var c: array<f32, 4>;
    for (var a = 0u; a < 2u; a++) {
        for (var b = 0u; b < 2u; b++) {
            let row = base + (xs[a] * full.y + ys[b]) * full.z;
            c[a * 2u + b] = (1.0 - iz.z) * src[row + zs[0]] + iz.z * src[row + zs[1]];
        }
    }
    let c0 = (1.0 - iy.z) * c[0] + iy.z * c[1];
    let c1 = (1.0 - iy.z) * c[2] + iy.z * c[3];
    dst[i] = (1.0 - ix.z) * c0 + ix.z * c1;
}
