//! The CloudEvents rules the receiver enforces on every event, whatever mode it came in.

use super::{CloudEvent, DecodeError, SpecVersion};

/// Largest `id`, in bytes. The id and the source are recorded in two annotations of the Job
/// (Kubernetes allows 256 KiB of annotations in all, the template's included) and, escaped
/// at up to 3 bytes per byte, in the `Location` a sender polls: 3 × (1 KiB + 1 KiB) keeps
/// that URL under the 8 KiB request line common proxies accept.
pub const MAX_ID_BYTES: usize = 1024;
/// Largest `source`, in bytes (see [`MAX_ID_BYTES`]).
pub const MAX_SOURCE_BYTES: usize = 1024;
/// Largest `type`, in bytes: ample for a reverse-DNS event type.
pub const MAX_TYPE_BYTES: usize = 1024;
/// Longest extension name, in bytes. CloudEvents recommends at most 20 characters; this
/// tolerates longer names but keeps an error message that quotes one short.
pub const MAX_EXTENSION_NAME_BYTES: usize = 64;
/// Largest extension value, in bytes: room for a trace context or a token, and within the
/// 8 KiB header line common proxies accept in binary mode.
pub const MAX_EXTENSION_VALUE_BYTES: usize = 4096;

/// Names an extension may not take because the stored JSON form already uses them for the
/// version's context attributes or its data members.
fn reserved_names(version: SpecVersion) -> &'static [&'static str] {
    match version {
        SpecVersion::V1_0 => &[
            "specversion",
            "id",
            "source",
            "type",
            "datacontenttype",
            "dataschema",
            "subject",
            "time",
            "data",
            "data_base64",
        ],
        SpecVersion::V0_3 => &[
            "specversion",
            "id",
            "source",
            "type",
            "datacontenttype",
            "schemaurl",
            "subject",
            "time",
            "datacontentencoding",
            "data",
        ],
    }
}

/// Whether `name` follows the CloudEvents naming rule for attributes: one or more lowercase
/// ASCII letters or digits.
pub fn is_valid_extension_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// Checks an extension name against the naming rule and the reserved names of `version`.
pub(super) fn check_extension_name(version: SpecVersion, name: &str) -> Result<(), DecodeError> {
    if name.len() > MAX_EXTENSION_NAME_BYTES {
        let mut prefix = name.to_owned();
        prefix.truncate(name.floor_char_boundary(16));
        return Err(DecodeError::ExtensionNameTooLong {
            prefix,
            size: name.len(),
            limit: MAX_EXTENSION_NAME_BYTES,
        });
    }
    if !is_valid_extension_name(name) {
        return Err(DecodeError::InvalidExtensionName(name.to_owned()));
    }
    if reserved_names(version).contains(&name) {
        return Err(DecodeError::ReservedExtensionName(name.to_owned()));
    }
    Ok(())
}

/// Takes a required attribute out of a decoder's draft, refusing it when absent.
pub(super) fn required(name: &'static str, value: Option<String>) -> Result<String, DecodeError> {
    value.ok_or(DecodeError::MissingAttribute(name))
}

/// Checks all attribute rules; the first failure is reported.
pub(super) fn validate(event: &CloudEvent) -> Result<(), DecodeError> {
    at_most("id", &event.id, MAX_ID_BYTES)?;
    at_most("source", &event.source, MAX_SOURCE_BYTES)?;
    at_most("type", &event.ty, MAX_TYPE_BYTES)?;
    for (name, value) in &event.extensions {
        check_extension_name(event.specversion, name)?;
        at_most(name, value, MAX_EXTENSION_VALUE_BYTES)?;
    }
    non_empty("id", &event.id)?;
    non_empty("source", &event.source)?;
    non_empty("type", &event.ty)?;
    if let Some(subject) = &event.subject {
        non_empty("subject", subject)?;
    }
    if let Some(content_type) = &event.datacontenttype
        && content_type.parse::<mime::Mime>().is_err()
    {
        return Err(DecodeError::InvalidDataContentType(content_type.clone()));
    }
    // `Url::parse` only accepts absolute URIs: a relative reference has no base to resolve
    // against and is refused.
    if let Some(schema) = &event.dataschema
        && url::Url::parse(schema).is_err()
    {
        return Err(DecodeError::InvalidDataSchema(schema.clone()));
    }
    if let Some(time) = &event.time
        && !is_rfc3339(time)
    {
        return Err(DecodeError::InvalidTime(time.clone()));
    }
    Ok(())
}

fn at_most(name: &str, value: &str, limit: usize) -> Result<(), DecodeError> {
    if value.len() > limit {
        return Err(DecodeError::AttributeTooLarge {
            name: name.to_owned(),
            size: value.len(),
            limit,
        });
    }
    Ok(())
}

/// Whether `text` is an RFC 3339 timestamp, `YYYY-MM-DDTHH:MM:SS[.fraction]` then `Z` or
/// `±HH:MM`: a date that exists, `T` also written `t` or a space (RFC 3339 allows both),
/// seconds up to 60 (a leap second), any number of fraction digits, an offset under 24
/// hours (its minus sign may be U+2212).
fn is_rfc3339(text: &str) -> bool {
    let bytes = text.as_bytes();
    let number = |at: usize, len: usize| -> Option<u16> {
        let digits = bytes.get(at..at + len)?;
        digits.iter().try_fold(0u16, |n, &b| {
            b.is_ascii_digit().then(|| n * 10 + u16::from(b - b'0'))
        })
    };
    let at = |i: usize, allowed: &[u8]| bytes.get(i).is_some_and(|b| allowed.contains(b));
    let (Some(year), Some(month), Some(day)) = (number(0, 4), number(5, 2), number(8, 2)) else {
        return false;
    };
    let (Some(hour), Some(minute), Some(second)) = (number(11, 2), number(14, 2), number(17, 2))
    else {
        return false;
    };
    let separators = at(4, b"-") && at(7, b"-") && at(10, b"Tt ") && at(13, b":") && at(16, b":");
    // All of the first 19 bytes are ASCII now, so slicing after them is safe.
    if !separators || hour > 23 || minute > 59 || second > 60 {
        return false;
    }
    let date = i16::try_from(year)
        .ok()
        .zip(i8::try_from(month).ok())
        .zip(i8::try_from(day).ok())
        .is_some_and(|((y, m), d)| jiff::civil::Date::new(y, m, d).is_ok());
    if !date {
        return false;
    }
    let mut rest = &text[19..];
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return false;
        }
        rest = &fraction[digits..];
    }
    if rest == "Z" || rest == "z" {
        return true;
    }
    let Some(offset) = rest.strip_prefix(['+', '-', '\u{2212}']) else {
        return false;
    };
    let offset = offset.as_bytes();
    let digits = |range: std::ops::Range<usize>| {
        offset[range]
            .iter()
            .fold(0u16, |n, &b| n * 10 + u16::from(b - b'0'))
    };
    offset.len() == 5
        && offset[2] == b':'
        && [0, 1, 3, 4].iter().all(|&i| offset[i].is_ascii_digit())
        && digits(0..2) <= 23
        && digits(3..5) <= 59
}

fn non_empty(name: &'static str, value: &str) -> Result<(), DecodeError> {
    if value.is_empty() {
        Err(DecodeError::EmptyAttribute(name))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> CloudEvent {
        CloudEvent::new("1", "/s", "t")
    }

    #[test]
    fn a_minimal_event_is_valid() {
        assert_eq!(event().validate(), Ok(()));
    }

    #[test]
    fn empty_id_source_or_type_is_refused_naming_the_attribute() {
        let mut e = event();
        e.id.clear();
        assert_eq!(e.validate(), Err(DecodeError::EmptyAttribute("id")));
        let mut e = event();
        e.source.clear();
        assert_eq!(e.validate(), Err(DecodeError::EmptyAttribute("source")));
        let mut e = event();
        e.ty.clear();
        assert_eq!(e.validate(), Err(DecodeError::EmptyAttribute("type")));
    }

    #[test]
    fn an_empty_subject_is_refused_but_an_absent_one_is_fine() {
        let mut e = event();
        e.subject = Some(String::new());
        assert_eq!(e.validate(), Err(DecodeError::EmptyAttribute("subject")));
        e.subject = Some("x".into());
        assert_eq!(e.validate(), Ok(()));
    }

    #[test]
    fn datacontenttype_must_be_a_media_type() {
        let mut e = event();
        e.datacontenttype = Some("text/plain; charset=utf-8".into());
        assert_eq!(e.validate(), Ok(()));
        e.datacontenttype = Some("not a media type".into());
        assert!(matches!(
            e.validate(),
            Err(DecodeError::InvalidDataContentType(_))
        ));
    }

    #[test]
    fn dataschema_must_be_an_absolute_uri() {
        let mut e = event();
        e.dataschema = Some("https://example.com/schema.json".into());
        assert_eq!(e.validate(), Ok(()));
        e.dataschema = Some("urn:example:schema".into());
        assert_eq!(e.validate(), Ok(()));
        e.dataschema = Some("/relative/schema.json".into());
        assert!(matches!(
            e.validate(),
            Err(DecodeError::InvalidDataSchema(_))
        ));
    }

    #[test]
    fn time_must_be_rfc3339() {
        let mut e = event();
        e.time = Some("2024-05-01T12:34:56.789+02:00".into());
        assert_eq!(e.validate(), Ok(()));
        e.time = Some("2024-05-01 noon".into());
        assert!(matches!(e.validate(), Err(DecodeError::InvalidTime(_))));
    }

    #[test]
    fn rfc3339_accepts_its_variants_and_refuses_near_misses() {
        for good in [
            "2024-05-01T12:34:56Z",
            "2024-05-01t12:34:56z",
            "2024-05-01 12:34:56Z",
            "2024-02-29T00:00:00Z",
            "2016-12-31T23:59:60Z",
            "2024-05-01T12:34:56.123456789123-23:59",
            "2024-05-01T12:34:56\u{2212}01:00",
        ] {
            assert!(is_rfc3339(good), "{good}");
        }
        for bad in [
            "2023-02-29T00:00:00Z",
            "2024-05-01T12:34Z",
            "2024-05-01T24:00:00Z",
            "2024-05-01T12:34:56",
            "2024-05-01T12:34:56.Z",
            "2024-05-01T12:34:56+24:00",
            "2024-05-01T12:34:56+0200",
            "2024-05-01T12:34:56Z[UTC]",
            "20240501T123456Z",
        ] {
            assert!(!is_rfc3339(bad), "{bad}");
        }
    }

    #[test]
    fn extension_names_are_lowercase_letters_and_digits() {
        assert!(is_valid_extension_name("traceparent"));
        assert!(is_valid_extension_name("ext1"));
        assert!(!is_valid_extension_name(""));
        assert!(!is_valid_extension_name("myExt"));
        assert!(!is_valid_extension_name("my_ext"));
        assert!(!is_valid_extension_name("my-ext"));
        let mut e = event();
        e.extensions.insert("Bad".into(), "v".into());
        assert_eq!(
            e.validate(),
            Err(DecodeError::InvalidExtensionName("Bad".into()))
        );
    }

    #[test]
    fn attributes_over_their_size_limit_are_refused_naming_the_attribute() {
        let mut e = event();
        e.id = "i".repeat(MAX_ID_BYTES);
        assert_eq!(e.validate(), Ok(()));
        e.id.push('i');
        assert_eq!(
            e.validate(),
            Err(DecodeError::AttributeTooLarge {
                name: "id".into(),
                size: MAX_ID_BYTES + 1,
                limit: MAX_ID_BYTES
            })
        );
        let mut e = event();
        e.source = "s".repeat(300_000);
        assert!(e.validate().unwrap_err().to_string().contains("`source`"));
        let mut e = event();
        e.ty = "t".repeat(MAX_TYPE_BYTES + 1);
        assert!(e.validate().unwrap_err().to_string().contains("`type`"));
        let mut e = event();
        e.extensions
            .insert("big".into(), "v".repeat(MAX_EXTENSION_VALUE_BYTES + 1));
        assert!(e.validate().unwrap_err().to_string().contains("`big`"));
        let mut e = event();
        e.extensions
            .insert("n".repeat(MAX_EXTENSION_NAME_BYTES + 1), "v".into());
        let message = e.validate().unwrap_err().to_string();
        assert!(
            message.contains("extension name") && message.len() < 200,
            "{message}"
        );
    }

    #[test]
    fn extensions_may_not_shadow_attributes_or_data() {
        let mut e = event();
        e.extensions.insert("data".into(), "v".into());
        assert_eq!(
            e.validate(),
            Err(DecodeError::ReservedExtensionName("data".into()))
        );
        assert_eq!(
            check_extension_name(SpecVersion::V0_3, "datacontentencoding"),
            Err(DecodeError::ReservedExtensionName(
                "datacontentencoding".into()
            ))
        );
        assert_eq!(
            check_extension_name(SpecVersion::V1_0, "datacontentencoding"),
            Ok(())
        );
    }
}
