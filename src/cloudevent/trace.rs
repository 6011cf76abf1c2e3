//! Carrying the request's W3C trace context into the stored event (the CloudEvents
//! distributed tracing extension).

use http::HeaderMap;

use super::CloudEvent;

/// Adds the `traceparent` and `tracestate` extensions when the request carried a valid,
/// sampled W3C `traceparent` header (trace flags bit `0x01`), so that the Job can continue
/// the trace. Returns whether it did.
///
/// An event that already carries its own `traceparent` extension is left unchanged: the
/// producer set it on purpose, and it describes the event rather than this hop.
pub fn apply_trace_context(event: &mut CloudEvent, headers: &HeaderMap) -> bool {
    if event.extensions.contains_key("traceparent") {
        return false;
    }
    let Some(traceparent) = headers
        .get("traceparent")
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
    else {
        return false;
    };
    if !is_sampled(traceparent) {
        return false;
    }
    event
        .extensions
        .insert("traceparent".to_owned(), traceparent.to_owned());
    let tracestate: Vec<&str> = headers
        .get_all("tracestate")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|value| !value.is_empty())
        .collect();
    if !tracestate.is_empty() {
        event
            .extensions
            .insert("tracestate".to_owned(), tracestate.join(","));
    }
    true
}

/// Whether `value` is a well-formed `traceparent` (`version-traceid-parentid-flags`, lowercase
/// hex, non-zero ids, version not `ff`) with the sampled flag set. Later versions may append
/// fields after the flags, as the W3C spec allows.
fn is_sampled(value: &str) -> bool {
    let mut parts = value.split('-');
    let (Some(version), Some(trace_id), Some(parent_id), Some(flags)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let rest_allowed = version != "00" || parts.next().is_none();
    let hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let non_zero = |s: &str| s.bytes().any(|b| b != b'0');
    if !(rest_allowed
        && hex(version, 2)
        && version != "ff"
        && hex(trace_id, 32)
        && non_zero(trace_id)
        && hex(parent_id, 16)
        && non_zero(parent_id)
        && hex(flags, 2))
    {
        return false;
    }
    u8::from_str_radix(flags, 16).is_ok_and(|flags| flags & 0x01 == 0x01)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLED: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const UNSAMPLED: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";

    fn event() -> CloudEvent {
        CloudEvent::new("1", "/s", "t")
    }

    fn headers(traceparent: &str, tracestate: Option<&str>) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert(
            "traceparent",
            traceparent.parse().expect("test header value"),
        );
        if let Some(state) = tracestate {
            map.insert("tracestate", state.parse().expect("test header value"));
        }
        map
    }

    #[test]
    fn a_sampled_traceparent_and_its_tracestate_become_extensions() {
        let mut e = event();
        assert!(apply_trace_context(
            &mut e,
            &headers(SAMPLED, Some("congo=t61rcWkgMzE"))
        ));
        assert_eq!(e.extensions["traceparent"], SAMPLED);
        assert_eq!(e.extensions["tracestate"], "congo=t61rcWkgMzE");
    }

    #[test]
    fn an_unsampled_trace_is_not_recorded() {
        let mut e = event();
        assert!(!apply_trace_context(
            &mut e,
            &headers(UNSAMPLED, Some("a=b"))
        ));
        assert!(e.extensions.is_empty());
    }

    #[test]
    fn malformed_traceparents_are_ignored() {
        let bad = [
            "",
            "garbage",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ];
        for value in bad {
            let mut e = event();
            assert!(
                !apply_trace_context(&mut e, &headers(value, None)),
                "{value}"
            );
        }
    }

    #[test]
    fn a_future_version_may_carry_extra_fields() {
        let mut e = event();
        let value = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03-more";
        assert!(apply_trace_context(&mut e, &headers(value, None)));
        assert!(!e.extensions.contains_key("tracestate"));
    }

    #[test]
    fn an_event_with_its_own_traceparent_keeps_it() {
        let mut e = event();
        e.extensions.insert("traceparent".into(), "mine".into());
        assert!(!apply_trace_context(&mut e, &headers(SAMPLED, None)));
        assert_eq!(e.extensions["traceparent"], "mine");
    }
}
