//! safetensors reading (with dtype conversion) and atomic writing.

use std::collections::{BTreeMap, HashMap};

use calibseg::io::safetensors::{write, write_f32_streamed, HostTensor, TensorFile};
use calibseg::Error;

use crate::common::fixture_path as fixture;

#[test]
fn round_trip_with_metadata() {
    let dir = std::env::temp_dir().join(format!("calibseg-io-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("t.safetensors");
    let mut m = BTreeMap::new();
    m.insert(
        "a".to_string(),
        HostTensor::F32(vec![2, 3], vec![1.5, -2.0, 0.0, 3.25, 1e-9, 7.0]),
    );
    m.insert(
        "b".to_string(),
        HostTensor::I32(vec![4], vec![0, -1, 2, i32::MAX]),
    );
    let meta = HashMap::from([("num_bins".to_string(), "20".to_string())]);
    write(&path, &m, Some(&meta)).unwrap();
    let f = TensorFile::open(&path).unwrap();
    assert_eq!(f.names(), vec!["a", "b"]);
    assert_eq!(f.metadata("num_bins").as_deref(), Some("20"));
    assert_eq!(
        f.f32("a").unwrap(),
        (vec![2, 3], vec![1.5, -2.0, 0.0, 3.25, 1e-9, 7.0])
    );
    assert_eq!(
        f.integers("b").unwrap(),
        (vec![4], vec![0, -1, 2, i32::MAX as i64])
    );
    assert!(matches!(f.integers("a"), Err(Error::Format { .. })));
    assert!(matches!(f.f32("b"), Err(Error::Format { .. })));
    let missing = f.f32("nope").unwrap_err().to_string();
    assert!(missing.contains("no tensor named 'nope'"), "{missing}");
    // No temporary file is left behind.
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 1, "{left:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn reads_the_fixtures() {
    let f = TensorFile::open(fixture("loss_b2_c4_8x8x8.safetensors")).unwrap();
    let (shape, logits) = f.f32("logits").unwrap();
    assert_eq!(shape, vec![2, 4, 8, 8, 8]);
    assert_eq!(logits.len(), 2 * 4 * 512);
    let (lshape, labels) = f.integers("labels").unwrap();
    assert_eq!(lshape, vec![2, 1, 8, 8, 8]);
    assert!(labels.iter().all(|&l| (0..4).contains(&l)));
    assert_eq!(f.metadata("num_bins").as_deref(), Some("20"));
}

#[test]
fn unreadable_files_are_typed_errors() {
    assert!(matches!(
        TensorFile::open("/no/such/file.safetensors"),
        Err(Error::Io { .. })
    ));
    let p = std::env::temp_dir().join(format!(
        "calibseg-garbage-{}.safetensors",
        std::process::id()
    ));
    std::fs::write(&p, b"not a safetensors file").unwrap();
    assert!(matches!(TensorFile::open(&p), Err(Error::Format { .. })));
    std::fs::remove_file(&p).unwrap();
}

#[test]
fn streamed_f32_writes_are_the_bytes_of_write() {
    // Names given out of order, sizes past one streaming chunk (16384 values), an empty tensor.
    let dir = std::env::temp_dir().join(format!("calibseg-io-stream-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let probs: Vec<f32> = (0..3 * 7001).map(|i| (i as f32 * 0.37).sin()).collect();
    let logits: Vec<f32> = (0..3 * 7001).map(|i| i as f32 - 1e4).collect();
    let shape = [1usize, 3, 7001];
    let tensors = [
        ("probs", &shape[..], &probs[..]),
        ("logits", &shape[..], &logits[..]),
        ("empty", &[0usize, 4][..], &[][..]),
    ];
    let streamed = dir.join("streamed.safetensors");
    write_f32_streamed(&streamed, &tensors).unwrap();
    let whole = dir.join("whole.safetensors");
    let map: BTreeMap<String, HostTensor> = tensors
        .iter()
        .map(|(n, s, v)| (n.to_string(), HostTensor::F32(s.to_vec(), v.to_vec())))
        .collect();
    write(&whole, &map, None).unwrap();
    assert_eq!(
        std::fs::read(&streamed).unwrap(),
        std::fs::read(&whole).unwrap()
    );
    assert_eq!(
        TensorFile::open(&streamed).unwrap().f32("probs").unwrap(),
        (shape.to_vec(), probs)
    );
    // A shape that disagrees with the values, or a name given twice, is an error and writes nothing.
    let bad = dir.join("bad.safetensors");
    assert!(matches!(
        write_f32_streamed(&bad, &[("x", &[2, 2][..], &[0.0; 3][..])]),
        Err(Error::ShapeMismatch(_))
    ));
    let twice = [("x", &[1usize][..], &[0.0f32][..]); 2];
    assert!(write_f32_streamed(&bad, &twice).is_err());
    assert!(!bad.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}
