//! Every parameter of the shipped architecture receives a non-zero gradient from the training loss
//! (candle's fused softmax / layer norm have no backward and would silently freeze parameters).

use pixelfarm_diffusion::shapes_net::ShapesConfig;
use pixelfarm_shapes::train::{DataMix, LossWeighting, Model, batch, loss, schedule};
use pixelfarm_shapes::vocab;

#[test]
fn every_parameter_gets_a_nonzero_gradient() {
    let model = Model::new(ShapesConfig::DEFAULT, &candle_core::Device::Cpu).unwrap();
    let weighting = LossWeighting {
        outline: 4.0,
        corner: 4.0,
        min_snr_gamma: Some(5.0),
    };
    let mix = DataMix {
        uncond_prob: 0.0,
        ..DataMix::default()
    };
    let b = batch(1, 0, 4, &mix, &weighting, &vocab::tokenizer(), &schedule()).unwrap();
    let grads = loss(&model, &b).unwrap().backward().unwrap();
    let vars = model.named_vars();
    assert!(vars.len() > 50, "{} variables", vars.len());
    let mut missing = Vec::new();
    for (name, var) in &vars {
        let ok = grads.get(var.as_tensor()).is_some_and(|g| {
            g.abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
                > 0.0
        });
        if !ok {
            missing.push(name.clone());
        }
    }
    // The token embedding only gets gradient on rows of words in the batch; all others must.
    assert!(missing.is_empty(), "no gradient for {missing:?}");
}
