//! SegResNetDS and SegResNet against MONAI's own outputs and autograd gradients
//! (`tests/fixtures/net_*.safetensors`), strict weight loading and saving, and config parsing.

use crate::common;

use calibseg::autograd::{Tape, Var};
use calibseg::io::safetensors::TensorFile;
use calibseg::nn::{
    Mode, Network, NormName, SegResNet, SegResNetConfig, SegResNetDs, SegResNetDsConfig,
};
use calibseg::{Error, Gpu, Tensor};
use common::{assert_close, fixture_sets, gpu, Tol};

fn upload(gpu: &Gpu, file: &TensorFile, name: &str) -> Tensor {
    let (shape, data) = file.f32(name).unwrap();
    Tensor::from_f32(gpu, &shape, &data).unwrap()
}

fn net_from_fixture(gpu: &Gpu, file: &TensorFile) -> Box<dyn Network> {
    let config = file.metadata("config").unwrap();
    let net: Box<dyn Network> = match file.metadata("network").unwrap().as_str() {
        "SegResNetDS" => Box::new(
            SegResNetDs::new(gpu, SegResNetDsConfig::from_json(&config).unwrap(), 1).unwrap(),
        ),
        "SegResNet" => {
            Box::new(SegResNet::new(gpu, SegResNetConfig::from_json(&config).unwrap(), 1).unwrap())
        }
        other => panic!("unknown network {other}"),
    };
    net.store()
        .load_safetensors(file.path(), Some("param."))
        .unwrap();
    net
}

/// Eval output, training outputs and every gradient of the projection loss
/// `sum_i sum(train.output.i * train.projection.i)`.
fn check_network_fixture(name: &str) {
    let Some(gpu) = gpu() else { return };
    for file in fixture_sets(name) {
        check_network_file(&gpu, &file);
    }
}

fn check_network_file(gpu: &Gpu, file: &TensorFile) {
    let name = file.path();
    let net = net_from_fixture(gpu, file);
    let x = Var::parameter(upload(gpu, file, "input"));

    // Eval mode: the full resolution output only.
    let tape = Tape::new();
    let eval = {
        let _g = tape.no_grad();
        net.forward(&tape, &x, Mode::Eval).unwrap()
    };
    assert_eq!(eval.len(), 1);
    // SegResNet has no mode-dependent output: its fixture holds the training output only.
    let eval_name = if file.contains("eval.output") {
        "eval.output"
    } else {
        "train.output.0"
    };
    let (want_shape, want) = file.f32(eval_name).unwrap();
    assert_eq!(eval[0].shape(), want_shape.as_slice());
    assert_close(
        &eval[0].tensor().to_vec_f32().unwrap(),
        &want,
        Tol::of_max(1e-4),
        &format!("{name} eval.output"),
    );

    // Training mode: every output, then the projection loss's gradients.
    let outs = net.forward(&tape, &x, Mode::Train).unwrap();
    let n_train = file
        .names()
        .iter()
        .filter(|n| n.starts_with("train.output."))
        .count();
    assert_eq!(outs.len(), n_train, "{name}: number of training outputs");
    let mut projections = Vec::new();
    for (i, o) in outs.iter().enumerate() {
        let (shape, want) = file.f32(&format!("train.output.{i}")).unwrap();
        assert_eq!(o.shape(), shape.as_slice(), "{name} train.output.{i} shape");
        assert_close(
            &o.tensor().to_vec_f32().unwrap(),
            &want,
            Tol::of_max(1e-4),
            &format!("{name} train.output.{i}"),
        );
        projections.push(upload(gpu, file, &format!("train.projection.{i}")));
    }
    // The loss as a tape op: d/d output_i = projection_i.
    let inputs: Vec<&Var> = outs.iter().collect();
    let scalar = Tensor::from_f32(gpu, &[1], &[0.0]).unwrap();
    let loss = tape.record(
        &inputs,
        scalar,
        Box::new(move |_| Ok(projections.into_iter().map(Some).collect())),
    );
    let grads = tape.backward(&loss).unwrap();
    let (_, want) = file.f32("grad.input").unwrap();
    assert_close(
        &grads.get(&x).unwrap().to_vec_f32().unwrap(),
        &want,
        Tol::of_max(1e-3),
        &format!("{name} grad.input"),
    );
    let mut checked = 0;
    for (pname, var) in net.store().named_vars() {
        let (shape, want) = file.f32(&format!("grad.{pname}")).unwrap();
        let got = grads
            .get(&var)
            .unwrap_or_else(|| panic!("{name}: no gradient for {pname}"));
        assert_eq!(got.shape(), shape.as_slice());
        assert_close(
            &got.to_vec_f32().unwrap(),
            &want,
            Tol::of_max(1e-3),
            &format!("{name} grad.{pname}"),
        );
        checked += 1;
    }
    let in_file = file
        .names()
        .iter()
        .filter(|n| n.starts_with("grad.") && *n != "grad.input")
        .count();
    assert_eq!(
        checked, in_file,
        "{name}: every parameter gradient in the fixture is checked"
    );
}

#[test]
fn segresnetds_matches_monai() {
    check_network_fixture("net_segresnetds_small.safetensors");
}

#[test]
fn segresnet_matches_monai() {
    check_network_fixture("net_segresnet_small.safetensors");
}

#[test]
fn parameter_names_are_monai_state_dict_keys() {
    let Some(gpu) = gpu() else { return };
    for name in [
        "net_segresnetds_small.safetensors",
        "net_segresnet_small.safetensors",
    ] {
        for file in fixture_sets(name) {
            let net = net_from_fixture(&gpu, &file);
            let mut ours = net.store().names();
            ours.sort();
            let theirs: Vec<String> = file
                .names()
                .into_iter()
                .filter_map(|n| n.strip_prefix("param.").map(String::from))
                .collect();
            assert_eq!(ours, theirs, "{}", file.path());
        }
    }
}

#[test]
fn save_then_load_is_bit_exact_and_strict_loading_names_every_problem() {
    let Some(gpu) = gpu() else { return };
    let dir = std::env::temp_dir().join(format!("calibseg-net-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = SegResNetDsConfig::from_json(
        r#"{"init_filters": 4, "out_channels": 3, "blocks_down": [1, 1, 1], "dsdepth": 2}"#,
    )
    .unwrap();
    let a = SegResNetDs::new(&gpu, config.clone(), 11).unwrap();
    let path = dir.join("a.safetensors");
    a.store().save_safetensors(&path, None).unwrap();
    let b = SegResNetDs::new(&gpu, config.clone(), 12).unwrap();
    let before = b.store().state_dict().unwrap();
    assert_ne!(
        before,
        a.store().state_dict().unwrap(),
        "different seeds differ"
    );
    b.store().load_safetensors(&path, None).unwrap();
    assert_eq!(
        b.store().state_dict().unwrap(),
        a.store().state_dict().unwrap()
    );
    // The layers hold clones of the parameters: they see the loaded values (same outputs, bit for bit).
    let x = Var::constant(
        Tensor::from_f32(
            &gpu,
            &[1, 1, 8, 8, 8],
            &(0..512)
                .map(|i| (i as f32 * 0.37).sin())
                .collect::<Vec<_>>(),
        )
        .unwrap(),
    );
    let tape = Tape::new();
    let _g = tape.no_grad();
    let ya = a.forward(&tape, &x, Mode::Eval).unwrap()[0]
        .tensor()
        .to_vec_f32()
        .unwrap();
    let yb = b.forward(&tape, &x, Mode::Eval).unwrap()[0]
        .tensor()
        .to_vec_f32()
        .unwrap();
    assert_eq!(ya, yb);

    // A file with a missing, an extra and a mis-shaped tensor: all three named, nothing changed.
    let mut sd = a.store().state_dict().unwrap();
    sd.remove("encoder.conv_init.weight");
    sd.insert(
        "encoder.extra.weight".into(),
        calibseg::io::safetensors::HostTensor::F32(vec![1], vec![0.0]),
    );
    sd.insert(
        "up_layers.1.head.bias".into(),
        calibseg::io::safetensors::HostTensor::F32(vec![4], vec![0.0; 4]),
    );
    let bad = dir.join("bad.safetensors");
    calibseg::io::safetensors::write(&bad, &sd, None).unwrap();
    let c = SegResNetDs::new(&gpu, config.clone(), 13).unwrap();
    let c_before = c.store().state_dict().unwrap();
    let err = c.store().load_safetensors(&bad, None).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::StateDict(_)), "{msg}");
    for needle in [
        "encoder.conv_init.weight",
        "encoder.extra.weight",
        "up_layers.1.head.bias",
    ] {
        assert!(msg.contains(needle), "{msg} should name {needle}");
    }
    assert_eq!(
        c.store().state_dict().unwrap(),
        c_before,
        "nothing changes on failure"
    );

    // A `module.` prefix on every key is removed; an explicit prefix selects the keys.
    let prefixed: std::collections::BTreeMap<_, _> = a
        .store()
        .state_dict()
        .unwrap()
        .into_iter()
        .map(|(k, v)| (format!("module.{k}"), v))
        .collect();
    let p = dir.join("module.safetensors");
    calibseg::io::safetensors::write(&p, &prefixed, None).unwrap();
    c.store().load_safetensors(&p, None).unwrap();
    assert_eq!(
        c.store().state_dict().unwrap(),
        a.store().state_dict().unwrap()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn configs_parse_monai_spellings_and_reject_what_is_unsupported() {
    let c = SegResNetDsConfig::from_json(
        r#"{"init_filters": 8, "blocks_down": [1, 2, 2, 4], "dsdepth": 2, "norm": "instance_nvfuser"}"#,
    )
    .unwrap();
    assert_eq!(c.norm.name, NormName::InstanceNvfuser);
    assert_eq!(c.dsdepth, 2);
    let g = SegResNetDsConfig::from_json(r#"{"norm": ["GROUP", {"num_groups": 4}]}"#).unwrap();
    assert_eq!(g.norm.name, NormName::Group(4));
    // Round trip through MONAI's JSON and through serde.
    assert_eq!(SegResNetDsConfig::try_from(c.to_json()).unwrap(), c);
    let via_serde: SegResNetDsConfig = serde_json::from_value(g.to_json()).unwrap();
    assert_eq!(via_serde, g);
    let paper = SegResNetDsConfig::paper(1, 4);
    assert_eq!(paper.blocks_down, vec![1, 2, 2, 4, 4]);
    assert_eq!(paper.dsdepth, 4);
    for (json, option) in [
        (r#"{"norm": "BATCH"}"#, "norm"),
        (r#"{"act": "PRELU"}"#, "act"),
        (r#"{"resolution": [1, 1, 5]}"#, "resolution"),
        (r#"{"upsample_mode": "pixelshuffle"}"#, "upsample_mode"),
        (r#"{"blocks_up": [1]}"#, "blocks_up"),
        (r#"{"init_filters": -1}"#, "init_filters"),
        (r#"{"widht": 3}"#, "widht"),
    ] {
        let err = SegResNetDsConfig::from_json(json).unwrap_err().to_string();
        assert!(err.contains(option), "{json}: {err}");
    }
    let s = SegResNetConfig::from_json(r#"{"init_filters": 8, "blocks_up": [1, 1, 1]}"#).unwrap();
    assert_eq!(s.norm.name, NormName::Group(8));
    for (json, option) in [
        (r#"{"dropout_prob": 0.2}"#, "dropout_prob"),
        (r#"{"upsample_mode": "deconv"}"#, "upsample_mode"),
        (r#"{"norm": ["GROUP", {"num_groups": 3}]}"#, "norm"),
    ] {
        let err = SegResNetConfig::from_json(json).unwrap_err().to_string();
        assert!(err.contains(option), "{json}: {err}");
    }
}

#[test]
fn inputs_that_do_not_fit_are_typed_errors() {
    let Some(gpu) = gpu() else { return };
    let config =
        SegResNetDsConfig::from_json(r#"{"init_filters": 2, "blocks_down": [1, 1, 1]}"#).unwrap();
    let net = SegResNetDs::new(&gpu, config, 0).unwrap();
    let tape = Tape::new();
    let _g = tape.no_grad();
    for shape in [[1, 1, 8, 8, 6], [1, 2, 8, 8, 8]] {
        let x = Var::constant(Tensor::zeros(&gpu, &shape, calibseg::DType::F32).unwrap());
        let err = net.forward(&tape, &x, Mode::Eval).unwrap_err();
        assert!(
            matches!(err, Error::InvalidShape(_) | Error::ShapeMismatch(_)),
            "{shape:?}: {err}"
        );
    }
    let x = Var::constant(Tensor::zeros(&gpu, &[1, 1, 8, 8], calibseg::DType::F32).unwrap());
    assert!(net.forward(&tape, &x, Mode::Eval).is_err());
}
