//! `calibseg predict`, run as a program: it reproduces MONAI's outputs in `tests/fixtures` (whole volumes
//! and sliding windows) from the fixtures' own weights and inputs, writes probabilities equal to the softmax
//! of its logits (f64 reference here), carries a NIfTI input's geometry into a 4D NIfTI output (header parsed
//! by hand below), and rejects bad input with a one-line error, a non-zero exit and no output written.
#![allow(clippy::too_many_arguments)]

use crate::common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use calibseg::io::safetensors::{write, HostTensor, TensorFile};
use common::reference::softmax;
use common::{assert_close, fixture, fixture_path, gpu, Rng, Tol};

fn tmp(name: &str) -> PathBuf {
    common::cli::scratch_path("cli-predict", name)
}

use common::cli::run_calibseg as run;

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs `calibseg predict` with the weights under `param.` of `weights` and asserts success.
fn predict_ok(arch: &str, config: &str, weights: &str, input: &str, output: &Path, extra: &[&str]) {
    let o = predict_run(arch, config, weights, input, output, extra, &[]);
    assert!(
        o.status.success(),
        "calibseg predict {arch} {input} {extra:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Runs `calibseg predict` with the weights under `param.` of `weights`, `extra` flags and the environment
/// variables `env` added.
fn predict_run(
    arch: &str,
    config: &str,
    weights: &str,
    input: &str,
    output: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> std::process::Output {
    let mut args = vec![
        "predict",
        "--arch",
        arch,
        "--config",
        config,
        "--weights",
        weights,
        "--weights-prefix",
        "param.",
        "--input",
        input,
        "--output",
        path_str(output),
    ];
    args.extend_from_slice(extra);
    common::cli::run_calibseg_with_env(&args, env)
}

/// f64 softmax over the class axis of `[B, C, spatial...]`.
fn softmax_f64(logits: &[f32], shape: &[usize]) -> Vec<f64> {
    let v: usize = shape[2..].iter().product();
    softmax(logits, shape[0], shape[1], v)
}

/// The output file holds `logits` equal to `want` (1e-4 of its largest entry) and `probs` equal to the f64
/// softmax of those logits.
fn check_output(out: &Path, want_shape: &[usize], want: &[f32], what: &str) {
    let f = TensorFile::open(out).unwrap();
    let mut names = f.names();
    names.sort();
    assert_eq!(names, ["logits", "probs"], "{what}: tensors in the output");
    let (ls, l) = f.f32("logits").unwrap();
    assert_eq!(ls, want_shape, "{what}: logits shape");
    assert_close(&l, want, Tol::of_max(1e-4), &format!("{what} logits"));
    let (ps, p) = f.f32("probs").unwrap();
    assert_eq!(ps, want_shape, "{what}: probs shape");
    assert_close(
        &p,
        &softmax_f64(&l, &ls),
        Tol::abs(1e-6),
        &format!("{what} probs"),
    );
}

/// Writes `text` to a temporary file and returns `@path` for `--config`.
fn config_file(name: &str, text: &str) -> String {
    let p = tmp(name);
    std::fs::write(&p, text).unwrap();
    format!("@{}", p.display())
}

#[test]
fn reproduces_the_network_fixtures() {
    if gpu().is_none() {
        return;
    }
    // SegResNetDS: eval mode is the full-resolution output; config inline.
    let name = "net_segresnetds_small.safetensors";
    let f = fixture(name);
    assert_eq!(f.metadata("network").unwrap(), "SegResNetDS");
    let out = tmp("segresnetds.out.safetensors");
    let file = fixture_path(name);
    predict_ok(
        "segresnetds",
        &f.metadata("config").unwrap(),
        &file,
        &file,
        &out,
        &[],
    );
    let (ws, w) = f.f32("eval.output").unwrap();
    check_output(&out, &ws, &w, "segresnetds eval.output");

    // SegResNet: no eval/train difference; config from a file, architecture name in another case.
    let name = "net_segresnet_small.safetensors";
    let f = fixture(name);
    assert_eq!(f.metadata("network").unwrap(), "SegResNet");
    let out = tmp("segresnet.out.safetensors");
    let file = fixture_path(name);
    let config = config_file("segresnet.json", &f.metadata("config").unwrap());
    predict_ok("SegResNet", &config, &file, &file, &out, &[]);
    let (ws, w) = f.f32("train.output.0").unwrap();
    check_output(&out, &ws, &w, "segresnet train.output.0");
}

#[test]
fn reproduces_every_sliding_window_setting() {
    if gpu().is_none() {
        return;
    }
    let name = "net_sliding_window_small.safetensors";
    let f = fixture(name);
    assert_eq!(f.metadata("network").unwrap(), "SegResNetDS");
    let file = fixture_path(name);
    let config = f.metadata("config").unwrap();
    let settings: serde_json::Value =
        serde_json::from_str(&f.metadata("settings").unwrap()).unwrap();
    let settings = settings.as_array().unwrap();
    assert!(!settings.is_empty());
    // A number or a list of numbers as the CLI's comma-separated list.
    let list = |v: &serde_json::Value| -> String {
        match v {
            serde_json::Value::Array(a) => a
                .iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(","),
            x => x.to_string(),
        }
    };
    for (i, s) in settings.iter().enumerate() {
        let mut extra = vec![
            "--roi".to_string(),
            list(&s["roi"]),
            "--overlap".to_string(),
            list(&s["overlap"]),
            "--mode".to_string(),
            s["mode"].as_str().unwrap().to_string(),
        ];
        if let Some(v) = s.get("sigma_scale") {
            extra.extend(["--sigma-scale".to_string(), list(v)]);
        }
        if let Some(v) = s.get("sw_batch_size") {
            extra.extend(["--sw-batch-size".to_string(), v.to_string()]);
        }
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        // Inline JSON for even settings, @file.json for odd ones.
        let config = if i % 2 == 0 {
            config.clone()
        } else {
            config_file(&format!("sw{i}.json"), &config)
        };
        let out = tmp(&format!("sw{i}.out.safetensors"));
        predict_ok("segresnetds", &config, &file, &file, &out, &extra);
        let (ws, w) = f.f32(&format!("sw.{i}.output")).unwrap();
        check_output(&out, &ws, &w, &format!("{name} sw.{i} {s}"));
    }
    // The last setting again with three windows per network call: the same numbers.
    let i = settings.len() - 1;
    let s = &settings[i];
    let mut extra = vec![
        "--roi".to_string(),
        list(&s["roi"]),
        "--overlap".to_string(),
        list(&s["overlap"]),
        "--mode".to_string(),
        s["mode"].as_str().unwrap().to_string(),
        "--sw-batch-size".to_string(),
        "3".to_string(),
    ];
    if let Some(v) = s.get("sigma_scale") {
        extra.extend(["--sigma-scale".to_string(), list(v)]);
    }
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let out = tmp("sw.batched.out.safetensors");
    predict_ok("segresnetds", &config, &file, &file, &out, &extra);
    let (ws, w) = f.f32(&format!("sw.{i}.output")).unwrap();
    check_output(&out, &ws, &w, "sliding window, sw_batch_size 3");
}

// ---- Volumes over one storage binding ---------------------------------------------------------------

/// The storage-binding limit forced on `calibseg` below (bytes, `CALIBSEG_MAX_STORAGE_BINDING`).
const SMALL_BINDING: usize = 192 << 10;

#[test]
fn a_volume_over_the_binding_limit_predicts_slab_by_slab_with_the_same_bits() {
    if gpu().is_none() {
        return;
    }
    let name = "net_sliding_window_small.safetensors";
    let file = fixture_path(name);
    let config = fixture(name).metadata("config").unwrap();
    // Three classes of f32 logits over 44 x 32 x 20 voxels: 337,920 bytes, over the forced binding.
    let shape = [1usize, 1, 44, 32, 20];
    let classes = 3;
    assert!(classes * shape.iter().product::<usize>() * 4 > SMALL_BINDING);
    let input = input_of("large.in.safetensors", &shape);
    let limit = SMALL_BINDING.to_string();
    let env = [("CALIBSEG_MAX_STORAGE_BINDING", limit.as_str())];
    let run_env = |output: &Path, extra: &[&str], env: &[(&str, &str)]| {
        let input = path_str(&input);
        predict_run("segresnetds", &config, &file, input, output, extra, env)
    };
    let window = [
        "--roi",
        "16,16,16",
        "--mode",
        "gaussian",
        "--sw-batch-size",
        "2",
    ];
    // The slabs per image that the command reports.
    let slabs = |o: &std::process::Output| -> usize {
        let text = String::from_utf8_lossy(&o.stdout);
        let rest = text
            .split("sliding window: ")
            .nth(1)
            .unwrap_or_else(|| panic!("{text}"));
        rest.split(' ').next().unwrap().parse().unwrap()
    };
    let whole = tmp("large.whole.safetensors");
    let o = run_env(&whole, &window, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(slabs(&o), 1, "unsplit on the full device");
    // Under the forced limit, and again with a budget of a few rows per slab.
    for (tag, budget) in [("limit", None), ("budget", Some("400000"))] {
        let split = tmp(&format!("large.{tag}.safetensors"));
        let mut extra = window.to_vec();
        if let Some(b) = budget {
            extra.extend(["--memory-budget", b]);
        }
        let o = run_env(&split, &extra, &env);
        assert!(
            o.status.success(),
            "{tag}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            slabs(&o) > 1,
            "{tag}: {}",
            String::from_utf8_lossy(&o.stdout)
        );
        let (a, b) = (
            TensorFile::open(&whole).unwrap(),
            TensorFile::open(&split).unwrap(),
        );
        for t in ["logits", "probs"] {
            let ((sa, va), (sb, vb)) = (a.f32(t).unwrap(), b.f32(t).unwrap());
            assert_eq!(sa, [1, classes, 44, 32, 20]);
            assert_eq!(sa, sb, "{tag} {t} shape");
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert!(
                bits(&va) == bits(&vb),
                "{tag}: {t} differ from the unsplit run"
            );
        }
    }
    // The limit is in force: the whole volume at once needs bindings over it.
    let o = run_env(&tmp("large.nowindow.safetensors"), &[], &env);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("max_storage_buffer_binding_size"),
        "{err}"
    );
    // A limit that is not a number of bytes is refused, naming the variable.
    let o = run_env(
        &tmp("large.badlimit.safetensors"),
        &window,
        &[("CALIBSEG_MAX_STORAGE_BINDING", "12")],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("CALIBSEG_MAX_STORAGE_BINDING='12'"),
        "{err}"
    );
}

// ---- NIfTI -------------------------------------------------------------------------------------------

/// A NIfTI-1 image's header fields that place it in space, as this test writes and reads them.
#[derive(Clone, Debug, PartialEq)]
struct Header {
    dim: [i16; 8],
    datatype: i16,
    pixdim: [f32; 8],
    xyzt_units: u8,
    qform_code: i16,
    sform_code: i16,
    quatern: [f32; 6],
    srow: [f32; 12],
}

/// Encodes a little-endian single-file NIfTI-1 image (`n+1`, data at 352) of f32 voxels, x fastest.
fn encode_nifti(h: &Header, data: &[f32]) -> Vec<u8> {
    let mut b = vec![0u8; 352];
    b[0..4].copy_from_slice(&348i32.to_le_bytes());
    for (d, v) in h.dim.iter().enumerate() {
        b[40 + 2 * d..42 + 2 * d].copy_from_slice(&v.to_le_bytes());
    }
    b[70..72].copy_from_slice(&h.datatype.to_le_bytes());
    b[72..74].copy_from_slice(&32i16.to_le_bytes());
    for (d, v) in h.pixdim.iter().enumerate() {
        b[76 + 4 * d..80 + 4 * d].copy_from_slice(&v.to_le_bytes());
    }
    b[108..112].copy_from_slice(&352f32.to_le_bytes());
    b[112..116].copy_from_slice(&1f32.to_le_bytes()); // scl_slope
    b[123] = h.xyzt_units;
    b[252..254].copy_from_slice(&h.qform_code.to_le_bytes());
    b[254..256].copy_from_slice(&h.sform_code.to_le_bytes());
    for (k, v) in h.quatern.iter().enumerate() {
        b[256 + 4 * k..260 + 4 * k].copy_from_slice(&v.to_le_bytes());
    }
    for (k, v) in h.srow.iter().enumerate() {
        b[280 + 4 * k..284 + 4 * k].copy_from_slice(&v.to_le_bytes());
    }
    b[344..348].copy_from_slice(b"n+1\0");
    for v in data {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b
}

/// Decodes a (possibly gzipped) little-endian NIfTI-1 f32 image: header and voxels, x fastest.
fn decode_nifti(path: &Path) -> (Header, Vec<f32>) {
    let raw = std::fs::read(path).unwrap();
    let b = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut v = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut v)
            .unwrap();
        v
    } else {
        raw
    };
    assert_eq!(i32::from_le_bytes(b[0..4].try_into().unwrap()), 348);
    assert_eq!(&b[344..348], b"n+1\0");
    let i16_at = |o: usize| i16::from_le_bytes(b[o..o + 2].try_into().unwrap());
    let f32_at = |o: usize| f32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    let h = Header {
        dim: std::array::from_fn(|d| i16_at(40 + 2 * d)),
        datatype: i16_at(70),
        pixdim: std::array::from_fn(|d| f32_at(76 + 4 * d)),
        xyzt_units: b[123],
        qform_code: i16_at(252),
        sform_code: i16_at(254),
        quatern: std::array::from_fn(|k| f32_at(256 + 4 * k)),
        srow: std::array::from_fn(|k| f32_at(280 + 4 * k)),
    };
    assert_eq!(h.datatype, 16, "FLOAT32 voxels");
    let slope = f32_at(112);
    assert!(slope == 1.0 || slope == 0.0, "scl_slope {slope}");
    let offset = f32_at(108) as usize;
    let n: usize = (1..=h.dim[0] as usize).map(|d| h.dim[d] as usize).product();
    let data = b[offset..offset + 4 * n]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    (h, data)
}

/// A 3D image header with an oblique, anisotropic, left-handed (qfac = -1) qform and the matching sform,
/// shifted and with its own code so that copying either is observable.
fn oblique_header(dims: [usize; 3]) -> Header {
    let spacing = [0.75f32, 1.5, 2.5];
    let qfac = -1.0f32;
    // Rotation of 30 degrees about (1, 2, 2)/3.
    let half = 15f64.to_radians();
    let axis = [1.0 / 3.0, 2.0 / 3.0, 2.0 / 3.0];
    let (a, b, c, d) = (
        half.cos(),
        axis[0] * half.sin(),
        axis[1] * half.sin(),
        axis[2] * half.sin(),
    );
    let r = [
        [
            a * a + b * b - c * c - d * d,
            2.0 * (b * c - a * d),
            2.0 * (b * d + a * c),
        ],
        [
            2.0 * (b * c + a * d),
            a * a + c * c - b * b - d * d,
            2.0 * (c * d - a * b),
        ],
        [
            2.0 * (b * d - a * c),
            2.0 * (c * d + a * b),
            a * a + d * d - b * b - c * c,
        ],
    ];
    let offset = [-31.5f32, 12.25, 80.0];
    let mut srow = [0f32; 12];
    for i in 0..3 {
        for j in 0..3 {
            let s = spacing[j] as f64 * if j == 2 { qfac as f64 } else { 1.0 };
            srow[4 * i + j] = (r[i][j] * s) as f32;
        }
        srow[4 * i + 3] = offset[i] + 0.5;
    }
    Header {
        dim: [
            3,
            dims[0] as i16,
            dims[1] as i16,
            dims[2] as i16,
            1,
            1,
            1,
            1,
        ],
        datatype: 16,
        pixdim: [qfac, spacing[0], spacing[1], spacing[2], 0.0, 0.0, 0.0, 0.0],
        xyzt_units: 10, // mm, s
        qform_code: 1,  // scanner
        sform_code: 4,  // MNI152
        quatern: [
            b as f32, c as f32, d as f32, offset[0], offset[1], offset[2],
        ],
        srow,
    }
}

#[test]
fn nifti_in_nifti_out_keeps_geometry_and_axis_order() {
    if gpu().is_none() {
        return;
    }
    let name = "net_sliding_window_small.safetensors";
    let f = fixture(name);
    let file = fixture_path(name);
    let config = f.metadata("config").unwrap();
    // Non-cubic: x 8, y 12, z 16 (each divisible by the network's 4).
    let (nx, ny, nz) = (8usize, 12usize, 16usize);
    let mut rng = Rng::new(10);
    let volume: Vec<f32> = rng.normals(nx * ny * nz, 1.0);
    // NIfTI voxel (x, y, z) lies at x + nx (y + ny z); the network sees it at [0, 0, z, y, x].
    let nifti_at = |x: usize, y: usize, z: usize| x + nx * (y + ny * z);
    let header = oblique_header([nx, ny, nz]);
    let input = tmp("oblique.nii");
    std::fs::write(&input, encode_nifti(&header, &volume)).unwrap();
    // The same volume as a 4D image with one channel last (gzipped).
    let mut header4 = header.clone();
    header4.dim[0] = 4;
    header4.pixdim[4] = 1.0;
    let input4 = tmp("oblique4d.nii.gz");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&encode_nifti(&header4, &volume)).unwrap();
    std::fs::write(&input4, gz.finish().unwrap()).unwrap();
    let mut tensor = vec![0f32; nx * ny * nz];
    for z in 0..nz {
        for y in 0..ny {
            for x in 0..nx {
                tensor[(x * ny + y) * nz + z] = volume[nifti_at(x, y, z)];
            }
        }
    }
    let st_input = tmp("oblique.input.safetensors");
    let mut m = BTreeMap::new();
    m.insert(
        "input".to_string(),
        HostTensor::F32(vec![1, 1, nx, ny, nz], tensor),
    );
    write(&st_input, &m, None).unwrap();

    for (tag, window) in [
        ("whole", &[][..]),
        (
            "sw",
            &["--roi", "8,8,8", "--overlap", "0.5", "--mode", "gaussian"][..],
        ),
    ] {
        // The same volume as a safetensors input: the reference.
        let reference = tmp(&format!("oblique.{tag}.out.safetensors"));
        predict_ok(
            "segresnetds",
            &config,
            &file,
            path_str(&st_input),
            &reference,
            window,
        );
        let (ps, probs) = TensorFile::open(&reference).unwrap().f32("probs").unwrap();
        let classes = ps[1];
        assert_eq!(ps, [1, classes, nx, ny, nz]);

        for (kind, input) in [("3d", &input), ("4d", &input4)] {
            let tag = format!("{tag} {kind}");
            let out = tmp(&format!("oblique.{tag}.probs.nii.gz"));
            predict_ok("segresnetds", &config, &file, path_str(input), &out, window);
            let (h, got) = decode_nifti(&out);
            assert_eq!(
                &h.dim[..5],
                &[4, nx as i16, ny as i16, nz as i16, classes as i16],
                "{tag}: (x, y, z, C)"
            );
            assert_eq!(
                &h.pixdim[..4],
                &header.pixdim[..4],
                "{tag}: qfac and spacing"
            );
            assert_eq!(h.xyzt_units, header.xyzt_units, "{tag}: units");
            assert_eq!(h.qform_code, header.qform_code, "{tag}: qform_code");
            assert_eq!(h.sform_code, header.sform_code, "{tag}: sform_code");
            assert_eq!(h.quatern, header.quatern, "{tag}: quatern and qoffset");
            assert_eq!(h.srow, header.srow, "{tag}: srow");
            // Voxel (x, y, z) of class c is probs[0, c, x, y, z] (MONAI's array order).
            let mut want = vec![0f64; got.len()];
            for c in 0..classes {
                for z in 0..nz {
                    for y in 0..ny {
                        for x in 0..nx {
                            want[nifti_at(x, y, z) + nx * ny * nz * c] =
                                probs[((c * nx + x) * ny + y) * nz + z] as f64;
                        }
                    }
                }
            }
            assert_close(&got, &want, Tol::abs(1e-6), &tag);
        }
    }
}

// ---- Errors ------------------------------------------------------------------------------------------

/// Writes the fixture's `param.` tensors to a new file after `edit` (name -> tensor, names without `param.`).
fn edited_weights(name: &str, edit: impl FnOnce(&mut BTreeMap<String, HostTensor>)) -> PathBuf {
    let f = fixture("net_sliding_window_small.safetensors");
    let mut m = BTreeMap::new();
    for n in f.names() {
        if let Some(k) = n.strip_prefix("param.") {
            let (s, v) = f.f32(&n).unwrap();
            m.insert(k.to_string(), HostTensor::F32(s, v));
        }
    }
    edit(&mut m);
    let m = m
        .into_iter()
        .map(|(k, v)| (format!("param.{k}"), v))
        .collect();
    let p = tmp(name);
    write(&p, &m, None).unwrap();
    p
}

/// A safetensors input holding `input` of this shape.
fn input_of(name: &str, shape: &[usize]) -> PathBuf {
    let n = shape.iter().product();
    let mut m = BTreeMap::new();
    m.insert(
        "input".to_string(),
        HostTensor::F32(shape.to_vec(), Rng::new(3).normals(n, 1.0)),
    );
    let p = tmp(name);
    write(&p, &m, None).unwrap();
    p
}

/// Runs `calibseg predict` with `args` plus `--output`, twice: once with no output file (it must not exist
/// afterwards), once over an existing one (it must be unchanged). Both exit non-zero with one line that
/// contains every needle.
fn expect_failure(args: &[&str], output_ext: &str, needles: &[&str]) {
    let tag = needles[0].replace(|c: char| !c.is_ascii_alphanumeric(), "_");
    for existing in [false, true] {
        let out = tmp(&format!("never-{tag}-{existing}.{output_ext}"));
        let old = b"previous contents".to_vec();
        if existing {
            std::fs::write(&out, &old).unwrap();
        } else {
            let _ = std::fs::remove_file(&out);
        }
        let mut a = vec!["predict"];
        a.extend_from_slice(args);
        a.extend(["--output", path_str(&out)]);
        let o = run(&a);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success(),
            "expected failure for {needles:?}: {a:?}"
        );
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "one-line error expected: {err}"
        );
        for n in needles {
            assert!(err.contains(n), "error should mention '{n}': {err}");
        }
        if existing {
            assert_eq!(
                std::fs::read(&out).unwrap(),
                old,
                "{needles:?}: existing output changed"
            );
        } else {
            assert!(
                !out.exists(),
                "{needles:?}: output written despite the error"
            );
        }
        let leftovers: Vec<_> = std::fs::read_dir(out.parent().unwrap())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains("calibseg-new"))
            .collect();
        assert!(leftovers.is_empty(), "temporaries left: {leftovers:?}");
    }
}

#[test]
fn bad_input_fails_cleanly() {
    if gpu().is_none() {
        return;
    }
    let file = fixture_path("net_sliding_window_small.safetensors");
    let config = fixture("net_sliding_window_small.safetensors")
        .metadata("config")
        .unwrap();
    let base = |config: &str, weights: &str, input: &str| -> Vec<String> {
        [
            "--arch",
            "segresnetds",
            "--config",
            config,
            "--weights",
            weights,
            "--weights-prefix",
            "param.",
            "--input",
            input,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let fail = |args: Vec<String>, extra: &[&str], ext: &str, needles: &[&str]| {
        let mut a: Vec<&str> = args.iter().map(String::as_str).collect();
        a.extend_from_slice(extra);
        expect_failure(&a, ext, needles);
    };
    let good = || base(&config, &file, &file);
    let st = "safetensors";

    // The command line and the configuration.
    let mut a = good();
    a[1] = "unet".to_string();
    fail(a, &[], st, &["unet", "segresnetds"]);
    fail(
        base("{\"init_filters\": 4,", &file, &file),
        &[],
        st,
        &["JSON"],
    );
    let batch = config.replacen('{', "{\"norm\": \"BATCH\", ", 1);
    fail(base(&batch, &file, &file), &[], st, &["norm", "BATCH"]);
    fail(
        base("@/no/such/config.json", &file, &file),
        &[],
        st,
        &["/no/such/config.json"],
    );
    let resolution = config.replacen('{', "{\"resolution\": [1, 1, 1], ", 1);
    fail(base(&resolution, &file, &file), &[], st, &["resolution"]);
    fail(good(), &["--roi", "16,16"], st, &["--roi", "3 spatial"]);
    fail(
        good(),
        &["--roi", "16,16,16", "--mode", "bogus"],
        st,
        &["bogus"],
    );
    fail(
        good(),
        &["--roi", "16,16,16", "--overlap", "1.5"],
        st,
        &["overlap", "1.5"],
    );
    fail(
        good(),
        &["--roi", "16,16,16", "--memory-budget", "0"],
        st,
        &["memory_budget", "positive"],
    );
    fail(
        good(),
        &["--roi", "16,16,16", "--memory-budget", "1000"],
        st,
        &["memory budget of 1000 bytes", "too small"],
    );

    // Weights: missing, unexpected and mis-shaped tensors are named.
    let w = edited_weights("missing.safetensors", |m| {
        m.remove("up_layers.1.head.weight").unwrap();
    });
    fail(
        base(&config, path_str(&w), &file),
        &[],
        st,
        &["missing", "up_layers.1.head.weight"],
    );
    let w = edited_weights("extra.safetensors", |m| {
        m.insert(
            "up_layers.7.head.weight".to_string(),
            HostTensor::F32(vec![3], vec![0.0; 3]),
        );
    });
    fail(
        base(&config, path_str(&w), &file),
        &[],
        st,
        &["unexpected", "up_layers.7.head.weight"],
    );
    let w = edited_weights("shape.safetensors", |m| {
        m.insert(
            "encoder.conv_init.weight".to_string(),
            HostTensor::F32(vec![4, 1, 3, 3, 2], vec![0.0; 72]),
        );
    });
    fail(
        base(&config, path_str(&w), &file),
        &[],
        st,
        &["encoder.conv_init.weight", "[4, 1, 3, 3, 2]"],
    );

    // Inputs: divisibility (whole volume and window), channels, NIfTI output without NIfTI input.
    let x = input_of("indivisible.safetensors", &[1, 1, 8, 12, 6]);
    fail(
        base(&config, &file, path_str(&x)),
        &[],
        st,
        &["[8, 12, 6]", "divisible by 4"],
    );
    fail(
        good(),
        &["--roi", "16,16,10"],
        st,
        &["--roi", "divisible by 4"],
    );
    let x = input_of("channels.safetensors", &[1, 2, 8, 8, 8]);
    fail(
        base(&config, &file, path_str(&x)),
        &[],
        st,
        &["2 channels", "takes 1"],
    );
    fail(
        base(&config, &file, path_str(&x)),
        &["--roi", "8,8,8"],
        st,
        &["2 channels", "takes 1"],
    );
    fail(good(), &[], "nii.gz", &["NIfTI"]);
}
