//! CloudEvents as the receiver sees them: decoding from HTTP (binary and structured mode),
//! validation, and the compact JSON form stored in the event Secret.
//!
//! The entry points are [`decode`] (an HTTP request's headers and body), [`from_json`] (a
//! structured-mode body or a stored event), [`to_json`] (the stored form) and
//! [`apply_trace_context`]. Nothing here performs I/O.

use std::collections::BTreeMap;
use std::fmt;

mod attributes;
mod binary;
mod data;
mod error;
mod json;
mod structured;
mod trace;
mod validate;

#[cfg(test)]
mod tests;

pub use binary::decode;
pub use data::is_json_media_type;
pub use error::DecodeError;
pub use json::to_json;
pub use structured::from_json;
pub use trace::apply_trace_context;
pub use validate::{
    MAX_EXTENSION_NAME_BYTES, MAX_EXTENSION_VALUE_BYTES, MAX_ID_BYTES, MAX_SOURCE_BYTES,
    MAX_TYPE_BYTES, is_valid_extension_name,
};

/// The CloudEvents spec versions the receiver accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpecVersion {
    V1_0,
    V0_3,
}

impl SpecVersion {
    /// The version as written in `specversion`.
    pub fn as_str(self) -> &'static str {
        match self {
            SpecVersion::V1_0 => "1.0",
            SpecVersion::V0_3 => "0.3",
        }
    }

    /// Reads a `specversion` value; anything but `1.0` and `0.3` is refused.
    pub fn parse(value: &str) -> Result<Self, DecodeError> {
        match value {
            "1.0" => Ok(SpecVersion::V1_0),
            "0.3" => Ok(SpecVersion::V0_3),
            other => Err(DecodeError::UnsupportedSpecVersion(other.to_owned())),
        }
    }

    /// The name this version gives the `dataschema` attribute (0.3 called it `schemaurl`).
    pub fn dataschema_name(self) -> &'static str {
        match self {
            SpecVersion::V1_0 => "dataschema",
            SpecVersion::V0_3 => "schemaurl",
        }
    }
}

impl fmt::Display for SpecVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The event's payload, kept in the form it arrived in so that it is stored unchanged.
///
/// Which kind an event gets is decided by one rule, shared by both content modes (see
/// [`is_json_media_type`]): under a JSON media type (or none, which CloudEvents reads as
/// `application/json`) a valid JSON payload is [`Data::Json`]; under any other media type a
/// UTF-8 payload is [`Data::Text`]; everything else is [`Data::Binary`]. So every stored
/// event is read back by CloudEvents SDKs as the bytes that were sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Data {
    /// JSON text, stored inline as `data` exactly as received (no reformatting).
    Json(String),
    /// Text that is not JSON, stored as a JSON string in `data`.
    Text(String),
    /// Bytes, stored as `data_base64` (0.3: base64 `data` with `datacontentencoding`).
    Binary(Vec<u8>),
}

/// One validated CloudEvent. Attribute names follow the CloudEvents spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloudEvent {
    pub specversion: SpecVersion,
    pub id: String,
    pub source: String,
    pub ty: String,
    pub datacontenttype: Option<String>,
    /// `dataschema` (named `schemaurl` in 0.3).
    pub dataschema: Option<String>,
    pub subject: Option<String>,
    pub time: Option<String>,
    /// Extension attributes as strings, ordered by name.
    ///
    /// Structured mode allows numbers and booleans too; they are kept as their JSON text
    /// (`42`, `true`) and the stored form re-emits them as JSON strings (`"42"`, `"true"`),
    /// which the CloudEvents type system permits (every attribute has a string form).
    pub extensions: BTreeMap<String, String>,
    pub data: Option<Data>,
}

impl CloudEvent {
    /// A CloudEvents 1.0 event with only its required attributes and no data. Other
    /// attributes are public fields; [`CloudEvent::with_json`] adds JSON data. For events the
    /// dispatcher makes itself (the job template check) and for test fixtures; events that
    /// arrive are made by [`decode`] and [`from_json`].
    pub fn new(id: impl Into<String>, source: impl Into<String>, ty: impl Into<String>) -> Self {
        CloudEvent {
            specversion: SpecVersion::V1_0,
            id: id.into(),
            source: source.into(),
            ty: ty.into(),
            datacontenttype: None,
            dataschema: None,
            subject: None,
            time: None,
            extensions: BTreeMap::new(),
            data: None,
        }
    }

    /// This event with `json` as its data and `datacontenttype: application/json`.
    pub fn with_json(self, json: impl Into<String>) -> Self {
        CloudEvent {
            datacontenttype: Some("application/json".to_owned()),
            data: Some(Data::Json(json.into())),
            ..self
        }
    }

    /// Checks every CloudEvents rule the receiver enforces (see [`DecodeError`]); useful
    /// after anything other than [`decode`] or [`from_json`] produced or changed an event.
    pub fn validate(&self) -> Result<(), DecodeError> {
        validate::validate(self)
    }
}
