//! One image over the storage-binding limit: `calibseg eval` (and `calibseg loss`) run under a forced small
//! limit (`CALIBSEG_MAX_STORAGE_BINDING`) process the image in pieces and write the same files, bit for bit,
//! as without the limit.

use crate::common;
use crate::eval_reports::assert_same_tree;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use calibseg::gpu::MAX_STORAGE_BINDING_ENV;
use calibseg::io::safetensors::{self as st, HostTensor};

/// 256 KiB: one binning chunk of 3 channels (192 KiB) fits, one image of 3 x 40^3 voxels (750 KiB) does not.
const LIMIT: &str = "262144";

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("calibseg-pieces-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs `calibseg` with `args`, under the forced binding limit when `limited`; it must succeed.
fn run(args: &[&str], limited: bool) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_calibseg"));
    cmd.args(args).env_remove(MAX_STORAGE_BINDING_ENV);
    if limited {
        cmd.env(MAX_STORAGE_BINDING_ENV, LIMIT);
    }
    let o = cmd.output().unwrap();
    assert!(
        o.status.success(),
        "calibseg {args:?} (limited: {limited}): {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Random class labels and values `[n, c, side, side, side]`: logits leaning to the label (so a temperature
/// can be fitted), or probabilities with some outside [0, 1].
fn write_cases(path: &Path, name: &str, n: usize, c: usize, side: usize, seed: u64) {
    let mut rng = common::Rng::new(seed);
    let v = side * side * side;
    let labels: Vec<i32> = (0..n * v).map(|_| rng.below(c as u64) as i32).collect();
    let logits = name == "logits";
    let values: Vec<f32> = (0..n * c * v)
        .map(|i| {
            let (image, class, voxel) = (i / (c * v), i / v % c, i % v);
            let hit = labels[image * v + voxel] == class as i32;
            match (logits, i % 397) {
                (true, _) => (rng.normal() * 2.0) as f32 + if hit { 1.5 } else { 0.0 },
                (false, 0) => 1.5,
                (false, _) => (rng.uniform() as f32).powi(3),
            }
        })
        .collect();
    let mut t = BTreeMap::new();
    t.insert(
        name.to_string(),
        HostTensor::F32(vec![n, c, side, side, side], values),
    );
    t.insert(
        "labels".to_string(),
        HostTensor::I32(vec![n, 1, side, side, side], labels),
    );
    st::write(path, &t, None).unwrap();
}

/// `calibseg eval` on probabilities, and on logits with a temperature fitted on validation images that are
/// also over the limit (statistics before and after scaling), writes the same files under the forced limit
/// as without it.
#[test]
fn eval_of_images_over_the_binding_limit_equals_the_unsplit_evaluation() {
    let Some(_gpu) = common::gpu() else { return };
    let dir = scratch("eval");
    let probs = dir.join("probs.safetensors");
    let logits = dir.join("logits.safetensors");
    let val = dir.join("val.safetensors");
    write_cases(&probs, "probs", 2, 3, 40, 1);
    write_cases(&logits, "logits", 2, 3, 40, 2);
    write_cases(&val, "logits", 2, 3, 40, 3);
    for (tag, input, extra) in [
        ("probs", &probs, vec!["--include-background"]),
        (
            "logits",
            &logits,
            vec!["--logits", "--fit-temperature", val.to_str().unwrap()],
        ),
    ] {
        for limited in [false, true] {
            let out = dir.join(format!("{tag}-{limited}"));
            let mut args = vec![
                "eval",
                "--probs",
                input.to_str().unwrap(),
                "--labels",
                input.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
                "--num-bins",
                "15",
                "--no-pictures",
            ];
            args.extend(&extra);
            run(&args, limited);
        }
        let (whole, split) = (
            dir.join(format!("{tag}-false")),
            dir.join(format!("{tag}-true")),
        );
        assert!(whole.join("calibration.safetensors").is_file(), "{tag}");
        assert_same_tree(&whole, &split, &format!("{tag} under the limit"));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `calibseg loss` (mL1-ACE with its bin statistics, and the combined loss) writes the same file under the
/// forced limit as without it.
#[test]
fn loss_of_images_over_the_binding_limit_equals_the_unsplit_loss() {
    let Some(_gpu) = common::gpu() else { return };
    let dir = scratch("loss");
    let input = dir.join("input.safetensors");
    write_cases(&input, "logits", 1, 3, 40, 4);
    for args in [
        ["--loss", "ace", "--binning", "soft"],
        ["--loss", "ace-dice-ce", "--binning", "hard"],
    ] {
        let mut outs = Vec::new();
        for limited in [false, true] {
            let out = dir.join(format!("{}-{limited}.safetensors", args[1]));
            let mut all = vec![
                "loss",
                "--input",
                input.to_str().unwrap(),
                "--output",
                out.to_str().unwrap(),
            ];
            all.extend(args);
            run(&all, limited);
            outs.push(std::fs::read(&out).unwrap());
        }
        assert!(
            outs[0] == outs[1],
            "{args:?}: the output differs under the limit"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
