//! Reading an event from an HTTP request: choosing the content mode, and binary mode, where
//! attributes travel as `ce-*` headers and the body is the data.

use http::HeaderMap;
use http::header::CONTENT_TYPE;

use super::attributes::Attributes;
use super::data::classify_body;
use super::validate::check_extension_name;
use super::{CloudEvent, DecodeError, SpecVersion, from_json};

/// Media type that selects structured mode.
const STRUCTURED: &str = "application/cloudevents+json";
/// Media type of batched mode, which the receiver refuses.
const BATCH: &str = "application/cloudevents-batch+json";
/// Prefix of the headers carrying attributes in binary mode.
const ATTRIBUTE_PREFIX: &str = "ce-";

/// How the request carries its event.
#[derive(Debug, PartialEq, Eq)]
enum Mode {
    Structured,
    Binary(SpecVersion),
}

/// Decodes and validates the event of one `POST` (`docs/contract.md#the-receiver`).
///
/// `Content-Type: application/cloudevents+json` (any case, parameters allowed) means
/// structured mode, even if `ce-specversion` is present too; otherwise a `ce-specversion`
/// header of `1.0` or `0.3` means binary mode. Batched mode and anything else are refused.
///
/// In binary mode each `ce-<attr>` header sets that attribute, after percent-decoding its
/// value as the CloudEvents HTTP binding prescribes; other `ce-*` headers become string
/// extensions; `Content-Type` becomes `datacontenttype`; a non-empty body becomes the data
/// (its kind is chosen as described on [`Data`](super::Data)). A 0.3 `ce-datacontentencoding`
/// header is ignored: in binary mode the body is the data as it is.
pub fn decode(headers: &HeaderMap, body: &[u8]) -> Result<CloudEvent, DecodeError> {
    match content_mode(headers)? {
        Mode::Structured => from_json(body),
        Mode::Binary(version) => decode_binary(version, headers, body),
    }
}

fn content_mode(headers: &HeaderMap) -> Result<Mode, DecodeError> {
    let essence = headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(|value| {
            value
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        });
    match essence.as_deref() {
        Some(STRUCTURED) => return Ok(Mode::Structured),
        Some(BATCH) => return Err(DecodeError::BatchMode),
        _ => {}
    }
    match headers.get("ce-specversion") {
        Some(value) => {
            let version = header_text("ce-specversion", value)?;
            Ok(Mode::Binary(SpecVersion::parse(&version)?))
        }
        None => Err(DecodeError::NotACloudEvent),
    }
}

/// A header value as text: percent-decoded, then required to be UTF-8. An ill-formed
/// escape such as `%zz` is kept literally, as the binding asks decoders to be lenient.
fn header_text(name: &str, value: &http::HeaderValue) -> Result<String, DecodeError> {
    percent_encoding::percent_decode(value.as_bytes())
        .decode_utf8()
        .map(|text| text.into_owned())
        .map_err(|_| DecodeError::InvalidHeaderValue(name.to_owned()))
}

fn set_once(slot: &mut Option<String>, name: &str, value: String) -> Result<(), DecodeError> {
    if slot.is_some() {
        return Err(DecodeError::DuplicateAttribute(name.to_owned()));
    }
    *slot = Some(value);
    Ok(())
}

fn decode_binary(
    version: SpecVersion,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<CloudEvent, DecodeError> {
    // The attributes read from headers so far; each may be set once.
    let mut draft = Attributes::default();
    let mut specversion_seen = false;
    for (header, value) in headers {
        let Some(name) = header.as_str().strip_prefix(ATTRIBUTE_PREFIX) else {
            continue;
        };
        let value = header_text(header.as_str(), value)?;
        match name {
            "specversion" if specversion_seen => {
                return Err(DecodeError::DuplicateAttribute(name.to_owned()));
            }
            "specversion" => specversion_seen = true,
            "datacontentencoding" if version == SpecVersion::V0_3 => {}
            _ => match draft.slot(version, name) {
                Some(slot) => set_once(slot, name, value)?,
                None => {
                    check_extension_name(version, name)?;
                    if draft.extensions.insert(name.to_owned(), value).is_some() {
                        return Err(DecodeError::DuplicateAttribute(name.to_owned()));
                    }
                }
            },
        }
    }
    for value in headers.get_all(CONTENT_TYPE) {
        let content_type = value
            .to_str()
            .map_err(|_| DecodeError::InvalidContentTypeHeader)?;
        set_once(
            &mut draft.datacontenttype,
            "datacontenttype",
            content_type.to_owned(),
        )?;
    }

    let data = classify_body(draft.datacontenttype.as_deref(), body);
    draft.finish(version, data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloudevent::Data;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).expect("test header name"),
                http::HeaderValue::from_str(value).expect("test header value"),
            );
        }
        map
    }

    const BASE: [(&str, &str); 4] = [
        ("ce-specversion", "1.0"),
        ("ce-id", "1"),
        ("ce-source", "/s"),
        ("ce-type", "t"),
    ];

    fn with(extra: &[(&str, &str)]) -> HeaderMap {
        let mut pairs = BASE.to_vec();
        pairs.extend_from_slice(extra);
        headers(&pairs)
    }

    #[test]
    fn structured_content_type_selects_structured_mode_even_with_ce_specversion() {
        let h = headers(&[
            (
                "content-type",
                "Application/CloudEvents+JSON; charset=utf-8",
            ),
            ("ce-specversion", "1.0"),
        ]);
        assert_eq!(content_mode(&h), Ok(Mode::Structured));
    }

    #[test]
    fn ce_specversion_selects_binary_mode_for_1_0_and_0_3_only() {
        assert_eq!(
            content_mode(&headers(&[("ce-specversion", "1.0")])),
            Ok(Mode::Binary(SpecVersion::V1_0))
        );
        assert_eq!(
            content_mode(&headers(&[("ce-specversion", "0.3")])),
            Ok(Mode::Binary(SpecVersion::V0_3))
        );
        assert_eq!(
            content_mode(&headers(&[("ce-specversion", "0.2")])),
            Err(DecodeError::UnsupportedSpecVersion("0.2".into()))
        );
    }

    #[test]
    fn batch_mode_is_refused() {
        let h = headers(&[
            ("content-type", "application/cloudevents-batch+json"),
            ("ce-specversion", "1.0"),
        ]);
        assert_eq!(decode(&h, b"[]"), Err(DecodeError::BatchMode));
    }

    #[test]
    fn a_request_in_neither_mode_is_refused() {
        let h = headers(&[("content-type", "application/json")]);
        assert_eq!(decode(&h, b"{}"), Err(DecodeError::NotACloudEvent));
        assert_eq!(
            decode(&HeaderMap::new(), b""),
            Err(DecodeError::NotACloudEvent)
        );
    }

    #[test]
    fn binary_mode_reads_every_attribute_from_its_header() {
        let h = with(&[
            ("content-type", "text/plain"),
            ("ce-dataschema", "https://example.com/s"),
            ("ce-subject", "sub"),
            ("ce-time", "2024-01-02T03:04:05Z"),
        ]);
        let event = decode(&h, b"hello").expect("valid event");
        assert_eq!(event.specversion, SpecVersion::V1_0);
        assert_eq!(
            (event.id.as_str(), event.source.as_str(), event.ty.as_str()),
            ("1", "/s", "t")
        );
        assert_eq!(event.datacontenttype.as_deref(), Some("text/plain"));
        assert_eq!(event.dataschema.as_deref(), Some("https://example.com/s"));
        assert_eq!(event.subject.as_deref(), Some("sub"));
        assert_eq!(event.time.as_deref(), Some("2024-01-02T03:04:05Z"));
        assert_eq!(event.data, Some(Data::Text("hello".into())));
        assert!(event.extensions.is_empty());
    }

    #[test]
    fn other_ce_headers_become_lowercase_string_extensions() {
        let h = with(&[("CE-MyExt", "value"), ("ce-count", "7")]);
        let event = decode(&h, b"").expect("valid event");
        assert_eq!(
            event.extensions.get("myext").map(String::as_str),
            Some("value")
        );
        assert_eq!(event.extensions.get("count").map(String::as_str), Some("7"));
        assert_eq!(event.data, None);
    }

    #[test]
    fn extension_headers_with_invalid_names_are_refused() {
        let h = with(&[("ce-my_ext", "v")]);
        assert_eq!(
            decode(&h, b""),
            Err(DecodeError::InvalidExtensionName("my_ext".into()))
        );
        let h = with(&[("ce-data", "v")]);
        assert_eq!(
            decode(&h, b""),
            Err(DecodeError::ReservedExtensionName("data".into()))
        );
    }

    #[test]
    fn header_values_are_percent_decoded() {
        let h = headers(&[
            ("ce-specversion", "1.0"),
            ("ce-id", "a%20b"),
            ("ce-source", "/caf%C3%A9%2Fx"),
            ("ce-type", "t%zz"),
            ("ce-note", "100%25"),
        ]);
        let event = decode(&h, b"").expect("valid event");
        assert_eq!(event.id, "a b");
        assert_eq!(event.source, "/café/x");
        assert_eq!(event.ty, "t%zz");
        assert_eq!(event.extensions["note"], "100%");
    }

    #[test]
    fn a_header_that_is_not_utf8_after_decoding_is_refused() {
        let h = with(&[("ce-note", "%FF")]);
        assert_eq!(
            decode(&h, b""),
            Err(DecodeError::InvalidHeaderValue("ce-note".into()))
        );
    }

    #[test]
    fn missing_required_attributes_are_refused_by_name() {
        let h = headers(&[
            ("ce-specversion", "1.0"),
            ("ce-source", "/s"),
            ("ce-type", "t"),
        ]);
        assert_eq!(decode(&h, b""), Err(DecodeError::MissingAttribute("id")));
        let h = headers(&[("ce-specversion", "1.0"), ("ce-id", "1"), ("ce-type", "t")]);
        assert_eq!(
            decode(&h, b""),
            Err(DecodeError::MissingAttribute("source"))
        );
        let h = headers(&[
            ("ce-specversion", "1.0"),
            ("ce-id", "1"),
            ("ce-source", "/s"),
        ]);
        assert_eq!(decode(&h, b""), Err(DecodeError::MissingAttribute("type")));
    }

    #[test]
    fn empty_required_attributes_are_refused_by_name() {
        let h = headers(&[
            ("ce-specversion", "1.0"),
            ("ce-id", ""),
            ("ce-source", "/s"),
            ("ce-type", "t"),
        ]);
        assert_eq!(decode(&h, b""), Err(DecodeError::EmptyAttribute("id")));
    }

    #[test]
    fn repeated_attribute_headers_are_refused() {
        let h = with(&[("ce-id", "2")]);
        assert_eq!(
            decode(&h, b""),
            Err(DecodeError::DuplicateAttribute("id".into()))
        );
    }

    #[test]
    fn invalid_optional_attributes_are_refused() {
        let bad_schema = with(&[("ce-dataschema", "not/absolute")]);
        assert!(matches!(
            decode(&bad_schema, b""),
            Err(DecodeError::InvalidDataSchema(_))
        ));
        let bad_type = with(&[("content-type", "nonsense")]);
        assert!(matches!(
            decode(&bad_type, b"x"),
            Err(DecodeError::InvalidDataContentType(_))
        ));
        let bad_time = with(&[("ce-time", "yesterday")]);
        assert!(matches!(
            decode(&bad_time, b""),
            Err(DecodeError::InvalidTime(_))
        ));
        let empty_subject = with(&[("ce-subject", "")]);
        assert_eq!(
            decode(&empty_subject, b""),
            Err(DecodeError::EmptyAttribute("subject"))
        );
    }

    #[test]
    fn version_0_3_reads_schemaurl_and_keeps_dataschema_as_an_extension() {
        let h = headers(&[
            ("ce-specversion", "0.3"),
            ("ce-id", "1"),
            ("ce-source", "/s"),
            ("ce-type", "t"),
            ("ce-schemaurl", "https://example.com/s"),
            ("ce-datacontentencoding", "base64"),
            ("content-type", "application/json"),
        ]);
        let event = decode(&h, br#"{"a":1}"#).expect("valid event");
        assert_eq!(event.specversion, SpecVersion::V0_3);
        assert_eq!(event.dataschema.as_deref(), Some("https://example.com/s"));
        assert!(event.extensions.is_empty());
        assert_eq!(event.data, Some(Data::Json(r#"{"a":1}"#.into())));

        let h = with(&[("ce-schemaurl", "https://example.com/s")]);
        let event = decode(&h, b"").expect("valid event");
        assert_eq!(event.dataschema, None);
        assert_eq!(event.extensions["schemaurl"], "https://example.com/s");
    }

    #[test]
    fn binary_bodies_that_are_not_text_are_kept_as_bytes() {
        let h = with(&[("content-type", "application/octet-stream")]);
        let event = decode(&h, &[0, 159, 146, 150]).expect("valid event");
        assert_eq!(event.data, Some(Data::Binary(vec![0, 159, 146, 150])));
    }
}
