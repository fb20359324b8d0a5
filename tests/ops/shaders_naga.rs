//! Every shader the library compiles, with each of its preludes, and every generated convolution module the
//! tile selection can return for any adapter, parses and validates with naga (no adapter needed) and
//! translates to SPIR-V (Vulkan), MSL (Metal), HLSL (DX12) and GLSL (GL), so a shader that would fail on
//! another back end fails here first.

use calibseg::ops::conv::{
    select_tiles, selectable_tiles, ConvTiles, Entry, PORTABLE_TILES, SUBGROUP_TILES,
};
use calibseg::shaders::{self, Shader};
use naga::valid::{Capabilities, ShaderStages, SubgroupOperationSet, ValidationFlags, Validator};

/// What a module really needs, read from naga's IR: f16 where a type holds an f16, subgroups where an
/// expression is a subgroup operation's result or an entry point takes a subgroup builtin (proves the
/// portable variants need nothing).
fn capabilities(module: &naga::Module) -> Capabilities {
    use naga::{Binding, BuiltIn, Expression, Scalar, TypeInner};
    let mut caps = Capabilities::empty();
    let f16 = module.types.iter().any(|(_, t)| match t.inner {
        TypeInner::Scalar(s)
        | TypeInner::Vector { scalar: s, .. }
        | TypeInner::Matrix { scalar: s, .. } => s == Scalar::F16,
        _ => false,
    });
    if f16 {
        caps |= Capabilities::SHADER_FLOAT16;
    }
    let functions: Vec<&naga::Function> = module
        .functions
        .iter()
        .map(|(_, f)| f)
        .chain(module.entry_points.iter().map(|e| &e.function))
        .collect();
    let subgroup_ops = functions.iter().any(|f| {
        f.expressions.iter().any(|(_, e)| {
            matches!(
                e,
                Expression::SubgroupBallotResult | Expression::SubgroupOperationResult { .. }
            )
        })
    });
    let subgroup_builtins = functions.iter().flat_map(|f| &f.arguments).any(|a| {
        matches!(
            a.binding,
            Some(Binding::BuiltIn(
                BuiltIn::SubgroupInvocationId
                    | BuiltIn::SubgroupSize
                    | BuiltIn::SubgroupId
                    | BuiltIn::NumSubgroups
            ))
        )
    });
    if subgroup_ops || subgroup_builtins {
        caps |= Capabilities::SUBGROUP;
    }
    caps
}

fn check(shader: &Shader, prelude: &str) -> Result<(), String> {
    check_source(
        &shader.with_prelude(prelude),
        &format!("{} (prelude {prelude:?})", shader.name),
    )
}

fn parse(src: &str, name: &str) -> Result<naga::Module, String> {
    naga::front::wgsl::parse_str(src).map_err(|e| format!("{name}: {}", e.emit_to_string(src)))
}

fn check_source(src: &str, name: &str) -> Result<(), String> {
    let module = parse(src, name)?;
    let caps = capabilities(&module);
    let mut validator = Validator::new(ValidationFlags::all(), caps);
    if caps.contains(Capabilities::SUBGROUP) {
        validator
            .subgroup_stages(ShaderStages::COMPUTE)
            .subgroup_operations(SubgroupOperationSet::all());
    }
    let info = validator
        .validate(&module)
        .map_err(|e| format!("{name}: {}", e.emit_to_string(src)))?;
    let (module, info) = naga::back::pipeline_constants::process_overrides(
        &module,
        &info,
        None,
        &Default::default(),
    )
    .map_err(|e| format!("{name}: overrides: {e}"))?;

    naga::back::spv::write_vec(&module, &info, &Default::default(), None)
        .map_err(|e| format!("{name}: SPIR-V: {e}"))?;
    naga::back::msl::write_string(&module, &info, &Default::default(), &Default::default())
        .map_err(|e| format!("{name}: MSL: {e}"))?;
    let mut hlsl_options = naga::back::hlsl::Options::default();
    if caps.contains(Capabilities::SHADER_FLOAT16) {
        hlsl_options.shader_model = naga::back::hlsl::ShaderModel::V6_2;
    }
    let mut hlsl = String::new();
    naga::back::hlsl::Writer::new(&mut hlsl, &hlsl_options, &Default::default())
        .write(&module, &info, None)
        .map_err(|e| format!("{name}: HLSL: {e}"))?;
    // GL is compiled per entry point; f16 and subgroup variants never run on GL (no such features there).
    if !caps.intersects(Capabilities::SHADER_FLOAT16 | Capabilities::SUBGROUP) {
        for ep in &module.entry_points {
            let options = naga::back::glsl::Options {
                version: naga::back::glsl::Version::new_gles(310),
                ..Default::default()
            };
            let pipeline = naga::back::glsl::PipelineOptions {
                shader_stage: ep.stage,
                entry_point: ep.name.clone(),
                multiview: None,
            };
            let mut glsl = String::new();
            naga::back::glsl::Writer::new(
                &mut glsl,
                &module,
                &info,
                &options,
                &pipeline,
                naga::proc::BoundsCheckPolicies::default(),
            )
            .and_then(|mut w| w.write())
            .map_err(|e| format!("{name}: GLSL {}: {e}", ep.name))?;
        }
    }
    Ok(())
}

#[test]
fn every_shader_validates_and_translates_to_every_back_end() {
    let mut failures = Vec::new();
    for shader in shaders::ALL {
        assert!(
            !shader.preludes.is_empty(),
            "{} lists no prelude",
            shader.name
        );
        for prelude in shader.preludes {
            if let Err(e) = check(shader, prelude) {
                failures.push(e);
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn every_selectable_conv_variant_validates_and_translates_to_every_back_end() {
    let variants = selectable_tiles();
    // The selection's own outcomes are all in the list: subgroups of 8+ lanes, none, too narrow, and every
    // workgroup-memory size from none to plenty.
    for sub in [false, true] {
        for size in [0, 4, 8, 16, 32, 64, 128] {
            for storage in [0, 1024, 4096, 8192, 12288, 16384, 32768, 65536] {
                let t = select_tiles(sub, size, storage);
                assert!(variants.contains(&t), "{t:?} is selectable but not listed");
            }
        }
    }
    assert!(variants.contains(&SUBGROUP_TILES) && variants.contains(&PORTABLE_TILES));
    let ids: Vec<String> = variants.iter().map(ConvTiles::id).collect();
    for (i, id) in ids.iter().enumerate() {
        assert!(!ids[..i].contains(id), "two variants share the id {id}");
    }
    let mut failures = Vec::new();
    for t in &variants {
        let src = t.source();
        let module = parse(&src, &t.id()).unwrap();
        assert_eq!(
            capabilities(&module).contains(Capabilities::SUBGROUP),
            t.subgroup,
            "{}: needs subgroups unless it is a subgroup variant",
            t.id()
        );
        assert_eq!(
            capabilities(&module) & !Capabilities::SUBGROUP,
            Capabilities::empty(),
            "{}",
            t.id()
        );
        let entries: Vec<&str> = module
            .entry_points
            .iter()
            .map(|e| e.name.as_str())
            .collect();
        let expected: Vec<&str> = Entry::ALL
            .iter()
            .filter(|e| e.in_module(t.subgroup))
            .map(|e| e.name())
            .collect();
        assert_eq!(entries, expected, "{}: entry points", t.id());
        if let Err(e) = check_source(&src, &t.id()) {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn conv_variants_fit_their_workgroup_memory() {
    for t in &selectable_tiles() {
        // The largest workgroup array of the generated text matches what the selection budgets for.
        let src = t.source();
        let bytes: usize = src
            .lines()
            .filter_map(|l| l.strip_prefix("var<workgroup> "))
            .map(|l| {
                let n: usize = l
                    .split(", ")
                    .nth(1)
                    .unwrap()
                    .split('>')
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap();
                n * 16
            })
            .max()
            .unwrap_or(0);
        assert!(bytes <= t.workgroup_bytes(), "{}: {bytes} bytes", t.id());
    }
}

#[test]
fn every_file_in_shaders_is_registered() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/shaders");
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".wgsl") {
            assert!(
                shaders::ALL.iter().any(|s| s.name == name),
                "{name} is not in shaders::ALL"
            );
        }
    }
}

#[test]
fn a_broken_shader_is_caught() {
    let broken = Shader {
        name: "broken.wgsl",
        source: "@compute @workgroup_size(1) fn main() { let x: f32 = 1u; }",
        preludes: &[""],
        trusted: false,
        zero_workgroup_memory: true,
    };
    let err = check(&broken, "").unwrap_err();
    assert!(err.contains("broken.wgsl"), "{err}");
}
