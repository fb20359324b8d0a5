// Resampling of 3D volumes through an affine map from output voxel to input voxel, as MONAI's
// SpatialResample does it with torch's grid_sample (padding "border": the input coordinate is clamped to
// [0, size - 1] on each axis, so align_corners only matters through the map itself, which the caller
// builds). Volumes are row major [X, Y, Z] (z fastest). One invocation per output voxel, no reduction,
// so every run gives the same bits. A dispatch covers one piece of one volume's output: `piece` places it,
// and the input is bound from plane `isz.w` on (the planes the piece reads), so neither the input nor the
// output needs one binding whole.
//
// The map is affine, so an output voxel's input coordinate is the sum of one term per output axis; the
// host tabulates those terms in f64 and hands each over in fixed point (an i32 integer part and a u32
// fraction in units of 2^-32), summed here with integer carries: where a voxel falls (the floor, and
// nearest's halfway ties, which MONAI's f64 grid decides by parts in 1e8) is decided to 2^-32 voxels,
// not by f32's rounding of the sum (nor by a compiler's float reassociation).

struct Params {
    isz: vec4<u32>,    // input x, y, z sizes, the first input plane bound (the binding starts there)
    osz: vec4<u32>,    // output x, y, z sizes, unused
    piece: vec4<u32>,  // first output voxel of the piece, voxels in it, input element shift, output element shift
}

const WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;
// Elements as bits: linear reads and writes f32 through bitcasts, nearest copies any 4-byte element (f32
// images, u32 label maps) bit for bit.
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;
// Per output axis a and index o (entries x: 0.., y: X.., z: X + Y..): the term M[:, a] * o (the x terms
// also carry the translation): integer parts (as i32 bits) at 2 * entry, fractions at 2 * entry + 1.
// For the `_axes` entries (maps where input axis a follows output axis a alone), one vec4 per entry
// instead: the clamped coordinate along axis a as `source_coordinate` computes it (floor, the next voxel
// clamped, the fraction in 2^-32, the nearest voxel).
@group(0) @binding(3) var<storage, read> terms: array<vec4<u32>>;

fn linear_id(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.y * nwg.x + wid.x) * WG + lid;
}

struct Fixed {
    whole: vec3<i32>,
    frac: vec3<u32>,
}

fn add(a: Fixed, b: Fixed) -> Fixed {
    let f = a.frac + b.frac;
    let carry = select(vec3<i32>(0), vec3<i32>(1), f < a.frac);
    return Fixed(a.whole + b.whole + carry, f);
}

fn term(entry: u32) -> Fixed {
    return Fixed(bitcast<vec3<i32>>(terms[2u * entry].xyz), terms[2u * entry + 1u].xyz);
}

// The input coordinate of output voxel `v` (an index within the volume), clamped into the input
// (border padding): its floor and the fraction past it.
fn source_coordinate(v: u32) -> Fixed {
    let o = output_voxel(v);
    let c = add(add(term(o.x), term(p.osz.x + o.y)), term(p.osz.x + p.osz.y + o.z));
    let last = vec3<i32>(p.isz.xyz - vec3<u32>(1u));
    let below = c.whole < vec3<i32>(0);
    let above = c.whole > last | (c.whole == last & c.frac > vec3<u32>(0u));
    let whole = select(select(c.whole, last, above), vec3<i32>(0), below);
    return Fixed(whole, select(c.frac, vec3<u32>(0u), below | above));
}

// The output voxel `v`'s x, y and z indices.
fn output_voxel(v: u32) -> vec3<u32> {
    let yz = p.osz.y * p.osz.z;
    let ox = v / yz;
    let r = v - ox * yz;
    let oy = r / p.osz.z;
    return vec3<u32>(ox, oy, r - oy * p.osz.z);
}

fn raw(x: u32, y: u32, z: u32) -> u32 {
    return src[p.piece.z + ((x - p.isz.w) * p.isz.y + y) * p.isz.z + z];
}

fn at(x: u32, y: u32, z: u32) -> f32 {
    return bitcast<f32>(raw(x, y, z));
}

@compute @workgroup_size(256)
fn linear(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i >= p.piece.y) {
        return;
    }
    let w = source_coordinate(p.piece.x + i);
    let last = p.isz.xyz - vec3<u32>(1u);
    let i0 = vec3<u32>(w.whole);
    dst[p.piece.w + i] = bitcast<u32>(trilinear(i0, min(i0 + vec3<u32>(1u), last), w.frac));
}

// The mix of the 8 voxels around a coordinate (floor `i0`, next voxels `i1`, fractions `frac` in 2^-32),
// along z, then y, then x.
fn trilinear(i0: vec3<u32>, i1: vec3<u32>, frac: vec3<u32>) -> f32 {
    let t = vec3<f32>(frac) * (1.0 / 4294967296.0);
    let c00 = mix(at(i0.x, i0.y, i0.z), at(i0.x, i0.y, i1.z), t.z);
    let c01 = mix(at(i0.x, i1.y, i0.z), at(i0.x, i1.y, i1.z), t.z);
    let c10 = mix(at(i1.x, i0.y, i0.z), at(i1.x, i0.y, i1.z), t.z);
    let c11 = mix(at(i1.x, i1.y, i0.z), at(i1.x, i1.y, i1.z), t.z);
    return mix(mix(c00, c01, t.y), mix(c10, c11, t.y), t.x);
}

// The tabulated coordinates of output voxel `v` along x, y and z (for the `_axes` entries).
fn axis_entries(v: u32) -> array<vec4<u32>, 3> {
    let o = output_voxel(v);
    return array<vec4<u32>, 3>(terms[o.x], terms[p.osz.x + o.y], terms[p.osz.x + p.osz.y + o.z]);
}

// `linear` for a map tabulated per axis: the same coordinates, so the same bits, from 3 loads instead of 6
// and no fixed-point sums.
@compute @workgroup_size(256)
fn linear_axes(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i >= p.piece.y) {
        return;
    }
    let e = axis_entries(p.piece.x + i);
    let i0 = vec3<u32>(e[0].x, e[1].x, e[2].x);
    let i1 = vec3<u32>(e[0].y, e[1].y, e[2].y);
    let frac = vec3<u32>(e[0].z, e[1].z, e[2].z);
    dst[p.piece.w + i] = bitcast<u32>(trilinear(i0, i1, frac));
}

// `nearest` for a map tabulated per axis.
@compute @workgroup_size(256)
fn nearest_axes(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i >= p.piece.y) {
        return;
    }
    let e = axis_entries(p.piece.x + i);
    dst[p.piece.w + i] = raw(e[0].w, e[1].w, e[2].w);
}

// Nearest: torch rounds the coordinate half to even (nearbyint).
@compute @workgroup_size(256)
fn nearest(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i >= p.piece.y) {
        return;
    }
    let q = nearest_voxel(source_coordinate(p.piece.x + i));
    dst[p.piece.w + i] = raw(q.x, q.y, q.z);
}

fn nearest_voxel(w: Fixed) -> vec3<u32> {
    let cell = vec3<u32>(w.whole);
    let half = vec3<u32>(0x80000000u);
    let odd = (cell & vec3<u32>(1u)) == vec3<u32>(1u);
    let up = w.frac > half | (w.frac == half & odd);
    return min(cell + select(vec3<u32>(0u), vec3<u32>(1u), up), p.isz.xyz - vec3<u32>(1u));
}

// u8 label maps, packed four voxels to a word (the first in the low byte) in `src` and `dst`; the
// input's element shift counts bytes, the output's words. Invocation i writes the piece's output voxels
// 4i..4i+3 as one word (a piece starts at a multiple of 4 voxels).
fn byte_at(q: vec3<u32>) -> u32 {
    let b = p.piece.z + ((q.x - p.isz.w) * p.isz.y + q.y) * p.isz.z + q.z;
    return (src[b >> 2u] >> ((b & 3u) * 8u)) & 0xffu;
}

@compute @workgroup_size(256)
fn nearest_u8(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (4u * i >= p.piece.y) {
        return;
    }
    var word = 0u;
    for (var k = 0u; k < 4u; k++) {
        let v = 4u * i + k;
        if (v < p.piece.y) {
            word |= byte_at(nearest_voxel(source_coordinate(p.piece.x + v))) << (8u * k);
        }
    }
    dst[p.piece.w + i] = word;
}

// `nearest_u8` for a map tabulated per axis: the four voxels share the first one's x and y entries
// while they stay in its row along z.
@compute @workgroup_size(256)
fn nearest_axes_u8(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (4u * i >= p.piece.y) {
        return;
    }
    let o = output_voxel(p.piece.x + 4u * i);
    let row = vec2<u32>(terms[o.x].w, terms[p.osz.x + o.y].w);
    var word = 0u;
    for (var k = 0u; k < 4u; k++) {
        let v = 4u * i + k;
        if (v < p.piece.y) {
            var q: vec3<u32>;
            if (o.z + k < p.osz.z) {
                q = vec3<u32>(row, terms[p.osz.x + p.osz.y + o.z + k].w);
            } else {
                let e = axis_entries(p.piece.x + v);
                q = vec3<u32>(e[0].w, e[1].w, e[2].w);
            }
            word |= byte_at(q) << (8u * k);
        }
    }
    dst[p.piece.w + i] = word;
}
