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

/// The bytes of `safetensors::serialize` (the crate's own writer) with the header's keys sorted, as
/// `write` promises.
fn serialize_sorted(
    tensors: &BTreeMap<String, HostTensor>,
    meta: &HashMap<String, String>,
) -> Vec<u8> {
    use safetensors::tensor::{Dtype, TensorView};
    let bytes: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, t)| {
            let (d, b): (Dtype, Vec<u8>) = match t {
                HostTensor::F32(_, v) => {
                    (Dtype::F32, v.iter().flat_map(|x| x.to_le_bytes()).collect())
                }
                HostTensor::I32(_, v) => {
                    (Dtype::I32, v.iter().flat_map(|x| x.to_le_bytes()).collect())
                }
                HostTensor::U32(_, v) => {
                    (Dtype::U32, v.iter().flat_map(|x| x.to_le_bytes()).collect())
                }
                HostTensor::U8(_, v) => (Dtype::U8, v.clone()),
            };
            (n.clone(), d, t.shape().to_vec(), b)
        })
        .collect();
    let views: Vec<(String, TensorView<'_>)> = bytes
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    let file = safetensors::serialize(views, Some(meta.clone())).unwrap();
    let n = u64::from_le_bytes(file[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&file[8..8 + n]).unwrap();
    let mut text = serde_json::to_vec(&header).unwrap();
    while !text.len().is_multiple_of(8) {
        text.push(b' ');
    }
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&text);
    out.extend_from_slice(&file[8 + n..]);
    out
}

#[test]
fn writes_the_bytes_of_the_safetensors_crate_with_sorted_keys() {
    // Every dtype, names whose order differs from the dtype order, odd byte counts, metadata.
    let dir = std::env::temp_dir().join(format!("calibseg-io-bytes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let tensors = BTreeMap::from([
        (
            "a_label".to_string(),
            HostTensor::U8(vec![1, 3, 5], (0..15).collect()),
        ),
        (
            "image".to_string(),
            HostTensor::F32(
                vec![2, 20001],
                (0..40002).map(|i| (i as f32).sqrt()).collect(),
            ),
        ),
        (
            "counts".to_string(),
            HostTensor::U32(vec![3], vec![7, 0, u32::MAX]),
        ),
        ("z".to_string(), HostTensor::I32(vec![2], vec![-5, 9])),
        ("empty".to_string(), HostTensor::F32(vec![0, 4], vec![])),
    ]);
    let meta = HashMap::from([
        ("zeta".to_string(), "1".to_string()),
        ("affine".to_string(), "[[1.0]]".to_string()),
        ("b".to_string(), "\"quoted\" \u{e9}".to_string()),
    ]);
    let path = dir.join("t.safetensors");
    write(&path, &tensors, Some(&meta)).unwrap();
    assert_eq!(
        std::fs::read(&path).unwrap(),
        serialize_sorted(&tensors, &meta)
    );
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
