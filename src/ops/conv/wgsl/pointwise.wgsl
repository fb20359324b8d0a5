// backward_weight for 1x1x1 kernels, stride 1, no padding: a workgroup owns 4 output x 4 input channels
// (wid.y) and the voxels of split wid.x (chunk.z of them, over images); lane l sums voxels l, l + 64, ...,
// then the 64 lanes' sums are added in a fixed tree and written to the split's partials.
var<workgroup> pwsum: array<vec4<f32>, 256>; // lane x output channel -> 4 input channels

@compute @workgroup_size(64)
fn backward_weight_pointwise(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let cin = p.dims.y;
    let cout = p.dims.z;
    let vox = p.osz.w;
    let total = p.dims.x * vox;
    let cit = (cin + 3u) / 4u;
    let co0 = (wid.y / cit) * 4u;
    let ci0 = (wid.y % cit) * 4u;
    let v_begin = wid.x * p.chunk.z;
    let v_end = min(total, v_begin + p.chunk.z);
    let xok = vec4<bool>(ci0 < cin, ci0 + 1u < cin, ci0 + 2u < cin, ci0 + 3u < cin);
    let gok = vec4<bool>(co0 < cout, co0 + 1u < cout, co0 + 2u < cout, co0 + 3u < cout);
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    for (var col = v_begin + lid; col < v_end; col += 64u) {
        let n = col / vox;
        let v = col - n * vox;
        let xb = n * cin * vox + v + ci0 * vox;
        let yb = n * cout * vox + v + co0 * vox;
        let xv = vec4<f32>(select(0.0, src[select(0u, xb, xok.x)], xok.x),
                           select(0.0, src[select(0u, xb + vox, xok.y)], xok.y),
                           select(0.0, src[select(0u, xb + 2u * vox, xok.z)], xok.z),
                           select(0.0, src[select(0u, xb + 3u * vox, xok.w)], xok.w));
        let g0 = select(0.0, wts[select(0u, yb, gok.x)], gok.x);
        let g1 = select(0.0, wts[select(0u, yb + vox, gok.y)], gok.y);
        let g2 = select(0.0, wts[select(0u, yb + 2u * vox, gok.z)], gok.z);
        let g3 = select(0.0, wts[select(0u, yb + 3u * vox, gok.w)], gok.w);
        a0 = fma(vec4<f32>(g0), xv, a0);
        a1 = fma(vec4<f32>(g1), xv, a1);
        a2 = fma(vec4<f32>(g2), xv, a2);
        a3 = fma(vec4<f32>(g3), xv, a3);
    }
    pwsum[lid * 4u] = a0;
    pwsum[lid * 4u + 1u] = a1;
    pwsum[lid * 4u + 2u] = a2;
    pwsum[lid * 4u + 3u] = a3;
    for (var h = 32u; h > 0u; h = h / 2u) {
        workgroupBarrier();
        if (lid < h) {
            for (var i = 0u; i < 4u; i++) {
                pwsum[lid * 4u + i] = pwsum[lid * 4u + i] + pwsum[(lid + h) * 4u + i];
            }
        }
    }
    workgroupBarrier();
    if (lid < 4u && co0 + lid < cout) {
        let sum = pwsum[lid];
        let e = wid.x * cout * cin + (co0 + lid) * cin + ci0;
        for (var i = 0u; i < 4u; i++) {
            if (ci0 + i < cin) {
                out3[e + i] = sum[i];
            }
        }
    }
}
