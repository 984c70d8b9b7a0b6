//! `bench-shapes-ops [batch] [repeats]`: milliseconds of every convolution and group norm of the
//! shipped `shapes` UNet — one training pass (forward + backward) at a training batch, and the
//! forward alone at the engine's render batch (2: the prompt and the empty prompt) — in candle's
//! ops and in `pixelfarm_kernels`, measured in the same run, with the ratio.

use candle_core::{Device, Module, Tensor, Var};
use pixelfarm_kernels::{conv2d, group_norm};
use std::time::Instant;

/// `(name, cin, cout, kernel, stride, side, count)`: the UNet's convolutions at 32×32 pixels (16×16
/// after the 2×2 fold); `count` layers of that geometry.
const CONVS: [(&str, usize, usize, usize, usize, usize, usize); 17] = [
    ("conv conv_in", 12, 32, 3, 1, 16, 1),
    ("conv down0.conv1", 32, 32, 3, 1, 16, 1),
    ("conv down0.conv2", 32, 32, 3, 1, 16, 1),
    ("conv down1_conv", 32, 64, 3, 2, 16, 1),
    ("conv down1.conv1", 64, 64, 3, 1, 8, 1),
    ("conv down1.conv2", 64, 64, 3, 1, 8, 1),
    ("conv down2_conv", 64, 128, 3, 2, 8, 1),
    ("conv mid (x4)", 128, 128, 3, 1, 4, 4),
    ("conv up1_conv", 128, 64, 3, 1, 8, 1),
    ("conv up1.conv1", 128, 64, 3, 1, 8, 1),
    ("conv up1.conv2", 64, 64, 3, 1, 8, 1),
    ("conv up1.skip", 128, 64, 1, 1, 8, 1),
    ("conv up0_conv", 64, 32, 3, 1, 16, 1),
    ("conv up0.conv1", 64, 32, 3, 1, 16, 1),
    ("conv up0.conv2", 32, 32, 3, 1, 16, 1),
    ("conv up0.skip", 64, 32, 1, 1, 16, 1),
    ("conv conv_out", 32, 12, 3, 1, 16, 1),
];

/// `(name, channels, side, count)`: the UNet's group norms (8 groups).
const NORMS: [(&str, usize, usize, usize); 5] = [
    ("norm 32 ch 16x16 (x4)", 32, 16, 4),
    ("norm 64 ch 16x16", 64, 16, 1),
    ("norm 64 ch 8x8 (x3)", 64, 8, 3),
    ("norm 128 ch 8x8", 128, 8, 1),
    ("norm 128 ch 4x4 (x5)", 128, 4, 5),
];

/// Best seconds of `repeats` runs of `f` (+ a backward of the sum of its output when `train`).
fn time(
    f: &dyn Fn() -> candle_core::Result<Tensor>,
    train: bool,
    repeats: usize,
) -> anyhow::Result<f64> {
    let mut best = f64::INFINITY;
    for _ in 0..=repeats {
        let t = Instant::now();
        let y = f()?;
        if train {
            let _grads = y.sum_all()?.backward()?;
        }
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(best)
}

fn randn(shape: &[usize], std: f32) -> anyhow::Result<Var> {
    Ok(Var::from_tensor(&Tensor::randn(
        0f32,
        std,
        shape,
        &Device::Cpu,
    )?)?)
}

/// candle's op and pixelfarm's, each applied to the same input.
type Pair<'a> = (
    Box<dyn Fn(&Tensor) -> candle_core::Result<Tensor> + 'a>,
    Box<dyn Fn(&Tensor) -> candle_core::Result<Tensor> + 'a>,
);

fn main() -> anyhow::Result<()> {
    // SAFETY: the first statement of `main`: no other thread exists yet.
    #[allow(unsafe_code)]
    unsafe {
        pixelfarm_kernels::threads::settle();
    }
    let mut args = std::env::args().skip(1);
    let batch: usize = args.next().map_or(Ok(256), |a| a.parse())?;
    let repeats: usize = args.next().map_or(Ok(3), |a| a.parse())?;
    println!(
        "| layer | train pass, batch {batch}: candle ms | pixelfarm ms | ratio | forward, batch 2: candle ms | pixelfarm ms | ratio |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut totals = [0.0f64; 4];
    let mut row = |name: &str, count: usize, shape: [usize; 3], pair: Pair| -> anyhow::Result<()> {
        let mut cells = [0.0f64; 4];
        for (i, (n, train)) in [(batch, true), (2, false)].into_iter().enumerate() {
            let x = randn(&[n, shape[0], shape[1], shape[2]], 1.0)?;
            cells[2 * i] = time(&|| (pair.0)(&x), train, repeats)?;
            cells[2 * i + 1] = time(&|| (pair.1)(&x), train, repeats)?;
        }
        for (t, c) in totals.iter_mut().zip(cells) {
            *t += count as f64 * c;
        }
        println!(
            "| {name} | {:.2} | {:.2} | {:.1}x | {:.3} | {:.3} | {:.1}x |",
            cells[0] * 1e3,
            cells[1] * 1e3,
            cells[0] / cells[1],
            cells[2] * 1e3,
            cells[3] * 1e3,
            cells[2] / cells[3]
        );
        Ok(())
    };
    for (name, cin, cout, k, stride, side, count) in CONVS {
        let w = randn(&[cout, cin, k, k], 0.1)?;
        let (w1, w2) = (w.clone(), w);
        row(
            name,
            count,
            [cin, side, side],
            (
                Box::new(move |x| x.conv2d(&w1, k / 2, stride, 1, 1)),
                Box::new(move |x| conv2d(x, &w2, stride, k / 2)),
            ),
        )?;
    }
    for (name, c, side, count) in NORMS {
        let (gamma, beta) = (randn(&[c], 1.0)?, randn(&[c], 1.0)?);
        let theirs = candle_nn::GroupNorm::new(
            gamma.as_tensor().clone(),
            beta.as_tensor().clone(),
            c,
            8,
            1e-5,
        )?;
        let (g, b) = (gamma.as_tensor().clone(), beta.as_tensor().clone());
        row(
            name,
            count,
            [c, side, side],
            (
                Box::new(move |x| theirs.forward(x)),
                Box::new(move |x| group_norm(x, &g, &b, 8, 1e-5)),
            ),
        )?;
    }
    println!(
        "\nevery convolution and group norm of the shapes UNet: train pass at batch {batch}: candle {:.0} ms, \
         pixelfarm {:.0} ms ({:.1}x); forward at batch 2: candle {:.2} ms, pixelfarm {:.2} ms ({:.1}x)",
        totals[0] * 1e3,
        totals[1] * 1e3,
        totals[0] / totals[1],
        totals[2] * 1e3,
        totals[3] * 1e3,
        totals[2] / totals[3]
    );
    Ok(())
}
