//! The `Location` of an accepted event, where a sender polls the event's status
//! (`/namespaces/<ns>/name/<name>/sources/<source>/ids/<id>`), and reading such a path back.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

use crate::crd::SinkId;

/// Bytes escaped in one path segment: everything but letters, digits and `-_.~$&+:=@`, which
/// is what Go's `url.PathEscape` leaves alone, so our Locations match upstream's byte for byte.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b':')
    .remove(b'=')
    .remove(b'@');

/// One event of one JobSink, as named by its Location.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventRef {
    pub sink: SinkId,
    pub source: String,
    pub id: String,
}

/// The status path of an event: each segment percent-escaped as a URL path segment, so a `/`
/// inside the source or id becomes `%2F` and a space `%20`.
pub fn location(sink: &SinkId, source: &str, id: &str) -> String {
    format!(
        "/namespaces/{}/name/{}/sources/{}/ids/{}",
        utf8_percent_encode(&sink.namespace, SEGMENT),
        utf8_percent_encode(&sink.name, SEGMENT),
        utf8_percent_encode(source, SEGMENT),
        utf8_percent_encode(id, SEGMENT),
    )
}

/// Reads a status path made by [`location`] (or by upstream): exactly
/// `/namespaces/<ns>/name/<name>/sources/<source>/ids/<id>` with four non-empty segments,
/// each percent-decoded and required to be UTF-8. Anything else is `None`.
pub fn parse_location(path: &str) -> Option<EventRef> {
    let rest = path.strip_prefix('/')?;
    let parts: Vec<&str> = rest.split('/').collect();
    let [
        "namespaces",
        namespace,
        "name",
        name,
        "sources",
        source,
        "ids",
        id,
    ] = parts.as_slice()
    else {
        return None;
    };
    Some(EventRef {
        sink: SinkId::new(segment(namespace)?, segment(name)?),
        source: segment(source)?,
        id: segment(id)?,
    })
}

fn segment(raw: &str) -> Option<String> {
    if raw.is_empty() {
        return None;
    }
    percent_decode_str(raw)
        .decode_utf8()
        .ok()
        .map(|text| text.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_event_gets_the_upstream_location() {
        assert_eq!(
            location(
                &SinkId::new("default", "job-sink-logger"),
                "my/curl/command",
                "123"
            ),
            "/namespaces/default/name/job-sink-logger/sources/my%2Fcurl%2Fcommand/ids/123"
        );
    }

    #[test]
    fn path_segment_escaping_matches_go_path_escape() {
        let sink = SinkId::new("ns", "n");
        assert_eq!(
            location(&sink, "a b/c?d#e%f", "-_.~$&+:=@!*'();,"),
            "/namespaces/ns/name/n/sources/a%20b%2Fc%3Fd%23e%25f/ids/-_.~$&+:=@%21%2A%27%28%29%3B%2C"
        );
        assert_eq!(
            location(&sink, "café", "☕"),
            "/namespaces/ns/name/n/sources/caf%C3%A9/ids/%E2%98%95"
        );
    }

    #[test]
    fn locations_round_trip_through_parse_location() {
        let cases = [
            ("default", "job-sink-logger", "my/curl/command", "123"),
            ("ns", "sink", "/sensor/1 with space", "100% sure"),
            (
                "ns",
                "sink",
                "https://example.com/a?b=c#d",
                "id/with/slashes",
            ),
            ("ns", "sink", "café ☕ 𝄞", "%2F literally"),
        ];
        for (namespace, name, source, id) in cases {
            let sink = SinkId::new(namespace, name);
            let path = location(&sink, source, id);
            assert_eq!(
                parse_location(&path),
                Some(EventRef {
                    sink,
                    source: source.into(),
                    id: id.into(),
                }),
                "{path}"
            );
        }
    }

    #[test]
    fn parse_location_accepts_unescaped_safe_characters() {
        let parsed = parse_location("/namespaces/ns/name/n/sources/a:b@c/ids/1+2");
        assert_eq!(
            parsed.map(|e| (e.source, e.id)),
            Some(("a:b@c".into(), "1+2".into()))
        );
    }

    #[test]
    fn parse_location_refuses_any_other_shape() {
        let bad = [
            "",
            "/",
            "/namespaces/ns/name/n/sources/s/ids",
            "/namespaces/ns/name/n/sources/s/ids/",
            "/namespaces/ns/name/n/sources/s/ids/1/",
            "/namespaces/ns/name/n/sources/s/ids/1/extra",
            "namespaces/ns/name/n/sources/s/ids/1",
            "/namespace/ns/name/n/sources/s/ids/1",
            "/namespaces/ns/names/n/sources/s/ids/1",
            "/namespaces//name/n/sources/s/ids/1",
            "/namespaces/ns/name/n/sources//ids/1",
            "/namespaces/ns/name/n/sources/s/ids/%FF",
            "/ns/n",
        ];
        for path in bad {
            assert_eq!(parse_location(path), None, "{path}");
        }
    }
}
