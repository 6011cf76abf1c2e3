//! Structured mode: the whole event is one JSON object. Also how stored events are read back.

use std::collections::HashSet;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::attributes::Attributes;
use super::data::{decode_base64, is_json_media_type};
use super::validate::check_extension_name;
use super::{CloudEvent, Data, DecodeError, SpecVersion};

/// The members of a JSON object in document order, values left unparsed so that `data` can
/// be kept byte for byte, and the first member name that appeared twice, if any.
struct Members<'a> {
    list: Vec<(String, &'a RawValue)>,
    repeated: Option<String>,
}

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MembersVisitor;
        impl<'de> Visitor<'de> for MembersVisitor {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut list = Vec::new();
                let mut seen = HashSet::new();
                let mut repeated = None;
                while let Some((name, value)) = map.next_entry::<String, &'de RawValue>()? {
                    if !seen.insert(name.clone()) && repeated.is_none() {
                        repeated = Some(name.clone());
                    }
                    list.push((name, value));
                }
                Ok(Members { list, repeated })
            }
        }
        deserializer.deserialize_map(MembersVisitor)
    }
}

/// Decodes and validates a structured-mode event: a request body sent as
/// `application/cloudevents+json`, or an event stored by [`to_json`](super::to_json).
///
/// Context attributes must be JSON strings (`null` counts as absent). `data` under a JSON
/// media type (or none) is kept exactly as sent, whitespace included; under any other media
/// type it must be a JSON string. `data_base64` (1.0) and base64 `data` with
/// `datacontentencoding: base64` (0.3) are decoded to bytes. Extension values may be
/// strings, numbers or booleans and are kept as strings (numbers and booleans as their JSON
/// text), so the stored form re-emits them as JSON strings.
pub fn from_json(bytes: &[u8]) -> Result<CloudEvent, DecodeError> {
    let members: Members<'_> = serde_json::from_slice(bytes)
        .map_err(|error| DecodeError::InvalidJson(error.to_string()))?;
    if let Some(name) = members.repeated {
        return Err(DecodeError::DuplicateAttribute(name));
    }
    let members = members.list;
    let version_text = members
        .iter()
        .find(|(name, _)| name == "specversion")
        .map(|(name, raw)| string_member(name, raw))
        .transpose()?
        .flatten()
        .ok_or(DecodeError::MissingAttribute("specversion"))?;
    let version = SpecVersion::parse(&version_text)?;

    let mut draft = Draft::default();
    for (name, raw) in members {
        draft.take(version, name, raw)?;
    }

    let data = draft.data(version)?;
    draft.attributes.finish(version, data)
}

/// The members of a structured event, sorted into attributes, data and extensions.
#[derive(Default)]
struct Draft<'a> {
    attributes: Attributes,
    datacontentencoding: Option<String>,
    data: Option<&'a RawValue>,
    data_base64: Option<&'a RawValue>,
}

impl<'a> Draft<'a> {
    fn take(
        &mut self,
        version: SpecVersion,
        name: String,
        raw: &'a RawValue,
    ) -> Result<(), DecodeError> {
        let slot = match name.as_str() {
            "specversion" => return Ok(()),
            "data" => {
                self.data = non_null(raw);
                return Ok(());
            }
            "data_base64" if version == SpecVersion::V1_0 => {
                self.data_base64 = non_null(raw);
                return Ok(());
            }
            "datacontentencoding" if version == SpecVersion::V0_3 => &mut self.datacontentencoding,
            attribute => match self.attributes.slot(version, attribute) {
                Some(slot) => slot,
                None => {
                    check_extension_name(version, &name)?;
                    if let Some(value) = extension_value(&name, raw)? {
                        self.attributes.extensions.insert(name, value);
                    }
                    return Ok(());
                }
            },
        };
        *slot = string_member(&name, raw)?;
        Ok(())
    }

    /// The event's data, decided by the version's data members and `datacontenttype`.
    fn data(&self, version: SpecVersion) -> Result<Option<Data>, DecodeError> {
        if version == SpecVersion::V0_3
            && let Some(encoding) = &self.datacontentencoding
        {
            if !encoding.eq_ignore_ascii_case("base64") {
                return Err(DecodeError::UnsupportedDataContentEncoding(
                    encoding.clone(),
                ));
            }
            return self.data.map(|raw| base64_member("data", raw)).transpose();
        }
        match (self.data, self.data_base64) {
            (Some(_), Some(_)) => Err(DecodeError::DataAndDataBase64),
            (None, Some(raw)) => base64_member("data_base64", raw).map(Some),
            (None, None) => Ok(None),
            (Some(raw), None) if is_json_media_type(self.attributes.datacontenttype.as_deref()) => {
                Ok(Some(Data::Json(raw.get().to_owned())))
            }
            (Some(raw), None) => match serde_json::from_str::<String>(raw.get()) {
                Ok(text) => Ok(Some(Data::Text(text))),
                Err(_) => Err(DecodeError::DataNotAString),
            },
        }
    }
}

fn non_null(raw: &RawValue) -> Option<&RawValue> {
    (raw.get() != "null").then_some(raw)
}

/// A context attribute: a JSON string, or `null` for absent.
fn string_member(name: &str, raw: &RawValue) -> Result<Option<String>, DecodeError> {
    serde_json::from_str::<Option<String>>(raw.get())
        .map_err(|_| DecodeError::AttributeNotAString(name.to_owned()))
}

/// An extension value as a string; `None` for `null`, which counts as absent.
fn extension_value(name: &str, raw: &RawValue) -> Result<Option<String>, DecodeError> {
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'"') => string_member(name, raw),
        Some(b'n') => Ok(None),
        Some(b't' | b'f' | b'-' | b'0'..=b'9') => Ok(Some(text.to_owned())),
        _ => Err(DecodeError::InvalidExtensionValue(name.to_owned())),
    }
}

fn base64_member(name: &'static str, raw: &RawValue) -> Result<Data, DecodeError> {
    let text =
        serde_json::from_str::<String>(raw.get()).map_err(|_| DecodeError::InvalidBase64(name))?;
    decode_base64(&text)
        .map(Data::Binary)
        .ok_or(DecodeError::InvalidBase64(name))
}
