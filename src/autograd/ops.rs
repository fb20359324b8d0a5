//! The network layers as tape operations: each runs its forward kernel and records a backward that calls
//! the matching gradient kernels in [`crate::ops`].

use super::{Tape, Var};
use crate::error::Result;
use crate::ops;

impl Tape {
    /// Convolution (see [`ops::conv()`]) of `x` with weight `w` and optional `bias`.
    pub fn conv(
        &self,
        x: &Var,
        w: &Var,
        bias: Option<&Var>,
        stride: &[usize],
        padding: &[usize],
    ) -> Result<Var> {
        self.conv_with_residual(x, w, bias, None, stride, padding)
    }

    /// Convolution plus `residual` in one pass ([`ops::conv_add`]): the values and gradients of
    /// [`Tape::conv`] then [`Tape::add`] (the residual's gradient is the output's).
    pub fn conv_add(
        &self,
        x: &Var,
        w: &Var,
        bias: Option<&Var>,
        residual: &Var,
        stride: &[usize],
        padding: &[usize],
    ) -> Result<Var> {
        self.conv_with_residual(x, w, bias, Some(residual), stride, padding)
    }

    fn conv_with_residual(
        &self,
        x: &Var,
        w: &Var,
        bias: Option<&Var>,
        residual: Option<&Var>,
        stride: &[usize],
        padding: &[usize],
    ) -> Result<Var> {
        let (xs, ws, bs) = (x.tensor(), w.tensor(), bias.map(|b| b.tensor()));
        let y = match residual {
            Some(r) => ops::conv_add(xs, ws, bs, r.tensor(), stride, padding)?,
            None => ops::conv(xs, ws, bs, stride, padding)?,
        };
        let (xt, wt) = (x.tensor().clone(), w.tensor().clone());
        let (need_x, need_w) = (x.requires_grad(), w.requires_grad());
        let need_b = bias.is_some_and(|b| b.requires_grad());
        let need_r = residual.is_some_and(|r| r.requires_grad());
        let (stride, padding) = (stride.to_vec(), padding.to_vec());
        let mut inputs = vec![x, w];
        inputs.extend(bias);
        inputs.extend(residual);
        let has_bias = bias.is_some();
        let has_residual = residual.is_some();
        Ok(self.record(
            &inputs,
            y,
            Box::new(move |dy| {
                let dx = need_x
                    .then(|| ops::conv_backward_data(dy, &wt, xt.shape(), &stride, &padding))
                    .transpose()?;
                let dw = need_w
                    .then(|| ops::conv_backward_weight(&xt, dy, wt.shape(), &stride, &padding))
                    .transpose()?;
                let mut g = vec![dx, dw];
                if has_bias {
                    g.push(need_b.then(|| ops::conv_backward_bias(dy)).transpose()?);
                }
                if has_residual {
                    g.push(need_r.then(|| dy.clone()));
                }
                Ok(g)
            }),
        ))
    }

    /// Transposed convolution (see [`ops::conv_transpose()`]); `w` is `[C_in, C_out, k...]`.
    #[allow(clippy::too_many_arguments)]
    pub fn conv_transpose(
        &self,
        x: &Var,
        w: &Var,
        bias: Option<&Var>,
        stride: &[usize],
        padding: &[usize],
        output_padding: &[usize],
    ) -> Result<Var> {
        let y = ops::conv_transpose(
            x.tensor(),
            w.tensor(),
            bias.map(|b| b.tensor()),
            stride,
            padding,
            output_padding,
        )?;
        let (xt, wt) = (x.tensor().clone(), w.tensor().clone());
        let (need_x, need_w) = (x.requires_grad(), w.requires_grad());
        let need_b = bias.is_some_and(|b| b.requires_grad());
        let (s, p, op) = (stride.to_vec(), padding.to_vec(), output_padding.to_vec());
        let mut inputs = vec![x, w];
        inputs.extend(bias);
        let has_bias = bias.is_some();
        Ok(self.record(
            &inputs,
            y,
            Box::new(move |dy| {
                let dx = need_x
                    .then(|| ops::conv_transpose_backward_data(dy, &wt, xt.shape(), &s, &p, &op))
                    .transpose()?;
                let dw = need_w
                    .then(|| ops::conv_transpose_backward_weight(&xt, dy, wt.shape(), &s, &p, &op))
                    .transpose()?;
                let mut g = vec![dx, dw];
                if has_bias {
                    g.push(need_b.then(|| ops::conv_backward_bias(dy)).transpose()?);
                }
                Ok(g)
            }),
        ))
    }

    /// Group norm with affine (see [`ops::group_norm`]).
    pub fn group_norm(
        &self,
        x: &Var,
        groups: usize,
        gamma: &Var,
        beta: &Var,
        eps: f32,
    ) -> Result<Var> {
        self.group_norm_act(x, groups, gamma, beta, eps, false)
    }

    /// Group norm with affine followed by ReLU, in one pass (see [`ops::group_norm_relu`]); same values
    /// and gradients as [`Tape::group_norm`] then [`Tape::relu`].
    pub fn group_norm_relu(
        &self,
        x: &Var,
        groups: usize,
        gamma: &Var,
        beta: &Var,
        eps: f32,
    ) -> Result<Var> {
        self.group_norm_act(x, groups, gamma, beta, eps, true)
    }

    fn group_norm_act(
        &self,
        x: &Var,
        groups: usize,
        gamma: &Var,
        beta: &Var,
        eps: f32,
        relu: bool,
    ) -> Result<Var> {
        let (xs, gs, bs) = (x.tensor(), gamma.tensor(), beta.tensor());
        let (y, stats) = if relu {
            ops::group_norm_relu(xs, groups, gs, bs, eps)?
        } else {
            ops::group_norm(xs, groups, gs, bs, eps)?
        };
        // The fused backward masks the gradient by the ReLU's output.
        let relu_output = relu.then(|| y.clone());
        let (xt, gt) = (xs.clone(), gs.clone());
        let needs = [
            x.requires_grad(),
            gamma.requires_grad(),
            beta.requires_grad(),
        ];
        Ok(self.record(
            &[x, gamma, beta],
            y,
            Box::new(move |dy| {
                let g = match &relu_output {
                    Some(yt) => {
                        ops::group_norm_relu_backward(&xt, yt, dy, &stats, groups, &gt, eps)?
                    }
                    None => ops::group_norm_backward(&xt, dy, &stats, groups, &gt, eps)?,
                };
                Ok(vec![
                    needs[0].then_some(g.dx),
                    needs[1].then_some(g.dgamma),
                    needs[2].then_some(g.dbeta),
                ])
            }),
        ))
    }

    /// Instance norm with affine: [`Tape::group_norm`] with one group per channel.
    pub fn instance_norm(&self, x: &Var, gamma: &Var, beta: &Var, eps: f32) -> Result<Var> {
        let c = ops::ncv(x.tensor(), "instance norm input")?.1;
        self.group_norm(x, c, gamma, beta, eps)
    }

    /// Instance norm with affine followed by ReLU in one pass: [`Tape::group_norm_relu`] with one group per
    /// channel.
    pub fn instance_norm_relu(&self, x: &Var, gamma: &Var, beta: &Var, eps: f32) -> Result<Var> {
        let c = ops::ncv(x.tensor(), "instance norm input")?.1;
        self.group_norm_relu(x, c, gamma, beta, eps)
    }

    /// ReLU.
    pub fn relu(&self, x: &Var) -> Result<Var> {
        let y = ops::relu(x.tensor())?;
        let yt = y.clone();
        Ok(self.record(
            &[x],
            y,
            Box::new(move |dy| Ok(vec![Some(ops::relu_backward(&yt, dy)?)])),
        ))
    }

    /// Element-wise sum (skip connections).
    pub fn add(&self, a: &Var, b: &Var) -> Result<Var> {
        let y = ops::add(a.tensor(), b.tensor())?;
        Ok(self.record(
            &[a, b],
            y,
            Box::new(move |dy| Ok(vec![Some(dy.clone()), Some(dy.clone())])),
        ))
    }

    /// Linear upsampling by `scale` on every spatial axis (trilinear in 3D), `align_corners = false`.
    pub fn upsample(&self, x: &Var, scale: usize) -> Result<Var> {
        let y = ops::upsample(x.tensor(), scale)?;
        let shape = x.shape().to_vec();
        Ok(self.record(
            &[x],
            y,
            Box::new(move |dy| Ok(vec![Some(ops::upsample_backward(dy, &shape, scale)?)])),
        ))
    }
}
