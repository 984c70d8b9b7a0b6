//! LoRA adapters of a job: which registered LoRAs its render applies, each at its own weight.

use serde::{Deserialize, Deserializer, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::fmt;
use utoipa::ToSchema;

use super::deserialize::deserialize_via_parse;
use super::name::ModelName;
use crate::{Error, Result};

/// How strongly a LoRA is applied: finite, -4 to 4 (1 is the strength it was trained at, 0 leaves
/// the model as it is, negative steers away from what it learned).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, ToSchema)]
#[serde(transparent)]
pub struct LoraWeight(f64);

impl LoraWeight {
    /// Largest magnitude accepted.
    pub const MAX: f64 = 4.0;

    /// # Errors
    /// `Invalid` when not finite or outside -4..=4.
    pub fn parse(v: f64) -> Result<Self> {
        if !v.is_finite() || v.abs() > Self::MAX {
            return Err(Error::invalid(format!(
                "is {v}; accepted: a number from -{0} to {0}",
                Self::MAX
            )));
        }
        Ok(LoraWeight(v))
    }

    /// The weight.
    pub fn get(self) -> f64 {
        self.0
    }
}
deserialize_via_parse!(LoraWeight, f64);

impl fmt::Display for LoraWeight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One LoRA of a job: a name from the workers' model registry (`diffusion.loras`) and its weight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoraSpec {
    /// The LoRA's name in the registry (same rules as a model name).
    pub name: ModelName,
    /// Its weight, -4 to 4.
    pub weight: LoraWeight,
}

/// The LoRAs of a job, at most 8, each name once. Applied together: their changes
/// to the weights add up, so the order does not matter.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
#[serde(transparent)]
pub struct Loras(Vec<LoraSpec>);

impl Loras {
    /// Most LoRAs on one job.
    pub const MAX: usize = 8;

    /// # Errors
    /// `Invalid` for more than [`Self::MAX`] entries or a name given twice.
    pub fn new(loras: Vec<LoraSpec>) -> Result<Self> {
        if loras.len() > Self::MAX {
            return Err(Error::invalid(format!(
                "has {} entries; accepted: at most {}",
                loras.len(),
                Self::MAX
            )));
        }
        let mut seen = BTreeSet::new();
        for l in &loras {
            if !seen.insert(&l.name) {
                return Err(Error::invalid(format!(
                    "names `{}` twice; accepted: each LoRA once (its weights add up otherwise)",
                    l.name
                )));
            }
        }
        Ok(Loras(loras))
    }

    /// A set [`Loras::new`] accepted before (a manifest template's variant, built again when
    /// its jobs are read).
    pub(crate) fn checked(loras: Vec<LoraSpec>) -> Self {
        Loras(loras)
    }

    /// None at all.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Each LoRA with its weight, in the order written.
    pub fn iter(&self) -> std::slice::Iter<'_, LoraSpec> {
        self.0.iter()
    }

    /// The LoRAs that change the model: those of non-zero weight, sorted by name. Two jobs with
    /// the same set render with the same weights.
    pub fn effective(&self) -> Vec<&LoraSpec> {
        let mut v: Vec<&LoraSpec> = self.0.iter().filter(|l| l.weight.get() != 0.0).collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// A fingerprint of [`Self::effective`]: equal for jobs whose LoRAs make the same weights.
    pub fn fingerprint(&self) -> u64 {
        let effective = self.effective();
        if effective.is_empty() {
            return 0;
        }
        let mut h = Sha256::new();
        for l in effective {
            h.update(l.name.as_str().as_bytes());
            h.update(b"\0");
            h.update(l.weight.get().to_le_bytes());
        }
        let d = h.finalize();
        let mut b = [0u8; 8];
        b.copy_from_slice(&d[..8]);
        u64::from_le_bytes(b)
    }
}

impl<'de> Deserialize<'de> for Loras {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let v = Vec::<LoraSpec>::deserialize(d)?;
        Loras::new(v).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, weight: f64) -> LoraSpec {
        LoraSpec {
            name: ModelName::parse(name).unwrap(),
            weight: LoraWeight::parse(weight).unwrap(),
        }
    }

    #[test]
    fn weights_and_sets_are_checked() {
        for bad in [f64::NAN, f64::INFINITY, 4.01, -5.0] {
            assert!(LoraWeight::parse(bad).is_err(), "{bad}");
        }
        let e = Loras::new(vec![spec("a", 1.0), spec("a", 0.5)]).unwrap_err();
        assert!(e.to_string().contains("names `a` twice"), "{e}");
        let many = (0..9).map(|i| spec(&format!("l{i}"), 1.0)).collect();
        assert!(
            Loras::new(many)
                .unwrap_err()
                .to_string()
                .contains("at most 8")
        );
    }

    #[test]
    fn order_and_zero_weights_do_not_change_the_set() {
        let ab = Loras::new(vec![spec("a", 0.5), spec("b", 1.0)]).unwrap();
        let ba = Loras::new(vec![spec("b", 1.0), spec("a", 0.5), spec("c", 0.0)]).unwrap();
        assert_eq!(ab.fingerprint(), ba.fingerprint());
        assert_ne!(ab.fingerprint(), 0);
        let other = Loras::new(vec![spec("a", 0.6), spec("b", 1.0)]).unwrap();
        assert_ne!(ab.fingerprint(), other.fingerprint());
        assert_eq!(Loras::new(vec![spec("z", 0.0)]).unwrap().fingerprint(), 0);
        assert_eq!(Loras::default().fingerprint(), 0);
    }
}
