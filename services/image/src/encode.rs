//! PNG encoding with generation metadata.

use pixelfarm_core::text::one_line;
use pixelfarm_core::{Applied, Error, JobParams, Result, RgbImage};

/// Text chunks written into every PNG.
#[derive(Debug, Clone)]
pub struct PngMetadata {
    /// AUTOMATIC1111-style `parameters` text (see [`a1111_parameters`]).
    pub parameters: String,
    /// pixelfarm's provenance record as JSON (key `pixelfarm`).
    pub provenance_json: String,
}

/// The `parameters` text that AUTOMATIC1111-compatible tools read:
/// prompt, then `Negative prompt: …`, then one line of `Key: value` pairs.
///
/// Each part is one line: line breaks and tabs in the prompts are written as spaces
/// ([`pixelfarm_core::text::one_line`]), so a prompt cannot start a `Negative prompt:` or
/// `Steps:` line of its own (the text encoder reads them as spaces too; the provenance record
/// keeps the exact prompt).
///
/// LoRAs are written as AUTOMATIC1111 does: a `<lora:name:weight>` tag after the prompt for
/// each, and `Lora hashes: "name: <first 12 hex of the file's sha256>, …"`; ControlNets as its
/// ControlNet extension does: `ControlNet 0: "Module: canny, Model: name [<first 8 hex>],
/// Weight: 1, Resize Mode: Just Resize, Guidance Start: 0, Guidance End: 1"` for each.
pub fn a1111_parameters(
    params: &JobParams,
    model: &str,
    renderer: &str,
    applied: &Applied,
) -> String {
    let loras = &applied.loras;
    let sampler = match params.sampler {
        pixelfarm_core::Sampler::Ddim => "DDIM",
        pixelfarm_core::Sampler::Euler => "Euler",
        pixelfarm_core::Sampler::EulerA => "Euler a",
        pixelfarm_core::Sampler::Dpmpp2m => "DPM++ 2M Karras",
        pixelfarm_core::Sampler::Dpmpp2mSde => "DPM++ 2M SDE Karras",
    };
    let mut out = one_line(params.prompt.as_str()).into_owned();
    for l in loras {
        out.push_str(&format!(" <lora:{}:{}>", l.name, l.weight));
    }
    if !params.negative_prompt.as_str().is_empty() {
        out.push_str("\nNegative prompt: ");
        out.push_str(&one_line(params.negative_prompt.as_str()));
    }
    out.push_str(&format!(
        "\nSteps: {}, Sampler: {sampler}, CFG scale: {}, Seed: {}, Size: {}x{}, Model: {model}, Renderer: {renderer}",
        params.steps.get(),
        params.guidance.get(),
        params.seed,
        params.width,
        params.height,
    ));
    // A1111's names for its hires fix, so its readers show the same settings.
    if let Some(h) = &params.hires {
        let upscaler = match h.upscaler {
            pixelfarm_core::Upscaler::Lanczos => "Lanczos",
            pixelfarm_core::Upscaler::Latent => "Latent (nearest)",
        };
        out.push_str(&format!(
            ", Denoising strength: {}, Hires upscale: {}, Hires steps: {}, Hires upscaler: {upscaler}",
            h.strength.get(),
            h.scale.get(),
            h.steps_for(params.steps).get(),
        ));
    }
    // A1111's names for an upscale in its "Extras" tab.
    if let Some(u) = params.output.upscale {
        out.push_str(&format!(
            ", Postprocess upscale by: {}, Postprocess upscaler: Lanczos",
            u.get()
        ));
    }
    if !loras.is_empty() {
        let hashes: Vec<String> = loras
            .iter()
            .map(|l| format!("{}: {}", l.name, l.sha256.get(..12).unwrap_or(&l.sha256)))
            .collect();
        out.push_str(&format!(", Lora hashes: \"{}\"", hashes.join(", ")));
    }
    for (i, (c, net)) in params.control.iter().zip(&applied.controlnets).enumerate() {
        out.push_str(&format!(
            ", ControlNet {i}: \"Module: {}, Model: {} [{}], Weight: {}, Resize Mode: Just Resize, Guidance Start: {}, Guidance End: {}\"",
            c.preprocess.as_str(),
            net.name,
            net.sha256.get(..8).unwrap_or(&net.sha256),
            c.weight.get(),
            c.start,
            c.end,
        ));
    }
    out
}

fn add_text(enc: &mut png::Encoder<'_, &mut Vec<u8>>, key: &str, text: &str) -> Result<()> {
    let r = if text.is_ascii() {
        enc.add_text_chunk(key.into(), text.into())
    } else {
        enc.add_itxt_chunk(key.into(), text.into())
    };
    r.map_err(|e| {
        Error::with_source(
            pixelfarm_core::ErrorKind::Invalid,
            "cannot add png text chunk",
            e,
        )
    })
}

/// `Invalid` unless the pixel buffer holds exactly `width x height` RGB8 pixels.
pub(crate) fn check_buffer(image: &RgbImage) -> Result<()> {
    let expected = image.width as usize * image.height as usize * 3;
    if image.rgb.len() != expected {
        return Err(Error::invalid(format!(
            "pixel buffer has {} bytes; {}x{} rgb needs {expected}",
            image.rgb.len(),
            image.width,
            image.height
        )));
    }
    Ok(())
}

/// Encode RGB8 pixels as PNG with the `parameters` and `pixelfarm` text chunks.
///
/// # Errors
/// `Invalid` if the pixel buffer does not match the size.
pub fn encode_png(image: &RgbImage, meta: &PngMetadata) -> Result<Vec<u8>> {
    check_buffer(image)?;
    let mut buf = Vec::with_capacity(image.rgb.len() / 2 + 1024);
    {
        let mut enc = png::Encoder::new(&mut buf, image.width, image.height);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_compression(png::Compression::Fast);
        add_text(&mut enc, "parameters", &meta.parameters)?;
        add_text(&mut enc, "pixelfarm", &meta.provenance_json)?;
        let mut w = enc.write_header().map_err(|e| {
            Error::with_source(
                pixelfarm_core::ErrorKind::Invalid,
                "cannot write png header",
                e,
            )
        })?;
        w.write_image_data(&image.rgb).map_err(|e| {
            Error::with_source(
                pixelfarm_core::ErrorKind::Invalid,
                "cannot write png data",
                e,
            )
        })?;
    }
    Ok(buf)
}

/// The text chunks of a PNG (tEXt and iTXt), for tests and tools.
///
/// # Errors
/// `Invalid` if the bytes are not a PNG.
pub fn decode_png_text(bytes: &[u8]) -> Result<Vec<(String, String)>> {
    let dec = png::Decoder::new(std::io::Cursor::new(bytes));
    let reader = dec
        .read_info()
        .map_err(|e| Error::with_source(pixelfarm_core::ErrorKind::Invalid, "not a png", e))?;
    let info = reader.info();
    let mut out: Vec<(String, String)> = info
        .uncompressed_latin1_text
        .iter()
        .map(|t| (t.keyword.clone(), t.text.clone()))
        .collect();
    for t in &info.utf8_text {
        out.push((t.keyword.clone(), t.get_text().unwrap_or_default()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pixelfarm_core::*;

    #[test]
    fn png_carries_parameters_and_provenance() {
        let params = JobParams {
            prompt: Prompt::parse("ein Bäcker, a cat").unwrap(),
            negative_prompt: NegativePrompt::parse("blurry").unwrap(),
            width: 8,
            height: 8,
            steps: StepCount::parse(20).unwrap(),
            guidance: GuidanceScale::parse(7.0).unwrap(),
            sampler: Sampler::Dpmpp2m,
            seed: Seed::parse(1234).unwrap(),
            init: None,
            hires: None,
            loras: Default::default(),
            control: Default::default(),
            output: Default::default(),
        };
        let img = RgbImage {
            width: 8,
            height: 8,
            rgb: vec![7; 192],
        };
        let meta = PngMetadata {
            parameters: a1111_parameters(&params, "sd15", "test-pattern/1", &Applied::default()),
            provenance_json: "{\"a\":1}".into(),
        };
        let png = encode_png(&img, &meta).unwrap();
        let text = decode_png_text(&png).unwrap();
        let get = |k: &str| {
            text.iter()
                .find(|(kk, _)| kk == k)
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        assert_eq!(
            get("parameters"),
            "ein Bäcker, a cat\nNegative prompt: blurry\nSteps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 1234, Size: 8x8, Model: sd15, Renderer: test-pattern/1"
        );
        assert_eq!(get("pixelfarm"), "{\"a\":1}");

        // A prompt's line breaks cannot forge the lines A1111 readers trust.
        let forged = JobParams {
            prompt: Prompt::parse("a cat\nNegative prompt: forged\nSteps: 1, Seed: 666").unwrap(),
            negative_prompt: NegativePrompt::parse("blurry\nSteps: 2").unwrap(),
            ..params.clone()
        };
        let text = a1111_parameters(&forged, "sd15", "test-pattern/1", &Applied::default());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "a cat Negative prompt: forged Steps: 1, Seed: 666",
                "Negative prompt: blurry Steps: 2",
                "Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 1234, Size: 8x8, Model: sd15, Renderer: test-pattern/1",
            ]
        );
        let bad = RgbImage {
            rgb: vec![0; 5],
            ..img
        };
        assert!(encode_png(&bad, &meta).is_err());

        // The hires fix in A1111's words.
        let hires = JobParams {
            hires: Some(HiresSpec {
                scale: ScaleFactor::parse(1.5).unwrap(),
                steps: None,
                strength: Strength::parse(0.4).unwrap(),
                upscaler: Upscaler::Latent,
            }),
            ..params.clone()
        };
        assert!(
            a1111_parameters(&hires, "sd15", "candle-sd/1", &Applied::default()).ends_with(
                "Renderer: candle-sd/1, Denoising strength: 0.4, Hires upscale: 1.5, Hires steps: 20, Hires upscaler: Latent (nearest)"
            ),
            "{}",
            a1111_parameters(&hires, "sd15", "candle-sd/1", &Applied::default())
        );
        // And an upscale as A1111's Extras tab says it.
        let mut upscaled = params.clone();
        upscaled.output.upscale = Some(pixelfarm_core::ScaleFactor::parse(2.0).unwrap());
        assert!(
            a1111_parameters(&upscaled, "sd15", "candle-sd/1", &Applied::default()).ends_with(
                "Renderer: candle-sd/1, Postprocess upscale by: 2, Postprocess upscaler: Lanczos"
            )
        );

        // LoRAs as A1111 writes them: tags after the prompt, short hashes at the end.
        let lora = |name: &str, weight: f64, sha: char| AppliedLora {
            name: ModelName::parse(name).unwrap(),
            weight: LoraWeight::parse(weight).unwrap(),
            sha256: sha.to_string().repeat(64),
        };
        let text = a1111_parameters(
            &params,
            "sd15",
            "candle-sd/1",
            &Applied {
                loras: vec![lora("brand", 0.8, 'a'), lora("stripes", -0.5, 'b')],
                controlnets: Vec::new(),
            },
        );
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].ends_with(" <lora:brand:0.8> <lora:stripes:-0.5>"),
            "{text}"
        );
        assert!(
            lines
                .last()
                .unwrap()
                .ends_with(r#", Lora hashes: "brand: aaaaaaaaaaaa, stripes: bbbbbbbbbbbb""#),
            "{text}"
        );

        // ControlNets as A1111's ControlNet extension writes them, one entry each.
        let mut controlled = params.clone();
        controlled.control = serde_json::from_str(
            r#"[{"model": "canny", "image": {"key": "k"}, "preprocess": "canny"},
                {"model": "depth", "image": {"key": "d"}, "weight": 0.5, "start": 0.25, "end": 0.75}]"#,
        )
        .unwrap();
        let net = |name: &str, sha: char| AppliedControlNet {
            name: ModelName::parse(name).unwrap(),
            sha256: sha.to_string().repeat(64),
        };
        let applied = Applied {
            loras: Vec::new(),
            controlnets: vec![net("canny", 'c'), net("depth", 'd')],
        };
        let text = a1111_parameters(&controlled, "sd15", "candle-sd/1", &applied);
        assert!(
            text.ends_with(concat!(
                r#", ControlNet 0: "Module: canny, Model: canny [cccccccc], Weight: 1, Resize Mode: Just Resize, Guidance Start: 0, Guidance End: 1""#,
                r#", ControlNet 1: "Module: none, Model: depth [dddddddd], Weight: 0.5, Resize Mode: Just Resize, Guidance Start: 0.25, Guidance End: 0.75""#,
            )),
            "{text}"
        );
    }
}
