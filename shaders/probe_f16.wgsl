// The f16 twin of `fma_vec4` in probe.wgsl (compiled with the `enable f16;` prelude, only where the adapter
// has SHADER_F16): 8 independent vec4<f16> chains, 64 half-precision flops per trip.

struct Params {
    n: u32,      // invocations
    iters: u32,  // loop trips per invocation (kept short: bounded per-invocation work)
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec4<f32>>;

const WG: u32 = 256u;

@compute @workgroup_size(256)
fn fma_vec4_f16(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = (wid.y * nwg.x + wid.x) * WG + lid;
    if (i >= params.n) {
        return;
    }
    let s = vec4<f16>(src[i % arrayLength(&src)]);
    let m = vec4<f16>(0.999h, 1.001h, 0.998h, 1.002h);
    var a0 = s; var a1 = s + 1.0h; var a2 = s + 2.0h; var a3 = s + 3.0h;
    var a4 = s + 4.0h; var a5 = s + 5.0h; var a6 = s + 6.0h; var a7 = s + 7.0h;
    for (var k = 0u; k < params.iters; k++) {
        a0 = fma(a0, m, s); a1 = fma(a1, m, s); a2 = fma(a2, m, s); a3 = fma(a3, m, s);
        a4 = fma(a4, m, s); a5 = fma(a5, m, s); a6 = fma(a6, m, s); a7 = fma(a7, m, s);
    }
    dst[i % arrayLength(&dst)] = vec4<f32>(a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7);
}
