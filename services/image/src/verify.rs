//! Content credentials read back with the `c2pa` crate's `Reader` (the implementation behind
//! `c2patool` and the Python `c2pa` package), for tests across the crates: what a verifier sees
//! in an image pixelfarm delivered.

use std::io::Cursor;

use pixelfarm_core::{ImageFormat, Result};

use crate::credentials::{MODEL_PARAMETER, MODEL_SHA256_PARAMETER};

/// The TEST ONLY development CA, for verifications that trust it.
pub const DEVELOPMENT_CA: &str = include_str!("../credentials/ca.pem");

/// What a C2PA verifier reports about an image.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    /// `Invalid`, `Valid` (signature and bindings check out) or `Trusted` (and the signer's CA is
    /// a trust anchor).
    pub state: String,
    /// Codes of the validation failures (empty when valid).
    pub failures: Vec<String>,
    /// The active manifest's label.
    pub label: String,
    /// The first action (`c2pa.created`).
    pub action: String,
    /// Its `digitalSourceType`.
    pub digital_source_type: String,
    /// Its model name and sha256 parameters.
    pub model: String,
    #[allow(missing_docs)]
    pub model_sha256: String,
    /// The signer certificate's common name.
    pub signer: String,
}

/// The content credentials of `bytes` in `format` as the `c2pa` crate reads and validates them,
/// trusting `trust_anchor` (PEM) when given; `None` when the image carries no manifest.
///
/// # Errors
/// `Invalid` when the reader fails on the image for another reason than a missing manifest.
pub fn read(
    bytes: &[u8],
    format: ImageFormat,
    trust_anchor: Option<&str>,
) -> Result<Option<Verified>> {
    let settings = serde_json::json!({
        "verify": { "verify_trust": trust_anchor.is_some() },
        "trust": { "user_anchors": trust_anchor },
    });
    let invalid = |e: c2pa::Error| pixelfarm_core::Error::invalid(format!("c2pa reader: {e}"));
    let context = c2pa::Context::new()
        .with_settings(settings)
        .map_err(invalid)?;
    let reader = match c2pa::Reader::from_context(context)
        .with_stream(format.content_type(), Cursor::new(bytes))
    {
        Ok(r) => r,
        Err(c2pa::Error::JumbfNotFound) => return Ok(None),
        Err(e) => return Err(invalid(e)),
    };
    let json: serde_json::Value = serde_json::from_str(&reader.json())
        .map_err(|e| pixelfarm_core::Error::invalid(format!("c2pa reader json: {e}")))?;
    let label = json["active_manifest"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let manifest = &json["manifests"][&label];
    let actions = manifest["assertions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["label"] == "c2pa.actions.v2")
        .map(|a| a["data"]["actions"][0].clone())
        .unwrap_or_default();
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    let failures = reader
        .validation_status()
        .unwrap_or_default()
        .iter()
        .map(|s| s.code().to_string())
        .collect();
    Ok(Some(Verified {
        state: format!("{:?}", reader.validation_state()),
        failures,
        label,
        action: text(&actions["action"]),
        digital_source_type: text(&actions["digitalSourceType"]),
        model: text(&actions["parameters"][MODEL_PARAMETER]),
        model_sha256: text(&actions["parameters"][MODEL_SHA256_PARAMETER]),
        signer: text(&manifest["signature_info"]["common_name"]),
    }))
}

/// The value of the XMP `Iptc4xmpExt:DigitalSourceType` attribute anywhere in `bytes`.
pub fn xmp_digital_source_type(bytes: &[u8]) -> Option<String> {
    let key = b"Iptc4xmpExt:DigitalSourceType=\"";
    let start = bytes.windows(key.len()).position(|w| w == key)? + key.len();
    let len = bytes[start..].iter().position(|&b| b == b'"')?;
    String::from_utf8(bytes[start..start + len].to_vec()).ok()
}
