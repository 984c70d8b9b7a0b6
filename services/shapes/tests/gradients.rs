//! Every parameter of the shipped architecture receives a non-zero gradient from the training loss
//! (candle's fused softmax / layer norm have no backward and would silently freeze parameters),
//! and training only the refinement head reaches the head and nothing else.

use candle_core::backprop::GradStore;
use pixelfarm_diffusion::shapes_net::{Reach, ShapesConfig};
use pixelfarm_shapes::train::{DataMix, LossWeighting, Model, batch, loss, schedule};
use pixelfarm_shapes::vocab;

/// The model's variables whose gradient is non-zero, and those whose gradient is zero or absent.
fn reached(model: &Model, reach: Reach) -> (Vec<String>, Vec<String>) {
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
    let grads: GradStore = loss(&model.unet, &model.text, &b, reach)
        .unwrap()
        .backward()
        .unwrap();
    let vars = model.named_vars();
    assert!(vars.len() > 50, "{} variables", vars.len());
    vars.into_iter()
        .map(|(name, var)| {
            let nonzero = grads.get(var.as_tensor()).is_some_and(|g| {
                g.abs()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap()
                    > 0.0
            });
            (name, nonzero)
        })
        .fold((Vec::new(), Vec::new()), |(mut yes, mut no), (n, ok)| {
            if ok {
                yes.push(n)
            } else {
                no.push(n)
            }
            (yes, no)
        })
}

fn architecture() -> ShapesConfig {
    ShapesConfig::DEFAULT.with_refine(16).unwrap()
}

#[test]
fn every_parameter_gets_a_nonzero_gradient() {
    let model = Model::new(architecture(), &candle_core::Device::Cpu).unwrap();
    let (reached, missing) = reached(&model, Reach::All);
    assert!(reached.iter().any(|n| n.starts_with("unet.refine.")));
    // The token embedding only gets gradient on rows of words in the batch; all others must.
    assert!(missing.is_empty(), "no gradient for {missing:?}");
}

#[test]
fn training_the_refiner_alone_reaches_only_the_refiner() {
    let model = Model::new(architecture(), &candle_core::Device::Cpu).unwrap();
    let (reached, missing) = reached(&model, Reach::Refiner);
    let head: Vec<String> = model
        .trained_vars(Reach::Refiner)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert!(head.len() >= 10, "{head:?}");
    assert!(
        head.iter().all(|n| n.starts_with("unet.refine.")),
        "{head:?}"
    );
    assert_eq!(reached, head, "missing: {missing:?}");
}
