//! Content credentials read back by the `c2pa` crate in every format, and their determinism.

use pixelfarm_core::{ImageFormat, OutputSpec, Quality, RgbImage};

use super::*;
use crate::PngMetadata;
use crate::output::{decode_rgb, encode};
use crate::verify::{DEVELOPMENT_CA, read, xmp_digital_source_type};

const MODEL_SHA: &str = "5f2b4c1a9e0d7c3b8a6f4e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b7a6f5e4d3c2b";

fn image(w: u32, h: u32) -> RgbImage {
    let rgb = (0..w * h)
        .flat_map(|i| [(i * 7) as u8, (i * 13) as u8, (i / w * 3) as u8])
        .collect();
    RgbImage {
        width: w,
        height: h,
        rgb,
    }
}

fn spec(format: ImageFormat, quality: Option<u32>) -> OutputSpec {
    OutputSpec {
        format,
        quality: quality.map(|q| Quality::parse(q).unwrap()),
        ..OutputSpec::default()
    }
}

fn generation(source: DigitalSource) -> Generation<'static> {
    Generation {
        model: "sd15",
        model_sha256: MODEL_SHA,
        source,
    }
}

fn signed(img: &RgbImage, spec: &OutputSpec, signer: &ContentSigner) -> (Vec<u8>, String) {
    let meta = PngMetadata {
        parameters: "a lighthouse\nSteps: 20, Seed: 7".into(),
        provenance_json: "{\"seed\":7}".into(),
    };
    let encoded = encode(img, spec, &meta).unwrap();
    embed(
        &encoded,
        spec.format,
        (img.width, img.height),
        &generation(DigitalSource::TrainedAlgorithmicMedia),
        signer,
    )
    .unwrap()
}

/// Every format the worker writes, lossless and lossy, and sizes whose manifests straddle a
/// CBOR integer step.
fn cases() -> Vec<(OutputSpec, RgbImage)> {
    vec![
        (spec(ImageFormat::Png, None), image(64, 48)),
        (spec(ImageFormat::Png, None), image(3, 200)),
        (spec(ImageFormat::Jpeg, Some(90)), image(64, 48)),
        (spec(ImageFormat::Webp, None), image(40, 24)),
        (spec(ImageFormat::Webp, Some(60)), image(33, 17)),
    ]
}

#[test]
fn every_format_carries_a_manifest_the_c2pa_reader_validates() {
    let signer = ContentSigner::development();
    for (spec, img) in cases() {
        let (bytes, label) = signed(&img, &spec, &signer);
        let what = format!("{:?} {}x{}", spec.format, img.width, img.height);
        assert_eq!(ImageFormat::sniff(&bytes), Some(spec.format), "{what}");
        let v = read(&bytes, spec.format, None).unwrap().expect(&what);
        assert_eq!(v.state, "Valid", "{what}: {v:?}");
        assert!(v.failures.is_empty(), "{what}: {v:?}");
        assert_eq!(v.label, label, "{what}");
        assert_eq!(v.action, "c2pa.created", "{what}");
        assert_eq!(
            v.digital_source_type,
            DigitalSource::TrainedAlgorithmicMedia.uri(),
            "{what}"
        );
        assert_eq!(
            (v.model.as_str(), v.model_sha256.as_str()),
            ("sd15", MODEL_SHA)
        );
        assert!(v.signer.contains("TEST ONLY"), "{what}: {v:?}");
        // Trusting the development CA, the signer is trusted too.
        let trusted = read(&bytes, spec.format, Some(DEVELOPMENT_CA))
            .unwrap()
            .unwrap();
        assert_eq!(trusted.state, "Trusted", "{what}: {trusted:?}");
        // XMP for tools that read only that, and the pixels are untouched.
        assert_eq!(
            xmp_digital_source_type(&bytes).as_deref(),
            Some(DigitalSource::TrainedAlgorithmicMedia.uri()),
            "{what}"
        );
        let plain = encode(
            &img,
            &spec,
            &PngMetadata {
                parameters: "a lighthouse\nSteps: 20, Seed: 7".into(),
                provenance_json: "{\"seed\":7}".into(),
            },
        )
        .unwrap();
        assert_eq!(
            decode_rgb(&bytes).unwrap(),
            decode_rgb(&plain).unwrap(),
            "{what}"
        );
    }
}

#[test]
fn the_same_image_signs_to_the_same_bytes() {
    let signer = ContentSigner::development();
    for (spec, img) in cases() {
        let a = signed(&img, &spec, &signer);
        let b = signed(&img, &spec, &ContentSigner::development());
        assert_eq!(a, b, "{:?}", spec.format);
    }
}

#[test]
fn a_changed_byte_or_another_model_breaks_or_changes_the_manifest() {
    let signer = ContentSigner::development();
    let (spec, img) = cases().remove(0);
    let (mut bytes, _) = signed(&img, &spec, &signer);
    // The last byte (IEND's CRC) is covered by the data hash.
    *bytes.last_mut().unwrap() ^= 1;
    let v = read(&bytes, spec.format, None).unwrap().unwrap();
    assert_eq!(v.state, "Invalid", "{v:?}");
    assert!(
        v.failures
            .iter()
            .any(|f| f == "assertion.dataHash.mismatch"),
        "{v:?}"
    );

    let encoded = encode(
        &img,
        &spec,
        &PngMetadata {
            parameters: String::new(),
            provenance_json: String::new(),
        },
    )
    .unwrap();
    let test_pattern = embed(
        &encoded,
        spec.format,
        (img.width, img.height),
        &generation(DigitalSource::AlgorithmicMedia),
        &signer,
    )
    .unwrap()
    .0;
    let v = read(&test_pattern, spec.format, None).unwrap().unwrap();
    assert_eq!(v.digital_source_type, DigitalSource::AlgorithmicMedia.uri());
}

#[test]
fn an_image_without_credentials_reads_as_none() {
    let (spec, img) = cases().remove(2);
    let plain = encode(
        &img,
        &spec,
        &PngMetadata {
            parameters: String::new(),
            provenance_json: String::new(),
        },
    )
    .unwrap();
    assert_eq!(read(&plain, spec.format, None).unwrap(), None);
    assert_eq!(xmp_digital_source_type(&plain), None);
}
