//! The stored form of an event: compact structured-mode JSON with a fixed member order.

use super::data::encode_base64;
use super::{CloudEvent, Data, SpecVersion};

/// The event as the compact JSON the Job reads from its Secret.
///
/// Members come in a fixed order so that the same event always gives the same bytes:
/// `specversion`, `id`, `source`, `type`; then `datacontenttype`, `dataschema` (0.3:
/// `schemaurl`), `subject`, `time` when present; then the data (JSON verbatim as `data`,
/// text as a JSON string in `data`, bytes as `data_base64`, or for 0.3 as base64 `data`
/// with `datacontentencoding: base64`); then the extensions sorted by name, as strings.
/// Every CloudEvents JSON reader (the Go, Python and Rust SDKs) reads it back, and so does
/// [`from_json`](super::from_json).
pub fn to_json(event: &CloudEvent) -> Vec<u8> {
    let mut out = Writer::default();
    out.string("specversion", event.specversion.as_str());
    out.string("id", &event.id);
    out.string("source", &event.source);
    out.string("type", &event.ty);
    let optional = [
        ("datacontenttype", &event.datacontenttype),
        (event.specversion.dataschema_name(), &event.dataschema),
        ("subject", &event.subject),
        ("time", &event.time),
    ];
    for (name, value) in optional {
        if let Some(value) = value {
            out.string(name, value);
        }
    }
    match (&event.data, event.specversion) {
        (None, _) => {}
        (Some(Data::Json(json)), _) => out.raw("data", json),
        (Some(Data::Text(text)), _) => out.string("data", text),
        (Some(Data::Binary(bytes)), SpecVersion::V1_0) => {
            out.string("data_base64", &encode_base64(bytes));
        }
        (Some(Data::Binary(bytes)), SpecVersion::V0_3) => {
            out.string("datacontentencoding", "base64");
            out.string("data", &encode_base64(bytes));
        }
    }
    for (name, value) in &event.extensions {
        out.string(name, value);
    }
    out.finish()
}

/// Builds one JSON object member by member.
#[derive(Default)]
struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    fn key(&mut self, name: &str) {
        self.buf.push(if self.buf.is_empty() { b'{' } else { b',' });
        push_json_string(&mut self.buf, name);
        self.buf.push(b':');
    }

    fn string(&mut self, name: &str, value: &str) {
        self.key(name);
        push_json_string(&mut self.buf, value);
    }

    fn raw(&mut self, name: &str, json: &str) {
        self.key(name);
        self.buf.extend_from_slice(json.as_bytes());
    }

    fn finish(mut self) -> Vec<u8> {
        self.buf.push(b'}');
        self.buf
    }
}

/// Appends `text` as a JSON string literal, escaping like `serde_json` does: quotes,
/// backslashes and control characters; everything else, non-ASCII included, stays as is.
fn push_json_string(buf: &mut Vec<u8>, text: &str) {
    buf.push(b'"');
    for ch in text.chars() {
        match ch {
            '"' => buf.extend_from_slice(b"\\\""),
            '\\' => buf.extend_from_slice(b"\\\\"),
            '\n' => buf.extend_from_slice(b"\\n"),
            '\r' => buf.extend_from_slice(b"\\r"),
            '\t' => buf.extend_from_slice(b"\\t"),
            '\u{08}' => buf.extend_from_slice(b"\\b"),
            '\u{0c}' => buf.extend_from_slice(b"\\f"),
            c if u32::from(c) < 0x20 => {
                buf.extend_from_slice(format!("\\u{:04x}", u32::from(c)).as_bytes());
            }
            c => {
                let mut utf8 = [0u8; 4];
                buf.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
            }
        }
    }
    buf.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped_exactly_like_serde_json() {
        let samples = [
            "plain",
            "quote \" and backslash \\",
            "lines\n\r\ttabs",
            "\u{0}\u{1}\u{8}\u{c}\u{1f}\u{7f}",
            "café ☕ 𝄞 </script>",
        ];
        for sample in samples {
            let mut mine = Vec::new();
            push_json_string(&mut mine, sample);
            let theirs = serde_json::to_vec(sample).expect("strings always serialize");
            assert_eq!(
                String::from_utf8_lossy(&mine),
                String::from_utf8_lossy(&theirs)
            );
        }
    }
}
