//! The few CBOR items a C2PA manifest is made of (RFC 8949), written in one fixed order: the
//! manifest's bytes are a function of its content alone.

/// A CBOR item to encode. Maps keep the order they are given in.
#[derive(Debug, Clone)]
pub(super) enum Cbor {
    /// Unsigned integer (major type 0).
    Uint(u64),
    /// Negative integer `-1 - n` (major type 1), stored as `n`.
    Neg(u64),
    /// Byte string.
    Bytes(Vec<u8>),
    /// UTF-8 text.
    Text(String),
    /// Array.
    Array(Vec<Cbor>),
    /// Map, in this order.
    Map(Vec<(Cbor, Cbor)>),
    /// Tagged item.
    Tag(u64, Box<Cbor>),
    /// `null`.
    Null,
}

impl Cbor {
    /// A text item.
    pub(super) fn text(s: &str) -> Cbor {
        Cbor::Text(s.to_string())
    }

    /// A map with text keys, in the order given.
    pub(super) fn map<const N: usize>(entries: [(&str, Cbor); N]) -> Cbor {
        Cbor::Map(
            entries
                .into_iter()
                .map(|(k, v)| (Cbor::text(k), v))
                .collect(),
        )
    }

    /// The encoding of this item.
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Cbor::Uint(n) => head(out, 0, *n),
            Cbor::Neg(n) => head(out, 1, *n),
            Cbor::Bytes(b) => {
                head(out, 2, b.len() as u64);
                out.extend_from_slice(b);
            }
            Cbor::Text(s) => {
                head(out, 3, s.len() as u64);
                out.extend_from_slice(s.as_bytes());
            }
            Cbor::Array(items) => {
                head(out, 4, items.len() as u64);
                for i in items {
                    i.write(out);
                }
            }
            Cbor::Map(entries) => {
                head(out, 5, entries.len() as u64);
                for (k, v) in entries {
                    k.write(out);
                    v.write(out);
                }
            }
            Cbor::Tag(tag, item) => {
                head(out, 6, *tag);
                item.write(out);
            }
            Cbor::Null => out.push(0xf6),
        }
    }
}

/// The initial byte(s) of an item: major type and argument, in the shortest form.
fn head(out: &mut Vec<u8>, major: u8, n: u64) {
    let m = major << 5;
    match n {
        0..=23 => out.push(m | n as u8),
        24..=0xff => out.extend([m | 24, n as u8]),
        0x100..=0xffff => {
            out.push(m | 25);
            out.extend((n as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(m | 26);
            out.extend((n as u32).to_be_bytes());
        }
        _ => {
            out.push(m | 27);
            out.extend(n.to_be_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_as_rfc_8949_appendix_a() {
        let hex = |c: Cbor| hex_string(&c.encode());
        assert_eq!(hex(Cbor::Uint(0)), "00");
        assert_eq!(hex(Cbor::Uint(23)), "17");
        assert_eq!(hex(Cbor::Uint(24)), "1818");
        assert_eq!(hex(Cbor::Uint(1000)), "1903e8");
        assert_eq!(hex(Cbor::Uint(1_000_000)), "1a000f4240");
        assert_eq!(hex(Cbor::Uint(1_000_000_000_000)), "1b000000e8d4a51000");
        assert_eq!(hex(Cbor::Neg(7)), "27"); // -8
        assert_eq!(hex(Cbor::text("IETF")), "6449455446");
        assert_eq!(hex(Cbor::Bytes(vec![1, 2, 3, 4])), "4401020304");
        assert_eq!(
            hex(Cbor::Array(vec![Cbor::Uint(1), Cbor::Uint(2)])),
            "820102"
        );
        assert_eq!(
            hex(Cbor::map([("a", Cbor::Uint(1)), ("b", Cbor::Null)])),
            "a26161016162f6"
        );
        assert_eq!(hex(Cbor::Tag(18, Box::new(Cbor::Null))), "d2f6");
    }

    fn hex_string(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }
}
