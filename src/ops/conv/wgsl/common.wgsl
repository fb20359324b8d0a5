// The header both convolution modules share: the uniform, the bindings, the tile constants and the small
// helpers. The tile constants are filled in per variant by src/ops/conv/wgsl/mod.rs (`fill`).

// Mirrors `Params` in src/ops/conv/geometry.rs (a layout test compares the two).
struct Params {
    dims: vec4<u32>,   // images, in channels, out channels, has bias
    isz: vec4<u32>,    // input depth, height, width, voxels
    osz: vec4<u32>,    // output depth, height, width, voxels
    ksz: vec4<u32>,    // kernel depth, height, width, taps
    stride: vec4<u32>, // depth, height, width, forward adds the residual (1) or not (0)
    pad: vec4<u32>,    // depth, height, width, _
    chunk: vec4<u32>,  // channels and taps per staged chunk (portable), voxels per split, columns per phase class
}

const WGS: u32 = 64u;
const TM: u32 = {TM}u;          // result channels per workgroup (and per invocation)
const COLS: u32 = {COLS}u;      // columns per workgroup

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read> wts: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> out4: array<f32>;
@group(0) @binding(3) var<storage, read_write> out3: array<f32>;
@group(0) @binding(5) var<storage, read> res: array<f32>;

fn tile_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.z * nwg.x + wid.x;
}

fn in_range(a: i32, lim: u32) -> bool {
    return u32(a) < lim;
}

// The forward kernels write through here: a launch with stride.w = 1 adds the residual tensor to each result
// as it is written (y = conv(x) + bias + r, the same bits as a separate add).
fn put_forward(i: u32, v: f32) {
    if (p.stride.w != 0u) {
        out4[i] = v + res[i];
    } else {
        out4[i] = v;
    }
}
