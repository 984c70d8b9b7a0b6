//! The train / validation / test split of a sample: a hash of its variant key against the
//! `--split` fractions, so every seed of a variant lands in the same split.

use pixelfarm_core::sha256_hex;
use std::fmt;

/// One of the three splits, in the order `--split` names their fractions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Split {
    #[allow(missing_docs)]
    Train,
    #[allow(missing_docs)]
    Validation,
    #[allow(missing_docs)]
    Test,
}

impl Split {
    /// Every split, in `--split` order.
    pub const ALL: [Split; 3] = [Split::Train, Split::Validation, Split::Test];

    /// The name of its folder or file (`train`, `validation`, `test`): the names Hugging Face
    /// `datasets` takes as split names.
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Validation => "validation",
            Split::Test => "test",
        }
    }

    /// Its position in [`Split::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The `--split` fractions of train, validation and test: non-negative, summing to 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SplitRatios([f64; 3]);

impl Default for SplitRatios {
    /// 80 % train, 10 % validation, 10 % test.
    fn default() -> Self {
        SplitRatios([0.8, 0.1, 0.1])
    }
}

/// How far from 1 the fractions' sum may be (decimal fractions do not add up exactly).
const SUM_TOLERANCE: f64 = 1e-6;

impl SplitRatios {
    /// `TRAIN,VALIDATION,TEST`, e.g. `0.8,0.1,0.1`.
    ///
    /// # Errors
    /// A message naming `--split`, what was wrong and what is accepted.
    pub fn parse(s: &str) -> Result<Self, String> {
        let refuse = |why: String| {
            format!(
                "--split `{s}` {why}; accepted: three non-negative numbers TRAIN,VALIDATION,TEST that sum to 1, e.g. 0.8,0.1,0.1"
            )
        };
        let parts: Vec<&str> = s.split(',').map(str::trim).collect();
        if parts.len() != 3 {
            return Err(refuse(format!("has {} parts", parts.len())));
        }
        let mut ratios = [0.0; 3];
        for (slot, (part, split)) in ratios.iter_mut().zip(parts.iter().zip(Split::ALL)) {
            *slot = match part.parse::<f64>() {
                Ok(v) if v.is_finite() && v >= 0.0 => v,
                _ => return Err(refuse(format!("gives {split} `{part}`"))),
            };
        }
        let sum: f64 = ratios.iter().sum();
        if (sum - 1.0).abs() > SUM_TOLERANCE {
            return Err(refuse(format!("sums to {sum}")));
        }
        Ok(SplitRatios(ratios))
    }

    /// The split of a sample whose variant key is `variant_key`: the first 8 bytes of
    /// sha256(`variant_key`), read as a big-endian integer `h`, fall in train when
    /// `h / 2^64 < TRAIN`, in validation when below `TRAIN + VALIDATION`, and in test otherwise.
    pub fn split_of(&self, variant_key: &str) -> Split {
        let hex = sha256_hex(variant_key.as_bytes());
        let h = u128::from(u64::from_str_radix(&hex[..16], 16).expect("sha256 hex is hex"));
        // The cuts in units of 2^-64, as integers, so a fraction of 1 takes every hash.
        let mut cut = 0.0;
        for split in [Split::Train, Split::Validation] {
            cut += self.0[split.index()];
            if h < (cut * 2f64.powi(64)) as u128 {
                return split;
            }
        }
        Split::Test
    }
}

/// The variant key of a job: its key with a trailing `#` and digits (the seed's index, as a
/// template's jobs end, `color=red,shape=circle@512x512#3`) removed. Every seed of one variant
/// (the same values of the variables at the same size) has the same variant key; an explicit
/// job's key without such an ending is its own variant key.
pub fn variant_key(job_key: &str) -> &str {
    match job_key.rsplit_once('#') {
        Some((stem, index)) if !index.is_empty() && index.bytes().all(|b| b.is_ascii_digit()) => {
            stem
        }
        _ => job_key,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_seed_of_a_variant_lands_in_the_same_split() {
        let ratios = SplitRatios::default();
        let mut seen = [0usize; 3];
        for v in 0..300 {
            let stem = format!("color=c{v},shape=circle@64x64");
            let split = ratios.split_of(variant_key(&format!("{stem}#0")));
            for seed in 1..5 {
                let key = format!("{stem}#{seed}");
                assert_eq!(variant_key(&key), stem);
                assert_eq!(ratios.split_of(variant_key(&key)), split, "{key}");
            }
            seen[split.index()] += 1;
        }
        // 300 variants at 80/10/10: each split gets its share, roughly.
        assert!((200..=270).contains(&seen[0]), "{seen:?}");
        assert!(
            (10..=60).contains(&seen[1]) && (10..=60).contains(&seen[2]),
            "{seen:?}"
        );
    }

    #[test]
    fn the_rule_is_the_documented_hash() {
        // sha256("a@8x8") starts 0xd658…, 0.837 of the range: validation at 80/10/10, train
        // at 85/10/5, test when train and validation take nothing.
        assert_eq!(&sha256_hex(b"a@8x8")[..4], "d658");
        assert_eq!(SplitRatios::default().split_of("a@8x8"), Split::Validation);
        let wider = SplitRatios::parse("0.85,0.1,0.05").unwrap();
        assert_eq!(wider.split_of("a@8x8"), Split::Train);
        let all_test = SplitRatios::parse("0,0,1").unwrap();
        assert_eq!(all_test.split_of("a@8x8"), Split::Test);
        let all_train = SplitRatios::parse("1,0,0").unwrap();
        for v in 0..100 {
            assert_eq!(all_train.split_of(&format!("v{v}")), Split::Train);
        }
    }

    #[test]
    fn explicit_keys_are_their_own_variant() {
        assert_eq!(variant_key("banner"), "banner");
        assert_eq!(variant_key("prompt=a cat@64x64"), "prompt=a cat@64x64");
        assert_eq!(variant_key("cat#"), "cat#");
        assert_eq!(variant_key("cat#x1"), "cat#x1");
        assert_eq!(variant_key("cat#12"), "cat");
    }

    #[test]
    fn bad_fractions_are_refused_naming_the_flag() {
        for (bad, why) in [
            ("0.8,0.2", "has 2 parts"),
            ("0.8,0.1,0.1,0", "has 4 parts"),
            ("0.8,x,0.1", "gives validation `x`"),
            ("1.2,-0.1,-0.1", "gives validation `-0.1`"),
            ("0.5,0.5,0.5", "sums to 1.5"),
            ("NaN,0,1", "gives train `NaN`"),
        ] {
            let e = SplitRatios::parse(bad).unwrap_err();
            assert!(e.starts_with(&format!("--split `{bad}` ")), "{e}");
            assert!(
                e.contains(why) && e.contains("accepted: three non-negative"),
                "{e}"
            );
        }
        assert_eq!(
            SplitRatios::parse(" 0.7, 0.2 ,0.1").unwrap(),
            SplitRatios([0.7, 0.2, 0.1])
        );
    }
}
