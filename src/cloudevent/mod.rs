//! CloudEvents as the receiver sees them: decoding from HTTP (binary and structured mode),
//! validation, and the compact JSON form stored in the event Secret.

use std::collections::BTreeMap;

/// The CloudEvents spec versions the receiver accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpecVersion {
    V1_0,
    V0_3,
}

impl SpecVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            SpecVersion::V1_0 => "1.0",
            SpecVersion::V0_3 => "0.3",
        }
    }
}

/// The event's payload, kept in the form it arrived in so that it is stored unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Data {
    /// JSON text, stored inline as `data` exactly as received (no reformatting).
    Json(String),
    /// Text that is not JSON, stored as a JSON string in `data`.
    Text(String),
    /// Bytes, stored as `data_base64`.
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
    pub dataschema: Option<String>,
    pub subject: Option<String>,
    pub time: Option<String>,
    /// Extension attributes as strings, ordered by name.
    pub extensions: BTreeMap<String, String>,
    pub data: Option<Data>,
}
