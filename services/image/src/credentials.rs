//! Content credentials: a signed C2PA manifest (C2PA 2.1, claim v2) stating that the image was
//! made by a generative model, and the IPTC `DigitalSourceType` in XMP for tools that read only
//! that.
//!
//! The manifest is written here rather than by the `c2pa` crate's builder because its bytes must
//! be a function of the image alone: the builder salts every assertion from the operating system's
//! random source and names the manifest with a random UUID, so the same image would be signed
//! differently on every run. Here every input is fixed:
//! - the manifest label and instance id are derived from the image's data hash and the signer;
//! - assertion salts are an HMAC of the data hash under the signing key (unguessable, as salts
//!   must be, and the same on every run);
//! - no time anywhere: no `when` in the action, no signing time, no time-stamp authority;
//! - Ed25519 signatures are deterministic; the CBOR is written in one fixed order.
//!
//! The `c2pa` crate's `Reader` (and `c2patool`, the Python `c2pa` package) verify what this
//! writes: the tests read every format back with it.

mod cbor;
mod container;
mod jumbf;
mod signer;
#[cfg(test)]
mod tests;

use pixelfarm_core::{Error, ImageFormat, Result};
use sha2::{Digest, Sha256};

pub use signer::ContentSigner;

use cbor::Cbor;
use jumbf::AssertionBox;

/// Name and version of the claim generator and of the action's software agent.
const GENERATOR: &str = "pixelfarm";
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// How the pixels came to be, as an IPTC digital source type
/// (<https://cv.iptc.org/newscodes/digitalsourcetype/>).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigitalSource {
    /// Made by a model trained on sampled content (every diffusion model).
    TrainedAlgorithmicMedia,
    /// Made by an algorithm not trained on any data (the test-pattern renderer).
    AlgorithmicMedia,
}

impl DigitalSource {
    /// The IPTC term's URI, as C2PA and XMP write it.
    pub fn uri(self) -> &'static str {
        match self {
            DigitalSource::TrainedAlgorithmicMedia => {
                "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
            }
            DigitalSource::AlgorithmicMedia => {
                "http://cv.iptc.org/newscodes/digitalsourcetype/algorithmicMedia"
            }
        }
    }
}

/// What the credentials state about an image.
#[derive(Debug, Clone, Copy)]
pub struct Generation<'a> {
    /// The model's name (`sd15`).
    pub model: &'a str,
    /// The identity of its weights (sha256 of the files) or of the procedure.
    pub model_sha256: &'a str,
    /// How the pixels were made.
    pub source: DigitalSource,
}

/// Labels of the action parameters naming the model.
pub const MODEL_PARAMETER: &str = "org.pixelfarm.model";
/// See [`MODEL_PARAMETER`].
pub const MODEL_SHA256_PARAMETER: &str = "org.pixelfarm.model_sha256";

/// `encoded` (a `width`x`height` image as [`crate::output::encode`] writes it in `format`) with
/// the XMP digital source type and a C2PA manifest signed by `signer`; returns the bytes and the
/// manifest's label (`urn:c2pa:…`).
///
/// # Errors
/// `Invalid` when the bytes are not what the encoder writes.
pub fn embed(
    encoded: &[u8],
    format: ImageFormat,
    size: (u32, u32),
    what: &Generation<'_>,
    signer: &ContentSigner,
) -> Result<(Vec<u8>, String)> {
    let with_xmp = container::add_xmp(encoded, format, size, &xmp_packet(what.source))?;
    // The manifest's size decides the exclusion range, which the manifest states: lay it out
    // with a placeholder hash until its size no longer moves (CBOR integers grow by steps).
    let mut exclusion = 0..0;
    let layout = loop {
        let store = manifest(what, signer, &[0; 32], &exclusion).1;
        let (bytes, range) = container::add_manifest(&with_xmp, format, &store)?;
        if range == exclusion {
            break bytes;
        }
        exclusion = range;
    };
    // Everything outside the exclusion is final: hash it, and sign the manifest of that hash,
    // which has the placeholder's size.
    let mut h = Sha256::new();
    h.update(&layout[..exclusion.start]);
    h.update(&layout[exclusion.end..]);
    let hash: [u8; 32] = h.finalize().into();
    let (label, store) = manifest(what, signer, &hash, &exclusion);
    let (bytes, range) = container::add_manifest(&with_xmp, format, &store)?;
    if range != exclusion {
        return Err(Error::invalid(
            "the signed manifest's size differs from its layout's",
        ));
    }
    Ok((bytes, label))
}

/// The XMP packet stating the digital source type.
fn xmp_packet(source: DigitalSource) -> String {
    format!(
        concat!(
            "<?xpacket begin=\"\u{feff}\" id=\"W5M0MpCehiHzreSzNTczkc9d\"?>\n",
            "<x:xmpmeta xmlns:x=\"adobe:ns:meta/\">\n",
            " <rdf:RDF xmlns:rdf=\"http://www.w3.org/1999/02/22-rdf-syntax-ns#\">\n",
            "  <rdf:Description rdf:about=\"\"\n",
            "    xmlns:Iptc4xmpExt=\"http://iptc.org/std/Iptc4xmpExt/2008-02-29/\"\n",
            "    Iptc4xmpExt:DigitalSourceType=\"{}\"/>\n",
            " </rdf:RDF>\n",
            "</x:xmpmeta>\n",
            "<?xpacket end=\"r\"?>"
        ),
        source.uri()
    )
}

/// The manifest store for an asset whose data hash is `hash` with `exclusion` left out, and its
/// manifest's label.
fn manifest(
    what: &Generation<'_>,
    signer: &ContentSigner,
    hash: &[u8; 32],
    exclusion: &std::ops::Range<usize>,
) -> (String, Vec<u8>) {
    let mut id = Sha256::new();
    id.update(b"pixelfarm-c2pa-id/v1\0");
    id.update(hash);
    id.update(signer.fingerprint().as_bytes());
    let id: [u8; 32] = id.finalize().into();
    let uuid = uuid::Builder::from_random_bytes(id[..16].try_into().expect("16 bytes")).into_uuid();
    let label = format!("urn:c2pa:{uuid}");

    let assertion = |label: &'static str, content: Cbor| {
        AssertionBox::cbor(label, &content.encode(), &signer.salt(label, hash))
    };
    let assertions = [
        assertion("c2pa.actions.v2", actions(what)),
        assertion("c2pa.hash.data", data_hash(hash, exclusion)),
    ];
    let claim = Cbor::map([
        ("instanceID", Cbor::Text(format!("xmp:iid:{uuid}"))),
        ("claim_generator_info", agent()),
        (
            "signature",
            Cbor::Text(format!("self#jumbf=/c2pa/{label}/c2pa.signature")),
        ),
        (
            "created_assertions",
            Cbor::Array(
                assertions
                    .iter()
                    .map(|a| {
                        Cbor::map([
                            (
                                "url",
                                Cbor::Text(format!("self#jumbf=c2pa.assertions/{}", a.label)),
                            ),
                            ("hash", Cbor::Bytes(a.hash.to_vec())),
                        ])
                    })
                    .collect(),
            ),
        ),
        ("alg", Cbor::text("sha256")),
    ])
    .encode();
    let signature = cose_sign1(signer, &claim);
    let store = jumbf::manifest_store(&label, &assertions, &claim, &signature);
    (label, store)
}

/// `{name, version}` of pixelfarm.
fn agent() -> Cbor {
    Cbor::map([
        ("name", Cbor::text(GENERATOR)),
        ("version", Cbor::text(VERSION)),
    ])
}

/// The actions assertion: one `c2pa.created` by pixelfarm with the model, from `what.source`.
fn actions(what: &Generation<'_>) -> Cbor {
    let created = Cbor::map([
        ("action", Cbor::text("c2pa.created")),
        ("softwareAgent", agent()),
        ("digitalSourceType", Cbor::text(what.source.uri())),
        (
            "parameters",
            Cbor::map([
                (MODEL_PARAMETER, Cbor::text(what.model)),
                (MODEL_SHA256_PARAMETER, Cbor::text(what.model_sha256)),
            ]),
        ),
    ]);
    Cbor::map([("actions", Cbor::Array(vec![created]))])
}

/// The hard binding: sha256 of the file but for `exclusion`, where the manifest is.
fn data_hash(hash: &[u8; 32], exclusion: &std::ops::Range<usize>) -> Cbor {
    Cbor::map([
        (
            "exclusions",
            Cbor::Array(vec![Cbor::map([
                ("start", Cbor::Uint(exclusion.start as u64)),
                ("length", Cbor::Uint(exclusion.len() as u64)),
            ])]),
        ),
        ("name", Cbor::text("jumbf manifest")),
        ("alg", Cbor::text("sha256")),
        ("hash", Cbor::Bytes(hash.to_vec())),
        ("pad", Cbor::Bytes(Vec::new())),
    ])
}

/// `COSE_Sign1_Tagged` (RFC 9052) over `claim`, detached: EdDSA, the chain in `x5chain`
/// (protected), nothing unprotected (no time stamp, no OCSP response).
fn cose_sign1(signer: &ContentSigner, claim: &[u8]) -> Vec<u8> {
    let chain = signer.chain();
    let x5chain = match chain {
        [one] => Cbor::Bytes(one.clone()),
        many => Cbor::Array(many.iter().cloned().map(Cbor::Bytes).collect()),
    };
    // alg (1): EdDSA (-8); x5chain (33).
    let protected = Cbor::Map(vec![
        (Cbor::Uint(1), Cbor::Neg(7)),
        (Cbor::Uint(33), x5chain),
    ])
    .encode();
    let to_be_signed = Cbor::Array(vec![
        Cbor::text("Signature1"),
        Cbor::Bytes(protected.clone()),
        Cbor::Bytes(Vec::new()),
        Cbor::Bytes(claim.to_vec()),
    ])
    .encode();
    let signature = signer.sign(&to_be_signed);
    Cbor::Tag(
        18,
        Box::new(Cbor::Array(vec![
            Cbor::Bytes(protected),
            Cbor::Map(Vec::new()),
            Cbor::Null,
            Cbor::Bytes(signature.to_vec()),
        ])),
    )
    .encode()
}
