//! `bench-ops`: milliseconds of the CPU ops that dominate the SD UNet and VAE (3x3 convolution,
//! group norm, SiLU) in candle, at the shapes of the tiny model at 64 and 256 pixels.
//! `bench/ops_torch.py` times the same ops in PyTorch; `bench/diffusion.sh` prints both.

use candle_core::{DType, Device, Module, Tensor};
use std::time::Instant;
fn main() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    for (c, hw) in [(64usize, 256usize), (32, 256), (64, 64), (32, 32)] {
        let x = Tensor::randn(0f32, 1., (1, c, hw, hw), &dev)?;
        let w = Tensor::randn(0f32, 1., (c, c, 3, 3), &dev)?;
        let _ = x.conv2d(&w, 1, 1, 1, 1)?;
        let t = Instant::now();
        let n = 5;
        for _ in 0..n {
            let _ = x.conv2d(&w, 1, 1, 1, 1)?;
        }
        let conv = t.elapsed().as_secs_f64() / n as f64;
        let gn = candle_nn::group_norm(
            32.min(c),
            c,
            1e-5,
            candle_nn::VarBuilder::zeros(DType::F32, &dev),
        )?;
        let t = Instant::now();
        for _ in 0..n {
            let _ = gn.forward(&x)?;
        }
        let g = t.elapsed().as_secs_f64() / n as f64;
        let t = Instant::now();
        for _ in 0..n {
            let _ = candle_nn::ops::silu(&x)?;
        }
        let s = t.elapsed().as_secs_f64() / n as f64;
        println!(
            "c={c} hw={hw}: conv3x3 {:.2} ms, groupnorm {:.2} ms, silu {:.2} ms",
            conv * 1e3,
            g * 1e3,
            s * 1e3
        );
    }
    Ok(())
}
