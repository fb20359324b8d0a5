//! The calibration study: the paper's comparison on synthetic phantoms with several seeds and paired tests.
//!
//! For each seed (a new initialisation and sampling; the data are the same for every seed, from
//! `data_seed`) the baseline (Dice + CE), hard and soft 0.33 (Dice + CE + mL1-ACE) are trained
//! ([`crate::train::Trainer`], checkpoints in `OUT/runs/seed-<s>/<loss>/`), the best-validation-DSC
//! checkpoint of each is evaluated on the test volumes, and a fourth row is the baseline with temperature
//! scaling fitted on the validation volumes ([`crate::metrics::fit_temperature_pieces`]). Metrics: DSC,
//! ACE, ECE, MCE, macro (per case the mean over foreground classes), `num_bins` bins.
//!
//! What is reported ([`StudyReport`]):
//! - per row, the mean ± population std over all (seed, test case) pairs;
//! - paired tests against the baseline over test cases, pooled over seeds (the pairs of every seed
//!   together) and per seed: the paired t-test (as the reference's results scripts) and the Wilcoxon
//!   signed-rank test ([`crate::metrics::stats`]); NaN (`null` in JSON) where a test is undefined (no
//!   differences at all);
//! - the relative change of each metric's mean against the baseline's, per seed, and its mean ± population
//!   std over seeds.
//!
//! Files: `OUT/results.json`, `OUT/results.md` and (with the `plots` feature) `OUT/reliability.png`, the
//! four dataset reliability histograms (all seeds' test cases pooled) side by side. Nothing in them depends
//! on time or the machine beyond the adapter's arithmetic: the same seeds give the same files, bit for bit.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::data::SyntheticDataset;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::io::output::write_file_atomically;
use crate::loss::{Labels, PaperLoss};
use crate::metrics::calibration::nan_mean_std;
use crate::metrics::stats::{paired_t_test, wilcoxon};
use crate::metrics::{
    apply_temperature, fit_temperature_pieces, BinStats, CalibrationAccumulator, CalibrationMetrics,
};
use crate::ops::softmax;
use crate::tensor::Tensor;
use crate::train::{Event, TrainConfig, Trainer};

/// The rows of the study, in order.
pub const ROWS: [&str; 4] = ["baseline", "hard", "soft", "temperature"];
/// The metrics, in order.
pub const METRICS: [&str; 4] = ["dsc", "ace", "ece", "mce"];

/// What a study runs.
#[derive(Clone, Debug)]
pub struct StudyConfig {
    /// The training configuration of every run (its `loss` and `seed` are set per run).
    pub train: TrainConfig,
    /// The seeds (weights and sampling), at least one.
    pub seeds: Vec<u64>,
    /// The seed of the data, the same for every run.
    pub data_seed: u64,
}

impl Default for StudyConfig {
    /// The default study: the small-data regime on a CPU driver within minutes (see `docs/study.md`):
    /// 2 training volumes of 32^3 without augmentation, 16^3 patches x 2, SegResNetDS init 8 blocks
    /// [1, 1, 2], trained 400 steps to the validation plateau (validation every 100 on 2 volumes), 10
    /// test volumes; seeds 1, 2, 3 on the data of seed 12345. So little data, trained to the plateau,
    /// makes the baseline overconfident, the regime the paper addresses.
    fn default() -> Self {
        let text = r#"
            steps = 400
            val_every = 100
            patch = [16, 16, 16]
            batch = 2
            val_volumes = 2
            test_volumes = 10
            [window]
            roi = [32, 32, 32]
            [data]
            shape = [32, 32, 32]
            volumes = 2
            [data.augment]
            flip_prob = 0.0
            scale = 0.0
            shift = 0.0
            gamma_prob = 0.0
        "#;
        StudyConfig {
            train: TrainConfig::from_toml(text).expect("the default study configuration parses"),
            seeds: vec![1, 2, 3],
            data_seed: 12345,
        }
    }
}

impl StudyConfig {
    /// The same study at the paper's scale ([`TrainConfig::paper`]) for a real GPU.
    pub fn full() -> Self {
        StudyConfig {
            train: TrainConfig::paper(),
            ..StudyConfig::default()
        }
    }
}

/// Per test case macro values of one row: `values[metric][case]`, metrics in [`METRICS`] order.
#[derive(Clone, Debug, PartialEq)]
pub struct CaseValues {
    /// DSC, ACE, ECE, MCE per test case.
    pub values: [Vec<f64>; 4],
}

/// One seed's evaluation.
#[derive(Clone, Debug)]
pub struct SeedResult {
    /// The seed.
    pub seed: u64,
    /// Per row ([`ROWS`] order) the per-case values.
    pub rows: Vec<CaseValues>,
    /// Per row the pooled bins of the test cases (for the reliability histograms).
    pub stats: Vec<BinStats>,
    /// The fitted temperature of the baseline.
    pub temperature: f64,
    /// Per trained row (baseline, hard, soft) the best validation DSC and its step.
    pub best: Vec<(f64, usize)>,
}

/// A study's results: the per-seed evaluations, from which the tables are computed.
#[derive(Clone, Debug)]
pub struct StudyReport {
    /// Per seed, in the given order.
    pub seeds: Vec<SeedResult>,
}

/// Progress of a study: which seed and row, and the trainer's event.
pub struct StudyEvent<'a> {
    /// The seed being trained.
    pub seed: u64,
    /// The loss being trained.
    pub loss: PaperLoss,
    /// The trainer's event.
    pub event: &'a Event,
}

fn case_values(m: &CalibrationMetrics) -> CaseValues {
    let e = &m.per_image;
    let per = |v: &[f64]| -> Vec<f64> {
        (0..e.images)
            .map(|i| nan_mean_std(&v[i * e.classes..(i + 1) * e.classes]).0)
            .collect()
    };
    CaseValues {
        values: [per(&e.dsc), per(&e.ace), per(&e.ece), per(&e.mce)],
    }
}

/// Logits and labels of volumes `indices` from a trained network (eval mode, sliding windows).
fn logits_of(gpu: &Gpu, trainer: &Trainer, indices: &[usize]) -> Result<Vec<(Tensor, Labels)>> {
    let data: &SyntheticDataset = trainer
        .synthetic()
        .ok_or_else(|| Error::invalid("the study trains on the synthetic data, not a cache"))?;
    indices
        .iter()
        .map(|&i| {
            let b = data.full_batch(&[i])?;
            let image = Tensor::from_f32(gpu, &b.shape, &b.image)?;
            let mut label_shape = b.shape;
            label_shape[1] = 1;
            let labels = Labels::from_indices(gpu, &label_shape, &b.labels, data.num_classes())?;
            let logits =
                crate::nn::predict_logits(trainer.network(), &image, Some(&trainer.window()))?;
            Ok((logits, labels))
        })
        .collect()
}

fn evaluate(
    num_bins: usize,
    cases: &[(Tensor, Labels)],
    temperature: Option<f64>,
) -> Result<CalibrationMetrics> {
    let mut acc = CalibrationAccumulator::new(num_bins, false)?;
    for (logits, labels) in cases {
        let probs = match temperature {
            None => softmax(logits)?,
            Some(t) => apply_temperature(logits, t)?,
        };
        acc.update(&probs, labels)?;
    }
    acc.aggregate()
}

/// Refuses an output folder that holds anything but a previous study; removes a previous study's runs.
fn prepare_out(out: &Path) -> Result<()> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| Error::Io { path, source }
    };
    if out.exists() {
        let entries: Vec<PathBuf> = std::fs::read_dir(out)
            .map_err(io(out))?
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<_>>()
            .map_err(io(out))?;
        let ours = |p: &PathBuf| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                ["runs", "results.json", "results.md", "reliability.png"].contains(&n)
            })
        };
        if let Some(other) = entries.iter().find(|p| !ours(p)) {
            return Err(Error::invalid(format!(
                "{} holds {}, which is not part of a previous study; choose another output folder",
                out.display(),
                other.display()
            )));
        }
        let runs = out.join("runs");
        if runs.exists() {
            std::fs::remove_dir_all(&runs).map_err(io(&runs))?;
        }
    }
    std::fs::create_dir_all(out).map_err(io(out))
}

/// Runs the study into `out` (see the module docs) and writes its files; returns the report.
pub fn run_study(
    gpu: &Gpu,
    config: &StudyConfig,
    out: &Path,
    on_event: &mut dyn FnMut(&StudyEvent),
) -> Result<StudyReport> {
    if config.seeds.is_empty() {
        return Err(Error::invalid("a study needs at least one seed"));
    }
    config.train.validate()?;
    // Sizes the device cannot hold are refused before the output folder is touched.
    config.train.check_device(gpu)?;
    prepare_out(out)?;
    let num_bins = config.train.num_bins;
    let mut seeds = Vec::new();
    for &seed in &config.seeds {
        let mut rows = Vec::new();
        let mut stats = Vec::new();
        let mut best = Vec::new();
        let mut temperature = f64::NAN;
        for loss in [PaperLoss::Baseline, PaperLoss::Hard, PaperLoss::Soft] {
            let mut tc = config.train.clone();
            tc.loss = loss;
            tc.seed = seed;
            tc.data_seed = Some(config.data_seed);
            let dir = out
                .join("runs")
                .join(format!("seed-{seed}"))
                .join(loss.name());
            std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
                path: dir.display().to_string(),
                source,
            })?;
            let mut trainer = Trainer::new(gpu, tc)?;
            trainer.run(&dir, None, &mut |event| {
                on_event(&StudyEvent { seed, loss, event })
            })?;
            best.push(trainer.best().unwrap_or((f64::NAN, 0)));
            trainer.load_best(&dir)?;
            let test = logits_of(gpu, &trainer, &trainer.test_indices())?;
            let m = evaluate(num_bins, &test, None)?;
            rows.push(case_values(&m));
            stats.push(m.stats);
            if loss == PaperLoss::Baseline {
                let val = logits_of(gpu, &trainer, &trainer.validation_indices())?;
                let pieces: Vec<(&Tensor, &Labels)> = val.iter().map(|(l, y)| (l, y)).collect();
                temperature = fit_temperature_pieces(&pieces)?.temperature;
                let mt = evaluate(num_bins, &test, Some(temperature))?;
                rows.push(case_values(&mt));
                stats.push(mt.stats);
            }
        }
        // Order: baseline, hard, soft, temperature (the temperature row was computed second).
        let t_row = rows.remove(1);
        rows.push(t_row);
        let t_stats = stats.remove(1);
        stats.push(t_stats);
        seeds.push(SeedResult {
            seed,
            rows,
            stats,
            temperature,
            best,
        });
    }
    let report = StudyReport { seeds };
    report.write(out)?;
    Ok(report)
}

fn mean_std(v: &[f64]) -> Value {
    let (mean, std) = nan_mean_std(v);
    json!({"mean": mean, "std": std})
}

/// The t-test and Wilcoxon p-values of `row` against `base`, per metric.
fn p_values(row: &CaseValues, base: &CaseValues) -> (Value, Value) {
    let mut t = serde_json::Map::new();
    let mut w = serde_json::Map::new();
    for (k, name) in METRICS.iter().enumerate() {
        // Pairs where both are defined (a class absent from a case leaves NaN DSC only if all are).
        let (a, b): (Vec<f64>, Vec<f64>) = row.values[k]
            .iter()
            .zip(&base.values[k])
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|(x, y)| (*x, *y))
            .unzip();
        let tp = paired_t_test(&a, &b).map_or(f64::NAN, |r| r.p_value);
        let wp = wilcoxon(&a, &b).map_or(f64::NAN, |r| r.0.p_value);
        t.insert((*name).into(), json!(tp));
        w.insert((*name).into(), json!(wp));
    }
    (Value::Object(t), Value::Object(w))
}

impl StudyReport {
    /// Row `r`'s values over every seed's test cases, concatenated in seed order.
    fn pooled(&self, r: usize) -> CaseValues {
        let mut values: [Vec<f64>; 4] = Default::default();
        for s in &self.seeds {
            for (k, v) in values.iter_mut().enumerate() {
                v.extend_from_slice(&s.rows[r].values[k]);
            }
        }
        CaseValues { values }
    }

    /// `results.json`: `{"seeds": [...], "rows": [{"loss", "dsc": {"mean", "std"}, "ace", "ece", "mce",
    /// "p_value": {metric: paired t-test p, pooled}, "wilcoxon_p": {..}, "relative_change": {metric:
    /// {"mean", "std"} over seeds}, "per_seed": [{"seed", metrics, "p_value", "wilcoxon_p",
    /// "relative_change"}]}], "temperature": [per seed], "best_validation": [...]}`; the baseline's
    /// p-values are `null`.
    pub fn to_json(&self) -> Value {
        let base = self.pooled(0);
        let rows: Vec<Value> = ROWS
            .iter()
            .enumerate()
            .map(|(r, name)| {
                let pooled = self.pooled(r);
                let mut row = serde_json::Map::new();
                row.insert("loss".into(), json!(name));
                for (k, m) in METRICS.iter().enumerate() {
                    row.insert((*m).into(), mean_std(&pooled.values[k]));
                }
                let (tp, wp) = if r == 0 {
                    let nulls: serde_json::Map<String, Value> =
                        METRICS.iter().map(|m| ((*m).into(), Value::Null)).collect();
                    (Value::Object(nulls.clone()), Value::Object(nulls))
                } else {
                    p_values(&pooled, &base)
                };
                row.insert("p_value".into(), tp);
                row.insert("wilcoxon_p".into(), wp);
                let mut change = serde_json::Map::new();
                let mut per_seed: Vec<serde_json::Map<String, Value>> = self
                    .seeds
                    .iter()
                    .map(|s| {
                        let mut e = serde_json::Map::new();
                        e.insert("seed".into(), json!(s.seed));
                        for (k, m) in METRICS.iter().enumerate() {
                            e.insert((*m).into(), mean_std(&s.rows[r].values[k]));
                        }
                        if r > 0 {
                            let (tp, wp) = p_values(&s.rows[r], &s.rows[0]);
                            e.insert("p_value".into(), tp);
                            e.insert("wilcoxon_p".into(), wp);
                        }
                        e
                    })
                    .collect();
                for (k, m) in METRICS.iter().enumerate() {
                    let rel: Vec<f64> = self
                        .seeds
                        .iter()
                        .map(|s| {
                            let b = nan_mean_std(&s.rows[0].values[k]).0;
                            (nan_mean_std(&s.rows[r].values[k]).0 - b) / b
                        })
                        .collect();
                    change.insert((*m).into(), mean_std(&rel));
                    for (e, v) in per_seed.iter_mut().zip(&rel) {
                        e.entry("relative_change")
                            .or_insert_with(|| json!({}))
                            .as_object_mut()
                            .expect("an object")
                            .insert((*m).into(), json!(v));
                    }
                }
                row.insert("relative_change".into(), Value::Object(change));
                row.insert(
                    "per_seed".into(),
                    Value::Array(per_seed.into_iter().map(Value::Object).collect()),
                );
                Value::Object(row)
            })
            .collect();
        json!({
            "seeds": self.seeds.iter().map(|s| s.seed).collect::<Vec<_>>(),
            "rows": rows,
            "temperature": self.seeds.iter().map(|s| s.temperature).collect::<Vec<_>>(),
            "best_validation": self.seeds.iter().map(|s| {
                json!({"seed": s.seed, "dsc_step": s.best.iter().map(|(d, st)| json!([d, st])).collect::<Vec<_>>()})
            }).collect::<Vec<_>>(),
        })
    }

    /// `results.md`: the four-row table (mean ± std over all test cases, relative change of the mean over
    /// seeds, paired t-test and Wilcoxon p-values pooled), then the per-seed p-values.
    pub fn to_markdown(&self) -> String {
        let j = self.to_json();
        let num = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
        let p = |v: &Value| {
            let x = num(v);
            if x.is_nan() {
                "-".to_string()
            } else {
                format!("{x:.2e}")
            }
        };
        let seeds: Vec<String> = self.seeds.iter().map(|s| s.seed.to_string()).collect();
        let cases = self.seeds.first().map_or(0, |s| s.rows[0].values[0].len());
        let mut md = format!(
            "Seeds {} ({} test cases each; mean ± std over all {} seed-case pairs; Δ: relative change of \
             the mean against the baseline, mean ± std over seeds; p: paired t-test / Wilcoxon \
             signed-rank, pooled pairs)\n\n",
            seeds.join(", "),
            cases,
            cases * self.seeds.len()
        );
        md.push_str("| row | DSC | ACE | ECE | MCE | ΔDSC | ΔACE | ΔECE | ΔMCE | p DSC | p ACE | p ECE | p MCE |\n");
        md.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
        for row in j["rows"].as_array().into_iter().flatten() {
            let mut cells = vec![row["loss"].as_str().unwrap_or("").to_string()];
            for m in METRICS {
                cells.push(format!(
                    "{:.4} ± {:.4}",
                    num(&row[m]["mean"]),
                    num(&row[m]["std"])
                ));
            }
            for m in METRICS {
                let c = &row["relative_change"][m];
                cells.push(format!(
                    "{:+.1}% ± {:.1}",
                    100.0 * num(&c["mean"]),
                    100.0 * num(&c["std"])
                ));
            }
            for m in METRICS {
                cells.push(format!(
                    "{} / {}",
                    p(&row["p_value"][m]),
                    p(&row["wilcoxon_p"][m])
                ));
            }
            md.push_str(&format!("| {} |\n", cells.join(" | ")));
        }
        md.push_str("\nPer seed (t-test / Wilcoxon p against that seed's baseline):\n\n");
        md.push_str("| row | seed | DSC | ACE | ECE | MCE | p DSC | p ACE | p ECE | p MCE |\n");
        md.push_str("|---|---|---|---|---|---|---|---|---|---|\n");
        for row in j["rows"].as_array().into_iter().flatten().skip(1) {
            for e in row["per_seed"].as_array().into_iter().flatten() {
                let mut cells = vec![
                    row["loss"].as_str().unwrap_or("").to_string(),
                    e["seed"].to_string(),
                ];
                for m in METRICS {
                    cells.push(format!("{:.4}", num(&e[m]["mean"])));
                }
                for m in METRICS {
                    cells.push(format!(
                        "{} / {}",
                        p(&e["p_value"][m]),
                        p(&e["wilcoxon_p"][m])
                    ));
                }
                md.push_str(&format!("| {} |\n", cells.join(" | ")));
            }
        }
        let temps: Vec<String> = self
            .seeds
            .iter()
            .map(|s| format!("{:.3}", s.temperature))
            .collect();
        md.push_str(&format!(
            "\nFitted temperatures (baseline, validation cases): {}\n",
            temps.join(", ")
        ));
        md
    }

    /// The rows' test bins pooled over seeds (for the reliability histograms).
    pub fn pooled_stats(&self) -> Result<Vec<BinStats>> {
        (0..ROWS.len())
            .map(|r| {
                let mut all = self.seeds[0].stats[r].clone();
                for s in &self.seeds[1..] {
                    all.append(&s.stats[r])?;
                }
                Ok(all)
            })
            .collect()
    }

    /// Writes `results.json`, `results.md` and (with `plots`) `reliability.png` into `out`, atomically.
    pub fn write(&self, out: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(&self.to_json())
            .map_err(|e| Error::invalid(format!("results.json: {e}")))?;
        write_file_atomically(out.join("results.json"), &json)?;
        write_file_atomically(out.join("results.md"), self.to_markdown().as_bytes())?;
        #[cfg(feature = "plots")]
        {
            let stats = self.pooled_stats()?;
            let panels: Vec<(&str, &BinStats)> = ROWS.iter().copied().zip(&stats).collect();
            crate::metrics::plot::reliability_comparison(&out.join("reliability.png"), &panels)?;
        }
        Ok(())
    }
}
