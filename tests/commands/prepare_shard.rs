//! `calibseg prepare --shard I/N` and the memory guard: shards filling a `--plan-only` cache give the
//! bytes one run gives; a shard refuses a cache without a plan or with another plan, and a bad `I/N`;
//! a forced small host-memory limit refuses in one line with the figure and `--threads 1`, writing
//! nothing; the estimate covers the arrays a case really takes.

use std::path::Path;

use calibseg::commands::prepare::{self, memory, PlanSource, PrepareOptions, Prepared, Shard};
use calibseg::commands::synth::SynthFormat;
use calibseg::data::dataset::Dataset;
use calibseg::data::plan::Plan;
use calibseg::io::safetensors::TensorFile;

use super::plan::{files, scratch, synth_dataset, write_plan};
use crate::common::cli::run_calibseg_with_env;

fn options(data: &Path, cache: &Path, plan: &Path) -> PrepareOptions {
    let mut o = PrepareOptions::new(data, cache);
    o.plan_only = false;
    o.plan = PlanSource::File(plan.to_path_buf());
    o
}

fn written(r: Prepared) -> Vec<String> {
    match r {
        Prepared::Planned { cases, .. } => cases.written,
        Prepared::Refused(report) => panic!("refused: {:?}", report.problems),
    }
}

#[test]
fn shards_of_a_plan_only_cache_give_the_files_of_one_run() {
    if crate::common::gpu().is_none() {
        return;
    }
    let data = synth_dataset("shard-data", SynthFormat::NnUnet, 11);
    let plan = write_plan("shard", &serde_json::json!({"spacing": [1.5, 1.25, 2.0]}));
    let single = scratch("shard-single");
    written(prepare::run(&options(&data, &single, &plan)).unwrap());

    let sharded = scratch("shard-sharded");
    // A shard before the plan-only run: refused, nothing written.
    let mut o = options(&data, &sharded, &plan);
    o.shard = Some(Shard { index: 0, count: 2 });
    let e = prepare::run(&o).unwrap_err().to_string();
    assert!(e.contains("--plan-only") && e.contains("shard 0/2"), "{e}");
    assert!(!sharded.exists());

    let mut p = options(&data, &sharded, &plan);
    p.plan_only = true;
    written(prepare::run(&p).unwrap());
    let mut names = Vec::new();
    for (index, threads) in [(1, 1), (0, 2)] {
        let mut o = options(&data, &sharded, &plan);
        o.shard = Some(Shard { index, count: 2 });
        o.threads = threads;
        names.push(written(prepare::run(&o).unwrap()));
    }
    assert_eq!(names, [vec!["synth_001"], vec!["synth_000", "synth_002"]]);
    assert!(
        files(&single) == files(&sharded),
        "the shards' cache differs from the single run's"
    );

    // Another plan (another spacing) than the cache's: refused, naming plan.json.
    let other = write_plan(
        "shard-other",
        &serde_json::json!({"spacing": [1.0, 1.0, 2.0]}),
    );
    let mut o = options(&data, &sharded, &other);
    o.shard = Some(Shard { index: 1, count: 2 });
    let e = prepare::run(&o).unwrap_err().to_string();
    assert!(e.contains("plan.json") && e.contains("another plan"), "{e}");
    o.shard = Some(Shard { index: 2, count: 2 });
    assert!(prepare::run(&o).unwrap_err().to_string().contains("2/2"));
}

#[test]
fn shard_syntax() {
    assert_eq!(
        "3/4".parse::<Shard>().unwrap(),
        Shard { index: 3, count: 4 }
    );
    for bad in ["4/4", "1", "a/2", "0/0", "-1/2", "1/2/3"] {
        assert!(bad.parse::<Shard>().is_err(), "{bad}");
    }
    let out = run_calibseg_with_env(&["prepare", "x", "--out", "y", "--shard", "2/2"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected I/N"));
}

#[test]
fn a_small_host_memory_limit_refuses_in_one_line_and_writes_nothing() {
    let data = synth_dataset("guard-data", SynthFormat::NnUnet, 5);
    let cache = scratch("guard-cache");
    let cache_arg = cache.display().to_string();
    let out = run_calibseg_with_env(
        &[
            "prepare",
            &data.display().to_string(),
            "--out",
            &cache_arg,
            "--threads",
            "2",
        ],
        &[(memory::HOST_MEMORY_ENV, "100000")],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("synth_0") && err.contains("GiB") && err.contains("--threads 1"),
        "{err}"
    );
    assert!(!cache.exists(), "the refused run wrote {}", cache.display());
    // A plan-only run needs no case in memory: the same limit lets it through.
    let out = run_calibseg_with_env(
        &[
            "prepare",
            &data.display().to_string(),
            "--out",
            &cache_arg,
            "--plan-only",
        ],
        &[(memory::HOST_MEMORY_ENV, "100000")],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_memory_estimate_covers_a_cases_loaded_and_resampled_arrays() {
    if crate::common::gpu().is_none() {
        return;
    }
    let data = synth_dataset("estimate-data", SynthFormat::Msd, 3);
    // A spacing finer than the files' (1 x 1 x 2.5 mm), so the resampled grid is the larger one.
    let plan = write_plan(
        "estimate",
        &serde_json::json!({"spacing": [0.5, 0.75, 1.0], "crop_foreground": false}),
    );
    let cache = scratch("estimate-cache");
    written(prepare::run(&options(&data, &cache, &plan)).unwrap());
    let text = std::fs::read_to_string(cache.join("plan.json")).unwrap();
    let transforms = serde_json::from_str::<Plan>(&text).unwrap().transforms();
    for case in &Dataset::open(&data).unwrap().cases {
        let f = TensorFile::open(prepare::case_path(&cache, &case.name)).unwrap();
        let (shape, _) = f.f32("image").unwrap();
        let (c, resampled): (usize, usize) = (shape[0], shape[1..].iter().product());
        let info = calibseg::io::nifti::read_info(case.images.files()[0]).unwrap();
        let loaded = c * info.spatial_len();
        // At least the loaded f32 image, the resampled f32 image read back and the u8 label.
        let floor = (4 * loaded + 4 * c * resampled + resampled) as u64;
        let estimate = memory::case_host_bytes(case, &transforms).unwrap();
        assert!(estimate >= floor, "{}: {estimate} < {floor}", case.name);
        // And not far above: the estimate counts the arrays and at most two working copies of each.
        assert!(
            estimate < 6 * floor,
            "{}: {estimate} >= 6 x {floor}",
            case.name
        );
    }
    // The same case at a limit just under its estimate times 2 threads: refused; at 1 thread: accepted.
    let cases = Dataset::open(&data).unwrap().cases;
    let refs: Vec<_> = cases.iter().collect();
    let one = refs
        .iter()
        .map(|c| memory::case_host_bytes(c, &transforms).unwrap())
        .max()
        .unwrap();
    assert!(memory::check(&refs, &transforms, 2, 2 * one - 1).is_err());
    assert!(memory::check(&refs, &transforms, 1, 2 * one - 1).is_ok());
}
