//! NIfTI reading against files written by nibabel (`scripts/make_nifti_fixtures.py`, `tests/fixtures/nifti/`):
//! every datatype, NIfTI-2, big-endian, scaled, sform over qform, an oblique qform with qfac -1, no
//! transform at all, 4D channels last; and the writer read back.

use std::path::{Path, PathBuf};

use calibseg::io::nifti::{self, DataType, Geometry, Voxels};
use calibseg::Error;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/nifti")
}

/// nibabel's view of each fixture (`nifti.json`).
fn nibabel_views() -> serde_json::Map<String, serde_json::Value> {
    let text = std::fs::read_to_string(fixture_dir().join("nifti.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["files"].as_object().unwrap().clone()
}

fn f64s(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[test]
fn every_fixture_reads_as_nibabel_reads_it() {
    let views = nibabel_views();
    assert!(views.len() >= 24, "{} fixtures", views.len());
    for (name, want) in &views {
        let path = fixture_dir().join(name);
        let img = nifti::read_image(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let info = img.info();
        let shape: Vec<usize> = f64s(&want["shape"]).iter().map(|&d| d as usize).collect();
        assert_eq!(info.dims, shape, "{name}: shape");
        let dtype = serde_json::to_value(info.datatype).unwrap();
        assert_eq!(dtype, want["dtype"], "{name}: datatype");
        // Values: get_fdata() exactly (f64, scaling included), and its f32 rounding exactly.
        let values = f64s(&want["values"]);
        let mut got = Vec::new();
        img.for_each_value(|x| got.push(x));
        assert_eq!(got.len(), values.len(), "{name}: voxel count");
        for (i, (g, w)) in got.iter().zip(&values).enumerate() {
            assert_eq!(
                g.to_bits(),
                w.to_bits(),
                "{name}: voxel {i}: {g} vs nibabel {w}"
            );
        }
        let f = img.to_f32();
        for (i, (g, w)) in f.iter().zip(&values).enumerate() {
            assert_eq!(g.to_bits(), (*w as f32).to_bits(), "{name}: f32 voxel {i}");
        }
        let sum: f64 = got.iter().sum();
        let scale: f64 = got.iter().map(|x| x.abs()).sum();
        let want_sum = want["sum"].as_f64().unwrap();
        assert!(
            (sum - want_sum).abs() <= 1e-12 * scale,
            "{name}: sum {sum} vs {want_sum}"
        );
        // Spacing from pixdim (exact), the affine within 1e-6.
        // nibabel's zooms have one entry per dimension; past the second they are 1.
        let mut zooms = f64s(&want["zooms"]);
        zooms.resize(3, 1.0);
        assert_eq!(info.spacing.to_vec(), zooms, "{name}: spacing");
        let want_affine: Vec<f64> = want["affine"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(f64s)
            .collect();
        assert_eq!(want_affine.len(), 16, "{name}");
        for (i, (g, w)) in info.affine.iter().flatten().zip(&want_affine).enumerate() {
            assert!(
                (g - w).abs() <= 1e-6,
                "{name}: affine[{}][{}] = {g} vs nibabel {w}",
                i / 4,
                i % 4
            );
        }
        // The header-only read agrees.
        assert_eq!(&nifti::read_info(&path).unwrap(), info, "{name}: read_info");
    }
}

#[test]
fn fixtures_cover_every_case_the_reader_distinguishes() {
    let info = |n: &str| nifti::read_info(fixture_dir().join(n)).unwrap();
    let types: std::collections::HashSet<DataType> =
        nibabel_views().keys().map(|n| info(n).datatype).collect();
    assert_eq!(types.len(), DataType::ALL.len(), "every datatype");
    assert_eq!(info("nifti2_float64.nii").version, 2);
    assert!(info("big_endian_int32.nii").big_endian);
    assert!(info("big_endian_nifti2_float32.nii").big_endian);
    assert_eq!(info("scaled_int16.nii.gz").scaling, Some((0.25, -7.5)));
    assert_eq!(info("slope_zero_int16.nii").scaling, None);
    assert_eq!(info("slope_nan_int16.nii").scaling, None);
    // The oblique qform: not diagonal, the third axis flipped (qfac -1: negative determinant).
    let a = info("qform_oblique.nii").affine;
    assert!(a[0][2].abs() > 0.1);
    let det = a[0][0] * (a[1][1] * a[2][2] - a[1][2] * a[2][1])
        - a[0][1] * (a[1][0] * a[2][2] - a[1][2] * a[2][0])
        + a[0][2] * (a[1][0] * a[2][1] - a[1][1] * a[2][0]);
    assert!(det < 0.0, "determinant {det}");
    assert_eq!(info("channels_last_4d.nii.gz").volumes(), 2);
}

#[test]
fn complex_and_rgb_images_are_refused_by_name() {
    let p = fixture_dir().join("complex64.nii");
    let e = nifti::read_image(&p).err().unwrap();
    let text = e.to_string();
    assert!(matches!(e, Error::Format { .. }), "{e:?}");
    assert!(
        text.contains("complex64") && text.contains("complex64.nii"),
        "{text}"
    );
    // RGB24 (code 128): the same file with its datatype patched.
    let mut b = std::fs::read(&p).unwrap();
    b[70..72].copy_from_slice(&128i16.to_le_bytes());
    let d = std::env::temp_dir().join(format!("calibseg-nifti-rgb-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    let rgb = d.join("rgb.nii");
    std::fs::write(&rgb, &b).unwrap();
    let text = nifti::read_image(&rgb).err().unwrap().to_string();
    assert!(text.contains("RGB24") && text.contains("rgb.nii"), "{text}");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_plain_file_shorter_than_its_header_declares_is_refused_by_size() {
    let d = std::env::temp_dir().join(format!("calibseg-nifti-short-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    for name in ["dtype_float64.nii", "nifti2_float64.nii"] {
        let b = std::fs::read(fixture_dir().join(name)).unwrap();
        let p = d.join(name);
        std::fs::write(&p, &b[..b.len() - 8]).unwrap();
        // The header alone is enough to know: read_info refuses it too.
        let e = nifti::read_info(&p).err().unwrap().to_string();
        assert!(
            e.contains(&format!("holds {} bytes", b.len() - 8)) && e.contains("need"),
            "{e}"
        );
        assert!(nifti::read_image(&p).is_err());
    }
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn written_images_read_back_with_their_type_and_affine() {
    let d = std::env::temp_dir().join(format!("calibseg-nifti-write-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    // A flipped, anisotropic, slightly oblique affine.
    let (c, s) = (0.1f64.cos(), 0.1f64.sin());
    let affine = [
        [-0.75 * c, -0.75 * s, 0.0, 90.0],
        [0.75 * s, -0.75 * c, 0.0, 120.5],
        [0.0, 0.0, 3.0, -40.0],
        [0.0, 0.0, 0.0, 1.0],
    ];
    let g = Geometry::from_affine(&affine);
    let ints: Vec<i16> = (0..24).map(|i| i * 100 - 1200).collect();
    let reals: Vec<f64> = (0..24).map(|i| i as f64 * 0.125 - 1.0).collect();
    let cases: [(&str, Voxels, DataType); 2] = [
        ("i16.nii.gz", Voxels::Int16(&ints), DataType::Int16),
        ("f64.nii", Voxels::Float64(&reals), DataType::Float64),
    ];
    for (name, voxels, t) in cases {
        let p = d.join(name);
        nifti::write_image(&p, &[2, 3, 4], voxels, &g).unwrap();
        let img = nifti::read_image(&p).unwrap();
        assert_eq!(img.info().datatype, t);
        assert_eq!(img.info().dims, [2, 3, 4]);
        // Stored as f32 in a NIfTI-1 header.
        for (i, (g, w)) in img
            .info()
            .affine
            .iter()
            .flatten()
            .zip(affine.iter().flatten())
            .enumerate()
        {
            assert_eq!(*g, *w as f32 as f64, "{name} affine entry {i}");
        }
        for (k, want) in [0.75, 0.75, 3.0].into_iter().enumerate() {
            assert!(
                (img.info().spacing[k] - want).abs() < 1e-6,
                "{name} spacing {k}"
            );
        }
        let mut got = Vec::new();
        img.for_each_value(|x| got.push(x));
        let want: Vec<f64> = match voxels {
            Voxels::Int16(v) => v.iter().map(|&x| x as f64).collect(),
            _ => reals.clone(),
        };
        assert_eq!(got, want, "{name}");
    }
    let e = nifti::write_image(d.join("bad.nii"), &[2, 3, 5], Voxels::Int16(&ints), &g);
    assert!(matches!(e, Err(Error::ShapeMismatch(_))));
    std::fs::remove_dir_all(&d).unwrap();
}
