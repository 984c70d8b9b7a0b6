//! `defaults.loras` with variables: a LoRA's `name` or `weight` may be a whole `{var}` of `vars`,
//! so a prompt template's product sweeps LoRAs and their weights like any other axis. Each
//! variant's LoRAs are made when its jobs are read, from values parsed once here.

use serde::de::{self, Deserialize, Deserializer, IntoDeserializer, MapAccess, Visitor};
use std::collections::BTreeMap;
use std::marker::PhantomData;

use super::errors::cross_error;
use super::vars::placeholder;
use crate::Result;
use crate::params::{LoraSpec, LoraWeight, Loras, ModelName};

/// A field of a `defaults.loras` entry as written: a value, or a `{var}` placeholder. YAML reads
/// an unquoted `{w}` as a mapping of one key without a value; that spelling is the placeholder
/// too, so `weight: {w}` and `weight: "{w}"` mean the same.
#[derive(Debug, Clone)]
pub(super) enum Field<T> {
    Value(T),
    Var(String),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Field<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(FieldVisitor(PhantomData))
    }
}

struct FieldVisitor<T>(PhantomData<T>);

fn var_name<E: de::Error>(name: &str) -> std::result::Result<String, E> {
    placeholder(name).map(str::to_string).map_err(E::custom)
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for FieldVisitor<T> {
    type Value = Field<T>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a value or a `{variable}` of `vars`")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<Field<T>, E> {
        match v.strip_prefix('{').and_then(|r| r.strip_suffix('}')) {
            Some(name) => var_name(name).map(Field::Var),
            None => T::deserialize(v.into_deserializer()).map(Field::Value),
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> std::result::Result<Field<T>, E> {
        T::deserialize(v.into_deserializer()).map(Field::Value)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<Field<T>, E> {
        T::deserialize(v.into_deserializer()).map(Field::Value)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<Field<T>, E> {
        T::deserialize(v.into_deserializer()).map(Field::Value)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Field<T>, A::Error> {
        let bad =
            || de::Error::custom("is a mapping; accepted: a value or a `{variable}` of `vars`");
        let name: String = map.next_key()?.ok_or_else(bad)?;
        let value: Option<de::IgnoredAny> = map.next_value()?;
        if value.is_some() || map.next_key::<de::IgnoredAny>()?.is_some() {
            return Err(bad());
        }
        var_name(&name).map(Field::Var)
    }
}

/// A `defaults.loras` entry as written.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLora {
    name: Field<ModelName>,
    weight: Field<LoraWeight>,
}

/// A field of a LoRA entry resolved against `vars`: its value, or a variable's index (in the
/// sorted names) with its values parsed.
#[derive(Debug, Clone)]
pub(super) enum Slot<T> {
    Value(T),
    Var(usize, Vec<T>),
}

impl<T: Clone> Slot<T> {
    fn pick(&self, choice: &[usize]) -> T {
        match self {
            Slot::Value(v) => v.clone(),
            Slot::Var(i, values) => values[choice[*i]].clone(),
        }
    }

    fn var(&self) -> Option<usize> {
        match self {
            Slot::Value(_) => None,
            Slot::Var(i, _) => Some(*i),
        }
    }
}

/// `defaults.loras`: one set for every job, or a set made per variant of the template.
#[derive(Debug, Clone)]
pub(super) enum LoraPlan {
    Fixed(Loras),
    PerVariant(Vec<(Slot<ModelName>, Slot<LoraWeight>)>),
}

impl LoraPlan {
    /// `defaults.loras` of the manifest `text`, its placeholders resolved against `vars` and each
    /// value a placeholder takes parsed (a bad value is named under `vars.<name>`).
    pub(super) fn new(
        text: &str,
        raw: Option<Vec<RawLora>>,
        vars: &BTreeMap<String, Vec<String>>,
    ) -> Result<Self> {
        let raw = raw.unwrap_or_default();
        if raw.len() > Loras::MAX {
            return Err(cross_error(
                text,
                "defaults.loras",
                format!(
                    "has {} entries; accepted: at most {}",
                    raw.len(),
                    Loras::MAX
                ),
            ));
        }
        let mut slots = Vec::with_capacity(raw.len());
        for (i, l) in raw.into_iter().enumerate() {
            let name = resolve(
                text,
                &format!("defaults.loras[{i}].name"),
                l.name,
                vars,
                |v| ModelName::parse(v),
            )?;
            let weight = resolve(
                text,
                &format!("defaults.loras[{i}].weight"),
                l.weight,
                vars,
                |v| {
                    v.trim()
                        .parse::<f64>()
                        .map_err(|_| {
                            crate::Error::invalid(format!(
                                "is `{v}`; accepted: a number from -{0} to {0}",
                                LoraWeight::MAX
                            ))
                        })
                        .and_then(LoraWeight::parse)
                },
            )?;
            slots.push((name, weight));
        }
        if slots
            .iter()
            .all(|(n, w)| n.var().is_none() && w.var().is_none())
        {
            let fixed = slots.iter().map(|(n, w)| spec(n, w, &[])).collect();
            return Loras::new(fixed)
                .map(LoraPlan::Fixed)
                .map_err(|e| cross_error(text, "defaults.loras", e.to_string()));
        }
        Ok(LoraPlan::PerVariant(slots))
    }

    /// Whether the variable at `index` (in the sorted names) is a name or weight here.
    pub(super) fn uses(&self, index: usize) -> bool {
        match self {
            LoraPlan::Fixed(_) => false,
            LoraPlan::PerVariant(slots) => slots
                .iter()
                .any(|(n, w)| n.var() == Some(index) || w.var() == Some(index)),
        }
    }

    /// The set every job shares; `None` when it depends on the variant.
    pub(super) fn fixed(&self) -> Option<&Loras> {
        match self {
            LoraPlan::Fixed(l) => Some(l),
            LoraPlan::PerVariant(_) => None,
        }
    }

    /// The LoRAs of the variant choosing value `choice[i]` of each variable `i`.
    ///
    /// # Errors
    /// `Invalid` when the variant names a LoRA twice.
    pub(super) fn for_variant(&self, choice: &[usize]) -> Result<Loras> {
        match self {
            LoraPlan::Fixed(l) => Ok(l.clone()),
            LoraPlan::PerVariant(slots) => {
                Loras::new(slots.iter().map(|(n, w)| spec(n, w, choice)).collect())
            }
        }
    }

    /// [`LoraPlan::for_variant`] of a variant it accepted before (a template's jobs, built
    /// again when they are read).
    pub(super) fn checked(&self, choice: &[usize]) -> Loras {
        match self {
            LoraPlan::Fixed(l) => l.clone(),
            LoraPlan::PerVariant(slots) => {
                Loras::checked(slots.iter().map(|(n, w)| spec(n, w, choice)).collect())
            }
        }
    }
}

fn spec(name: &Slot<ModelName>, weight: &Slot<LoraWeight>, choice: &[usize]) -> LoraSpec {
    LoraSpec {
        name: name.pick(choice),
        weight: weight.pick(choice),
    }
}

/// A field as a [`Slot`]: a placeholder must name a variable, each of whose values `parse` takes.
fn resolve<T>(
    text: &str,
    path: &str,
    field: Field<T>,
    vars: &BTreeMap<String, Vec<String>>,
    parse: impl Fn(&str) -> Result<T>,
) -> Result<Slot<T>> {
    let name = match field {
        Field::Value(v) => return Ok(Slot::Value(v)),
        Field::Var(name) => name,
    };
    let Some(index) = vars.keys().position(|k| *k == name) else {
        return Err(cross_error(
            text,
            path,
            format!(
                "placeholder `{{{name}}}` has no entry in `vars`; accepted: one of the names under `vars`"
            ),
        ));
    };
    let values = vars[&name]
        .iter()
        .map(|v| {
            parse(v).map_err(|e| {
                cross_error(
                    text,
                    &format!("vars.{name}"),
                    format!("has a value used as `{path}` that {e}"),
                )
            })
        })
        .collect::<Result<Vec<T>>>()?;
    Ok(Slot::Var(index, values))
}
