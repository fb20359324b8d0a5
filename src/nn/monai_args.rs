//! MONAI's keyword arguments as JSON: reading the common option spellings (`norm`, `act`) and checking the
//! rest, with errors that name the option. Shared by [`super::SegResNetDsConfig`] and
//! [`super::SegResNetConfig`].

use serde_json::{Map, Value};

use super::layers::NormKind;
use crate::error::{Error, Result};

/// PyTorch's default norm epsilon.
pub(crate) const DEFAULT_NORM_EPS: f64 = 1e-5;

/// A normalisation as MONAI names it (`"INSTANCE"`, `"INSTANCE_NVFUSER"`, `["GROUP", {"num_groups": 8}]`).
#[derive(Clone, Debug, PartialEq)]
pub struct NormSpec {
    /// Which normalisation, as spelled (instance and its NVFuser variant compute the same thing).
    pub name: NormName,
    /// Variance epsilon (1e-5).
    pub eps: f64,
}

/// The normalisations calibseg implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormName {
    /// `"INSTANCE"`: `nn.InstanceNorm3d` with affine parameters.
    Instance,
    /// `"INSTANCE_NVFUSER"`: apex's fused instance norm (the paper's); numerically the same as `Instance`.
    InstanceNvfuser,
    /// `["GROUP", {"num_groups": G}]`: `nn.GroupNorm(G, C)`.
    Group(usize),
}

impl NormSpec {
    /// Instance norm, eps 1e-5.
    pub fn instance() -> Self {
        NormSpec {
            name: NormName::Instance,
            eps: DEFAULT_NORM_EPS,
        }
    }

    /// Group norm with `groups` groups, eps 1e-5.
    pub fn group(groups: usize) -> Self {
        NormSpec {
            name: NormName::Group(groups),
            eps: DEFAULT_NORM_EPS,
        }
    }

    /// The layer kind it builds.
    pub fn kind(&self) -> NormKind {
        match self.name {
            NormName::Instance | NormName::InstanceNvfuser => NormKind::Instance,
            NormName::Group(g) => NormKind::Group(g),
        }
    }

    /// Reads MONAI's spelling (case-insensitive names; `affine` must stay true, `eps` is honoured).
    pub fn from_json(v: &Value) -> Result<Self> {
        let (name, args) = split_args(v, "norm")?;
        let mut eps = DEFAULT_NORM_EPS;
        let mut groups = None;
        for (k, a) in &args {
            match k.as_str() {
                "affine" => {
                    if a.as_bool() != Some(true) {
                        return Err(Error::invalid(format!(
                            "option norm: affine={a} is not supported (calibseg's norms are affine)"
                        )));
                    }
                }
                "eps" => {
                    eps = a
                        .as_f64()
                        .filter(|e| e.is_finite() && *e > 0.0)
                        .ok_or_else(|| {
                            Error::invalid(format!(
                                "option norm: eps must be a positive number, got {a}"
                            ))
                        })?
                }
                "num_groups" => groups = Some(positive_int(a, "norm: num_groups")?),
                other => {
                    return Err(Error::invalid(format!(
                        "option norm: argument '{other}' is not supported"
                    )))
                }
            }
        }
        let name = match name.to_ascii_lowercase().as_str() {
            "instance" => NormName::Instance,
            "instance_nvfuser" => NormName::InstanceNvfuser,
            "group" => NormName::Group(groups.ok_or_else(|| {
                Error::invalid("option norm: GROUP needs num_groups, e.g. [\"GROUP\", {\"num_groups\": 8}]")
            })?),
            _ => {
                return Err(Error::invalid(format!(
                    "option norm: '{name}' is not supported (calibseg has INSTANCE, INSTANCE_NVFUSER and GROUP)"
                )))
            }
        };
        if groups.is_some() && !matches!(name, NormName::Group(_)) {
            return Err(Error::invalid(
                "option norm: num_groups only applies to GROUP",
            ));
        }
        Ok(NormSpec { name, eps })
    }

    /// MONAI's spelling.
    pub fn to_json(&self) -> Value {
        let mut args = Map::new();
        let name = match self.name {
            NormName::Instance => "INSTANCE",
            NormName::InstanceNvfuser => "INSTANCE_NVFUSER",
            NormName::Group(g) => {
                args.insert("num_groups".into(), g.into());
                "GROUP"
            }
        };
        if self.eps != DEFAULT_NORM_EPS {
            args.insert("eps".into(), self.eps.into());
        }
        if args.is_empty() {
            Value::String(name.into())
        } else {
            Value::Array(vec![Value::String(name.into()), Value::Object(args)])
        }
    }
}

/// Checks MONAI's `act` option: ReLU (`"relu"`, `"RELU"`, `["RELU", {"inplace": true}]`) is the only one.
pub(crate) fn check_act(v: &Value) -> Result<()> {
    let (name, args) = split_args(v, "act")?;
    if !name.eq_ignore_ascii_case("relu") {
        return Err(Error::invalid(format!(
            "option act: '{name}' is not supported (calibseg has RELU)"
        )));
    }
    for (k, a) in &args {
        if k != "inplace" || !a.is_boolean() {
            return Err(Error::invalid(format!(
                "option act: argument '{k}' = {a} is not supported"
            )));
        }
    }
    Ok(())
}

/// MONAI's `split_args`: `"NAME"` or `["NAME", {args}]`.
fn split_args(v: &Value, option: &str) -> Result<(String, Map<String, Value>)> {
    match v {
        Value::String(s) => Ok((s.clone(), Map::new())),
        Value::Array(a) if a.len() == 2 => match (&a[0], &a[1]) {
            (Value::String(s), Value::Object(m)) => Ok((s.clone(), m.clone())),
            _ => Err(Error::invalid(format!(
                "option {option}: expected \"NAME\" or [\"NAME\", {{arguments}}], got {v}"
            ))),
        },
        _ => Err(Error::invalid(format!(
            "option {option}: expected \"NAME\" or [\"NAME\", {{arguments}}], got {v}"
        ))),
    }
}

/// A non-negative integer option.
pub(crate) fn int(v: &Value, option: &str) -> Result<usize> {
    v.as_u64()
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| {
            Error::invalid(format!(
                "option {option}: expected a non-negative integer, got {v}"
            ))
        })
}

/// A positive integer option.
pub(crate) fn positive_int(v: &Value, option: &str) -> Result<usize> {
    match int(v, option)? {
        0 => Err(Error::invalid(format!(
            "option {option}: must be at least 1"
        ))),
        n => Ok(n),
    }
}

/// A list of non-negative integers.
pub(crate) fn int_list(v: &Value, option: &str) -> Result<Vec<usize>> {
    v.as_array()
        .ok_or_else(|| {
            Error::invalid(format!(
                "option {option}: expected a list of integers, got {v}"
            ))
        })?
        .iter()
        .map(|x| int(x, option))
        .collect()
}

/// The keyword arguments as an object, or an error.
pub(crate) fn object(v: &Value, what: &str) -> Result<Map<String, Value>> {
    v.as_object().cloned().ok_or_else(|| {
        Error::invalid(format!(
            "{what} configuration must be a JSON object of MONAI's keyword arguments, got {v}"
        ))
    })
}

/// The checks both networks share: spatial dims, channel counts, levels and group divisibility.
pub(crate) fn check_common(
    spatial_dims: usize,
    channels: [(usize, &str); 3],
    blocks_down: &[usize],
    norm: &NormSpec,
) -> Result<()> {
    if !(2..=3).contains(&spatial_dims) {
        return Err(Error::invalid(format!(
            "option spatial_dims: {spatial_dims} is not supported (2 or 3)"
        )));
    }
    for (v, name) in channels {
        if v == 0 {
            return Err(Error::invalid(format!("option {name}: must be at least 1")));
        }
    }
    if blocks_down.is_empty() || blocks_down.len() > 8 {
        return Err(Error::invalid("option blocks_down: expected 1 to 8 levels"));
    }
    if let NormName::Group(g) = norm.name {
        let init = channels[0].0;
        for level in 0..blocks_down.len() {
            let c = init << level;
            if !c.is_multiple_of(g) {
                return Err(Error::invalid(format!(
                    "option norm: {c} channels at level {level} do not split into {g} groups"
                )));
            }
        }
    }
    Ok(())
}
