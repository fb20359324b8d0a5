//! nnU-Net's five-fold cross-validation splits (`CACHE/splits_final.json`): a JSON list of
//! `{"train": [...], "val": [...]}` with case names, made as nnU-Net's `generate_crossval_split` makes them
//! (sklearn's `KFold(5, shuffle=True, random_state=12345)` over the sorted names), so a file nnU-Net wrote
//! can be used as it is.

use std::collections::BTreeSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::io::output::write_file_atomically;

/// The splits file of a cache.
pub const SPLITS_FILE: &str = "splits_final.json";
/// Folds nnU-Net makes.
pub const FOLDS: usize = 5;
/// nnU-Net's seed of the split.
pub const SPLIT_SEED: u32 = 12345;

/// One fold: training and validation case names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Split {
    /// Cases trained on.
    pub train: Vec<String>,
    /// Cases validated on.
    pub val: Vec<String>,
}

/// NumPy's legacy `RandomState` generator (MT19937, seeded by `init_genrand`), as far as `shuffle` uses it.
struct Mt19937 {
    mt: [u32; 624],
    i: usize,
}

impl Mt19937 {
    fn new(seed: u32) -> Self {
        let mut mt = [0u32; 624];
        mt[0] = seed;
        for i in 1..624 {
            mt[i] = 1_812_433_253u32
                .wrapping_mul(mt[i - 1] ^ (mt[i - 1] >> 30))
                .wrapping_add(i as u32);
        }
        Mt19937 { mt, i: 624 }
    }

    fn next_u32(&mut self) -> u32 {
        if self.i >= 624 {
            for k in 0..624 {
                let y = (self.mt[k] & 0x8000_0000) | (self.mt[(k + 1) % 624] & 0x7fff_ffff);
                let mag = if y & 1 == 1 { 0x9908_b0df } else { 0 };
                self.mt[k] = self.mt[(k + 397) % 624] ^ (y >> 1) ^ mag;
            }
            self.i = 0;
        }
        let mut y = self.mt[self.i];
        self.i += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// NumPy's `random_interval(max)`: uniform in `0..=max` by masked rejection.
    fn interval(&mut self, max: u32) -> u32 {
        if max == 0 {
            return 0;
        }
        let mut mask = max;
        for s in [1, 2, 4, 8, 16] {
            mask |= mask >> s;
        }
        loop {
            let v = self.next_u32() & mask;
            if v <= max {
                return v;
            }
        }
    }
}

/// nnU-Net's splits of `names`: sorted, shuffled by NumPy's `RandomState(12345).shuffle` (Fisher-Yates from
/// the end), cut into [`FOLDS`] consecutive validation folds of `n / 5` names (one more for the first `n % 5`);
/// each fold's train and val lists in sorted order. Needs at least [`FOLDS`] names.
pub fn kfold_splits(names: &[String]) -> Result<Vec<Split>> {
    let mut sorted = names.to_vec();
    sorted.sort();
    sorted.dedup();
    let n = sorted.len();
    if n < FOLDS {
        return Err(Error::invalid(format!(
            "{FOLDS}-fold cross-validation needs at least {FOLDS} cases, the cache has {n}"
        )));
    }
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = Mt19937::new(SPLIT_SEED);
    for i in (1..n).rev() {
        let j = rng.interval(i as u32) as usize;
        order.swap(i, j);
    }
    let mut splits = Vec::with_capacity(FOLDS);
    let mut at = 0;
    for f in 0..FOLDS {
        let size = n / FOLDS + usize::from(f < n % FOLDS);
        let mut val = vec![false; n];
        for &i in &order[at..at + size] {
            val[i] = true;
        }
        at += size;
        let pick = |want: bool| -> Vec<String> {
            (0..n)
                .filter(|&i| val[i] == want)
                .map(|i| sorted[i].clone())
                .collect()
        };
        splits.push(Split {
            train: pick(false),
            val: pick(true),
        });
    }
    Ok(splits)
}

fn bad(path: &Path, message: impl Into<String>) -> Error {
    Error::Format {
        path: path.display().to_string(),
        message: message.into(),
    }
}

/// Reads a splits file and checks it against the cache's `cases`: valid JSON of the format above, at least
/// one fold, every name a case of the cache, no fold with an empty train list.
pub fn read_splits(path: &Path, cases: &[String]) -> Result<Vec<Split>> {
    let text = crate::io::input::read_regular_text(path)?;
    let splits: Vec<Split> = serde_json::from_str(&text).map_err(|e| {
        bad(
            path,
            format!("is not a list of {{\"train\": [...], \"val\": [...]}} folds: {e}"),
        )
    })?;
    if splits.is_empty() {
        return Err(bad(path, "holds no folds"));
    }
    let known: BTreeSet<&str> = cases.iter().map(String::as_str).collect();
    for (f, s) in splits.iter().enumerate() {
        if let Some(u) = s
            .train
            .iter()
            .chain(&s.val)
            .find(|n| !known.contains(n.as_str()))
        {
            return Err(bad(
                path,
                format!("fold {f} names case \"{u}\", which the cache does not hold"),
            ));
        }
        if s.train.is_empty() {
            return Err(bad(path, format!("fold {f} has no training cases")));
        }
    }
    Ok(splits)
}

/// The splits of the cache at `cache` holding `cases`: read from [`SPLITS_FILE`] where it exists, else made by
/// [`kfold_splits`] and written there (atomically).
pub fn load_or_create(cache: &Path, cases: &[String]) -> Result<Vec<Split>> {
    let path = cache.join(SPLITS_FILE);
    if std::fs::symlink_metadata(&path).is_ok() {
        return read_splits(&path, cases);
    }
    let splits = kfold_splits(cases)?;
    let json = serde_json::to_string_pretty(&splits).expect("splits serialise") + "\n";
    write_file_atomically(&path, json.as_bytes())?;
    Ok(splits)
}

/// Fold `fold` of `splits` read from `path`, or an error naming the file and the folds it has.
pub fn fold<'a>(splits: &'a [Split], fold: usize, path: &Path) -> Result<&'a Split> {
    splits.get(fold).ok_or_else(|| {
        bad(
            path,
            format!(
                "has folds 0 to {} and no fold {fold}",
                splits.len().saturating_sub(1)
            ),
        )
    })
}
