//! AdamW as PyTorch computes it (`torch.optim.AdamW`, default hyper-parameters, decoupled weight decay),
//! multi-tensor: the moments of all parameters live packed in one buffer pair. Each step updates every
//! large parameter in place (one dispatch each, `shaders/adamw.wgsl`, its moments at its place in the
//! pack) and the small ones together: it copies their gradients and values into packed buffers taken from
//! the pool for the step (recorded copies), updates each run of them in one dispatch and copies the values
//! back. Same arithmetic per element either way, so the same bits; and besides the parameters and their
//! gradients the optimiser holds its two moments alone, as PyTorch's in-place AdamW does (and, during an
//! update, the small parameters' packed copies).

use std::collections::{BTreeMap, HashMap, HashSet};

use bytemuck::{Pod, Zeroable};

use crate::autograd::{Grads, Var};
use crate::error::{Error, Result};
use crate::gpu::{Gpu, WORKGROUP_SIZE};
use crate::io::safetensors::HostTensor;
use crate::shaders;
use crate::tensor::{DType, Tensor};

/// Hyper-parameters (PyTorch's defaults from [`Default`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWConfig {
    /// Learning rate (1e-3).
    pub lr: f64,
    /// First-moment decay (0.9).
    pub beta1: f64,
    /// Second-moment decay (0.999).
    pub beta2: f64,
    /// Denominator epsilon (1e-8).
    pub eps: f64,
    /// Decoupled weight decay (0.01).
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    n: u32,
    base: u32,
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    bc1: f32,
    bc2_sqrt: f32,
    moment_base: u32,
    _pad1: [u32; 2],
}

/// Where a parameter's elements sit in the packed buffers.
#[derive(Clone, Copy, Debug)]
struct Slot {
    pack: usize,
    /// First element in the pack.
    offset: usize,
    numel: usize,
}

/// The packed moments of a set of parameters (at most one storage binding each).
struct Pack {
    m: Tensor,
    v: Tensor,
    len: usize,
}

/// The optimiser: moments packed per group of parameters (created on first use), and the step count.
pub struct AdamW {
    /// Hyper-parameters; change `lr` between steps to follow a schedule.
    pub config: AdamWConfig,
    step: u64,
    /// Packed layout of the parameters seen so far, by variable id.
    slots: HashMap<u64, Slot>,
    packs: Vec<Pack>,
    /// Parameters that have moments (stepped with a gradient, or imported).
    stepped: HashSet<u64>,
}

impl AdamW {
    /// An optimiser with no state yet.
    pub fn new(config: AdamWConfig) -> Self {
        AdamW {
            config,
            step: 0,
            slots: HashMap::new(),
            packs: Vec::new(),
            stepped: HashSet::new(),
        }
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// The optimiser's state for checkpoints: the step count and, for each named parameter that has moments,
    /// `exp_avg.<name>` and `exp_avg_sq.<name>` (PyTorch's names for the two moments).
    pub fn export_state(
        &self,
        params: &[(String, Var)],
    ) -> Result<(u64, BTreeMap<String, HostTensor>)> {
        let mut host: HashMap<usize, (Vec<f32>, Vec<f32>)> = HashMap::new();
        let mut out = BTreeMap::new();
        for (name, v) in params {
            if !self.stepped.contains(&v.id()) {
                continue;
            }
            let Some(slot) = self.slots.get(&v.id()) else {
                continue;
            };
            let (m, s) = match host.entry(slot.pack) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    let pack = &self.packs[slot.pack];
                    e.insert((pack.m.to_vec_f32()?, pack.v.to_vec_f32()?))
                }
            };
            let range = slot.offset..slot.offset + slot.numel;
            for (key, data) in [("exp_avg", m), ("exp_avg_sq", s)] {
                out.insert(
                    format!("{key}.{name}"),
                    HostTensor::F32(v.shape().to_vec(), data[range.clone()].to_vec()),
                );
            }
        }
        Ok((self.step, out))
    }

    /// Restores what [`AdamW::export_state`] wrote, for the same named parameters. Strict: a moment whose
    /// parameter is unknown or whose shape differs is an error, and nothing changes unless all of it loads.
    pub fn import_state(
        &mut self,
        params: &[(String, Var)],
        step: u64,
        state: &BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    ) -> Result<()> {
        let mut found = Vec::new();
        let mut used = 0;
        for (name, v) in params {
            let m = state.get(&format!("exp_avg.{name}"));
            let s = state.get(&format!("exp_avg_sq.{name}"));
            let (m, s) = match (m, s) {
                (None, None) => continue,
                (Some(m), Some(s)) => (m, s),
                _ => {
                    return Err(Error::StateDict(format!(
                        "optimiser state has only one of the two moments of {name}"
                    )))
                }
            };
            for (key, (shape, data)) in [("exp_avg", m), ("exp_avg_sq", s)] {
                if shape.as_slice() != v.shape() || data.len() != v.tensor().numel() {
                    return Err(Error::StateDict(format!(
                        "optimiser state {key}.{name} is {shape:?}, the parameter {:?}",
                        v.shape()
                    )));
                }
            }
            found.push((v, &m.1, &s.1));
            used += 2;
        }
        if used != state.len() {
            let known: HashSet<String> = params
                .iter()
                .flat_map(|(n, _)| [format!("exp_avg.{n}"), format!("exp_avg_sq.{n}")])
                .collect();
            let extra: Vec<&String> = state.keys().filter(|k| !known.contains(*k)).collect();
            return Err(Error::StateDict(format!(
                "optimiser state for unknown parameters: {extra:?}"
            )));
        }
        // Fresh packs over the listed parameters, moments zero except those loaded.
        let vars: Vec<&Var> = params.iter().map(|(_, v)| v).collect();
        let (slots, lens) = layout(&vars, &HashMap::new(), &[], max_pack_elems(&vars))?;
        let mut m_host: Vec<Vec<f32>> = lens.iter().map(|&n| vec![0.0; n]).collect();
        let mut v_host = m_host.clone();
        let mut stepped = HashSet::new();
        for (v, m, s) in found {
            let slot = slots[&v.id()];
            m_host[slot.pack][slot.offset..slot.offset + slot.numel].copy_from_slice(m);
            v_host[slot.pack][slot.offset..slot.offset + slot.numel].copy_from_slice(s);
            stepped.insert(v.id());
        }
        let mut packs = Vec::new();
        if let Some(v) = vars.first() {
            let gpu = v.tensor().gpu();
            for ((len, m), s) in lens.iter().zip(&m_host).zip(&v_host) {
                let mut p = new_pack(gpu, *len)?;
                p.m = Tensor::from_f32(gpu, &[(*len).max(1)], &padded(m))?;
                p.v = Tensor::from_f32(gpu, &[(*len).max(1)], &padded(s))?;
                packs.push(p);
            }
        }
        self.slots = slots;
        self.packs = packs;
        self.stepped = stepped;
        self.step = step;
        Ok(())
    }

    /// One step on every parameter in `params` that has a gradient in `grads` (updated in place: the
    /// variables keep their tensors). Parameters without a gradient are left alone, as PyTorch does.
    pub fn step(&mut self, params: &[Var], grads: &Grads) -> Result<()> {
        let mut active = Vec::new();
        for v in params {
            let Some(g) = grads.get(v) else { continue };
            let p = v.tensor();
            p.expect_dtype(DType::F32, "parameter")?;
            g.expect_dtype(DType::F32, "gradient")?;
            if g.shape() != p.shape() {
                return Err(Error::shape(format!(
                    "gradient {:?} does not match its parameter {:?}",
                    g.shape(),
                    p.shape()
                )));
            }
            active.push((v, g));
        }
        self.step += 1;
        let Some((first, _)) = active.first() else {
            return Ok(());
        };
        let gpu = first.tensor().gpu().clone();
        let vars: Vec<&Var> = active.iter().map(|(v, _)| *v).collect();
        if vars.iter().any(|v| !self.slots.contains_key(&v.id())) {
            self.grow(&gpu, &vars)?;
        }
        let c = self.config;
        let t = self.step as i32;
        let bc1 = 1.0 - c.beta1.powi(t);
        let bc2 = 1.0 - c.beta2.powi(t);
        let k = gpu.kernel(&shaders::ADAMW, "", "step", &[])?;
        let update = |n: usize, base: usize, moment_base: usize| Params {
            n: n as u32,
            base: base as u32,
            lr: c.lr as f32,
            beta1: c.beta1 as f32,
            beta2: c.beta2 as f32,
            eps: c.eps as f32,
            weight_decay: c.weight_decay as f32,
            bc1: bc1 as f32,
            bc2_sqrt: bc2.sqrt() as f32,
            moment_base: moment_base as u32,
            _pad1: [0; 2],
        };
        let groups = |n: usize| n.div_ceil(WORKGROUP_SIZE as usize) as u32;
        // The small parameters' packed gradients and parameters, alive until the batch is submitted
        // (declared before it, so dropped after it).
        let mut scratch = Vec::new();
        let mut b = gpu.batch("adamw");
        // Large parameters are updated where they are, one dispatch each; the small ones per pack, gathered
        // into packed buffers so that each run of them is one dispatch.
        let mut small: Vec<Vec<(Slot, &Var, &Tensor)>> = vec![Vec::new(); self.packs.len()];
        for (v, g) in &active {
            let slot = self.slots[&v.id()];
            self.stepped.insert(v.id());
            if slot.numel == 0 {
                continue;
            }
            if slot.numel < IN_PLACE_ELEMENTS {
                small[slot.pack].push((slot, *v, *g));
                continue;
            }
            let pack = &self.packs[slot.pack];
            b.dispatch_tensors(
                &k,
                &update(slot.numel, 0, slot.offset),
                &[g, v.tensor(), &pack.m, &pack.v],
                groups(slot.numel),
            )?;
        }
        for (pack, list) in self.packs.iter().zip(&mut small) {
            if list.is_empty() {
                continue;
            }
            list.sort_by_key(|(slot, _, _)| slot.offset);
            let len: usize = list.iter().map(|(slot, _, _)| slot.numel).sum();
            let grads = Tensor::uninit(&gpu, &[len], DType::F32)?;
            let packed = Tensor::uninit(&gpu, &[len], DType::F32)?;
            // Runs (first packed element, first moment, length) consecutive in both.
            let mut runs: Vec<(usize, usize, usize)> = Vec::new();
            let mut at = 0;
            for (slot, v, g) in list.iter() {
                let (to, bytes) = (at as u64 * 4, slot.numel as u64 * 4);
                b.copy_buffer_to_buffer(g.buffer(), 0, grads.buffer(), to, bytes);
                b.copy_buffer_to_buffer(v.tensor().buffer(), 0, packed.buffer(), to, bytes);
                match runs.last_mut() {
                    Some((_, moment, n)) if *moment + *n == slot.offset => *n += slot.numel,
                    _ => runs.push((at, slot.offset, slot.numel)),
                }
                at += slot.numel;
            }
            for &(start, moment, n) in &runs {
                b.dispatch_tensors(
                    &k,
                    &update(n, start, moment),
                    &[&grads, &packed, &pack.m, &pack.v],
                    groups(n),
                )?;
            }
            let mut at = 0;
            for (slot, v, _) in list.iter() {
                let bytes = slot.numel as u64 * 4;
                b.copy_buffer_to_buffer(
                    packed.buffer(),
                    at as u64 * 4,
                    v.tensor().buffer(),
                    0,
                    bytes,
                );
                at += slot.numel;
            }
            scratch.push((grads, packed));
        }
        b.submit()
    }

    /// Lays out the known parameters and `new` ones again, keeping the moments of the known ones.
    fn grow(&mut self, gpu: &Gpu, new: &[&Var]) -> Result<()> {
        let fresh: Vec<&Var> = new
            .iter()
            .copied()
            .filter(|v| !self.slots.contains_key(&v.id()))
            .collect();
        let limit = max_pack_elems(new);
        let (slots, lens) = layout(&fresh, &self.slots, &self.packs, limit)?;
        let mut packs = Vec::new();
        let mut b = gpu.batch("adamw: moments");
        for (i, &len) in lens.iter().enumerate() {
            let pack = new_pack(gpu, len)?;
            b.clear_buffer(pack.m.buffer(), 0, None);
            b.clear_buffer(pack.v.buffer(), 0, None);
            if let Some(old) = self.packs.get(i) {
                // Known parameters keep their place: the old pack is a prefix of the new one.
                let bytes = old.len as u64 * 4;
                if bytes > 0 {
                    b.copy_buffer_to_buffer(old.m.buffer(), 0, pack.m.buffer(), 0, bytes);
                    b.copy_buffer_to_buffer(old.v.buffer(), 0, pack.v.buffer(), 0, bytes);
                }
            }
            packs.push(pack);
        }
        b.submit()?;
        self.slots = slots;
        self.packs = packs;
        Ok(())
    }
}

/// Parameters with at least this many elements are updated in place, one dispatch each, rather than copied
/// into and out of a pack: a step then never holds packed copies of the large weights, so its memory
/// through the update is the parameters, gradients and moments (as PyTorch's in-place AdamW), and their
/// bytes are not copied twice. The small ones (biases, norms, thin kernels) stay packed, keeping the
/// dispatches per step few.
const IN_PLACE_ELEMENTS: usize = 1 << 16;

/// Most elements per pack: one storage binding (and a u32 index).
fn max_pack_elems(vars: &[&Var]) -> usize {
    let binding = vars.first().map_or(u64::from(u32::MAX), |v| {
        v.tensor().gpu().max_binding_bytes()
    });
    (binding / 4).min(u64::from(u32::MAX)) as usize
}

/// Appends `fresh` parameters to the layout `known` (whose packs have the lengths of `packs`): each goes to
/// the first pack with room, or a new one. Returns the layout and every pack's length.
fn layout(
    fresh: &[&Var],
    known: &HashMap<u64, Slot>,
    packs: &[Pack],
    limit: usize,
) -> Result<(HashMap<u64, Slot>, Vec<usize>)> {
    let mut slots = known.clone();
    let mut lens: Vec<usize> = packs.iter().map(|p| p.len).collect();
    for v in fresh {
        if slots.contains_key(&v.id()) {
            continue;
        }
        let n = v.tensor().numel();
        if n > limit {
            return Err(Error::BufferTooLarge {
                what: format!("an AdamW parameter of shape {:?}", v.shape()),
                bytes: n as u64 * 4,
                limit_name: "max_storage_buffer_binding_size",
                limit: limit as u64 * 4,
            });
        }
        let pack = match lens.iter().position(|&l| l + n <= limit) {
            Some(i) => i,
            None => {
                lens.push(0);
                lens.len() - 1
            }
        };
        slots.insert(
            v.id(),
            Slot {
                pack,
                offset: lens[pack],
                numel: n,
            },
        );
        lens[pack] += n;
    }
    Ok((slots, lens))
}

fn new_pack(gpu: &Gpu, len: usize) -> Result<Pack> {
    let shape = [len.max(1)];
    Ok(Pack {
        m: Tensor::uninit(gpu, &shape, DType::F32)?,
        v: Tensor::uninit(gpu, &shape, DType::F32)?,
        len,
    })
}

/// At least one element (an empty pack still has a buffer).
fn padded(data: &[f32]) -> Vec<f32> {
    if data.is_empty() {
        vec![0.0]
    } else {
        data.to_vec()
    }
}

#[cfg(test)]
mod layout_tests {
    use super::Params;
    use crate::shaders::{self, assert_layout};

    #[test]
    fn params_layout_matches_the_wgsl() {
        assert_layout!(Params, shaders::ADAMW.first_variant(), "Params"; n, base, lr, beta1, beta2, eps, weight_decay, bc1, bc2_sqrt, moment_base, _pad1);
    }
}
