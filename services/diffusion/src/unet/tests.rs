use super::*;
use crate::family::Family;
use candle_core::{DType, Device};
use candle_nn::VarMap;
use candle_transformers::models::stable_diffusion::unet_2d::UNet2DConditionModel;

fn input(shape: (usize, usize, usize, usize), seed: u64) -> Tensor {
    let n = shape.0 * shape.1 * shape.2 * shape.3;
    Tensor::from_vec(crate::JobRng::new(seed).normals(n), shape, &Device::Cpu).unwrap()
}

/// The same weights through candle-transformers' UNet (the reference these blocks replace):
/// the outputs agree up to what differs on purpose — the exact GELU where candle uses the tanh
/// approximation, and the order of a few sums.
#[test]
fn without_micro_conditioning_it_matches_candles_unet_with_and_without_residuals() {
    for family in [Family::Tiny, Family::TinyXl] {
        let cfg = family.unet_config();
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let theirs = UNet2DConditionModel::new(vb.clone(), 4, 4, false, cfg.clone()).unwrap();
        let ours = Unet::new(vb, 4, 4, &cfg, None).unwrap();
        // Random weights throughout (a fresh VarMap's norms are ones and zeros, its linears
        // are random): make the norms random too, so that a mix-up of γ and β would show.
        for (i, var) in vm.all_vars().iter().enumerate() {
            let t = input((var.elem_count(), 1, 1, 1), i as u64 + 7);
            var.set(&(t.reshape(var.shape()).unwrap() * 0.2).unwrap())
                .unwrap();
        }
        let x = input((2, 4, 8, 8), 1);
        let ctx = input((2, 77, cfg.cross_attention_dim, 1), 2)
            .squeeze(3)
            .unwrap();
        // ControlNet residuals for each state of the way down (both tiny families: widths 32,
        // 64, 64, one resnet per level, at 8x8) and for the middle block.
        let down: Vec<Tensor> = [(32, 8), (32, 8), (32, 4), (64, 4), (64, 2), (64, 2)]
            .iter()
            .enumerate()
            .map(|(i, &(c, s))| input((2, c, s, s), 20 + i as u64))
            .collect();
        let mid = input((2, 64, 2, 2), 30);
        let residuals = Residuals {
            down: down.clone(),
            mid: mid.clone(),
        };
        for (t, with) in [(999.0, false), (500.5, false), (1.0, false), (500.5, true)] {
            let (a, b) = if with {
                let a = theirs
                    .forward_with_additional_residuals(&x, t, &ctx, Some(&down), Some(&mid))
                    .unwrap();
                (
                    a,
                    ours.forward(&x, t, &ctx, None, Some(&residuals)).unwrap(),
                )
            } else {
                let a = theirs.forward(&x, t, &ctx).unwrap();
                (a, ours.forward(&x, t, &ctx, None, None).unwrap())
            };
            let scale = a
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap();
            let diff = diff.to_scalar::<f32>().unwrap();
            // Measured: ~3e-5 of outputs ~1.3 (tanh vs erf GELU).
            assert!(
                diff <= 1e-4 * scale,
                "{family} at {t} ({with}): {diff} of {scale}"
            );
        }
    }
}

#[test]
fn micro_conditioning_reaches_the_output_and_is_required() {
    let family = Family::TinyXl;
    let cfg = family.unet_config();
    let tt = family.xl().unwrap().text_time;
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let unet = Unet::new(vb, 4, 4, &cfg, Some(tt)).unwrap();
    assert!(unet.takes_text_time());
    let x = input((1, 4, 8, 8), 1);
    let ctx = input((1, 77, cfg.cross_attention_dim, 1), 2)
        .squeeze(3)
        .unwrap();
    let pooled = input((1, tt.pooled_dim, 1, 1), 3).flatten_from(1).unwrap();
    let ids = |h: f32| Tensor::new(&[[h, 64.0, 0.0, 0.0, 64.0, 64.0]], &Device::Cpu).unwrap();
    let run = |pooled: &Tensor, h: f32| {
        let tt = TextTime {
            pooled: pooled.clone(),
            time_ids: ids(h),
        };
        unet.forward(&x, 500.0, &ctx, Some(&tt), None).unwrap()
    };
    let differs = |a: &Tensor, b: &Tensor| {
        let d = (a - b).unwrap().abs().unwrap().max_all().unwrap();
        d.to_scalar::<f32>().unwrap() > 1e-4
    };
    let base = run(&pooled, 64.0);
    assert!(differs(&base, &run(&pooled, 1024.0)), "time ids are read");
    assert!(
        differs(&base, &run(&pooled.zeros_like().unwrap(), 64.0)),
        "the pooled embedding is read"
    );
    assert!(unet.forward(&x, 500.0, &ctx, None, None).is_err());
}
