//! MONAI's `SegResNetDS` (`monai/networks/nets/segresnet_ds.py`), the paper's network, number for number:
//! same layers, same `state_dict` keys, same outputs in training (deep supervision) and eval mode.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::layers::{Conv, ConvConfig, ConvTranspose};
use super::monai_args::{self as args, NormSpec};
use super::network::{batched, run_blocks, Mode, Network, ResBlock};
use super::store::{ParamStore, VarBuilder};
use crate::autograd::{Tape, Var};
use crate::error::{Error, Result};
use crate::gpu::Gpu;

/// `SegResNetDS`'s constructor arguments, with MONAI's names and defaults (except `norm`: see below).
///
/// Deserialises from (and serialises to) the JSON of MONAI's keyword arguments, e.g.
/// `{"init_filters": 8, "blocks_down": [1, 2, 2, 4], "dsdepth": 2, "norm": "INSTANCE"}`. Options calibseg does
/// not implement (batch norm, activations other than ReLU, `resolution`, `preprocess`, upsampling other than
/// `deconv`) are an error naming the option, as is any unknown key.
///
/// MONAI's default `norm` is batch norm, which calibseg does not implement; here a missing `norm` means
/// `"INSTANCE"` (what the paper uses), and [`SegResNetDsConfig::to_json`] always writes it out, so MONAI
/// builds the same network from the JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Value", into = "Value")]
pub struct SegResNetDsConfig {
    /// Spatial dimensions, 2 or 3 (3).
    pub spatial_dims: usize,
    /// Channels after the stem convolution, doubled at each level (32).
    pub init_filters: usize,
    /// Input channels (1).
    pub in_channels: usize,
    /// Output channels, i.e. classes (2).
    pub out_channels: usize,
    /// Normalisation (instance).
    pub norm: NormSpec,
    /// Residual blocks per encoder level ([1, 2, 2, 4]).
    pub blocks_down: Vec<usize>,
    /// Residual blocks per decoder level (`None`: one per level).
    pub blocks_up: Option<Vec<usize>>,
    /// Decoder levels with a deep-supervision head, counted from full resolution (1).
    pub dsdepth: usize,
}

impl Default for SegResNetDsConfig {
    fn default() -> Self {
        SegResNetDsConfig {
            spatial_dims: 3,
            init_filters: 32,
            in_channels: 1,
            out_channels: 2,
            norm: NormSpec::instance(),
            blocks_down: vec![1, 2, 2, 4],
            blocks_up: None,
            dsdepth: 1,
        }
    }
}

impl SegResNetDsConfig {
    /// The paper's network (reference §5.1): init 32, blocks [1, 2, 2, 4, 4], dsdepth 4, `INSTANCE_NVFUSER`.
    pub fn paper(in_channels: usize, out_channels: usize) -> Self {
        SegResNetDsConfig {
            init_filters: 32,
            in_channels,
            out_channels,
            norm: NormSpec {
                name: args::NormName::InstanceNvfuser,
                eps: args::DEFAULT_NORM_EPS,
            },
            blocks_down: vec![1, 2, 2, 4, 4],
            dsdepth: 4,
            ..Default::default()
        }
    }

    /// Parses MONAI's keyword arguments as JSON text.
    pub fn from_json(text: &str) -> Result<Self> {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| Error::invalid(format!("SegResNetDS configuration is not JSON: {e}")))?;
        Self::try_from(v)
    }

    /// MONAI's keyword arguments (`SegResNetDS(**kwargs)` builds the same network).
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("spatial_dims".into(), self.spatial_dims.into());
        m.insert("init_filters".into(), self.init_filters.into());
        m.insert("in_channels".into(), self.in_channels.into());
        m.insert("out_channels".into(), self.out_channels.into());
        m.insert("act".into(), json!("relu"));
        m.insert("norm".into(), self.norm.to_json());
        m.insert("blocks_down".into(), json!(self.blocks_down));
        // `None` (MONAI's default) is left out: TOML has no null.
        if let Some(b) = &self.blocks_up {
            m.insert("blocks_up".into(), json!(b));
        }
        m.insert("dsdepth".into(), self.dsdepth.into());
        m.insert("upsample_mode".into(), json!("deconv"));
        Value::Object(m)
    }

    /// Number of decoder levels.
    pub fn n_up(&self) -> usize {
        self.blocks_down.len().saturating_sub(1)
    }

    /// Residual blocks per decoder level, defaults resolved.
    pub fn blocks_up_resolved(&self) -> Vec<usize> {
        self.blocks_up
            .clone()
            .unwrap_or_else(|| vec![1; self.n_up()])
    }

    /// Number of parameters (`None`: more than a `u64` holds), computed from the options before anything is
    /// built, so that huge `init_filters` or block counts are refused up front.
    pub fn parameter_count(&self) -> Option<u64> {
        let k = 3u64.checked_pow(self.spatial_dims as u32)?;
        let conv = |cin: u64, cout: u64| cin.checked_mul(cout)?.checked_mul(k);
        // Two convolutions and two affine norms.
        let block = |c: u64| conv(c, c)?.checked_mul(2)?.checked_add(c.checked_mul(4)?);
        let channels = |level: usize| -> Option<u64> {
            (self.init_filters as u64).checked_mul(1u64.checked_shl(level as u32)?)
        };
        let blocks_of = |n: usize, c: u64| block(c)?.checked_mul(n as u64);
        let mut total = conv(self.in_channels as u64, self.init_filters as u64)?;
        let levels = self.blocks_down.len();
        for (i, &n) in self.blocks_down.iter().enumerate() {
            let c = channels(i)?;
            total = total.checked_add(blocks_of(n, c)?)?;
            if i + 1 < levels {
                total = total.checked_add(conv(c, c.checked_mul(2)?)?)?;
            }
        }
        let out = self.out_channels as u64;
        let head = |c: u64| c.checked_mul(out)?.checked_add(out);
        let n_up = self.n_up();
        for (i, n) in self.blocks_up_resolved().into_iter().enumerate() {
            let c = channels(n_up.checked_sub(i + 1)?)?;
            total = total
                .checked_add(conv(c.checked_mul(2)?, c)?)?
                .checked_add(blocks_of(n, c)?)?;
            // Deep-supervision heads on the `dsdepth` levels nearest full resolution.
            if n_up - i <= self.dsdepth {
                total = total.checked_add(head(c)?)?;
            }
        }
        if self.n_up() == 0 {
            total = total.checked_add(head(channels(0)?)?)?;
        }
        Some(total)
    }

    /// Checks the values (MONAI's own constraints plus what calibseg implements), and that the weights fit in
    /// memory.
    pub fn validate(&self) -> Result<()> {
        args::check_common(
            self.spatial_dims,
            [
                (self.init_filters, "init_filters"),
                (self.in_channels, "in_channels"),
                (self.out_channels, "out_channels"),
            ],
            &self.blocks_down,
            &self.norm,
        )?;
        if let Some(up) = &self.blocks_up {
            if up.len() != self.n_up() {
                return Err(Error::invalid(format!(
                    "option blocks_up: {} entries for {} decoder levels (len(blocks_down) - 1)",
                    up.len(),
                    self.n_up()
                )));
            }
        }
        crate::memory::check_fits(
            &format!(
                "SegResNetDS with init_filters {}, blocks_down {:?} (its f32 weights)",
                self.init_filters, self.blocks_down
            ),
            self.parameter_count().and_then(|p| p.checked_mul(4)),
        )
    }
}

impl TryFrom<Value> for SegResNetDsConfig {
    type Error = Error;

    fn try_from(v: Value) -> Result<Self> {
        let m = args::object(&v, "SegResNetDS")?;
        let mut c = SegResNetDsConfig::default();
        for (k, a) in &m {
            match k.as_str() {
                "spatial_dims" => c.spatial_dims = args::int(a, k)?,
                "init_filters" => c.init_filters = args::positive_int(a, k)?,
                "in_channels" => c.in_channels = args::positive_int(a, k)?,
                "out_channels" => c.out_channels = args::positive_int(a, k)?,
                "act" => args::check_act(a)?,
                "norm" => c.norm = NormSpec::from_json(a)?,
                "blocks_down" => c.blocks_down = args::int_list(a, k)?,
                "blocks_up" => {
                    c.blocks_up = if a.is_null() {
                        None
                    } else {
                        Some(args::int_list(a, k)?)
                    }
                }
                // MONAI uses max(dsdepth, 1).
                "dsdepth" => c.dsdepth = args::int(a, k)?.max(1),
                "upsample_mode" => {
                    if !a.as_str().is_some_and(|s| s.eq_ignore_ascii_case("deconv")) {
                        return Err(Error::invalid(format!(
                            "option upsample_mode: {a} is not supported (calibseg has \"deconv\")"
                        )));
                    }
                }
                "resolution" | "preprocess" => {
                    if !a.is_null() {
                        return Err(Error::invalid(format!(
                            "option {k}: {a} is not supported (only null)"
                        )));
                    }
                }
                other => {
                    return Err(Error::invalid(format!(
                        "option {other}: not a SegResNetDS argument"
                    )))
                }
            }
        }
        c.validate()?;
        Ok(c)
    }
}

impl From<SegResNetDsConfig> for Value {
    fn from(c: SegResNetDsConfig) -> Value {
        c.to_json()
    }
}

#[derive(Clone, Debug)]
struct EncoderLevel {
    blocks: Vec<ResBlock>,
    downsample: Option<Conv>,
}

#[derive(Clone, Debug)]
struct DecoderLevel {
    upsample: Option<ConvTranspose>,
    blocks: Vec<ResBlock>,
    head: Option<Conv>,
}

/// MONAI's `SegResNetDS`.
///
/// ```no_run
/// use calibseg::autograd::{Tape, Var};
/// use calibseg::nn::{Mode, Network, SegResNetDs, SegResNetDsConfig};
/// use calibseg::{Gpu, Tensor};
/// # fn main() -> calibseg::Result<()> {
/// let gpu = Gpu::new()?;
/// let config = SegResNetDsConfig::from_json(r#"{"init_filters": 8, "out_channels": 3, "dsdepth": 2}"#)?;
/// let net = SegResNetDs::new(&gpu, config, 0)?;
/// let x = Var::constant(Tensor::zeros(&gpu, &[1, 1, 32, 32, 32], calibseg::DType::F32)?);
/// let tape = Tape::new();
/// let outputs = net.forward(&tape, &x, Mode::Train)?; // [1, 3, 32^3] and [1, 3, 16^3]
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct SegResNetDs {
    config: SegResNetDsConfig,
    store: ParamStore,
    conv_init: Conv,
    levels: Vec<EncoderLevel>,
    up_layers: Vec<DecoderLevel>,
}

impl SegResNetDs {
    /// A network with its own parameter store, initialised as PyTorch does from `seed`.
    pub fn new(gpu: &Gpu, config: SegResNetDsConfig, seed: u64) -> Result<Self> {
        let store = ParamStore::new(gpu);
        Self::build(&store.builder(seed), config)
    }

    /// A network whose parameters are created under `vb` (their names carry its prefix).
    pub fn build(vb: &VarBuilder, config: SegResNetDsConfig) -> Result<Self> {
        config.validate()?;
        let dims = config.spatial_dims;
        let norm = &config.norm;
        let k3 = ConvConfig::new(dims, 3).padding(1);
        let enc = vb.pp("encoder");
        let conv_init = Conv::build(
            &enc.pp("conv_init"),
            config.in_channels,
            config.init_filters,
            &k3,
        )?;
        let mut levels = Vec::new();
        let mut filters = config.init_filters;
        let n_levels = config.blocks_down.len();
        for (i, &nb) in config.blocks_down.iter().enumerate() {
            let lvb = enc.pp("layers").pp(i);
            let blocks = (0..nb)
                .map(|j| ResBlock::build(&lvb.pp("blocks").pp(j), dims, filters, norm, false))
                .collect::<Result<Vec<_>>>()?;
            let downsample = if i + 1 < n_levels {
                Some(Conv::build(
                    &lvb.pp("downsample"),
                    filters,
                    2 * filters,
                    &k3.clone().stride(2),
                )?)
            } else {
                None
            };
            levels.push(EncoderLevel { blocks, downsample });
            filters *= 2;
        }
        let n_up = config.n_up();
        let blocks_up = config.blocks_up_resolved();
        let mut filters = config.init_filters << n_up;
        let mut up_layers = Vec::new();
        let up_cfg = ConvConfig::new(dims, 3)
            .stride(2)
            .padding(1)
            .output_padding(1);
        for (i, &nb) in blocks_up.iter().enumerate() {
            filters /= 2;
            let lvb = vb.pp("up_layers").pp(i);
            let upsample = Some(ConvTranspose::build(
                &lvb.pp("upsample").pp("deconv"),
                2 * filters,
                filters,
                &up_cfg,
            )?);
            let blocks = (0..nb)
                .map(|j| ResBlock::build(&lvb.pp("blocks").pp(j), dims, filters, norm, false))
                .collect::<Result<Vec<_>>>()?;
            let head = if blocks_up.len() - i <= config.dsdepth {
                Some(Conv::build(
                    &lvb.pp("head"),
                    filters,
                    config.out_channels,
                    &ConvConfig::new(dims, 1).bias(true),
                )?)
            } else {
                None
            };
            up_layers.push(DecoderLevel {
                upsample,
                blocks,
                head,
            });
        }
        if n_up == 0 {
            // MONAI's flat corner case: a single head on the encoder's output.
            up_layers.push(DecoderLevel {
                upsample: None,
                blocks: Vec::new(),
                head: Some(Conv::build(
                    &vb.pp("up_layers").pp(0).pp("head"),
                    filters,
                    config.out_channels,
                    &ConvConfig::new(dims, 1).bias(true),
                )?),
            });
        }
        Ok(SegResNetDs {
            config,
            store: vb.store().clone(),
            conv_init,
            levels,
            up_layers,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &SegResNetDsConfig {
        &self.config
    }
}

impl Network for SegResNetDs {
    fn forward(&self, tape: &Tape, x: &Var, mode: Mode) -> Result<Vec<Var>> {
        self.check_input(x.shape())?;
        batched(x, || {
            let mut h = self.conv_init.forward(tape, x)?;
            let mut skips = Vec::with_capacity(self.levels.len());
            for level in &self.levels {
                h = run_blocks(tape, &level.blocks, h)?;
                skips.push(h.clone());
                if let Some(d) = &level.downsample {
                    h = d.forward(tape, &h)?;
                }
            }
            skips.pop(); // the deepest level's output is `h` itself
            let n = self.up_layers.len();
            let mut outputs = Vec::new();
            for (i, level) in self.up_layers.iter().enumerate() {
                if let Some(up) = &level.upsample {
                    h = up.forward(tape, &h)?;
                    let skip = skips.pop().expect("one skip per decoder level");
                    h = tape.add(&h, &skip)?;
                }
                h = run_blocks(tape, &level.blocks, h)?;
                // In eval mode only the last (full-resolution) head is computed; the others would be dropped.
                let wanted = mode == Mode::Train || i + 1 == n;
                if let (Some(head), true) = (&level.head, wanted) {
                    outputs.push(head.forward(tape, &h)?);
                }
            }
            outputs.reverse();
            if mode == Mode::Eval {
                outputs.truncate(1);
            }
            Ok(outputs)
        })
    }

    fn store(&self) -> &ParamStore {
        &self.store
    }

    fn in_channels(&self) -> usize {
        self.config.in_channels
    }

    fn out_channels(&self) -> usize {
        self.config.out_channels
    }

    fn spatial_dims(&self) -> usize {
        self.config.spatial_dims
    }

    fn full_resolution_channels(&self) -> usize {
        self.config
            .init_filters
            .max(self.in_channels())
            .max(self.out_channels())
    }

    fn shape_factor(&self) -> usize {
        1 << (self.config.blocks_down.len() - 1)
    }

    fn monai_kwargs(&self) -> Value {
        self.config.to_json()
    }
}
