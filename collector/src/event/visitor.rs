//! The decoding visitor: walks one JSON object (or an array of them) once, keeping each canonical field's raw
//! text and appending unknown keys to the tags being built, without building a `serde_json::Value`.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{is_absent, push_tag, Field, FieldError, Raw, RawEvent, Scratch, Slot};

#[derive(Deserialize)]
struct Key<'a>(#[serde(borrow)] Cow<'a, str>);

pub(super) struct CollectVisitor<'t> {
    pub(super) tags: &'t mut String,
}

impl<'de> Visitor<'de> for CollectVisitor<'_> {
    type Value = RawEvent<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawEvent<'de>, A::Error> {
        collect_map(map, self.tags)
    }
}

fn collect_map<'de, A: MapAccess<'de>>(
    mut map: A,
    tags: &mut String,
) -> Result<RawEvent<'de>, A::Error> {
    let mut event = RawEvent::default();
    while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
        let value: &'de RawValue = map.next_value()?;
        match key {
            Cow::Borrowed(k) => event.take(k, Raw(value.get()), tags),
            // A key with escapes is never one of our names: keep it as a tag.
            Cow::Owned(k) => push_tag(tags, &k, value.get()),
        }
    }
    Ok(event)
}

/// Takes the `members` of a nested object (Suricata's `flow`, `http`, `alert`) as the fields they name, after
/// any top-level key for the same field. Not an object, or malformed: nothing is taken (it is kept in tags).
pub(super) fn collect_nested<'de>(
    value: Raw<'de>,
    members: &[(&str, Field)],
    event: &mut RawEvent<'de>,
) {
    if !value.get().starts_with('{') {
        return;
    }
    let mut de = serde_json::Deserializer::from_str(value.get());
    let Ok(pairs) = de.deserialize_map(PairsVisitor) else {
        return;
    };
    for (k, v) in pairs {
        let v = Raw(v.get());
        if is_absent(v) {
            continue;
        }
        if let Some((_, field)) = members.iter().find(|(m, _)| *m == k) {
            let slot = Slot {
                key: k,
                canonical: false,
                seconds: false,
                value: v,
            };
            event.set_weak(*field, slot);
        }
    }
}

/// The members of an object as borrowed (key, raw value) pairs; keys with escapes are left out.
struct PairsVisitor;

impl<'de> Visitor<'de> for PairsVisitor {
    type Value = Vec<(&'de str, &'de RawValue)>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut pairs = Vec::new();
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            let value: &'de RawValue = map.next_value()?;
            if let Cow::Borrowed(k) = key {
                pairs.push((k, value));
            }
        }
        Ok(pairs)
    }
}

/// serde_json's walk of a whole array of events: [`super::scan::for_each_in_array`] asks it for the error of
/// a body it found malformed, so that the error is the same as this walk's.
pub(super) fn for_each_in_array<'de>(
    text: &'de str,
    scratch: &mut Scratch,
    f: impl FnMut(usize, Result<RawEvent<'de>, FieldError>, &mut Scratch),
) -> Result<(), serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    de.deserialize_seq(ArrayVisitor { scratch, f })?;
    de.end()
}

struct ArrayVisitor<'s, F> {
    scratch: &'s mut Scratch,
    f: F,
}

impl<'de, F> Visitor<'de> for ArrayVisitor<'_, F>
where
    F: FnMut(usize, Result<RawEvent<'de>, FieldError>, &mut Scratch),
{
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON array of events")
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0;
        loop {
            self.scratch.unknown.clear();
            let seed = ElementSeed {
                tags: &mut self.scratch.unknown,
            };
            match seq.next_element_seed(seed)? {
                Some(element) => (self.f)(index, element, self.scratch),
                None => return Ok(()),
            }
            index += 1;
        }
    }
}

pub(super) struct ElementSeed<'t> {
    pub(super) tags: &'t mut String,
}

impl<'de> DeserializeSeed<'de> for ElementSeed<'_> {
    type Value = Result<RawEvent<'de>, FieldError>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(ElementVisitor { tags: self.tags })
    }
}

/// An array element: an object is collected; anything else is that element's error, not the body's.
struct ElementVisitor<'t> {
    tags: &'t mut String,
}

impl ElementVisitor<'_> {
    fn not_object<E>(what: impl fmt::Display) -> Result<Result<RawEvent<'static>, FieldError>, E> {
        Ok(Err(FieldError::new(
            "",
            format!("not a JSON object: found {what}"),
        )))
    }
}

impl<'de> Visitor<'de> for ElementVisitor<'_> {
    type Value = Result<RawEvent<'de>, FieldError>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an event")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        collect_map(map, self.tags).map(Ok)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<de::IgnoredAny>()?.is_some() {}
        Self::not_object("an array")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Self::not_object(v)
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Self::not_object(v)
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Self::not_object(v)
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Self::not_object(v)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Self::not_object("a string")
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Self::not_object("null")
    }
}
