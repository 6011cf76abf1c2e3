//! Which kind of [`Data`] a payload is stored as, and the base64 used for binary payloads.

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

use super::Data;

/// Base64 as CloudEvents uses it (RFC 4648 standard alphabet). Padding is written, and
/// accepted whether present or not, since senders differ.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Whether a `datacontenttype` means the data is JSON: `application/json`, `text/json` or any
/// `*/*+json`, parameters and case ignored. An absent content type counts as JSON, because
/// the CloudEvents JSON format reads a missing `datacontenttype` as `application/json`.
pub fn is_json_media_type(content_type: Option<&str>) -> bool {
    let Some(content_type) = content_type else {
        return true;
    };
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json" || essence == "text/json" || essence.ends_with("+json")
}

/// The stored kind of a binary-mode body (see [`Data`] for the rule). An empty body is no
/// data. JSON is kept as received but for surrounding whitespace, which is insignificant in
/// JSON and would only pad the stored form.
///
/// A body that claims to be JSON but is not valid JSON is stored as [`Data::Binary`]: as a
/// JSON string it would be read back as a different JSON value, while base64 keeps its bytes.
pub(super) fn classify_body(content_type: Option<&str>, body: &[u8]) -> Option<Data> {
    if body.is_empty() {
        return None;
    }
    let Ok(text) = std::str::from_utf8(body) else {
        return Some(Data::Binary(body.to_vec()));
    };
    if is_json_media_type(content_type) {
        if serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok() {
            let trimmed = text.trim_matches([' ', '\t', '\n', '\r']);
            Some(Data::Json(trimmed.to_owned()))
        } else {
            Some(Data::Binary(body.to_vec()))
        }
    } else {
        Some(Data::Text(text.to_owned()))
    }
}

/// Encodes bytes for `data_base64`.
pub(super) fn encode_base64(bytes: &[u8]) -> String {
    BASE64.encode(bytes)
}

/// Decodes a `data_base64` value; `None` when it is not base64.
pub(super) fn decode_base64(text: &str) -> Option<Vec<u8>> {
    BASE64.decode(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_media_types_are_recognised_with_parameters_and_any_case() {
        assert!(is_json_media_type(Some("application/json")));
        assert!(is_json_media_type(Some("Application/JSON; charset=utf-8")));
        assert!(is_json_media_type(Some("text/json")));
        assert!(is_json_media_type(Some("application/vnd.example+json")));
        assert!(is_json_media_type(None));
        assert!(!is_json_media_type(Some("text/plain")));
        assert!(!is_json_media_type(Some("application/jsonx")));
    }

    #[test]
    fn a_json_body_under_a_json_type_is_kept_as_json_text() {
        let body = b"\n { \"a\" :  [1, 2] }\r\n";
        assert_eq!(
            classify_body(Some("application/json"), body),
            Some(Data::Json("{ \"a\" :  [1, 2] }".into()))
        );
    }

    #[test]
    fn a_json_body_without_a_content_type_is_json() {
        assert_eq!(
            classify_body(None, b"[true]"),
            Some(Data::Json("[true]".into()))
        );
    }

    #[test]
    fn text_under_a_non_json_type_is_text_even_when_it_parses_as_json() {
        assert_eq!(
            classify_body(Some("text/plain"), b"{\"a\":1}"),
            Some(Data::Text("{\"a\":1}".into()))
        );
    }

    #[test]
    fn invalid_json_under_a_json_type_is_kept_as_bytes() {
        assert_eq!(
            classify_body(Some("application/json"), b"not json"),
            Some(Data::Binary(b"not json".to_vec()))
        );
        assert_eq!(
            classify_body(None, b"hello"),
            Some(Data::Binary(b"hello".to_vec()))
        );
    }

    #[test]
    fn non_utf8_bodies_are_binary_and_empty_bodies_are_no_data() {
        assert_eq!(
            classify_body(Some("application/octet-stream"), &[0xff, 0x00]),
            Some(Data::Binary(vec![0xff, 0x00]))
        );
        assert_eq!(classify_body(Some("application/json"), b""), None);
    }

    #[test]
    fn base64_round_trips_and_accepts_missing_padding() {
        let bytes = [0u8, 1, 2, 250, 251, 252, 253];
        let text = encode_base64(&bytes);
        assert_eq!(text, "AAEC+vv8/Q==");
        assert_eq!(decode_base64(&text), Some(bytes.to_vec()));
        assert_eq!(decode_base64("AAEC+vv8/Q"), Some(bytes.to_vec()));
        assert_eq!(decode_base64("not base64!"), None);
    }
}
