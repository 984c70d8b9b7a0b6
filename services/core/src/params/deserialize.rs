//! Deserialization through a newtype's `parse`, so a deserialized value is always an accepted one.

macro_rules! deserialize_via_parse {
    ($ty:ty, $raw:ty) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                let raw = <$raw>::deserialize(d)?;
                <$ty>::parse(raw).map_err(serde::de::Error::custom)
            }
        }
    };
}
pub(super) use deserialize_via_parse;
