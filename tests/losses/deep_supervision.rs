//! Deep supervision: nearest-exact label downsampling against an f64 reference (odd sizes included), and the
//! wrapped loss against the weighted sum of per-level losses computed separately.

use crate::common;

use calibseg::loss::{downsample_labels, AceDiceCeLoss, Binning, DeepSupervision, Labels};
use calibseg::{Error, Tensor};
use common::{assert_close, gpu, Rng, Tol};

/// PyTorch nearest-exact: source = min(floor((dst + 0.5) * in / out), in - 1), in f64.
fn nearest_exact_ref(
    src: &[u32],
    planes: usize,
    input: [usize; 3],
    output: [usize; 3],
) -> Vec<u32> {
    let idx = |o: usize, i: usize, n: usize| {
        (((o as f64 + 0.5) * i as f64 / n as f64).floor() as usize).min(i - 1)
    };
    let mut out = Vec::new();
    for p in 0..planes {
        for d in 0..output[0] {
            for h in 0..output[1] {
                for w in 0..output[2] {
                    let (sd, sh, sw) = (
                        idx(d, input[0], output[0]),
                        idx(h, input[1], output[1]),
                        idx(w, input[2], output[2]),
                    );
                    out.push(src[((p * input[0] + sd) * input[1] + sh) * input[2] + sw]);
                }
            }
        }
    }
    out
}

#[test]
fn nearest_exact_matches_the_reference_on_odd_sizes() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(51);
    for (input, output) in [
        ([9, 7, 5], [4, 3, 2]),
        ([16, 16, 16], [8, 8, 8]),
        ([5, 11, 13], [5, 6, 7]),
        ([3, 4, 5], [7, 9, 2]),
    ] {
        let n = 2 * input.iter().product::<usize>();
        let data: Vec<u32> = (0..n).map(|_| rng.below(5) as u32).collect();
        let labels =
            Labels::from_indices(&gpu, &[2, 1, input[0], input[1], input[2]], &data, 5).unwrap();
        let out = downsample_labels(&labels, &output).unwrap();
        assert_eq!(
            out.tensor().shape(),
            &[2, 1, output[0], output[1], output[2]]
        );
        assert_eq!(
            out.tensor().to_vec::<u32>().unwrap(),
            nearest_exact_ref(&data, 2, input, output),
            "{input:?} -> {output:?}"
        );
    }
    // 2D one-hot maps resample channel by channel.
    let data: Vec<f32> = (0..2 * 3 * 9 * 7).map(|i| (i % 3) as f32).collect();
    let oh = Labels::one_hot(Tensor::from_f32(&gpu, &[2, 3, 9, 7], &data).unwrap()).unwrap();
    let out = downsample_labels(&oh, &[4, 3]).unwrap();
    let bits: Vec<u32> = data.iter().map(|x| x.to_bits()).collect();
    let want: Vec<f32> = nearest_exact_ref(&bits, 6, [1, 9, 7], [1, 4, 3])
        .into_iter()
        .map(f32::from_bits)
        .collect();
    assert_eq!(out.tensor().to_vec_f32().unwrap(), want);
    assert!(matches!(
        downsample_labels(&oh, &[4]),
        Err(Error::ShapeMismatch(_))
    ));
}

#[test]
fn deep_supervision_sums_weighted_level_losses() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(52);
    let labels: Vec<i64> = (0..16 * 16 * 16).map(|_| rng.below(3) as i64).collect();
    let l = Labels::from_indices(&gpu, &[1, 1, 16, 16, 16], &labels, 3).unwrap();
    let outputs: Vec<Tensor> = [16usize, 8, 4, 2]
        .iter()
        .map(|&s| {
            Tensor::from_f32(&gpu, &[1, 3, s, s, s], &rng.normals(3 * s * s * s, 2.0)).unwrap()
        })
        .collect();
    let ds = DeepSupervision::exp(4);
    assert_eq!(ds.weights, vec![1.0, 0.5, 0.25, 0.125]);
    assert_eq!(DeepSupervision::exp(6).weights[5], 0.0625);
    let loss = AceDiceCeLoss::new(Binning::Soft);
    let out = ds.forward(&outputs, &l, |o, t| loss.forward(o, t)).unwrap();
    let grads = out.backward().unwrap();
    let mut want = 0.0;
    for (i, o) in outputs.iter().enumerate() {
        let s = o.shape()[2];
        let li = downsample_labels(&l, &[s, s, s]).unwrap();
        let single = loss.forward(o, &li).unwrap();
        want += ds.weights[i] * single.loss.to_vec_f32().unwrap()[0];
        let g = single.backward().unwrap().to_vec_f32().unwrap();
        let scaled: Vec<f32> = g.iter().map(|x| x * ds.weights[i]).collect();
        assert_close(
            &grads[i].to_vec_f32().unwrap(),
            &scaled,
            Tol::rel(1e-6).plus_abs(1e-12),
            &format!("level {i} gradient"),
        );
    }
    assert_close(
        &[out.loss().unwrap()],
        &[want],
        Tol::rel(1e-6).plus_abs(0.0),
        "deep supervision loss",
    );
    assert!(matches!(
        DeepSupervision::exp(2).forward(&outputs, &l, |o, t| loss.forward(o, t)),
        Err(Error::InvalidArgument(_))
    ));
}
