//! One parameter store for a network, its optimiser and its checkpoints.
//!
//! A [`VarBuilder`] carries a dotted path prefix (`vb.pp("encoder").pp("layers").pp(0)`); `vb.get(name, shape,
//! init)` creates the parameter under the full name (`encoder.layers.0.weight`) and registers it in the
//! [`ParamStore`] in one call, so the names a network's parameters carry are exactly the ones its constructor
//! used: MONAI's `state_dict` keys when the constructor follows MONAI's attribute names. The store hands the
//! same variables to the optimiser and reads and writes them as safetensors checkpoints.
//!
//! Loading is strict and all-or-nothing: every missing, unexpected and mis-shaped tensor is named in one
//! [`Error::StateDict`], and no parameter changes unless all of them load. Loaded values are written into the
//! parameters' existing buffers, so every clone of a parameter (the layers hold clones) sees them and the
//! optimiser's state, keyed by variable, stays attached.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};

use super::init::SeededRng;
use crate::autograd::Var;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::io::safetensors::{self as st, HostTensor, TensorFile};
use crate::tensor::Tensor;

/// How a new parameter is initialised.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// Every element equal to the value (norm weights 1, biases 0).
    Const(f32),
    /// Uniform in `[-bound, bound)` from the builder's seeded generator (PyTorch's conv initialisation).
    Uniform(f64),
}

#[derive(Default)]
struct StoreInner {
    names: Vec<String>,
    vars: HashMap<String, Var>,
}

/// The named parameters of a model, in creation order. Cheap to clone (shared).
#[derive(Clone)]
pub struct ParamStore {
    gpu: Gpu,
    inner: Arc<Mutex<StoreInner>>,
}

impl std::fmt::Debug for ParamStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParamStore")
            .field("parameters", &self.len())
            .finish()
    }
}

impl ParamStore {
    /// An empty store whose parameters live on `gpu`.
    pub fn new(gpu: &Gpu) -> Self {
        ParamStore {
            gpu: gpu.clone(),
            inner: Arc::default(),
        }
    }

    /// The device the parameters live on.
    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StoreInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A builder at the root (no prefix) drawing initial values from a generator seeded with `seed`.
    pub fn builder(&self, seed: u64) -> VarBuilder {
        VarBuilder {
            store: self.clone(),
            prefix: String::new(),
            rng: Arc::new(Mutex::new(SeededRng::new(seed))),
        }
    }

    /// Number of parameters.
    pub fn len(&self) -> usize {
        self.lock().names.len()
    }

    /// Whether the store holds no parameter.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Total number of scalar parameters.
    pub fn numel(&self) -> usize {
        let inner = self.lock();
        inner.vars.values().map(|v| v.tensor().numel()).sum()
    }

    /// The parameter called `name`, if any.
    pub fn get(&self, name: &str) -> Option<Var> {
        self.lock().vars.get(name).cloned()
    }

    /// All parameters with their names, in creation order.
    pub fn named_vars(&self) -> Vec<(String, Var)> {
        let inner = self.lock();
        inner
            .names
            .iter()
            .map(|n| (n.clone(), inner.vars[n].clone()))
            .collect()
    }

    /// All parameters in creation order (what the optimiser steps).
    pub fn vars(&self) -> Vec<Var> {
        self.named_vars().into_iter().map(|(_, v)| v).collect()
    }

    /// The parameters' names in creation order.
    pub fn names(&self) -> Vec<String> {
        self.lock().names.clone()
    }

    fn insert(&self, name: String, var: Var) -> Result<()> {
        let mut inner = self.lock();
        if inner.vars.contains_key(&name) {
            return Err(Error::invalid(format!(
                "a parameter named '{name}' exists already"
            )));
        }
        inner.names.push(name.clone());
        inner.vars.insert(name, var);
        Ok(())
    }

    /// Downloads every parameter: MONAI `state_dict` keys to f32 host tensors.
    pub fn state_dict(&self) -> Result<BTreeMap<String, HostTensor>> {
        self.named_vars()
            .into_iter()
            .map(|(n, v)| {
                let t = v.tensor();
                Ok((n, HostTensor::F32(t.shape().to_vec(), t.to_vec_f32()?)))
            })
            .collect()
    }

    /// Loads a state dict strictly: the keys must be exactly the parameters' names with their shapes.
    /// Every problem is reported at once ([`Error::StateDict`]) and nothing changes unless everything loads.
    pub fn load_state_dict(
        &self,
        tensors: &BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    ) -> Result<()> {
        self.load_checked(tensors, &[])
    }

    /// Loads `tensors` after checking them against the parameters; `wrong_type` names file entries that
    /// exist but could not be read as floats.
    fn load_checked(
        &self,
        tensors: &BTreeMap<String, (Vec<usize>, Vec<f32>)>,
        wrong_type: &[String],
    ) -> Result<()> {
        let named = self.named_vars();
        let mut problems = StateDictProblems::default();
        for (name, var) in &named {
            if wrong_type.contains(name) {
                problems
                    .mismatched
                    .push(format!("{name} (not a float tensor)"));
                continue;
            }
            match tensors.get(name) {
                None => problems.missing.push(name.clone()),
                Some((shape, data)) => {
                    if shape.as_slice() != var.shape() || data.len() != var.tensor().numel() {
                        problems
                            .mismatched
                            .push(format!("{name} (file {shape:?}, model {:?})", var.shape()));
                    }
                }
            }
        }
        let known: std::collections::HashSet<&str> =
            named.iter().map(|(n, _)| n.as_str()).collect();
        problems.unexpected = tensors
            .keys()
            .chain(wrong_type)
            .filter(|k| !known.contains(k.as_str()))
            .cloned()
            .collect();
        problems.into_result()?;
        for (name, var) in &named {
            var.tensor().write_f32(&tensors[name].1)?;
        }
        self.gpu.synchronize()
    }

    /// Loads a safetensors checkpoint strictly (see [`ParamStore::load_state_dict`]). F32, F64, F16 and BF16
    /// tensors are converted to f32.
    ///
    /// With `prefix` (e.g. `"module."`), only the tensors whose names start with it are read, with the prefix
    /// removed; the others are ignored. Without one, a `module.` or `model.` prefix that every tensor name
    /// carries (PyTorch `DataParallel` and Lightning checkpoints) is removed.
    pub fn load_safetensors(&self, path: impl AsRef<Path>, prefix: Option<&str>) -> Result<()> {
        let file = TensorFile::open(path.as_ref())?;
        let names = file.names();
        let prefix = match prefix {
            Some(p) => p,
            None => ["module.", "model."]
                .into_iter()
                .find(|p| !names.is_empty() && names.iter().all(|n| n.starts_with(p)))
                .unwrap_or(""),
        };
        let mut tensors = BTreeMap::new();
        let mut wrong_type = Vec::new();
        for name in &names {
            let Some(key) = name.strip_prefix(prefix) else {
                continue;
            };
            match file.f32(name) {
                Ok(t) => {
                    tensors.insert(key.to_string(), t);
                }
                Err(_) => wrong_type.push(key.to_string()),
            }
        }
        self.load_checked(&tensors, &wrong_type)
            .map_err(|e| match e {
                Error::StateDict(msg) => Error::StateDict(format!("{}: {msg}", file.path())),
                e => e,
            })
    }

    /// Writes every parameter to a safetensors file under its MONAI `state_dict` key (f32), atomically, so
    /// `net.load_state_dict(safetensors.torch.load_file(path), strict=True)` works in MONAI.
    pub fn save_safetensors(
        &self,
        path: impl AsRef<Path>,
        metadata: Option<&HashMap<String, String>>,
    ) -> Result<()> {
        st::write(path, &self.state_dict()?, metadata)
    }
}

#[derive(Default)]
struct StateDictProblems {
    missing: Vec<String>,
    unexpected: Vec<String>,
    mismatched: Vec<String>,
}

impl StateDictProblems {
    fn into_result(self) -> Result<()> {
        let mut parts = Vec::new();
        if !self.missing.is_empty() {
            parts.push(format!("missing: {}", self.missing.join(", ")));
        }
        if !self.unexpected.is_empty() {
            parts.push(format!("unexpected: {}", self.unexpected.join(", ")));
        }
        if !self.mismatched.is_empty() {
            parts.push(format!(
                "wrong shape or type: {}",
                self.mismatched.join(", ")
            ));
        }
        if parts.is_empty() {
            Ok(())
        } else {
            Err(Error::StateDict(parts.join("; ")))
        }
    }
}

/// Creates named parameters in a [`ParamStore`]: a path prefix plus the store and a shared seeded generator.
#[derive(Clone)]
pub struct VarBuilder {
    store: ParamStore,
    prefix: String,
    rng: Arc<Mutex<SeededRng>>,
}

impl std::fmt::Debug for VarBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VarBuilder")
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl VarBuilder {
    /// A builder one level down: `pp("encoder")` then `pp(0)` names parameters `encoder.0.*`.
    pub fn pp(&self, name: impl std::fmt::Display) -> VarBuilder {
        VarBuilder {
            store: self.store.clone(),
            prefix: self.path(&name.to_string()),
            rng: self.rng.clone(),
        }
    }

    /// The full name of `name` under this builder's prefix.
    pub fn path(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    /// The prefix (empty at the root).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The device.
    pub fn gpu(&self) -> &Gpu {
        self.store.gpu()
    }

    /// The store the parameters go to.
    pub fn store(&self) -> &ParamStore {
        &self.store
    }

    /// Creates the trainable parameter `name` of `shape` and registers it; a name used twice is an error.
    pub fn get(&self, name: &str, shape: &[usize], init: Init) -> Result<Var> {
        let n = crate::tensor::numel(shape)?;
        // Refused before the host copy is made: a huge parameter must not cost the machine's memory first.
        let bytes = (n as u64).saturating_mul(4);
        let limit = self.gpu().limits().max_buffer_size;
        if bytes > limit {
            return Err(Error::BufferTooLarge {
                what: format!("parameter {} of shape {shape:?}", self.path(name)),
                bytes,
                limit_name: "max_buffer_size",
                limit,
            });
        }
        let data = match init {
            Init::Const(c) => vec![c; n],
            Init::Uniform(bound) => self
                .rng
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .uniform_symmetric(n, bound),
        };
        let var = Var::parameter(Tensor::from_f32(self.gpu(), shape, &data)?);
        self.store.insert(self.path(name), var.clone())?;
        Ok(var)
    }
}
