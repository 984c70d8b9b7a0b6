use super::*;

/// Names from a real SD 1.5 checkpoint (`v1-5-pruned-emaonly.safetensors`) and where diffusers
/// keeps them.
const SD15: [(&str, &str); 18] = [
    (
        "model.diffusion_model.time_embed.2.bias",
        "time_embedding.linear_2.bias",
    ),
    (
        "model.diffusion_model.input_blocks.0.0.weight",
        "conv_in.weight",
    ),
    (
        "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight",
        "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight",
    ),
    (
        "model.diffusion_model.input_blocks.2.0.in_layers.0.weight",
        "down_blocks.0.resnets.1.norm1.weight",
    ),
    (
        "model.diffusion_model.input_blocks.3.0.op.weight",
        "down_blocks.0.downsamplers.0.conv.weight",
    ),
    (
        "model.diffusion_model.input_blocks.4.0.skip_connection.weight",
        "down_blocks.1.resnets.0.conv_shortcut.weight",
    ),
    (
        "model.diffusion_model.input_blocks.11.0.out_layers.3.bias",
        "down_blocks.3.resnets.1.conv2.bias",
    ),
    (
        "model.diffusion_model.middle_block.1.proj_in.weight",
        "mid_block.attentions.0.proj_in.weight",
    ),
    (
        "model.diffusion_model.middle_block.2.emb_layers.1.weight",
        "mid_block.resnets.1.time_emb_proj.weight",
    ),
    (
        "model.diffusion_model.output_blocks.2.1.conv.weight",
        "up_blocks.0.upsamplers.0.conv.weight",
    ),
    (
        "model.diffusion_model.output_blocks.5.2.conv.bias",
        "up_blocks.1.upsamplers.0.conv.bias",
    ),
    (
        "model.diffusion_model.output_blocks.11.1.proj_out.weight",
        "up_blocks.3.attentions.2.proj_out.weight",
    ),
    ("model.diffusion_model.out.2.weight", "conv_out.weight"),
    (
        "first_stage_model.encoder.down.0.downsample.conv.weight",
        "encoder.down_blocks.0.downsamplers.0.conv.weight",
    ),
    (
        "first_stage_model.decoder.up.3.upsample.conv.bias",
        "decoder.up_blocks.0.upsamplers.0.conv.bias",
    ),
    (
        "first_stage_model.decoder.up.1.block.0.nin_shortcut.weight",
        "decoder.up_blocks.2.resnets.0.conv_shortcut.weight",
    ),
    (
        "first_stage_model.encoder.mid.block_2.norm1.weight",
        "encoder.mid_block.resnets.1.norm1.weight",
    ),
    (
        "first_stage_model.decoder.norm_out.weight",
        "decoder.conv_norm_out.weight",
    ),
];

fn to_hf(map: &NameMap, name: &str) -> String {
    if let Some(rest) = name.strip_prefix(UNET_PREFIX) {
        map.unet_name(rest, true)
            .unwrap_or_else(|| panic!("{name}"))
    } else {
        map.vae_name(name.strip_prefix(VAE_PREFIX).unwrap(), true)
    }
}

#[test]
fn real_sd15_names_map_to_diffusers_names_and_back() {
    let map = NameMap::for_family(Family::Sd15);
    for (ldm, hf) in SD15 {
        assert_eq!(to_hf(&map, ldm), hf, "{ldm}");
        let back = if ldm.starts_with(UNET_PREFIX) {
            format!("{UNET_PREFIX}{}", map.unet_name(hf, false).unwrap())
        } else {
            format!("{VAE_PREFIX}{}", map.vae_name(hf, false))
        };
        assert_eq!(back, ldm, "{hf}");
    }
    assert_eq!(
        map.vae_name("encoder.mid.attn_1.q.weight", true),
        "encoder.mid_block.attentions.0.query.weight"
    );
    assert_eq!(
        map.vae_name("decoder.mid.attn_1.proj_out.bias", true),
        "decoder.mid_block.attentions.0.proj_attn.bias"
    );
    assert_eq!(
        map.vae_name("post_quant_conv.weight", true),
        "post_quant_conv.weight"
    );
}

#[test]
fn an_unknown_unet_or_open_clip_tensor_is_refused_by_name() {
    let t = Tensor::zeros(1, DType::F32, &Device::Cpu).unwrap();
    let e = to_diffusers_layout(
        HashMap::from([(
            format!("{UNET_PREFIX}input_blocks.99.0.x.weight"),
            t.clone(),
        )]),
        Family::Sd15,
    )
    .unwrap_err();
    assert!(e.to_string().contains("input_blocks.99.0.x.weight"), "{e}");
    let e = to_diffusers_layout(
        HashMap::from([(
            format!("{OPEN_CLIP_PREFIX}transformer.resblocks.0.attn.c_q.weight"),
            t.clone(),
        )]),
        Family::Sd21,
    )
    .unwrap_err();
    assert!(e.to_string().contains("resblocks.0.attn.c_q.weight"), "{e}");
    let e = to_diffusers_layout(
        HashMap::from([(format!("{UNET_PREFIX}conv_in.weight"), t)]),
        Family::Sd15,
    )
    .unwrap_err();
    assert!(e.to_string().contains("conv_in.weight"), "{e}");
}

/// Names of a real SD 2.1 checkpoint (`v2-1_768-ema-pruned.safetensors`) and where diffusers
/// keeps them.
const SD21_TEXT: [(&str, &str); 6] = [
    (
        "cond_stage_model.model.positional_embedding",
        "text_model.embeddings.position_embedding.weight",
    ),
    (
        "cond_stage_model.model.transformer.resblocks.0.ln_1.weight",
        "text_model.encoder.layers.0.layer_norm1.weight",
    ),
    (
        "cond_stage_model.model.transformer.resblocks.5.mlp.c_fc.bias",
        "text_model.encoder.layers.5.mlp.fc1.bias",
    ),
    (
        "cond_stage_model.model.transformer.resblocks.22.mlp.c_proj.weight",
        "text_model.encoder.layers.22.mlp.fc2.weight",
    ),
    (
        "cond_stage_model.model.transformer.resblocks.11.attn.out_proj.bias",
        "text_model.encoder.layers.11.self_attn.out_proj.bias",
    ),
    (
        "cond_stage_model.model.ln_final.bias",
        "text_model.final_layer_norm.bias",
    ),
];

#[test]
fn sd21_open_clip_names_map_and_the_fused_projection_splits() {
    let t = Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap();
    for (oc, hf) in SD21_TEXT {
        let rest = oc.strip_prefix(OPEN_CLIP_PREFIX).unwrap();
        let out = open_clip_to_hf(rest, t.clone(), Family::Sd21).unwrap();
        assert_eq!(out.len(), 1, "{oc}");
        assert_eq!(out[0].0, hf, "{oc}");
    }
    // The 24th layer, the projection and the logit scale have no place in SD 2.1.
    for rest in [
        "transformer.resblocks.23.ln_1.weight",
        "text_projection",
        "logit_scale",
    ] {
        assert!(
            open_clip_to_hf(rest, t.clone(), Family::Sd21)
                .unwrap()
                .is_empty()
        );
    }
    // in_proj rows are q, then k, then v.
    let fused = Tensor::arange(0f32, 6.0, &Device::Cpu)
        .unwrap()
        .reshape((6, 1))
        .unwrap();
    let parts = open_clip_to_hf(
        "transformer.resblocks.3.attn.in_proj_weight",
        fused,
        Family::Sd21,
    )
    .unwrap();
    let got: Vec<(String, Vec<f32>)> = parts
        .into_iter()
        .map(|(n, t)| (n, t.flatten_all().unwrap().to_vec1().unwrap()))
        .collect();
    let l = "text_model.encoder.layers.3.self_attn";
    assert_eq!(
        got,
        vec![
            (format!("{l}.q_proj.weight"), vec![0.0, 1.0]),
            (format!("{l}.k_proj.weight"), vec![2.0, 3.0]),
            (format!("{l}.v_proj.weight"), vec![4.0, 5.0]),
        ]
    );
}
