//! `worker.content_credentials`: the key that signs the C2PA manifests of the images
//! (README, "Getting results out").

use std::path::PathBuf;

use serde::Deserialize;

/// `worker.content_credentials` section: a PEM certificate chain and its Ed25519 private key.
/// Both empty: the TEST ONLY development key shipped in the binary signs (the worker warns at
/// start), so a fresh `pixelfarm run` delivers credentials that verify, though nobody trusts them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContentCredentialsSettings {
    /// PEM certificate chain: the signer's certificate first (Ed25519 key, key usage
    /// digitalSignature, extended key usage documentSigning or emailProtection), then its CAs.
    pub cert_file: PathBuf,
    /// PEM PKCS#8 Ed25519 private key of that certificate (`openssl genpkey -algorithm ed25519`).
    pub key_file: PathBuf,
}

impl ContentCredentialsSettings {
    /// Whether a key is configured (either file named; the worker insists on both).
    pub fn configured(&self) -> bool {
        !self.cert_file.as_os_str().is_empty() || !self.key_file.as_os_str().is_empty()
    }
}
