use super::*;
use candle_core::Device;

fn normals(shape: (usize, usize, usize, usize), seed: u64, std: f32) -> Tensor {
    let n = shape.0 * shape.1 * shape.2 * shape.3;
    let v: Vec<f32> = crate::JobRng::new(seed)
        .normals(n)
        .iter()
        .map(|x| x * std)
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// A random tiny ControlNet file (the widths of `tiny::write_random_controlnet`).
fn tiny_file(dir: &std::path::Path) -> Vec<u8> {
    let path = dir.join("cn.safetensors");
    crate::tiny::write_random_controlnet(&path, Family::Tiny, 3).unwrap();
    std::fs::read(path).unwrap()
}

fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn load(bytes: &[u8], family: Family) -> Result<ControlNet> {
    ControlNet::load(bytes, family, DType::F32, &Device::Cpu)
}

#[test]
fn residuals_have_the_unets_down_states_shapes_and_scale_linearly() {
    let dir = tempfile::tempdir().unwrap();
    let net = load(&tiny_file(dir.path()), Family::Tiny).unwrap();
    let c = Family::Tiny.unet_config();
    let x = normals((2, 4, 8, 8), 1, 1.0);
    let ctx = normals((2, 77, c.cross_attention_dim, 1), 2, 1.0)
        .squeeze(3)
        .unwrap();
    let image = (normals((2, 3, 64, 64), 3, 0.25) + 0.5).unwrap();
    let hint = net.condition(&image, DType::F32).unwrap();
    let one = net.forward(&x, 500.0, &ctx, None, &hint, 1.0).unwrap();
    // Tiny UNet: widths 32, 64, 64, one resnet per level, 8x8 latents.
    let shapes: Vec<Vec<usize>> = one.down.iter().map(|t| t.dims().to_vec()).collect();
    let want: Vec<Vec<usize>> = [(32, 8), (32, 8), (32, 4), (64, 4), (64, 2), (64, 2)]
        .iter()
        .map(|&(ch, s)| vec![2, ch, s, s])
        .collect();
    assert_eq!(shapes, want);
    assert_eq!(one.mid.dims(), &[2, 64, 2, 2]);
    assert!(
        max_abs(&one.mid) > 0.0,
        "random zero convolutions make a residual"
    );

    // The weight scales every residual; the image is read.
    let half = net.forward(&x, 500.0, &ctx, None, &hint, 0.5).unwrap();
    let doubled = half.add(&half).unwrap();
    for (a, b) in one.down.iter().zip(&doubled.down) {
        assert_eq!(max_abs(&(a - b).unwrap()), 0.0, "0.5 + 0.5 is exactly 1");
    }
    let other = (normals((2, 3, 64, 64), 4, 0.25) + 0.5).unwrap();
    let other = net.condition(&other, DType::F32).unwrap();
    let moved = net.forward(&x, 500.0, &ctx, None, &other, 1.0).unwrap();
    assert!(max_abs(&(&moved.mid - &one.mid).unwrap()) > 1e-4);
}

#[test]
fn files_that_are_not_a_controlnet_of_the_family_are_refused_naming_why() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = tiny_file(dir.path());
    let e = load(&bytes, Family::Sd15).err().unwrap().to_string();
    assert!(
        e.contains("shape"),
        "a tiny ControlNet is not an SD 1.5 one: {e}"
    );

    // An embedding that downsamples 4 times, not 8.
    let mut tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).unwrap();
    tensors.retain(|k, _| {
        !k.starts_with("controlnet_cond_embedding.blocks.4")
            && !k.starts_with("controlnet_cond_embedding.blocks.5")
    });
    let path = dir.path().join("short.safetensors");
    candle_core::safetensors::save(&tensors, &path).unwrap();
    let e = load(&std::fs::read(&path).unwrap(), Family::Tiny)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("downsamples the control image 4 times; family `tiny` needs 8"),
        "{e}"
    );

    // No safetensors at all, or safetensors without a condition embedding (a LoRA, a UNet).
    assert!(load(b"not safetensors", Family::Tiny).is_err());
    tensors.retain(|k, _| !k.starts_with("controlnet_cond_embedding"));
    candle_core::safetensors::save(&tensors, &path).unwrap();
    let e = load(&std::fs::read(&path).unwrap(), Family::Tiny)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("not a ControlNet in diffusers' layout"), "{e}");
}
