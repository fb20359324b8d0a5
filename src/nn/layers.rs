//! Layers: parameters as [`Var`]s plus their settings, with `forward(&tape, &x)`. Each layer's `build`
//! creates its parameters in a [`VarBuilder`]'s store, initialised as PyTorch does and named as
//! PyTorch/MONAI state_dicts name them (`<prefix>.weight`, `<prefix>.bias`).

use super::init::kaiming_uniform_bound;
use super::store::{Init, VarBuilder};
use super::Var;
use crate::autograd::Tape;
use crate::error::{Error, Result};

/// Settings of a [`Conv`] or [`ConvTranspose`] layer (burn's `Conv3dConfig` in spirit): the kernel size per
/// spatial axis and one stride, padding and output padding for every axis.
#[derive(Clone, Debug, PartialEq)]
pub struct ConvConfig {
    /// Kernel size per spatial axis (`[3, 3, 3]` for a 3x3x3 kernel).
    pub kernel: Vec<usize>,
    /// Stride (1).
    pub stride: usize,
    /// Zero padding on each side (0).
    pub padding: usize,
    /// Extra size on one side of a transposed convolution's output (0; ignored by [`Conv`]).
    pub output_padding: usize,
    /// Whether the layer has a bias (false).
    pub bias: bool,
}

impl ConvConfig {
    /// A kernel of `size` along each of `spatial_dims` axes, stride 1, no padding, no bias.
    pub fn new(spatial_dims: usize, size: usize) -> Self {
        ConvConfig {
            kernel: vec![size; spatial_dims],
            stride: 1,
            padding: 0,
            output_padding: 0,
            bias: false,
        }
    }

    setters! {
        /// With this stride.
        stride(stride: usize);
        /// With this padding.
        padding(padding: usize);
        /// With this output padding (transposed convolutions).
        output_padding(output_padding: usize);
        /// With or without a bias.
        bias(bias: bool);
    }
}

/// Creates `weight` (and `bias`) under `vb` with PyTorch's conv initialisation for a fan-in.
fn build_weight_and_bias(
    vb: &VarBuilder,
    shape: &[usize],
    fan_in: usize,
    cout: usize,
    bias: bool,
) -> Result<(Var, Option<Var>)> {
    let weight = vb.get(
        "weight",
        shape,
        Init::Uniform(kaiming_uniform_bound(fan_in, 5f64.sqrt())),
    )?;
    let bias = if bias {
        Some(vb.get(
            "bias",
            &[cout],
            Init::Uniform(1.0 / (fan_in.max(1) as f64).sqrt()),
        )?)
    } else {
        None
    };
    Ok((weight, bias))
}

/// A convolution layer (`nn.Conv3d` / `nn.Conv2d`).
#[derive(Clone, Debug)]
pub struct Conv {
    /// `[C_out, C_in, k...]`.
    pub weight: Var,
    /// `[C_out]`, if the layer has a bias.
    pub bias: Option<Var>,
    /// Stride per spatial axis (or one for all).
    pub stride: Vec<usize>,
    /// Padding per spatial axis (or one for all).
    pub padding: Vec<usize>,
}

impl Conv {
    /// A layer whose `weight` (and `bias`) are created in `vb`'s store under its prefix, initialised as
    /// PyTorch does.
    pub fn build(vb: &VarBuilder, cin: usize, cout: usize, config: &ConvConfig) -> Result<Self> {
        let fan_in = cin * config.kernel.iter().product::<usize>();
        let mut shape = vec![cout, cin];
        shape.extend_from_slice(&config.kernel);
        let (weight, bias) = build_weight_and_bias(vb, &shape, fan_in, cout, config.bias)?;
        Ok(Conv {
            weight,
            bias,
            stride: vec![config.stride],
            padding: vec![config.padding],
        })
    }

    /// Applies the layer.
    pub fn forward(&self, tape: &Tape, x: &Var) -> Result<Var> {
        tape.conv(
            x,
            &self.weight,
            self.bias.as_ref(),
            &self.stride,
            &self.padding,
        )
    }

    /// The layer's output plus `residual` (the output's shape), in one pass: a residual block's skip
    /// connection, the same values as [`Conv::forward`] then [`Tape::add`].
    pub fn forward_add(&self, tape: &Tape, x: &Var, residual: &Var) -> Result<Var> {
        tape.conv_add(
            x,
            &self.weight,
            self.bias.as_ref(),
            residual,
            &self.stride,
            &self.padding,
        )
    }
}

/// A transposed convolution layer (`nn.ConvTranspose3d`), weight `[C_in, C_out, k...]`.
#[derive(Clone, Debug)]
pub struct ConvTranspose {
    /// `[C_in, C_out, k...]`.
    pub weight: Var,
    /// `[C_out]`, if the layer has a bias.
    pub bias: Option<Var>,
    /// Stride.
    pub stride: Vec<usize>,
    /// Padding.
    pub padding: Vec<usize>,
    /// Output padding.
    pub output_padding: Vec<usize>,
}

impl ConvTranspose {
    /// A layer whose `weight` `[C_in, C_out, k...]` (and `bias`) are created in `vb`'s store.
    pub fn build(vb: &VarBuilder, cin: usize, cout: usize, config: &ConvConfig) -> Result<Self> {
        let fan_in = cout * config.kernel.iter().product::<usize>();
        let mut shape = vec![cin, cout];
        shape.extend_from_slice(&config.kernel);
        let (weight, bias) = build_weight_and_bias(vb, &shape, fan_in, cout, config.bias)?;
        Ok(ConvTranspose {
            weight,
            bias,
            stride: vec![config.stride],
            padding: vec![config.padding],
            output_padding: vec![config.output_padding],
        })
    }

    /// Applies the layer.
    pub fn forward(&self, tape: &Tape, x: &Var) -> Result<Var> {
        tape.conv_transpose(
            x,
            &self.weight,
            self.bias.as_ref(),
            &self.stride,
            &self.padding,
            &self.output_padding,
        )
    }
}

/// Which normalisation a [`Norm`] layer applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormKind {
    /// Per image and channel (`nn.InstanceNorm3d(affine=True)`).
    Instance,
    /// Per image and group of channels (`nn.GroupNorm(groups, C)`).
    Group(usize),
}

fn check_groups(kind: NormKind, channels: usize) -> Result<()> {
    if let NormKind::Group(g) = kind {
        if g == 0 || !channels.is_multiple_of(g) {
            return Err(Error::invalid(format!(
                "{channels} channels do not split into {g} groups"
            )));
        }
    }
    Ok(())
}

/// A normalisation layer with affine parameters (weight ones, bias zeros at creation).
#[derive(Clone, Debug)]
pub struct Norm {
    /// Instance or group.
    pub kind: NormKind,
    /// Scale `[C]`.
    pub weight: Var,
    /// Shift `[C]`.
    pub bias: Var,
    /// Variance epsilon (1e-5).
    pub eps: f32,
}

impl Norm {
    /// A layer whose `weight` (ones) and `bias` (zeros) are created in `vb`'s store; `eps` as in PyTorch.
    pub fn build(vb: &VarBuilder, kind: NormKind, channels: usize, eps: f32) -> Result<Self> {
        check_groups(kind, channels)?;
        Ok(Norm {
            kind,
            weight: vb.get("weight", &[channels], Init::Const(1.0))?,
            bias: vb.get("bias", &[channels], Init::Const(0.0))?,
            eps,
        })
    }

    /// Applies the layer.
    pub fn forward(&self, tape: &Tape, x: &Var) -> Result<Var> {
        match self.kind {
            NormKind::Instance => tape.instance_norm(x, &self.weight, &self.bias, self.eps),
            NormKind::Group(g) => tape.group_norm(x, g, &self.weight, &self.bias, self.eps),
        }
    }

    /// Applies the layer, then ReLU, in one pass (same values and gradients as the two ops).
    pub fn forward_relu(&self, tape: &Tape, x: &Var) -> Result<Var> {
        match self.kind {
            NormKind::Instance => tape.instance_norm_relu(x, &self.weight, &self.bias, self.eps),
            NormKind::Group(g) => tape.group_norm_relu(x, g, &self.weight, &self.bias, self.eps),
        }
    }
}
