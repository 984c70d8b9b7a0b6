//! The key that signs content credentials: an Ed25519 private key and the X.509 certificate chain
//! that names it. Ed25519 signatures are deterministic (RFC 8032), so the same claim signed twice
//! gives the same bytes.

use base64::Engine;
use ed25519_dalek::pkcs8::DecodePrivateKey;
use ed25519_dalek::{Signer, SigningKey};
use hmac::{Hmac, Mac};
use pixelfarm_core::{Error, Result};
use sha2::{Digest, Sha256};

/// The development key's certificate chain (signer, then its CA): TEST ONLY, trusted by nobody;
/// its private key is public (`services/image/credentials/README.md`).
const DEVELOPMENT_CHAIN: &str = include_str!("../../credentials/cert-chain.pem");
/// The development key's Ed25519 private key: TEST ONLY.
const DEVELOPMENT_KEY: &str = include_str!("../../credentials/key.pem");

/// The DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410), followed by the 32-byte key.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Signs C2PA claims: an Ed25519 key and its certificate chain.
#[derive(Clone)]
pub struct ContentSigner {
    key: SigningKey,
    /// DER certificates, the signer's first.
    chain: Vec<Vec<u8>>,
    /// sha256 (hex) of the signer's certificate: which key signed, in the provenance record.
    fingerprint: String,
    /// Whether this is the shipped development key.
    development: bool,
}

impl std::fmt::Debug for ContentSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("ContentSigner")
            .field("fingerprint", &self.fingerprint)
            .field("development", &self.development)
            .finish_non_exhaustive()
    }
}

impl ContentSigner {
    /// A signer from a PEM certificate chain (the signer's certificate first, then the CAs that
    /// issued it) and the PEM (PKCS#8) Ed25519 private key of the first certificate.
    ///
    /// # Errors
    /// `Invalid` naming what is wrong: no certificate, a block that is not base64, a key that is
    /// not an Ed25519 PKCS#8 key, or a key that does not match the first certificate.
    pub fn from_pem(cert_chain: &str, private_key: &str) -> Result<Self> {
        Self::new(cert_chain, private_key, false)
    }

    /// The development signer shipped in the binary: TEST ONLY, its private key is public and no
    /// verifier trusts its CA. Used where content credentials are on and no key is configured.
    pub fn development() -> Self {
        Self::new(DEVELOPMENT_CHAIN, DEVELOPMENT_KEY, true)
            .expect("the shipped development key matches its certificate")
    }

    fn new(cert_chain: &str, private_key: &str, development: bool) -> Result<Self> {
        let chain = pem_certificates(cert_chain)?;
        let key = SigningKey::from_pkcs8_pem(private_key).map_err(|e| {
            Error::invalid(format!(
                "the private key is not a PEM PKCS#8 Ed25519 key ({e}); accepted: `openssl genpkey -algorithm ed25519` output"
            ))
        })?;
        let spki = [&ED25519_SPKI_PREFIX[..], key.verifying_key().as_bytes()].concat();
        if !chain[0].windows(spki.len()).any(|w| w == spki) {
            return Err(Error::invalid(
                "the private key does not match the first certificate of the chain; accepted: the signer's certificate first, then its CAs",
            ));
        }
        let fingerprint = hex::encode(Sha256::digest(&chain[0]));
        Ok(ContentSigner {
            key,
            chain,
            fingerprint,
            development,
        })
    }

    /// sha256 (hex) of the signer's certificate.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Whether this is the shipped TEST ONLY development key.
    pub fn is_development(&self) -> bool {
        self.development
    }

    /// The certificates, DER, the signer's first.
    pub(super) fn chain(&self) -> &[Vec<u8>] {
        &self.chain
    }

    /// The Ed25519 signature of `message`.
    pub(super) fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }

    /// A 16-byte salt for the assertion `label` of the asset whose data hash is `asset_hash`:
    /// HMAC-SHA256 under the private key, so salts are the same on every run yet unguessable
    /// without the key (what C2PA salts are for: a redacted assertion's hash reveals nothing).
    pub(super) fn salt(&self, label: &str, asset_hash: &[u8]) -> [u8; 16] {
        let mut mac = <Hmac<Sha256>>::new_from_slice(self.key.as_bytes())
            .expect("HMAC takes keys of any length");
        mac.update(b"pixelfarm-c2pa-salt/v1\0");
        mac.update(label.as_bytes());
        mac.update(b"\0");
        mac.update(asset_hash);
        let out = mac.finalize().into_bytes();
        out[..16].try_into().expect("32 bytes")
    }
}

/// The DER of every `CERTIFICATE` block of `pem`, in order.
fn pem_certificates(pem: &str) -> Result<Vec<Vec<u8>>> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut out = Vec::new();
    let mut rest = pem;
    while let Some(start) = rest.find(BEGIN) {
        let body = &rest[start + BEGIN.len()..];
        let end = body.find(END).ok_or_else(|| {
            Error::invalid(format!(
                "certificate {} of the chain has no `{END}` line",
                out.len() + 1
            ))
        })?;
        let b64: String = body[..end].split_whitespace().collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| {
                Error::invalid(format!(
                    "certificate {} of the chain is not base64: {e}",
                    out.len() + 1
                ))
            })?;
        out.push(der);
        rest = &body[end + END.len()..];
    }
    if out.is_empty() {
        return Err(Error::invalid(format!(
            "the certificate chain has no `{BEGIN}` block; accepted: PEM certificates, the signer's first"
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_development_key_loads_and_signs_deterministically() {
        let s = ContentSigner::development();
        assert!(s.is_development());
        assert_eq!(s.chain().len(), 2);
        assert_eq!(s.sign(b"claim"), s.sign(b"claim"));
        assert_ne!(s.sign(b"claim"), s.sign(b"claim2"));
        assert_eq!(s.salt("a", b"h"), s.salt("a", b"h"));
        assert_ne!(s.salt("a", b"h"), s.salt("b", b"h"));
        assert!(!format!("{s:?}").contains("key:"), "{s:?}");
        let configured = ContentSigner::from_pem(DEVELOPMENT_CHAIN, DEVELOPMENT_KEY).unwrap();
        assert!(!configured.is_development());
        assert_eq!(configured.fingerprint(), s.fingerprint());
    }

    #[test]
    fn bad_pem_is_refused_naming_what_is_wrong() {
        let err =
            |chain: &str, key: &str| ContentSigner::from_pem(chain, key).unwrap_err().to_string();
        assert!(err("", DEVELOPMENT_KEY).contains("no `-----BEGIN CERTIFICATE-----` block"));
        assert!(
            err("-----BEGIN CERTIFICATE-----\nAAA", DEVELOPMENT_KEY).contains("has no `-----END")
        );
        assert!(
            err(
                "-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----",
                DEVELOPMENT_KEY
            )
            .contains("not base64")
        );
        assert!(err(DEVELOPMENT_CHAIN, "nope").contains("not a PEM PKCS#8 Ed25519 key"));
        // The CA's certificate first: the key is the signer's, not the CA's.
        let ca_first = DEVELOPMENT_CHAIN
            .split_inclusive("-----END CERTIFICATE-----\n")
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<String>();
        assert!(err(&ca_first, DEVELOPMENT_KEY).contains("does not match the first certificate"));
    }
}
