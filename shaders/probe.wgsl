// Micro-kernels that measure what an adapter can do, so throughput figures compare across vendors:
// `copy_vec4` moves memory (peak bandwidth), `read_vec4` only reads it, `fma_vec4` does nothing but
// independent fused multiply-adds (`probe_f16.wgsl` has the f16 twin).

struct Params {
    n: u32,      // vec4 elements to copy, or invocations for fma
    iters: u32,  // fma loop trips per invocation (kept short: bounded per-invocation work)
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec4<f32>>;

const WG: u32 = 256u;

fn linear_id(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.y * nwg.x + wid.x) * WG + lid;
}

@compute @workgroup_size(256)
fn copy_vec4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i < params.n) {
        dst[i] = src[i];
    }
}

// Reads one vec4 per invocation and writes only when the four lanes add up to a value passed in `iters`
// (as f32 bits) that the data never holds, so the read cannot be optimised away and nothing is written.
@compute @workgroup_size(256)
fn read_vec4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i < params.n) {
        let v = src[i];
        if (v.x + v.y + v.z + v.w == bitcast<f32>(params.iters)) {
            dst[i % arrayLength(&dst)] = v;
        }
    }
}

// 8 independent vec4 chains: 64 flops per trip. The seed comes from memory so nothing folds away.
@compute @workgroup_size(256)
fn fma_vec4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i >= params.n) {
        return;
    }
    let s = src[i % arrayLength(&src)];
    let m = vec4<f32>(0.9999, 1.0001, 0.99995, 1.00005);
    var a0 = s; var a1 = s + 1.0; var a2 = s + 2.0; var a3 = s + 3.0;
    var a4 = s + 4.0; var a5 = s + 5.0; var a6 = s + 6.0; var a7 = s + 7.0;
    for (var k = 0u; k < params.iters; k++) {
        a0 = fma(a0, m, s); a1 = fma(a1, m, s); a2 = fma(a2, m, s); a3 = fma(a3, m, s);
        a4 = fma(a4, m, s); a5 = fma(a5, m, s); a6 = fma(a6, m, s); a7 = fma(a7, m, s);
    }
    dst[i % arrayLength(&dst)] = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7;
}

@group(0) @binding(3) var<storage, read> src_b: array<vec4<f32>>;

// Streams that read two inputs (`src` fully, `src_b` fully: it may be shorter) and either write one vec4 per
// workgroup (`read2`) or the whole `src`-sized output (`read2_write`): the memory traffic of a loss's
// statistics pass and of its gradient pass.
var<workgroup> wg_sum: array<vec4<f32>, 256>;

@compute @workgroup_size(256)
fn read2(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    var s = vec4<f32>(0.0);
    if (i < params.n) {
        s = src[i];
    }
    if (i < arrayLength(&src_b)) {
        s += src_b[i];
    }
    wg_sum[lid] = s;
    workgroupBarrier();
    if (lid == 0u) {
        dst[(wid.y * nwg.x + wid.x) % arrayLength(&dst)] = wg_sum[0] + wg_sum[255];
    }
}

@compute @workgroup_size(256)
fn read2_write(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg, lid);
    if (i >= params.n) {
        return;
    }
    var s = src[i];
    if (i < arrayLength(&src_b)) {
        s += src_b[i];
    }
    dst[i] = s;
}
