//! MONAI's original `SegResNet` (`monai/networks/nets/segresnet.py`): group norm, 1x1x1 conv then trilinear
//! (non-trainable) upsampling in the decoder, one output.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::layers::{Conv, ConvConfig, Norm};
use super::monai_args::{self as args, NormSpec};
use super::network::{batched, run_blocks, Mode, Network, ResBlock};
use super::store::{ParamStore, VarBuilder};
use crate::autograd::{Tape, Var};
use crate::error::{Error, Result};
use crate::gpu::Gpu;

/// `SegResNet`'s constructor arguments with MONAI's names and defaults; (de)serialises from the JSON of
/// MONAI's keyword arguments. `dropout_prob` must be null or 0, `upsample_mode` `"nontrainable"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Value", into = "Value")]
pub struct SegResNetConfig {
    /// Spatial dimensions, 2 or 3 (3).
    pub spatial_dims: usize,
    /// Channels after the stem convolution (8).
    pub init_filters: usize,
    /// Input channels (1).
    pub in_channels: usize,
    /// Output channels (2).
    pub out_channels: usize,
    /// Normalisation (group norm, 8 groups).
    pub norm: NormSpec,
    /// Whether the final norm, ReLU and 1x1 conv run (true); without them the output is the decoder's features.
    pub use_conv_final: bool,
    /// Residual blocks per encoder level ([1, 2, 2, 4]).
    pub blocks_down: Vec<usize>,
    /// Residual blocks per decoder level ([1, 1, 1]; one entry per level below the top).
    pub blocks_up: Vec<usize>,
}

impl Default for SegResNetConfig {
    fn default() -> Self {
        SegResNetConfig {
            spatial_dims: 3,
            init_filters: 8,
            in_channels: 1,
            out_channels: 2,
            norm: NormSpec::group(8),
            use_conv_final: true,
            blocks_down: vec![1, 2, 2, 4],
            blocks_up: vec![1, 1, 1],
        }
    }
}

impl SegResNetConfig {
    /// Parses MONAI's keyword arguments as JSON text.
    pub fn from_json(text: &str) -> Result<Self> {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| Error::invalid(format!("SegResNet configuration is not JSON: {e}")))?;
        Self::try_from(v)
    }

    /// MONAI's keyword arguments (`SegResNet(**kwargs)` builds the same network).
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("spatial_dims".into(), self.spatial_dims.into());
        m.insert("init_filters".into(), self.init_filters.into());
        m.insert("in_channels".into(), self.in_channels.into());
        m.insert("out_channels".into(), self.out_channels.into());
        m.insert("act".into(), json!("relu"));
        m.insert("norm".into(), self.norm.to_json());
        m.insert("use_conv_final".into(), self.use_conv_final.into());
        m.insert("blocks_down".into(), json!(self.blocks_down));
        m.insert("blocks_up".into(), json!(self.blocks_up));
        m.insert("upsample_mode".into(), json!("nontrainable"));
        Value::Object(m)
    }

    /// Checks the values.
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
        if self.blocks_up.len() + 1 != self.blocks_down.len() {
            return Err(Error::invalid(format!(
                "option blocks_up: {} entries for {} encoder levels (calibseg needs len(blocks_down) - 1)",
                self.blocks_up.len(),
                self.blocks_down.len()
            )));
        }
        Ok(())
    }
}

impl TryFrom<Value> for SegResNetConfig {
    type Error = Error;

    fn try_from(v: Value) -> Result<Self> {
        let m = args::object(&v, "SegResNet")?;
        let mut c = SegResNetConfig::default();
        let mut norm = None;
        let mut norm_name = String::new();
        let mut num_groups = 8;
        for (k, a) in &m {
            match k.as_str() {
                "spatial_dims" => c.spatial_dims = args::int(a, k)?,
                "init_filters" => c.init_filters = args::positive_int(a, k)?,
                "in_channels" => c.in_channels = args::positive_int(a, k)?,
                "out_channels" => c.out_channels = args::positive_int(a, k)?,
                "act" => args::check_act(a)?,
                "norm" => norm = Some(NormSpec::from_json(a)?),
                "norm_name" => {
                    norm_name = a
                        .as_str()
                        .ok_or_else(|| {
                            Error::invalid(format!("option norm_name: expected a string, got {a}"))
                        })?
                        .to_string()
                }
                "num_groups" => num_groups = args::positive_int(a, k)?,
                "use_conv_final" => {
                    c.use_conv_final = a.as_bool().ok_or_else(|| {
                        Error::invalid(format!(
                            "option use_conv_final: expected true or false, got {a}"
                        ))
                    })?
                }
                "blocks_down" => c.blocks_down = args::int_list(a, k)?,
                "blocks_up" => c.blocks_up = args::int_list(a, k)?,
                "dropout_prob" => {
                    if !(a.is_null() || a.as_f64() == Some(0.0)) {
                        return Err(Error::invalid(format!(
                            "option dropout_prob: {a} is not supported (dropout is off in calibseg)"
                        )));
                    }
                }
                "upsample_mode" => {
                    if !a
                        .as_str()
                        .is_some_and(|s| s.eq_ignore_ascii_case("nontrainable"))
                    {
                        return Err(Error::invalid(format!(
                            "option upsample_mode: {a} is not supported (calibseg has \"nontrainable\")"
                        )));
                    }
                }
                other => {
                    return Err(Error::invalid(format!(
                        "option {other}: not a SegResNet argument"
                    )))
                }
            }
        }
        if !norm_name.is_empty() {
            // MONAI's deprecated spelling: norm_name="group" with num_groups.
            if !norm_name.eq_ignore_ascii_case("group") {
                return Err(Error::invalid(format!(
                    "option norm_name: '{norm_name}' is not supported (only \"group\")"
                )));
            }
            norm = Some(NormSpec::group(num_groups));
        }
        if let Some(n) = norm {
            c.norm = n;
        }
        c.validate()?;
        Ok(c)
    }
}

impl From<SegResNetConfig> for Value {
    fn from(c: SegResNetConfig) -> Value {
        c.to_json()
    }
}

#[derive(Clone, Debug)]
struct DownLayer {
    pre_conv: Option<Conv>,
    blocks: Vec<ResBlock>,
}

#[derive(Clone, Debug)]
struct UpLayer {
    reduce: Conv,
    blocks: Vec<ResBlock>,
}

/// MONAI's `SegResNet`.
#[derive(Clone, Debug)]
pub struct SegResNet {
    config: SegResNetConfig,
    store: ParamStore,
    conv_init: Conv,
    down: Vec<DownLayer>,
    up: Vec<UpLayer>,
    final_norm: Option<Norm>,
    final_conv: Option<Conv>,
}

impl SegResNet {
    /// A network with its own parameter store, initialised as PyTorch does from `seed`.
    pub fn new(gpu: &Gpu, config: SegResNetConfig, seed: u64) -> Result<Self> {
        let store = ParamStore::new(gpu);
        Self::build(&store.builder(seed), config)
    }

    /// A network whose parameters are created under `vb`.
    pub fn build(vb: &VarBuilder, config: SegResNetConfig) -> Result<Self> {
        config.validate()?;
        let dims = config.spatial_dims;
        let norm = &config.norm;
        let k3 = ConvConfig::new(dims, 3).padding(1);
        let f = config.init_filters;
        let conv_init = Conv::build(&vb.pp("convInit").pp("conv"), config.in_channels, f, &k3)?;
        let mut down = Vec::new();
        for (i, &nb) in config.blocks_down.iter().enumerate() {
            let lvb = vb.pp("down_layers").pp(i);
            let c = f << i;
            let pre_conv = if i > 0 {
                Some(Conv::build(
                    &lvb.pp(0).pp("conv"),
                    c / 2,
                    c,
                    &k3.clone().stride(2),
                )?)
            } else {
                None
            };
            let blocks = (0..nb)
                .map(|j| ResBlock::build(&lvb.pp(j + 1), dims, c, norm, true))
                .collect::<Result<Vec<_>>>()?;
            down.push(DownLayer { pre_conv, blocks });
        }
        let n_up = config.blocks_up.len();
        let mut up = Vec::new();
        for (i, &nb) in config.blocks_up.iter().enumerate() {
            let c_in = f << (n_up - i);
            let blocks = (0..nb)
                .map(|j| {
                    ResBlock::build(&vb.pp("up_layers").pp(i).pp(j), dims, c_in / 2, norm, true)
                })
                .collect::<Result<Vec<_>>>()?;
            let reduce = Conv::build(
                &vb.pp("up_samples").pp(i).pp(0).pp("conv"),
                c_in,
                c_in / 2,
                &ConvConfig::new(dims, 1),
            )?;
            up.push(UpLayer { reduce, blocks });
        }
        let (final_norm, final_conv) = if config.use_conv_final {
            let fvb = vb.pp("conv_final");
            (
                Some(Norm::build(&fvb.pp(0), norm.kind(), f, norm.eps as f32)?),
                Some(Conv::build(
                    &fvb.pp(2).pp("conv"),
                    f,
                    config.out_channels,
                    &ConvConfig::new(dims, 1).bias(true),
                )?),
            )
        } else {
            (None, None)
        };
        Ok(SegResNet {
            config,
            store: vb.store().clone(),
            conv_init,
            down,
            up,
            final_norm,
            final_conv,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &SegResNetConfig {
        &self.config
    }
}

impl Network for SegResNet {
    fn forward(&self, tape: &Tape, x: &Var, _mode: Mode) -> Result<Vec<Var>> {
        self.check_input(x.shape())?;
        batched(x, || {
            let mut h = self.conv_init.forward(tape, x)?;
            let mut skips = Vec::with_capacity(self.down.len());
            for layer in &self.down {
                if let Some(pre) = &layer.pre_conv {
                    h = pre.forward(tape, &h)?;
                }
                h = run_blocks(tape, &layer.blocks, h)?;
                skips.push(h.clone());
            }
            skips.pop();
            for layer in &self.up {
                h = layer.reduce.forward(tape, &h)?;
                h = tape.upsample(&h, 2)?;
                let skip = skips.pop().expect("one skip per decoder level");
                h = tape.add(&h, &skip)?;
                h = run_blocks(tape, &layer.blocks, h)?;
            }
            if let (Some(norm), Some(conv)) = (&self.final_norm, &self.final_conv) {
                h = norm.forward_relu(tape, &h)?;
                h = conv.forward(tape, &h)?;
            }
            Ok(vec![h])
        })
    }

    fn store(&self) -> &ParamStore {
        &self.store
    }

    fn in_channels(&self) -> usize {
        self.config.in_channels
    }

    fn out_channels(&self) -> usize {
        if self.config.use_conv_final {
            self.config.out_channels
        } else {
            self.config.init_filters
        }
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
