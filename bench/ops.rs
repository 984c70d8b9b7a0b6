//! `bench-ops`: milliseconds of the CPU ops that dominate the SD UNet and VAE (3x3 convolution,
//! group norm, SiLU, attention) at the shapes of the tiny model at 64 and 256 pixels, batch 1:
//! candle's, and pixelfarm's own convolution (Winograd from 64², direct below, and the im2col path
//! they are measured against), group norm and attention (`pixelfarm_kernels`, measured in the same
//! run). `bench/ops_torch.py` times the same ops in PyTorch; `bench/diffusion.sh` prints both.

use candle_core::{DType, Device, Module, Tensor};
use pixelfarm_kernels::{attention, conv2d, conv2d_im2col, group_norm};
use std::time::Instant;

/// Mean milliseconds of `n` runs of `f`, after one warm-up run.
fn ms(n: u32, f: impl Fn() -> candle_core::Result<Tensor>) -> anyhow::Result<f64> {
    f()?;
    let t = Instant::now();
    for _ in 0..n {
        f()?;
    }
    Ok(t.elapsed().as_secs_f64() * 1e3 / f64::from(n))
}

fn main() -> anyhow::Result<()> {
    // SAFETY: the first statement of `main`: no other thread exists yet.
    #[allow(unsafe_code)]
    unsafe {
        pixelfarm_kernels::threads::settle();
    }
    // On a thread of the kernels' pool, as the engine renders (`DiffusionEngine::compute`).
    rayon::scope(|_| ops())
}

fn ops() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    for (c, hw) in [
        (64usize, 256usize),
        (32, 256),
        (64, 64),
        (32, 32),
        (64, 16),
        (64, 8),
    ] {
        let x = Tensor::randn(0f32, 1., (1, c, hw, hw), &dev)?;
        let w = Tensor::randn(0f32, 1., (c, c, 3, 3), &dev)?;
        let groups = 32.min(c);
        let gn = candle_nn::group_norm(
            groups,
            c,
            1e-5,
            candle_nn::VarBuilder::zeros(DType::F32, &dev),
        )?;
        let (gamma, beta) = (
            Tensor::ones(c, DType::F32, &dev)?,
            Tensor::zeros(c, DType::F32, &dev)?,
        );
        // More runs of the small shapes (sub-millisecond: 5 runs are noise), about equal time each.
        let n = u32::try_from((5 * 256 * 256 / (hw * hw)).clamp(5, 400))?;
        let conv = ms(n, || x.conv2d(&w, 1, 1, 1, 1))?;
        let our_conv = ms(n, || conv2d(&x, &w, 1, 1))?;
        let im2col = ms(n, || conv2d_im2col(&x, &w, 1, 1))?;
        let g = ms(n, || gn.forward(&x))?;
        let our_g = ms(n, || group_norm(&x, &gamma, &beta, groups, 1e-5))?;
        let s = ms(n, || candle_nn::ops::silu(&x))?;
        println!(
            "c={c} hw={hw}: conv3x3 {conv:.2} ms (pixelfarm {our_conv:.2} ms, {:.1}x; im2col \
             {im2col:.2} ms, own kernel {:.2}x), groupnorm {g:.2} ms (pixelfarm {our_g:.2} ms, \
             {:.1}x), silu {s:.2} ms",
            conv / our_conv,
            im2col / our_conv,
            g / our_g
        );
    }
    // Attention at the tiny UNet's shapes for one 256x256 image with guidance (2 rows): its top
    // level's self-attention (2 heads of 16 over 32x32 tokens), cross-attention to the 77 text
    // tokens, and the next level's self-attention (4 heads over 16x16). Inputs and output are
    // `(rows, tokens, heads · d)`, as the projections give them; candle's path copies the heads out
    // and back, as the SD blocks did before pixelfarm's kernel.
    for (heads, s, t, d) in [
        (2usize, 1024usize, 1024usize, 16usize),
        (2, 1024, 77, 16),
        (4, 256, 256, 16),
    ] {
        let q = Tensor::randn(0f32, 1., (2, s, heads * d), &dev)?;
        let k = Tensor::randn(0f32, 1., (2, t, heads * d), &dev)?;
        let v = Tensor::randn(0f32, 1., (2, t, heads * d), &dev)?;
        let scale = 1.0 / (d as f64).sqrt();
        let split = |x: &Tensor| -> candle_core::Result<Tensor> {
            let (n, s, c) = x.dims3()?;
            x.reshape((n, s, heads, c / heads))?
                .transpose(1, 2)?
                .contiguous()
        };
        let n = 10;
        let composed = ms(n, || {
            let scores = (split(&q)? * scale)?.matmul(&split(&k)?.t()?)?;
            let y = candle_nn::ops::softmax_last_dim(&scores)?.matmul(&split(&v)?)?;
            y.transpose(1, 2)?.reshape((2, s, heads * d))
        })?;
        let ours = ms(n, || attention(&q, &k, &v, heads, scale))?;
        println!(
            "attention 2 rows x {heads} heads, queries={s} keys={t} d={d}: candle {composed:.2} ms \
             (pixelfarm {ours:.2} ms, {:.1}x)",
            composed / ours
        );
    }
    // The linear layers of the tiny UNet's top-level transformer, one 256x256 image with
    // guidance (2 rows of 32x32 tokens): the attention projections, GEGLU's input projection and
    // its output projection (with the residual added in the same pass).
    for (d_in, d_out) in [(32usize, 32usize), (32, 256), (128, 32)] {
        let x = Tensor::randn(0f32, 1., (2, 1024, d_in), &dev)?;
        let w = Tensor::randn(0f32, 1., (d_out, d_in), &dev)?;
        let b = Tensor::randn(0f32, 1., d_out, &dev)?;
        let residual = Tensor::randn(0f32, 1., (2, 1024, d_out), &dev)?;
        let theirs = candle_nn::Linear::new(w.clone(), Some(b.clone()));
        let ours = pixelfarm_kernels::Linear::new(w, Some(b));
        let n = 200;
        let candle = ms(n, || &residual + theirs.forward(&x)?)?;
        let fused = ms(n, || ours.forward_add(&x, Some(&residual)))?;
        println!(
            "linear + residual 2x1024 rows {d_in} -> {d_out}: candle {candle:.3} ms (pixelfarm \
             {fused:.3} ms, {:.1}x)",
            candle / fused
        );
    }
    Ok(())
}
