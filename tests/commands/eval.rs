//! `calibseg eval` end to end: the command on the fixtures, NIfTI folders, pictures, bad input.

use crate::common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use calibseg::commands::eval::{self, EvalOptions};
use calibseg::io::nifti;
use calibseg::io::safetensors::{self as st, HostTensor, TensorFile};
use calibseg::metrics::{self, plot};
use calibseg::Tensor;
use common::{assert_close, Tol};

const EXE: &str = env!("CARGO_BIN_EXE_calibseg");

fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(common::fixture_path(&format!("{name}.safetensors")))
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("calibseg-eval-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The output folder reproduces the fixture: errors 1e-5 absolute, bins 1e-5 relative, heat map exactly.
fn check_outputs(out: &Path, fixture: &TensorFile, tag: &str) {
    let got = TensorFile::open(out.join("calibration.safetensors")).unwrap();
    for m in ["ece", "ace", "mce"] {
        let (gs, g) = got.f32(m).unwrap();
        let (ws, w) = fixture.f32(&format!("{m}.{tag}")).unwrap();
        assert_eq!(gs, ws, "{m} shape");
        assert_close(&g, &w, Tol::abs(1e-5), m);
    }
    if tag == "nobg" {
        for b in ["bin_count", "bin_sum_p", "bin_sum_y"] {
            // Counts are stored exactly, as u32.
            let (gs, g) = if b == "bin_sum_p" {
                got.f32(b).unwrap()
            } else {
                let (s, v) = got.integers(b).unwrap();
                (s, v.into_iter().map(|x| x as f32).collect())
            };
            let (ws, w) = fixture.f32(&format!("nobg.{b}")).unwrap();
            assert_eq!(gs, ws, "{b} shape");
            assert_close(&g, &w, Tol::rel(1e-5).plus_abs(1e-12), b);
        }
        assert_eq!(
            got.integers("reliability_heatmap").unwrap(),
            fixture.integers("nobg.reliability_heatmap").unwrap()
        );
    }
    // metrics.csv: one row per image and class, same numbers as the tensors.
    let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("image,class,dsc,ece,ace,mce"));
    let (_, ace) = got.f32("ace").unwrap();
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), ace.len());
    for (r, want) in rows.iter().zip(&ace) {
        let v: f32 = r.split(',').nth(4).unwrap().parse().unwrap();
        assert!((v - want).abs() <= 1e-6 * want.abs(), "{r}");
    }
    let json = std::fs::read_to_string(out.join("summary.json")).unwrap();
    for key in [
        "\"macro\"",
        "\"micro\"",
        "\"micro_count_weighted\"",
        "\"dsc\"",
    ] {
        assert!(json.contains(key), "summary.json lacks {key}: {json}");
    }
}

fn run_cli(args: &[&str]) -> std::process::Output {
    Command::new(EXE).args(args).output().unwrap()
}

#[test]
fn cli_reproduces_the_fixtures() {
    let Some(_gpu) = common::gpu() else { return };
    for name in ["metrics_n4_c4", "metrics_n3_c3_exact_edges"] {
        let f = fixture_path(name);
        let fx = TensorFile::open(&f).unwrap();
        let m = fx.metadata("num_bins").unwrap();
        let dir = scratch(name);
        for (tag, extra) in [("nobg", None), ("bg", Some("--include-background"))] {
            let out = dir.join(tag);
            let mut args = vec![
                "eval",
                "--probs",
                f.to_str().unwrap(),
                "--labels",
                f.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
                "--num-bins",
                &m,
            ];
            args.extend(extra);
            if tag == "bg" {
                args.push("--no-pictures");
            }
            let o = run_cli(&args);
            assert!(
                o.status.success(),
                "{name} {tag}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            check_outputs(&out, &fx, tag);
            let pictures = out.join("dataset_reliability.png").exists();
            assert_eq!(pictures, tag == "nobg");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn bad_input_fails_with_one_line_and_writes_nothing() {
    let Some(_gpu) = common::gpu() else { return };
    let dir = scratch("bad");
    let bad = dir.join("bad.safetensors");
    let mut t = BTreeMap::new();
    t.insert(
        "probs".to_string(),
        HostTensor::F32(vec![2, 3, 4], vec![0.3; 24]),
    );
    t.insert(
        "labels".to_string(),
        HostTensor::I32(vec![2, 1, 5], vec![0; 10]),
    );
    st::write(&bad, &t, None).unwrap();
    let mut t2 = t.clone();
    t2.insert(
        "labels".to_string(),
        HostTensor::I32(vec![2, 1, 4], vec![0, 1, 2, 3, 0, 0, 0, 0]),
    );
    let bad_label = dir.join("bad_label.safetensors");
    st::write(&bad_label, &t2, None).unwrap();
    let good = fixture_path("metrics_n4_c4");
    let cases: Vec<Vec<String>> = vec![
        vec![
            bad.display().to_string(),
            bad.display().to_string(),
            "20".into(),
        ],
        vec![
            bad_label.display().to_string(),
            bad_label.display().to_string(),
            "20".into(),
        ],
        vec![
            dir.join("missing.safetensors").display().to_string(),
            good.display().to_string(),
            "20".into(),
        ],
        vec![
            good.display().to_string(),
            good.display().to_string(),
            "0".into(),
        ],
        vec![
            good.display().to_string(),
            dir.display().to_string(),
            "20".into(),
        ],
    ];
    for c in cases {
        let out = dir.join("out");
        let o = run_cli(&[
            "eval",
            "--probs",
            &c[0],
            "--labels",
            &c[1],
            "--out",
            out.to_str().unwrap(),
            "--num-bins",
            &c[2],
        ]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{c:?} succeeded");
        assert_eq!(err.trim_end().lines().count(), 1, "{c:?}: {err}");
        assert!(err.starts_with("calibseg: "), "{err}");
        assert!(!out.exists(), "{c:?} left {}", out.display());
        let leftovers: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .filter(|n| n.contains(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn nifti_round_trip_and_folder_eval() {
    let dir = scratch("nifti");
    // Round trip of small 3D/4D images, plain and gzipped.
    let mut rng = common::Rng::new(3);
    let dims = [5usize, 4, 3, 2];
    let data: Vec<f32> = (0..120).map(|_| rng.uniform() as f32).collect();
    let labels: Vec<i32> = (0..60).map(|_| rng.below(7) as i32 - 1).collect();
    for ext in ["nii", "nii.gz"] {
        let p = dir.join(format!("probs.{ext}"));
        nifti::write_f32(&p, &dims, &[0.5, 0.5, 2.0], &data).unwrap();
        assert_eq!(nifti::read_f32(&p).unwrap(), (dims.to_vec(), data.clone()));
        let l = dir.join(format!("labels.{ext}"));
        nifti::write_i32(&l, &dims[..3], &[1.0; 3], &labels).unwrap();
        let (ld, lv) = nifti::read_integers(&l).unwrap();
        assert_eq!(ld, dims[..3].to_vec());
        assert_eq!(lv, labels.iter().map(|&x| x as i64).collect::<Vec<_>>());
        assert_eq!(nifti::case_name(&l), "labels");
        // f32 data is readable as labels only when integral.
        nifti::read_integers(&p).unwrap_err();
    }
    nifti::write_f32(dir.join("x.nii"), &[2, 2], &[], &[1.0; 3]).unwrap_err();
    std::fs::write(dir.join("junk.nii"), b"not a nifti file").unwrap();
    nifti::read_f32(dir.join("junk.nii")).unwrap_err();

    // Folder evaluation: the fixture's images as one 4D NIfTI per case (x fastest = row-major [C, D, H, W]).
    let Some(gpu) = common::gpu() else { return };
    let f = TensorFile::open(fixture_path("metrics_n4_c4")).unwrap();
    let (ps, p) = f.f32("probs").unwrap();
    let (_, l) = f.integers("labels").unwrap();
    let (n, c) = (ps[0], ps[1]);
    let v: usize = ps[2..].iter().product();
    let spatial_xyz: Vec<usize> = ps[2..].iter().rev().copied().collect();
    let (pd, ld) = (dir.join("probs"), dir.join("labels"));
    std::fs::create_dir_all(&pd).unwrap();
    std::fs::create_dir_all(&ld).unwrap();
    for i in 0..n {
        let mut d4 = spatial_xyz.clone();
        d4.push(c);
        let ext = if i % 2 == 0 { "nii.gz" } else { "nii" };
        nifti::write_f32(
            pd.join(format!("case{i}.{ext}")),
            &d4,
            &[1.0; 3],
            &p[i * c * v..(i + 1) * c * v],
        )
        .unwrap();
        let li: Vec<i32> = l[i * v..(i + 1) * v].iter().map(|&x| x as i32).collect();
        nifti::write_i32(
            ld.join(format!("case{i}.nii.gz")),
            &spatial_xyz,
            &[1.0; 3],
            &li,
        )
        .unwrap();
    }
    let out = dir.join("out");
    let mut o = EvalOptions::new(&pd, &ld, &out);
    o.pictures = false;
    let mut events = Vec::new();
    let r = eval::run(&gpu, &o, &mut |e| events.push(e.clone())).unwrap();
    assert_eq!(r.images, vec!["case0", "case1", "case2", "case3"]);
    // Progress: each case as it is evaluated, in order, then the writing.
    let mut want: Vec<eval::Event> = (0..4)
        .map(|i| eval::Event::Case {
            done: i,
            total: 4,
            name: format!("case{i}"),
        })
        .collect();
    want.push(eval::Event::Writing { total: 4 });
    assert_eq!(events, want);
    check_outputs(&out, &f, "nobg");
    // A missing label file is an error, and nothing is written.
    std::fs::remove_file(ld.join("case3.nii.gz")).unwrap();
    let out2 = dir.join("out2");
    let e = eval::run(&gpu, &EvalOptions::new(&pd, &ld, &out2), &mut |_| {}).unwrap_err();
    assert!(e.to_string().contains("case3"), "{e}");
    assert!(!out2.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

fn decode_png(path: &Path) -> (u32, u32, Vec<u8>) {
    let dec = png::Decoder::new(std::fs::File::open(path).unwrap());
    let mut reader = dec.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgb, "{}", path.display());
    buf.truncate(info.buffer_size());
    (info.width, info.height, buf)
}

#[test]
fn pictures_render_with_content() {
    let Some(gpu) = common::gpu() else { return };
    // The font is embedded: text is drawn on every machine.
    assert!(plot::fonts_available());
    let f = TensorFile::open(fixture_path("metrics_n4_c4")).unwrap();
    let (ps, p) = f.f32("probs").unwrap();
    let (ls, l) = f.integers("labels").unwrap();
    let l: Vec<i32> = l.iter().map(|&x| x as i32).collect();
    let probs = Tensor::from_f32(&gpu, &ps, &p).unwrap();
    let labels = Tensor::from_slice(&gpu, &ls, &l).unwrap();
    let s = metrics::hard_bin_stats(&probs, &labels, 20, false).unwrap();
    let e = metrics::per_image(&s);
    let dir = scratch("pictures");
    let (rel, ds, svg) = (dir.join("rel.png"), dir.join("ds.png"), dir.join("ds.svg"));
    plot::reliability_diagram(&rel, &s, &e, 1).unwrap();
    plot::dataset_reliability(&ds, &s).unwrap();
    plot::dataset_reliability(&svg, &s).unwrap();

    let (w, h, px) = decode_png(&rel);
    assert_eq!(
        (w, h),
        (3 * plot::PANEL.0, plot::PANEL.1 + 40 + plot::HIST_HEIGHT)
    );
    // The caption "class 1" is drawn as text: dark glyph pixels in the title strip above the first panel's
    // plot area, centred over the panel, and nothing else there.
    let dark_in_title: Vec<u32> = (0..24u32)
        .flat_map(|y| (0..plot::PANEL.0).map(move |x| (x, y)))
        .filter(|&(x, y)| {
            let i = 3 * (y * w + x) as usize;
            px[i..i + 3].iter().all(|&v| v < 128)
        })
        .map(|(x, _)| x)
        .collect();
    assert!(
        dark_in_title.len() > 40,
        "no caption text drawn: {} dark pixels",
        dark_in_title.len()
    );
    let (lo, hi) = (
        *dark_in_title.iter().min().unwrap(),
        *dark_in_title.iter().max().unwrap(),
    );
    let centre = plot::PANEL.0 / 2;
    assert!(
        lo > centre - 60 && hi < centre + 60 && hi - lo > 20,
        "caption spans x {lo}..{hi}, not a centred word"
    );
    let pixels: Vec<&[u8]> = px.chunks_exact(3).collect();
    let non_white = pixels.iter().filter(|p| p != &&[255, 255, 255]).count();
    assert!(
        non_white > pixels.len() / 50,
        "reliability diagram nearly blank: {non_white}"
    );
    // The gap bars (translucent red on white) and the histogram blue are present.
    let pinkish = pixels
        .iter()
        .filter(|p| p[0] > 240 && p[1] < 215 && p[1] > 180 && p[2] < 215)
        .count();
    let blue = pixels.iter().filter(|p| **p == [31, 119, 180]).count();
    assert!(pinkish > 1000 && blue > 1000, "pink {pinkish}, blue {blue}");

    let (w, h, px) = decode_png(&ds);
    assert_eq!(
        (w, h),
        (
            4 * plot::PANEL.0 + plot::BAR_WIDTH,
            plot::PANEL.1 + 40 + plot::HIST_HEIGHT
        )
    );
    // Heat-map colours: the darkest YlOrRd end (a column where every image agrees) and the pale start.
    let pixels: Vec<&[u8]> = px.chunks_exact(3).collect();
    let pale = pixels.iter().filter(|p| **p == [255, 255, 204]).count();
    let red = pixels
        .iter()
        .filter(|p| p[0] > 150 && p[1] < 60 && p[2] < 60)
        .count();
    assert!(pale > 10_000 && red > 1000, "pale {pale}, red {red}");

    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.starts_with("<svg") && text.contains("<rect") && text.contains("average"));
    std::fs::remove_dir_all(&dir).unwrap();
}
