# Emitters shared by gen_conv_wgsl.py and gen_conv_subgroup_wgsl.py (the weight-gradient row kernels).


def row_window_loads(ind, rows, win):
    """WGSL gathering each kernel row's window of `win` input values along W (zero outside the input)."""
    s = ""
    for j in rows:
        s += f"{ind}let okr{j} = valid{j} && in_range(vi.x + kd{j}, p.isz.x) && in_range(vi.y + kh{j}, p.isz.y);\n"
        s += f"{ind}let rb{j} = vi.w + coff{j};\n"
        for i in range(win):
            s += f"{ind}let ok{j}_{i} = okr{j} && in_range(vi.z + {i}, p.isz.z);\n"
            s += f"{ind}let xw{j}_{i} = select(0.0, src[select(0u, u32(rb{j} + {i}), ok{j}_{i})], ok{j}_{i});\n"
    return s


def row_fmas(ind, rows, kw_taps, qq, k, operand):
    """WGSL accumulating staged voxel k (its M-channel operand `operand{q}`) into every kernel row's taps."""
    s = ""
    for j in rows:
        for kw in range(kw_taps):
            for q in qq:
                s += f"{ind}acc{j}_{kw}_{q} = fma({operand}{q}, vec4<f32>(xw{j}_{k+kw}), acc{j}_{kw}_{q});\n"
    return s


def row_weight_store(rows, kw_taps, qq):
    """WGSL writing each kernel row's accumulators to the weight-gradient partials (closes the function)."""
    s = "    let pbase = wid.z * cout * ecount;\n"
    for j in rows:
        s += f"    if (valid{j}) {{\n        let e = ci{j} * kvol + rr{j} * {kw_taps}u;\n"
        for kw in range(kw_taps):
            for q in qq:
                for r in range(4):
                    m = q * 4 + r
                    s += f"        if (m0 + {m}u < cout) {{ out3[pbase + (m0 + {m}u) * ecount + e + {kw}u] = acc{j}_{kw}_{q}[{r}]; }}\n"
        s += "    }\n"
    return s + "}\n"
