//! Tests across the module: the seed vector, structured mode, round trips through the stored
//! form, and that CloudEvents SDKs read what we store.

use http::{HeaderMap, HeaderName, HeaderValue};

use super::*;

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).expect("test header name"),
            HeaderValue::from_str(value).expect("test header value"),
        );
    }
    map
}

fn structured(body: &str) -> Result<CloudEvent, DecodeError> {
    decode(
        &headers(&[("content-type", "application/cloudevents+json")]),
        body.as_bytes(),
    )
}

fn stored(event: &CloudEvent) -> String {
    String::from_utf8(to_json(event)).expect("stored form is UTF-8")
}

const SEED_STORED: &str = r#"{"specversion":"1.0","id":"123","source":"my/curl/command","type":"my.demo.event","datacontenttype":"application/json","data":{"details":"JobSinkDemo"}}"#;

fn seed_event() -> CloudEvent {
    let h = headers(&[
        ("content-type", "application/json"),
        ("ce-specversion", "1.0"),
        ("ce-source", "my/curl/command"),
        ("ce-type", "my.demo.event"),
        ("ce-id", "123"),
    ]);
    decode(&h, br#"{"details":"JobSinkDemo"}"#).expect("the seed event is valid")
}

#[test]
fn the_seed_event_is_stored_byte_for_byte_as_documented() {
    assert_eq!(stored(&seed_event()), SEED_STORED);
}

#[test]
fn the_seed_event_sent_structured_is_stored_identically() {
    let event = structured(SEED_STORED).expect("valid event");
    assert_eq!(event, seed_event());
    assert_eq!(stored(&event), SEED_STORED);
}

#[test]
fn structured_json_data_is_kept_verbatim_with_its_whitespace() {
    let body = r#"{"specversion":"1.0","id":"1","source":"/s","type":"t",
        "data" :  { "b" : [1,  2.50, 1e3],
          "a":"\u00e9" } }"#;
    let event = structured(body).expect("valid event");
    let expected = "{ \"b\" : [1,  2.50, 1e3],\n          \"a\":\"\\u00e9\" }";
    assert_eq!(event.data, Some(Data::Json(expected.into())));
    assert!(stored(&event).ends_with(&format!(r#""data":{expected}}}"#)));
}

#[test]
fn structured_data_under_a_text_type_must_be_a_string() {
    let text = r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","datacontenttype":"text/plain","data":"hi \"you\""}"#;
    let event = structured(text).expect("valid event");
    assert_eq!(event.data, Some(Data::Text("hi \"you\"".into())));
    assert_eq!(stored(&event), text);

    let not_string = r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","datacontenttype":"text/plain","data":{"a":1}}"#;
    assert_eq!(structured(not_string), Err(DecodeError::DataNotAString));
}

#[test]
fn data_base64_is_decoded_and_stored_again_as_base64() {
    let body = r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","datacontenttype":"application/octet-stream","data_base64":"AAEC/w=="}"#;
    let event = structured(body).expect("valid event");
    assert_eq!(event.data, Some(Data::Binary(vec![0, 1, 2, 255])));
    assert_eq!(stored(&event), body);
    assert_eq!(from_json(&to_json(&event)), Ok(event));
}

#[test]
fn data_base64_must_be_base64_and_not_come_with_data() {
    let bad = r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","data_base64":"@@@"}"#;
    assert_eq!(
        structured(bad),
        Err(DecodeError::InvalidBase64("data_base64"))
    );
    let both =
        r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","data":1,"data_base64":"AA=="}"#;
    assert_eq!(structured(both), Err(DecodeError::DataAndDataBase64));
}

#[test]
fn structured_extensions_keep_numbers_and_booleans_as_their_text() {
    let body = r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","zeta":"z","count":42,"ratio":-1.5,"flag":true,"gone":null}"#;
    let event = structured(body).expect("valid event");
    let pairs: Vec<(&str, &str)> = event
        .extensions
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        pairs,
        [
            ("count", "42"),
            ("flag", "true"),
            ("ratio", "-1.5"),
            ("zeta", "z")
        ]
    );
    assert!(
        stored(&event)
            .ends_with(r#""type":"t","count":"42","flag":"true","ratio":"-1.5","zeta":"z"}"#)
    );
}

#[test]
fn structured_extensions_may_not_be_objects_or_have_bad_names() {
    let object = r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","ext":{"a":1}}"#;
    assert_eq!(
        structured(object),
        Err(DecodeError::InvalidExtensionValue("ext".into()))
    );
    let upper = r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","myExt":"v"}"#;
    assert_eq!(
        structured(upper),
        Err(DecodeError::InvalidExtensionName("myExt".into()))
    );
}

#[test]
fn structured_attributes_must_be_present_non_empty_strings() {
    let missing = r#"{"specversion":"1.0","source":"/s","type":"t"}"#;
    assert_eq!(
        structured(missing),
        Err(DecodeError::MissingAttribute("id"))
    );
    let null = r#"{"specversion":"1.0","id":null,"source":"/s","type":"t"}"#;
    assert_eq!(structured(null), Err(DecodeError::MissingAttribute("id")));
    let empty = r#"{"specversion":"1.0","id":"1","source":"","type":"t"}"#;
    assert_eq!(
        structured(empty),
        Err(DecodeError::EmptyAttribute("source"))
    );
    let number = r#"{"specversion":"1.0","id":1,"source":"/s","type":"t"}"#;
    assert_eq!(
        structured(number),
        Err(DecodeError::AttributeNotAString("id".into()))
    );
    let no_version = r#"{"id":"1","source":"/s","type":"t"}"#;
    assert_eq!(
        structured(no_version),
        Err(DecodeError::MissingAttribute("specversion"))
    );
    let old = r#"{"specversion":"0.2","id":"1","source":"/s","type":"t"}"#;
    assert_eq!(
        structured(old),
        Err(DecodeError::UnsupportedSpecVersion("0.2".into()))
    );
}

#[test]
fn structured_optional_attributes_are_validated() {
    let schema = r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","dataschema":"rel/x"}"#;
    assert!(matches!(
        structured(schema),
        Err(DecodeError::InvalidDataSchema(_))
    ));
    let ctype =
        r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","datacontenttype":"json"}"#;
    assert!(matches!(
        structured(ctype),
        Err(DecodeError::InvalidDataContentType(_))
    ));
    let time =
        r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","time":"2024-13-01T00:00:00Z"}"#;
    assert!(matches!(structured(time), Err(DecodeError::InvalidTime(_))));
}

#[test]
fn a_structured_body_that_is_not_one_json_object_is_refused() {
    for body in ["", "[]", "\"event\"", "{\"specversion\":\"1.0\"", "{} {}"] {
        assert!(
            matches!(structured(body), Err(DecodeError::InvalidJson(_))),
            "{body:?}"
        );
    }
    let repeated = r#"{"specversion":"1.0","id":"1","id":"2","source":"/s","type":"t"}"#;
    assert_eq!(
        structured(repeated),
        Err(DecodeError::DuplicateAttribute("id".into()))
    );
}

#[test]
fn version_0_3_structured_reads_schemaurl_and_base64_data() {
    let body = r#"{"specversion":"0.3","id":"1","source":"/s","type":"t","datacontenttype":"application/octet-stream","schemaurl":"https://example.com/s","datacontentencoding":"Base64","data":"AAEC/w=="}"#;
    let event = structured(body).expect("valid event");
    assert_eq!(event.specversion, SpecVersion::V0_3);
    assert_eq!(event.dataschema.as_deref(), Some("https://example.com/s"));
    assert_eq!(event.data, Some(Data::Binary(vec![0, 1, 2, 255])));
    assert_eq!(
        stored(&event),
        r#"{"specversion":"0.3","id":"1","source":"/s","type":"t","datacontenttype":"application/octet-stream","schemaurl":"https://example.com/s","datacontentencoding":"base64","data":"AAEC/w=="}"#
    );
    assert_eq!(from_json(&to_json(&event)), Ok(event));
}

#[test]
fn version_0_3_refuses_other_content_encodings() {
    let body = r#"{"specversion":"0.3","id":"1","source":"/s","type":"t","datacontentencoding":"gzip","data":"x"}"#;
    assert_eq!(
        structured(body),
        Err(DecodeError::UnsupportedDataContentEncoding("gzip".into()))
    );
}

#[test]
fn version_0_3_binary_is_stored_with_schemaurl() {
    let h = headers(&[
        ("ce-specversion", "0.3"),
        ("ce-id", "9"),
        ("ce-source", "/s"),
        ("ce-type", "t"),
        ("ce-schemaurl", "https://example.com/s"),
        ("content-type", "text/plain"),
    ]);
    let event = decode(&h, b"hello").expect("valid event");
    assert_eq!(
        stored(&event),
        r#"{"specversion":"0.3","id":"9","source":"/s","type":"t","datacontenttype":"text/plain","schemaurl":"https://example.com/s","data":"hello"}"#
    );
}

#[test]
fn every_kind_of_binary_event_round_trips_through_the_stored_form() {
    let cases: [(Option<&str>, &[u8]); 6] = [
        (Some("application/json"), b" {\"a\": [1, 2]}\n"),
        (Some("text/plain; charset=utf-8"), b"line\n\"quoted\"\t\\"),
        (Some("application/octet-stream"), &[0, 255, 10, 13]),
        (Some("application/json"), b"{broken"),
        (None, b"plain words"),
        (Some("text/csv"), b""),
    ];
    for (content_type, body) in cases {
        let mut pairs = vec![
            ("ce-specversion", "1.0"),
            ("ce-id", "id 1"),
            ("ce-source", "/s"),
            ("ce-type", "t"),
            ("ce-ext", "v"),
        ];
        if let Some(ct) = content_type {
            pairs.push(("content-type", ct));
        }
        let event = decode(&headers(&pairs), body).expect("valid event");
        assert_eq!(from_json(&to_json(&event)), Ok(event), "{content_type:?}");
    }
}

/// The stored form is read by the Rust CloudEvents SDK with the same attributes and data.
mod sdk_compatibility {
    use cloudevents::{AttributesReader, Data as SdkData, Event};

    use super::*;

    fn read_with_sdk(event: &CloudEvent) -> Event {
        serde_json::from_slice::<Event>(&to_json(event)).expect("the SDK reads the stored form")
    }

    #[test]
    fn the_sdk_reads_the_seed_event_with_the_same_attributes_and_data() {
        let sdk = read_with_sdk(&seed_event());
        assert_eq!(sdk.id(), "123");
        assert_eq!(sdk.source().as_str(), "my/curl/command");
        assert_eq!(sdk.ty(), "my.demo.event");
        assert_eq!(
            sdk.data(),
            Some(&SdkData::Json(
                serde_json::json!({"details": "JobSinkDemo"})
            ))
        );
    }

    #[test]
    fn the_sdk_reads_text_binary_and_extensions() {
        let mut event = seed_event();
        event.datacontenttype = Some("text/plain".into());
        event.data = Some(Data::Text("hello".into()));
        event.subject = Some("sub".into());
        event.time = Some("2024-01-02T03:04:05Z".into());
        event.extensions.insert("count".into(), "42".into());
        let sdk = read_with_sdk(&event);
        assert_eq!(sdk.data(), Some(&SdkData::String("hello".into())));
        assert_eq!(sdk.subject(), Some("sub"));
        assert_eq!(
            sdk.extension("count").map(ToString::to_string).as_deref(),
            Some("42")
        );

        event.datacontenttype = Some("application/octet-stream".into());
        event.data = Some(Data::Binary(vec![0, 1, 255]));
        assert_eq!(
            read_with_sdk(&event).data(),
            Some(&SdkData::Binary(vec![0, 1, 255]))
        );
    }

    #[test]
    fn the_sdk_reads_version_0_3_with_schemaurl_and_base64_data() {
        let mut event = seed_event();
        event.specversion = SpecVersion::V0_3;
        event.dataschema = Some("https://example.com/schema".into());
        event.datacontenttype = Some("application/octet-stream".into());
        event.data = Some(Data::Binary(vec![7, 8, 9]));
        let sdk = read_with_sdk(&event);
        assert_eq!(sdk.id(), "123");
        assert_eq!(
            sdk.dataschema().map(|u| u.as_str()),
            Some("https://example.com/schema")
        );
        assert_eq!(sdk.data(), Some(&SdkData::Binary(vec![7, 8, 9])));
    }
}

#[test]
fn deeply_nested_or_garbage_bodies_are_refused_or_kept_without_panicking() {
    let deep = "[".repeat(100_000);
    let deep_object =
        format!(r#"{{"specversion":"1.0","id":"1","source":"/s","type":"t","data":{deep}}}"#);
    assert!(matches!(
        structured(&deep_object),
        Err(DecodeError::InvalidJson(_))
    ));
    let h = headers(&[
        ("ce-specversion", "1.0"),
        ("ce-id", "1"),
        ("ce-source", "/s"),
        ("ce-type", "t"),
        ("content-type", "application/json"),
    ]);
    let event = decode(&h, deep.as_bytes()).expect("binary mode keeps any body");
    assert!(matches!(event.data, Some(Data::Binary(_))));

    const ALPHABET: &[u8] = b"{}[]\":,0-9aeflnrstu\\ \x00\xff";
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    for len in 0..200 {
        let body: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                ALPHABET[(seed % ALPHABET.len() as u64) as usize]
            })
            .collect();
        let _ = from_json(&body);
        let _ = decode(&h, &body);
    }
}
