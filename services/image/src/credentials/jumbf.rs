//! JUMBF (ISO 19566-5) boxes and the C2PA manifest store built from them: a `c2pa` superbox
//! holding one manifest, which holds the assertion store, the claim and the claim's signature
//! (C2PA 2.1, "Manifest store" and "JUMBF").

use sha2::{Digest, Sha256};

/// The JUMBF type UUID of a C2PA box kind: its four-character code followed by the ISO suffix
/// `0011 0010 8000 00AA 0038 9B71`.
pub(super) fn c2pa_uuid(fourcc: &[u8; 4]) -> [u8; 16] {
    const SUFFIX: [u8; 12] = [
        0x00, 0x11, 0x00, 0x10, 0x80, 0x00, 0x00, 0xAA, 0x00, 0x38, 0x9B, 0x71,
    ];
    let mut out = [0u8; 16];
    out[..4].copy_from_slice(fourcc);
    out[4..].copy_from_slice(&SUFFIX);
    out
}

/// A box: 32-bit big-endian size (header included), type, payload.
pub(super) fn boxed(kind: &[u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.extend_from_slice(&(payload.len() as u32 + 8).to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(payload);
    out
}

/// A description box (`jumd`): type UUID, toggles, label; with a salt (a `c2sh` private box)
/// when given, as C2PA writes assertion boxes.
fn description(uuid: [u8; 16], label: &str, salt: Option<&[u8]>) -> Vec<u8> {
    // Toggles: requestable (0x01) and label present (0x02); private box present (0x10).
    let mut payload = uuid.to_vec();
    payload.push(if salt.is_some() { 0x13 } else { 0x03 });
    payload.extend_from_slice(label.as_bytes());
    payload.push(0);
    if let Some(salt) = salt {
        payload.extend(boxed(b"c2sh", salt));
    }
    boxed(b"jumd", &payload)
}

/// The payload of a superbox (`jumb`): its description, then its children.
fn superbox_payload(
    uuid: [u8; 16],
    label: &str,
    salt: Option<&[u8]>,
    children: &[&[u8]],
) -> Vec<u8> {
    let mut payload = description(uuid, label, salt);
    for c in children {
        payload.extend_from_slice(c);
    }
    payload
}

/// A superbox (`jumb`) of type `uuid` labelled `label`.
fn superbox(uuid: [u8; 16], label: &str, children: &[&[u8]]) -> Vec<u8> {
    boxed(b"jumb", &superbox_payload(uuid, label, None, children))
}

/// One CBOR assertion as stored: its box, and the hash the claim links it by (sha256 of the
/// superbox's payload, salt included, as C2PA's hashed URIs are computed).
pub(super) struct AssertionBox {
    /// The assertion's label (`c2pa.actions.v2`).
    pub(super) label: &'static str,
    /// The whole `jumb` box.
    pub(super) bytes: Vec<u8>,
    /// sha256 of the box's payload.
    pub(super) hash: [u8; 32],
}

impl AssertionBox {
    /// The CBOR assertion `label` with content `cbor`, salted with `salt` (16 bytes or more).
    pub(super) fn cbor(label: &'static str, cbor: &[u8], salt: &[u8]) -> Self {
        let content = boxed(b"cbor", cbor);
        let payload = superbox_payload(c2pa_uuid(b"cbor"), label, Some(salt), &[&content]);
        AssertionBox {
            label,
            hash: Sha256::digest(&payload).into(),
            bytes: boxed(b"jumb", &payload),
        }
    }
}

/// The manifest store holding one manifest labelled `manifest_label`: the assertions, the claim
/// (CBOR) and its signature (`COSE_Sign1_Tagged`).
pub(super) fn manifest_store(
    manifest_label: &str,
    assertions: &[AssertionBox],
    claim: &[u8],
    signature: &[u8],
) -> Vec<u8> {
    let boxes: Vec<&[u8]> = assertions.iter().map(|a| a.bytes.as_slice()).collect();
    let assertion_store = superbox(c2pa_uuid(b"c2as"), "c2pa.assertions", &boxes);
    let claim = superbox(
        c2pa_uuid(b"c2cl"),
        "c2pa.claim.v2",
        &[&boxed(b"cbor", claim)],
    );
    let signature = superbox(
        c2pa_uuid(b"c2cs"),
        "c2pa.signature",
        &[&boxed(b"cbor", signature)],
    );
    let manifest = superbox(
        c2pa_uuid(b"c2ma"),
        manifest_label,
        &[&assertion_store, &claim, &signature],
    );
    superbox(c2pa_uuid(b"c2pa"), "c2pa", &[&manifest])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxes_nest_with_their_sizes() {
        let store = manifest_store("urn:c2pa:x", &[], b"\xa0", b"\xf6");
        // The outer box spans the whole store, and its description names the C2PA store type.
        assert_eq!(
            u32::from_be_bytes(store[..4].try_into().unwrap()) as usize,
            store.len()
        );
        assert_eq!(&store[4..8], b"jumb");
        assert_eq!(&store[12..16], b"jumd");
        assert_eq!(&store[16..32], &c2pa_uuid(b"c2pa"));
        assert_eq!(store[32], 0x03);
        assert_eq!(&store[33..38], b"c2pa\0");
        let a = AssertionBox::cbor("c2pa.hash.data", b"\xa0", &[7; 16]);
        let salt_box = [&24u32.to_be_bytes()[..], b"c2sh", &[7; 16]].concat();
        assert!(a.bytes.windows(salt_box.len()).any(|w| w == salt_box));
        assert_eq!(a.hash, <[u8; 32]>::from(Sha256::digest(&a.bytes[8..])));
    }
}
