//! Layers: parameters as [`Var`]s plus their settings, with `forward(&tape, &x)`, initialised as PyTorch
//! does and addressable by the names PyTorch/MONAI state_dicts use (`weight`, `bias`).

use super::init::{kaiming_uniform_bound, SeededRng};
use super::store::{Init, VarBuilder};
use super::Var;
use crate::autograd::Tape;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::ops::norm::DEFAULT_EPS;
use crate::tensor::Tensor;

/// Something holding named parameters.
pub trait Parameters {
    /// Calls `f` with each parameter's full name (`prefix` + `.` + local name) and variable.
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(String, &Var));

    /// Calls `f` with each parameter mutably (to load weights).
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(String, &mut Var));

    /// All parameters with their names.
    fn named_parameters(&self, prefix: &str) -> Vec<(String, Var)> {
        let mut out = Vec::new();
        self.visit(prefix, &mut |n, v| out.push((n, v.clone())));
        out
    }

    /// All parameters.
    fn parameters(&self) -> Vec<Var> {
        self.named_parameters("")
            .into_iter()
            .map(|(_, v)| v)
            .collect()
    }

    /// Replaces each parameter's value by `lookup(name)`; errors name the first missing parameter.
    fn load(&mut self, prefix: &str, lookup: &mut dyn FnMut(&str) -> Option<Tensor>) -> Result<()> {
        let mut err = None;
        self.visit_mut(prefix, &mut |name, v| {
            if err.is_some() {
                return;
            }
            match lookup(&name) {
                Some(t) => {
                    if let Err(e) = v.set(t) {
                        err = Some(Error::shape(format!("{name}: {e}")));
                    }
                }
                None => err = Some(Error::invalid(format!("no tensor named {name}"))),
            }
        });
        err.map_or(Ok(()), Err)
    }
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

fn uniform_param(gpu: &Gpu, shape: &[usize], bound: f64, rng: &mut SeededRng) -> Result<Var> {
    let n: usize = shape.iter().product();
    Ok(Var::parameter(Tensor::from_f32(
        gpu,
        shape,
        &rng.uniform_symmetric(n, bound),
    )?))
}

/// A weight of `shape` and an optional `[cout]` bias, initialised as PyTorch's conv layers do
/// (kaiming-uniform with a = sqrt(5), bias U(+-1/sqrt(fan_in))).
fn weight_and_bias(
    gpu: &Gpu,
    shape: &[usize],
    fan_in: usize,
    cout: usize,
    bias: bool,
    rng: &mut SeededRng,
) -> Result<(Var, Option<Var>)> {
    let weight = uniform_param(gpu, shape, kaiming_uniform_bound(fan_in, 5f64.sqrt()), rng)?;
    let bias = if bias {
        Some(uniform_param(
            gpu,
            &[cout],
            1.0 / (fan_in as f64).sqrt(),
            rng,
        )?)
    } else {
        None
    };
    Ok((weight, bias))
}

fn visit_weight_bias(
    prefix: &str,
    weight: &Var,
    bias: Option<&Var>,
    f: &mut dyn FnMut(String, &Var),
) {
    f(join(prefix, "weight"), weight);
    if let Some(b) = bias {
        f(join(prefix, "bias"), b);
    }
}

fn visit_weight_bias_mut(
    prefix: &str,
    weight: &mut Var,
    bias: Option<&mut Var>,
    f: &mut dyn FnMut(String, &mut Var),
) {
    f(join(prefix, "weight"), weight);
    if let Some(b) = bias {
        f(join(prefix, "bias"), b);
    }
}

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

    /// With this stride.
    pub fn stride(mut self, stride: usize) -> Self {
        self.stride = stride;
        self
    }

    /// With this padding.
    pub fn padding(mut self, padding: usize) -> Self {
        self.padding = padding;
        self
    }

    /// With this output padding (transposed convolutions).
    pub fn output_padding(mut self, output_padding: usize) -> Self {
        self.output_padding = output_padding;
        self
    }

    /// With or without a bias.
    pub fn bias(mut self, bias: bool) -> Self {
        self.bias = bias;
        self
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
    /// A layer with PyTorch's default initialisation: `kernel` has one entry per spatial axis (3 for 3D).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        gpu: &Gpu,
        cin: usize,
        cout: usize,
        kernel: &[usize],
        stride: usize,
        padding: usize,
        bias: bool,
        rng: &mut SeededRng,
    ) -> Result<Self> {
        let fan_in = cin * kernel.iter().product::<usize>();
        let mut shape = vec![cout, cin];
        shape.extend_from_slice(kernel);
        let (weight, bias) = weight_and_bias(gpu, &shape, fan_in, cout, bias, rng)?;
        Ok(Conv {
            weight,
            bias,
            stride: vec![stride],
            padding: vec![padding],
        })
    }

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

impl Parameters for Conv {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(String, &Var)) {
        visit_weight_bias(prefix, &self.weight, self.bias.as_ref(), f);
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(String, &mut Var)) {
        visit_weight_bias_mut(prefix, &mut self.weight, self.bias.as_mut(), f);
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
    /// A layer with PyTorch's default initialisation (fan-in = C_out x kernel volume, as PyTorch computes it).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        gpu: &Gpu,
        cin: usize,
        cout: usize,
        kernel: &[usize],
        stride: usize,
        padding: usize,
        output_padding: usize,
        bias: bool,
        rng: &mut SeededRng,
    ) -> Result<Self> {
        let fan_in = cout * kernel.iter().product::<usize>();
        let mut shape = vec![cin, cout];
        shape.extend_from_slice(kernel);
        let (weight, bias) = weight_and_bias(gpu, &shape, fan_in, cout, bias, rng)?;
        Ok(ConvTranspose {
            weight,
            bias,
            stride: vec![stride],
            padding: vec![padding],
            output_padding: vec![output_padding],
        })
    }

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

impl Parameters for ConvTranspose {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(String, &Var)) {
        visit_weight_bias(prefix, &self.weight, self.bias.as_ref(), f);
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(String, &mut Var)) {
        visit_weight_bias_mut(prefix, &mut self.weight, self.bias.as_mut(), f);
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
    /// A layer over `channels` channels.
    pub fn new(gpu: &Gpu, kind: NormKind, channels: usize) -> Result<Self> {
        check_groups(kind, channels)?;
        Ok(Norm {
            kind,
            weight: Var::parameter(Tensor::from_f32(gpu, &[channels], &vec![1.0; channels])?),
            bias: Var::parameter(Tensor::from_f32(gpu, &[channels], &vec![0.0; channels])?),
            eps: DEFAULT_EPS,
        })
    }

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

impl Parameters for Norm {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(String, &Var)) {
        f(join(prefix, "weight"), &self.weight);
        f(join(prefix, "bias"), &self.bias);
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(String, &mut Var)) {
        f(join(prefix, "weight"), &mut self.weight);
        f(join(prefix, "bias"), &mut self.bias);
    }
}
