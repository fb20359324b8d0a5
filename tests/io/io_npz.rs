//! NumPy `.npy`/`.npz` reading and nnU-Net's probability files: values land at the right `(x, y, z)`
//! voxel of a NON-cubic volume (so a wrong axis order fails), the same place the NIfTI reader puts them,
//! for C and Fortran order and every float dtype; anything else is a typed error.
//!
//! The files are built byte by byte here (npy header per the NumPy format spec, zip through `zip`), not
//! with the reader's crate.

use std::io::Write;
use std::path::{Path, PathBuf};

use calibseg::io::nifti;
use calibseg::io::npz::{self, NpzFile};
use calibseg::io::safetensors::HostTensor;
use calibseg::Error;

/// Classes and volume size: x, y, z all different.
const C: usize = 3;
const X: usize = 5;
const Y: usize = 3;
const Z: usize = 2;

/// A value that encodes its position (unique, integral, exact in f16).
fn value(c: usize, x: usize, y: usize, z: usize) -> f64 {
    (c * 30 + x * 6 + y * 2 + z) as f64
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("calibseg-npz-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// An npy (format 1.0) file: magic, version, header length, the header dict padded with spaces to a
/// multiple of 64 bytes ending in a newline, then the data.
fn npy(descr: &str, fortran: bool, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let fortran = if fortran { "True" } else { "False" };
    let mut header =
        format!("{{'descr': '{descr}', 'fortran_order': {fortran}, 'shape': {shape}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

/// The probabilities `(C, z, y, x)` in C order (x fastest) or Fortran order (C fastest).
fn ordered(fortran: bool) -> Vec<f64> {
    let mut v = Vec::new();
    if fortran {
        for x in 0..X {
            for y in 0..Y {
                for z in 0..Z {
                    for c in 0..C {
                        v.push(value(c, x, y, z));
                    }
                }
            }
        }
    } else {
        for c in 0..C {
            for z in 0..Z {
                for y in 0..Y {
                    for x in 0..X {
                        v.push(value(c, x, y, z));
                    }
                }
            }
        }
    }
    v
}

/// Encodes values with a numpy dtype string.
fn encode(descr: &str, v: &[f64]) -> Vec<u8> {
    v.iter()
        .flat_map(|&x| match descr {
            "<f4" => (x as f32).to_le_bytes().to_vec(),
            ">f4" => (x as f32).to_be_bytes().to_vec(),
            "<f8" => x.to_le_bytes().to_vec(),
            ">f8" => x.to_be_bytes().to_vec(),
            "<f2" => half::f16::from_f64(x).to_le_bytes().to_vec(),
            "<i4" => (x as i32).to_le_bytes().to_vec(),
            d => panic!("no encoder for {d}"),
        })
        .collect()
}

/// An npz archive of the given members, deflated (`numpy.savez_compressed`, as nnU-Net writes them) or
/// stored (`numpy.savez`), with zip64 headers as numpy writes them.
fn write_npz(path: &Path, members: &[(&str, Vec<u8>)], deflate: bool) {
    let mut z = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let method = if deflate {
        zip::CompressionMethod::Deflated
    } else {
        zip::CompressionMethod::Stored
    };
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(method)
        .large_file(true);
    for (name, bytes) in members {
        z.start_file(format!("{name}.npy"), opts).unwrap();
        z.write_all(bytes).unwrap();
    }
    z.finish().unwrap();
}

fn f32s(t: HostTensor) -> (Vec<usize>, Vec<f32>) {
    match t {
        HostTensor::F32(s, v) => (s, v),
        other => panic!("expected f32, got shape {:?}", other.shape()),
    }
}

/// Checks every voxel: `[c, z, y, x]` in C order holds the value of class c at voxel (x, y, z).
fn check_positions(shape: &[usize], v: &[f32], what: &str) {
    assert_eq!(shape, [C, Z, Y, X], "{what}: shape");
    for c in 0..C {
        for x in 0..X {
            for y in 0..Y {
                for z in 0..Z {
                    let i = ((c * Z + z) * Y + y) * X + x;
                    assert_eq!(
                        v[i] as f64,
                        value(c, x, y, z),
                        "{what}: class {c} voxel (x={x}, y={y}, z={z})"
                    );
                }
            }
        }
    }
}

#[test]
fn nnunet_probabilities_land_where_the_nifti_reader_puts_the_voxels() {
    let dir = scratch("nnunet");
    let case = dir.join("case_007.npz");
    let probs = npy("<f4", false, &[C, Z, Y, X], &encode("<f4", &ordered(false)));
    // nnU-Net v2 also stores nothing else in the file; an unrelated member must not confuse the reader.
    let other = npy("<f8", false, &[2], &encode("<f8", &[1.0, 2.0]));
    write_npz(&case, &[("probabilities", probs), ("spacing", other)], true);
    assert!(npz::is_numpy(&case));
    assert_eq!(npz::case_name(&case), "case_007");

    let (shape, v) = f32s(npz::read_probabilities(&case).unwrap());
    check_positions(&shape, &v, "nnU-Net v2 npz");

    // The same probabilities as a NIfTI image (X, Y, Z, C): the NIfTI reader's voxel order is x fastest,
    // then y, z, class. Its data must equal the npz's, element for element.
    let nii = dir.join("case_007.nii.gz");
    let mut file_order = Vec::new();
    for c in 0..C {
        for z in 0..Z {
            for y in 0..Y {
                for x in 0..X {
                    file_order.push(value(c, x, y, z) as f32);
                }
            }
        }
    }
    nifti::write_f32(&nii, &[X, Y, Z, C], &[1.0, 1.0, 2.5], &file_order).unwrap();
    let (dims, from_nifti) = nifti::read_f32(&nii).unwrap();
    assert_eq!(dims, [X, Y, Z, C]);
    assert_eq!(v, from_nifti);
    // A label map of the case has dims (x, y, z): the npz's spatial shape reversed.
    let lab = dir.join("case_007_labels.nii.gz");
    nifti::write_i32(&lab, &[X, Y, Z], &[1.0; 3], &[0; X * Y * Z]).unwrap();
    let (ldims, _) = nifti::read_integers(&lab).unwrap();
    assert_eq!(ldims, shape[1..].iter().rev().copied().collect::<Vec<_>>());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn every_float_dtype_and_fortran_order_reads_the_same_values() {
    let dir = scratch("dtypes");
    for descr in ["<f4", ">f4", "<f8", ">f8", "<f2"] {
        for fortran in [false, true] {
            for deflate in [true, false] {
                let what = format!("{descr} fortran={fortran} deflate={deflate}");
                let bytes = npy(
                    descr,
                    fortran,
                    &[C, Z, Y, X],
                    &encode(descr, &ordered(fortran)),
                );
                // nnU-Net v1's name.
                let p = dir.join("v1.npz");
                write_npz(&p, &[("softmax", bytes.clone())], deflate);
                let (shape, v) = f32s(npz::read_probabilities(&p).unwrap());
                check_positions(&shape, &v, &what);
                // A plain .npy, read as probabilities and as an array.
                let p = dir.join("plain.npy");
                std::fs::write(&p, &bytes).unwrap();
                let (shape, v) = f32s(npz::read_probabilities(&p).unwrap());
                check_positions(&shape, &v, &format!("{what} .npy"));
                let (shape, v) = f32s(npz::read_npy(&p).unwrap());
                check_positions(&shape, &v, &format!("{what} read_npy"));
            }
        }
    }
    // An archive with one array under another name, and reading arrays by name.
    let p = dir.join("single.npz");
    let bytes = npy("<f4", false, &[C, Z, Y, X], &encode("<f4", &ordered(false)));
    let other = npy(
        "<f8",
        true,
        &[2, 3],
        &encode("<f8", &[0., 3., 1., 4., 2., 5.]),
    );
    write_npz(&p, &[("arr_0", bytes.clone())], true);
    let (shape, v) = f32s(npz::read_probabilities(&p).unwrap());
    check_positions(&shape, &v, "single array");
    write_npz(&p, &[("b", other), ("a", bytes)], true);
    let mut f = NpzFile::open(&p).unwrap();
    assert_eq!(f.names(), ["a", "b"]);
    assert!(f.contains("b") && !f.contains("c"));
    let (shape, v) = f32s(f.read("b").unwrap());
    assert_eq!((shape, v), (vec![2, 3], vec![0., 1., 2., 3., 4., 5.]));
    std::fs::remove_dir_all(&dir).unwrap();
}

fn format_message(e: Error) -> String {
    match e {
        Error::Format { message, .. } => message,
        e => panic!("expected a Format error, got {e:?}"),
    }
}

#[test]
fn unsupported_or_broken_files_are_typed_errors() {
    let dir = scratch("errors");
    let p = dir.join("x.npz");
    let good = npy("<f4", false, &[C, Z, Y, X], &encode("<f4", &ordered(false)));

    // Integer data.
    let ints = npy("<i4", false, &[C, Z, Y, X], &encode("<i4", &ordered(false)));
    write_npz(&p, &[("probabilities", ints)], true);
    let m = format_message(npz::read_probabilities(&p).unwrap_err());
    assert!(m.contains("<i4") && m.contains("not supported"), "{m}");

    // Neither nnU-Net name, several arrays: the names are listed.
    write_npz(&p, &[("a", good.clone()), ("b", good.clone())], true);
    let m = format_message(npz::read_probabilities(&p).unwrap_err());
    assert!(
        m.contains("probabilities") && m.contains("\"a\", \"b\""),
        "{m}"
    );
    let m = format_message(NpzFile::open(&p).unwrap().read("c").unwrap_err());
    assert!(m.contains("no array 'c'"), "{m}");

    // Truncated data.
    write_npz(
        &p,
        &[("probabilities", good[..good.len() - 6].to_vec())],
        true,
    );
    let m = format_message(npz::read_probabilities(&p).unwrap_err());
    assert!(m.contains("damaged or truncated"), "{m}");

    // Wrong rank for probabilities (a 5-D array) and a zero size.
    for shape in [&[1usize, C, Z, Y, X][..], &[C, 0, Y, X][..]] {
        let n: usize = shape.iter().product();
        let bytes = npy("<f4", false, shape, &encode("<f4", &vec![0.5; n]));
        write_npz(&p, &[("probabilities", bytes)], false);
        let m = format_message(npz::read_probabilities(&p).unwrap_err());
        assert!(m.contains("(C, z, y, x)"), "{m}");
    }

    // Not a zip archive, not an npy file, no file at all.
    std::fs::write(&p, b"not a zip").unwrap();
    let m = format_message(npz::read_probabilities(&p).unwrap_err());
    assert!(m.contains("not a .npz"), "{m}");
    let q = dir.join("x.npy");
    std::fs::write(&q, b"\x93NUMPX garbage").unwrap();
    let m = format_message(npz::read_npy(&q).unwrap_err());
    assert!(m.contains("not a .npy"), "{m}");
    let err = npz::read_probabilities(dir.join("missing.npz")).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A deflated member of `total` bytes: `header` followed by zeros (a few hundred kilobytes compressed).
fn bomb(path: &Path, header: &[u8], total: usize) {
    let mut z = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .large_file(true);
    z.start_file("probabilities.npy", opts).unwrap();
    z.write_all(header).unwrap();
    let zeros = vec![0u8; 1 << 20];
    let mut left = total - header.len();
    while left > 0 {
        let n = left.min(zeros.len());
        z.write_all(&zeros[..n]).unwrap();
        left -= n;
    }
    z.finish().unwrap();
}

/// Largest allocation a read of a small archive may make (the archive and the arrays here are far smaller).
const ALLOCATION_BOUND: usize = 16 << 20;

#[test]
fn a_member_is_inflated_no_further_than_its_array_declares() {
    let dir = scratch("bomb");
    let p = dir.join("bomb.npz");
    // 256 MiB of zeros after a header declaring a (2, 1, 1, 2) float32 array: the array is the first 16
    // data bytes, and nothing past them is inflated.
    let header = npy("<f4", false, &[2, 1, 1, 2], &[]);
    bomb(&p, &header, 256 << 20);
    assert!(std::fs::metadata(&p).unwrap().len() < 2 << 20);
    let (r, largest) = crate::alloc::largest_allocation(|| npz::read_probabilities(&p));
    let (shape, v) = f32s(r.unwrap());
    assert_eq!((shape, v), (vec![2, 1, 1, 2], vec![0.0; 4]));
    assert!(
        largest < ALLOCATION_BOUND,
        "largest allocation {largest} bytes"
    );

    // A header declaring more data than the zip entry declares is refused before inflating.
    let mut big = npy("<f4", false, &[4, 1024, 1024, 1024], &[]);
    big.extend_from_slice(&[0; 64]);
    write_npz(&p, &[("probabilities", big)], true);
    let (r, largest) = crate::alloc::largest_allocation(|| npz::read_probabilities(&p));
    let m = format_message(r.unwrap_err());
    assert!(
        m.contains("[4, 1024, 1024, 1024]") && m.contains("archive entry declares"),
        "{m}"
    );
    assert!(
        largest < ALLOCATION_BOUND,
        "largest allocation {largest} bytes"
    );

    // A header length beyond the member (format 2.0 allows 4 GiB) is refused without allocating it.
    let mut huge_header = b"\x93NUMPY\x02\x00".to_vec();
    huge_header.extend_from_slice(&u32::MAX.to_le_bytes());
    huge_header.extend_from_slice(b"{'descr': '<f4'");
    write_npz(&p, &[("probabilities", huge_header.clone())], true);
    let (r, largest) = crate::alloc::largest_allocation(|| npz::read_probabilities(&p));
    let m = format_message(r.unwrap_err());
    assert!(m.contains("header declares 4294967295 bytes"), "{m}");
    assert!(
        largest < ALLOCATION_BOUND,
        "largest allocation {largest} bytes"
    );
    // The same in a plain .npy file.
    let q = dir.join("x.npy");
    std::fs::write(&q, &huge_header).unwrap();
    let (r, largest) = crate::alloc::largest_allocation(|| npz::read_npy(&q));
    assert!(format_message(r.unwrap_err()).contains("header declares"));
    assert!(
        largest < ALLOCATION_BOUND,
        "largest allocation {largest} bytes"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    /// Reads `bytes` as an archive (and as a plain array): `Ok` or a typed error, never a panic, and no
    /// allocation beyond [`ALLOCATION_BOUND`].
    fn read_npz_fully(bytes: &[u8]) {
        let d = std::env::temp_dir().join(format!("calibseg-npz-prop-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let tag = format!("{:?}", std::thread::current().id()).replace(['(', ')'], "");
        let (p, q) = (d.join(format!("{tag}.npz")), d.join(format!("{tag}.npy")));
        std::fs::write(&p, bytes).unwrap();
        std::fs::write(&q, bytes).unwrap();
        let ((), largest) = crate::alloc::largest_allocation(|| {
            if let Ok(mut f) = NpzFile::open(&p) {
                for name in f.names() {
                    if let Ok(t) = f.read(&name) {
                        let HostTensor::F32(s, v) = t else {
                            panic!("not f32")
                        };
                        assert_eq!(s.iter().product::<usize>(), v.len());
                    }
                }
            }
            let _ = npz::read_probabilities(&p);
            let _ = npz::read_npy(&q);
        });
        assert!(
            largest < ALLOCATION_BOUND,
            "largest allocation {largest} bytes"
        );
    }

    fn valid_npz(deflate: bool) -> Vec<u8> {
        let d = scratch(&format!("prop-valid-{deflate}"));
        let p = d.join("v.npz");
        let good = npy("<f4", false, &[C, Z, Y, X], &encode("<f4", &ordered(false)));
        write_npz(&p, &[("probabilities", good)], deflate);
        std::fs::read(&p).unwrap()
    }

    fn config() -> ProptestConfig {
        ProptestConfig {
            cases: 96,
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn mutated_npz_archives_give_an_error_or_a_result(
            deflate in any::<bool>(),
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
            cut in prop::option::of(any::<prop::sample::Index>()),
        ) {
            let mut b = valid_npz(deflate);
            let n = b.len();
            for (i, v) in &edits {
                b[i.index(n)] = *v;
            }
            if let Some(c) = cut {
                b.truncate(c.index(n + 1));
            }
            read_npz_fully(&b);
        }

        #[test]
        fn npy_headers_with_any_shape_and_length_give_an_error_or_a_result(
            dims in prop::collection::vec(any::<u64>(), 0..5),
            descr in prop::sample::select(vec!["<f4", ">f8", "<f2", "|u1", "<c8", "O"]),
            header_len in prop::option::of(any::<u32>()),
            version in 1u8..4,
            data in prop::collection::vec(any::<u8>(), 0..64),
        ) {
            let shape: Vec<String> = dims.iter().map(|d| (d % 1_000_000_007).to_string()).collect();
            let text = format!(
                "{{'descr': '{descr}', 'fortran_order': False, 'shape': ({}{}), }}\n",
                shape.join(", "),
                if shape.len() == 1 { "," } else { "" }
            );
            let mut b = b"\x93NUMPY".to_vec();
            b.push(version);
            b.push(0);
            let len = header_len.unwrap_or(text.len() as u32);
            if version == 1 {
                b.extend_from_slice(&(len as u16).to_le_bytes());
            } else {
                b.extend_from_slice(&len.to_le_bytes());
            }
            b.extend_from_slice(text.as_bytes());
            b.extend_from_slice(&data);
            read_npz_fully(&b);
            // The same array as an archive member.
            let d = scratch("prop-member");
            let p = d.join("m.npz");
            write_npz(&p, &[("probabilities", b)], true);
            read_npz_fully(&std::fs::read(&p).unwrap());
        }
    }
}
