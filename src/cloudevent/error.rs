//! Why an incoming request is not an event we accept.

use thiserror::Error;

/// Why a request body (or a stored event) could not be turned into a [`CloudEvent`].
///
/// Every variant is the sender's fault, so the receiver answers all of them with
/// `400 Bad Request` (`413` for the size limits; `receiver/error.rs`) and the variant's
/// `Display` text as the body: each is one short sentence naming the attribute or rule that
/// failed.
///
/// [`CloudEvent`]: super::CloudEvent
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    /// `Content-Type: application/cloudevents-batch+json`: batches are not supported.
    #[error("batched CloudEvents (application/cloudevents-batch+json) are not supported")]
    BatchMode,
    /// Neither structured mode (`application/cloudevents+json`) nor binary mode
    /// (`ce-specversion` header).
    #[error(
        "the request is not a CloudEvent: send `Content-Type: application/cloudevents+json` or a `ce-specversion` header"
    )]
    NotACloudEvent,
    /// `specversion` is neither `1.0` nor `0.3`.
    #[error("unsupported specversion `{0}`: only 1.0 and 0.3 are accepted")]
    UnsupportedSpecVersion(String),
    /// A required attribute (`specversion`, `id`, `source`, `type`) is absent.
    #[error("missing required attribute `{0}`")]
    MissingAttribute(&'static str),
    /// An attribute that must not be empty (`id`, `source`, `type`, `subject`) is empty.
    #[error("attribute `{0}` must not be empty")]
    EmptyAttribute(&'static str),
    /// An attribute's value is longer than its limit (`MAX_ID_BYTES` and its siblings); the
    /// receiver answers 413.
    #[error("attribute `{name}` is {size} bytes, more than the limit of {limit}")]
    AttributeTooLarge {
        name: String,
        size: usize,
        limit: usize,
    },
    /// An extension name is longer than `MAX_EXTENSION_NAME_BYTES`; the receiver answers 413.
    #[error("extension name `{prefix}...` is {size} bytes, more than the limit of {limit}")]
    ExtensionNameTooLong {
        prefix: String,
        size: usize,
        limit: usize,
    },
    /// An attribute appears twice (two headers, or a repeated JSON member).
    #[error("attribute `{0}` is given more than once")]
    DuplicateAttribute(String),
    /// A context attribute in structured mode is not a JSON string.
    #[error("attribute `{0}` must be a JSON string")]
    AttributeNotAString(String),
    /// `datacontenttype` is not a media type such as `application/json`.
    #[error("attribute `datacontenttype` is not a valid media type: `{0}`")]
    InvalidDataContentType(String),
    /// `dataschema` (0.3: `schemaurl`) is not an absolute URI.
    #[error("attribute `dataschema` is not an absolute URI: `{0}`")]
    InvalidDataSchema(String),
    /// `time` is not an RFC 3339 timestamp.
    #[error("attribute `time` is not an RFC 3339 timestamp: `{0}`")]
    InvalidTime(String),
    /// An extension name is not lowercase ASCII letters and digits.
    #[error("extension name `{0}` must consist of lowercase letters and digits only")]
    InvalidExtensionName(String),
    /// An extension is named like something the stored form already uses (`data`).
    #[error("extension name `{0}` is reserved")]
    ReservedExtensionName(String),
    /// An extension value in structured mode is an object or an array.
    #[error("extension `{0}` must be a string, a number or a boolean")]
    InvalidExtensionValue(String),
    /// A `ce-*` header value is not UTF-8 after percent-decoding.
    #[error("header `{0}` is not valid UTF-8 after percent-decoding")]
    InvalidHeaderValue(String),
    /// The `Content-Type` header is not readable text.
    #[error("header `content-type` is not valid text")]
    InvalidContentTypeHeader,
    /// A structured-mode body is not a JSON object.
    #[error("the event is not a JSON object: {0}")]
    InvalidJson(String),
    /// Structured mode carries both `data` and `data_base64`.
    #[error("an event must not carry both `data` and `data_base64`")]
    DataAndDataBase64,
    /// `data` is not a JSON string although `datacontenttype` is not a JSON media type.
    #[error("attribute `data` must be a JSON string when `datacontenttype` is not JSON")]
    DataNotAString,
    /// `data_base64` (or 0.3 base64 `data`) is not a base64 string.
    #[error("attribute `{0}` is not valid base64")]
    InvalidBase64(&'static str),
    /// 0.3 `datacontentencoding` is something other than `base64`.
    #[error("unsupported datacontentencoding `{0}`: only base64 is accepted")]
    UnsupportedDataContentEncoding(String),
}
