//! The structured-mode JSON form of a CloudEvent, for `jobsink hook run` only.
//!
//! A small private reader and writer so the tooling does not wait on the receiver's
//! decoder (`crate::cloudevent`); it accepts what a plugin author writes by hand and is not
//! the receiver's validation.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::cloudevent::{CloudEvent, Data, SpecVersion};

/// Attributes with a meaning of their own; every other top-level member is an extension.
const KNOWN: &[&str] = &[
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
];

/// Reads a structured-mode CloudEvent. JSON `data` is kept exactly as written.
pub(crate) fn parse(text: &str) -> anyhow::Result<CloudEvent> {
    let members: BTreeMap<String, Box<RawValue>> = serde_json::from_str(text)?;
    let string = |name: &str| -> anyhow::Result<Option<String>> {
        match members.get(name) {
            None => Ok(None),
            Some(raw) => match serde_json::from_str::<Value>(raw.get())? {
                Value::String(s) => Ok(Some(s)),
                Value::Null => Ok(None),
                other => anyhow::bail!("`{name}` must be a string, not {other}"),
            },
        }
    };
    let required = |name: &str| -> anyhow::Result<String> {
        string(name)?
            .filter(|s| !s.is_empty())
            .ok_or_else(|| anyhow::anyhow!("`{name}` is required"))
    };
    let specversion = match required("specversion")?.as_str() {
        "1.0" => SpecVersion::V1_0,
        "0.3" => SpecVersion::V0_3,
        other => anyhow::bail!("specversion {other:?} is not 1.0 or 0.3"),
    };
    let datacontenttype = string("datacontenttype")?;
    let data = match (members.get("data"), string("data_base64")?) {
        (Some(_), Some(_)) => anyhow::bail!("`data` and `data_base64` are exclusive"),
        (None, Some(encoded)) => {
            let bytes: ByteString = serde_json::from_value(Value::String(encoded))?;
            Some(Data::Binary(bytes.0))
        }
        (Some(raw), None) => {
            let json_type = datacontenttype
                .as_deref()
                .is_none_or(|ct| ct.contains("json"));
            match serde_json::from_str::<Value>(raw.get())? {
                Value::String(text) if !json_type => Some(Data::Text(text)),
                _ => Some(Data::Json(raw.get().to_owned())),
            }
        }
        (None, None) => None,
    };
    let mut extensions = BTreeMap::new();
    for (name, raw) in &members {
        if KNOWN.contains(&name.as_str()) {
            continue;
        }
        let value = match serde_json::from_str::<Value>(raw.get())? {
            Value::String(s) => s,
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            other => {
                anyhow::bail!("extension `{name}` must be a string, number or boolean, not {other}")
            }
        };
        extensions.insert(name.clone(), value);
    }
    Ok(CloudEvent {
        specversion,
        id: required("id")?,
        source: required("source")?,
        ty: required("type")?,
        datacontenttype,
        dataschema: string("dataschema")?,
        subject: string("subject")?,
        time: string("time")?,
        extensions,
        data,
    })
}

/// The event as structured-mode JSON, for printing.
pub(crate) fn to_value(event: &CloudEvent) -> Value {
    let mut out = Map::new();
    out.insert("specversion".into(), event.specversion.as_str().into());
    out.insert("id".into(), event.id.clone().into());
    out.insert("source".into(), event.source.clone().into());
    out.insert("type".into(), event.ty.clone().into());
    let optional = [
        ("datacontenttype", &event.datacontenttype),
        ("dataschema", &event.dataschema),
        ("subject", &event.subject),
        ("time", &event.time),
    ];
    for (name, value) in optional {
        if let Some(value) = value {
            out.insert(name.into(), value.clone().into());
        }
    }
    match &event.data {
        Some(Data::Json(text)) => {
            let value = serde_json::from_str(text).unwrap_or_else(|_| Value::from(text.clone()));
            out.insert("data".into(), value);
        }
        Some(Data::Text(text)) => {
            out.insert("data".into(), text.clone().into());
        }
        Some(Data::Binary(bytes)) => {
            let encoded = serde_json::to_value(ByteString(bytes.clone())).unwrap_or(Value::Null);
            out.insert("data_base64".into(), encoded);
        }
        None => {}
    }
    for (name, value) in &event.extensions {
        out.insert(name.clone(), value.clone().into());
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_data_is_kept_as_written_and_extensions_are_collected() {
        let event = parse(
            r#"{"specversion":"1.0","id":"1","source":"s","type":"t",
                "datacontenttype":"application/json","data":{"b": 1, "a":2},"myext":7}"#,
        )
        .expect("valid");
        assert_eq!(event.data, Some(Data::Json(r#"{"b": 1, "a":2}"#.into())));
        assert_eq!(event.extensions.get("myext").map(String::as_str), Some("7"));
    }

    #[test]
    fn base64_data_round_trips_through_the_printed_form() {
        let text = r#"{"specversion":"1.0","id":"1","source":"s","type":"t","data_base64":"AAEC"}"#;
        let event = parse(text).expect("valid");
        assert_eq!(event.data, Some(Data::Binary(vec![0, 1, 2])));
        assert_eq!(to_value(&event)["data_base64"], "AAEC");
    }

    #[test]
    fn an_event_without_an_id_is_refused() {
        assert!(parse(r#"{"specversion":"1.0","source":"s","type":"t"}"#).is_err());
    }
}
