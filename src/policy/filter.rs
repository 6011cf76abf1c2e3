//! Knative's SubscriptionsAPI filters (`exact`, `prefix`, `suffix`, `all`, `any`, `not`), as
//! EventPolicy's `spec.filters` uses them, evaluated on a decoded CloudEvent.
//!
//! `cesql` is not supported: a policy using it is reported not ready, and its filters fail
//! every event (never pass one we cannot judge). Where upstream silently skips a filter it
//! cannot build (an empty attribute name or value, several dialects in one filter), we do the
//! same: report it and fail.

use serde_json::Value;

use crate::cloudevent::CloudEvent;

/// A compiled filter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Filter {
    /// Every named attribute exists and equals the value.
    Exact(Vec<(String, String)>),
    /// Every named attribute exists and starts with the value.
    Prefix(Vec<(String, String)>),
    /// Every named attribute exists and ends with the value.
    Suffix(Vec<(String, String)>),
    /// Every nested filter passes.
    All(Vec<Filter>),
    /// At least one nested filter passes.
    Any(Vec<Filter>),
    /// The nested filter fails.
    Not(Box<Filter>),
    /// Passes everything (an empty filter, which upstream ignores).
    Pass,
    /// Fails everything: a filter we cannot evaluate, with why.
    Unusable(String),
}

impl Filter {
    /// Compiles one filter as written in the resource.
    pub fn compile(value: &Value) -> Filter {
        let Some(object) = value.as_object() else {
            return Filter::Unusable(format!("filter {value} is not an object"));
        };
        let dialects: Vec<&String> = object
            .iter()
            .filter(|(_, v)| !is_empty(v))
            .map(|(k, _)| k)
            .collect();
        let [dialect] = dialects.as_slice() else {
            return if dialects.is_empty() {
                Filter::Pass
            } else {
                Filter::Unusable(format!(
                    "a filter has several dialects ({}); only one is allowed",
                    join(&dialects)
                ))
            };
        };
        let body = &object[dialect.as_str()];
        match dialect.as_str() {
            "exact" => attributes(body, "exact").map_or_else(Filter::Unusable, Filter::Exact),
            "prefix" => attributes(body, "prefix").map_or_else(Filter::Unusable, Filter::Prefix),
            "suffix" => attributes(body, "suffix").map_or_else(Filter::Unusable, Filter::Suffix),
            "all" => Filter::All(list(body)),
            "any" => Filter::Any(list(body)),
            "not" => Filter::Not(Box::new(Filter::compile(body))),
            "cesql" => Filter::Unusable(format!(
                "cesql filters are not supported (expression {body})"
            )),
            other => Filter::Unusable(format!("unknown filter dialect {other:?}")),
        }
    }

    /// Every reason this filter (and those nested in it) cannot be evaluated.
    pub fn problems(&self) -> Vec<String> {
        match self {
            Filter::Unusable(why) => vec![why.clone()],
            Filter::All(fs) | Filter::Any(fs) => fs.iter().flat_map(Filter::problems).collect(),
            Filter::Not(f) => f.problems(),
            _ => Vec::new(),
        }
    }

    /// Whether this filter and those nested in it can all be evaluated.
    pub fn is_usable(&self) -> bool {
        match self {
            Filter::Unusable(_) => false,
            Filter::All(fs) | Filter::Any(fs) => fs.iter().all(Filter::is_usable),
            Filter::Not(f) => f.is_usable(),
            _ => true,
        }
    }

    /// Whether `event` passes.
    pub fn passes(&self, event: &CloudEvent) -> bool {
        let each = |pairs: &[(String, String)], test: fn(&str, &str) -> bool| {
            pairs
                .iter()
                .all(|(name, want)| attribute(event, name).is_some_and(|have| test(&have, want)))
        };
        match self {
            Filter::Exact(pairs) => each(pairs, |have, want| have == want),
            Filter::Prefix(pairs) => each(pairs, |have, want| have.starts_with(want)),
            Filter::Suffix(pairs) => each(pairs, |have, want| have.ends_with(want)),
            Filter::All(fs) => fs.iter().all(|f| f.passes(event)),
            // An empty `any` is ignored upstream (no filter): it passes.
            Filter::Any(fs) => fs.is_empty() || fs.iter().any(|f| f.passes(event)),
            // Never turn a filter we cannot judge into a pass.
            Filter::Not(f) => f.is_usable() && !f.passes(event),
            Filter::Pass => true,
            Filter::Unusable(_) => false,
        }
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

fn join(names: &[&String]) -> String {
    names
        .iter()
        .map(|n| n.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn attributes(body: &Value, dialect: &str) -> Result<Vec<(String, String)>, String> {
    let Some(map) = body.as_object() else {
        return Err(format!(
            "{dialect}: {body} is not a map of attribute to value"
        ));
    };
    map.iter()
        .map(|(name, value)| match value.as_str() {
            Some(v) if !name.is_empty() && !v.is_empty() => Ok((name.clone(), v.to_owned())),
            _ => Err(format!(
                "{dialect}: attribute {name:?} must have a non-empty string value, not {value}"
            )),
        })
        .collect()
}

fn list(body: &Value) -> Vec<Filter> {
    match body.as_array() {
        Some(items) => items.iter().map(Filter::compile).collect(),
        None => vec![Filter::Unusable(format!("{body} is not a list of filters"))],
    }
}

/// An attribute's value as upstream's filters see it: the required and optional context
/// attributes (optional ones absent read as empty), `datamediatype` (the media type of
/// `datacontenttype`), and extensions (absent ones are missing, so any test of them fails).
fn attribute(event: &CloudEvent, name: &str) -> Option<String> {
    let or_empty = |v: &Option<String>| v.clone().unwrap_or_default();
    Some(match name {
        "specversion" => event.specversion.as_str().to_owned(),
        "type" => event.ty.clone(),
        "source" => event.source.clone(),
        "id" => event.id.clone(),
        "subject" => or_empty(&event.subject),
        // Go's zero time, which upstream reads for an event without `time`.
        "time" => event
            .time
            .clone()
            .unwrap_or_else(|| "0001-01-01T00:00:00Z".to_owned()),
        "dataschema" | "schemaurl" => or_empty(&event.dataschema),
        "datacontenttype" => or_empty(&event.datacontenttype),
        "datamediatype" => event
            .datacontenttype
            .as_deref()
            .map(|t| t.split(';').next().unwrap_or_default().trim().to_owned())
            .unwrap_or_default(),
        "datacontentencoding" => String::new(),
        extension => return event.extensions.get(extension).cloned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event() -> CloudEvent {
        let mut e = CloudEvent::new("1", "my/source", "com.example.order.created");
        e.extensions.insert("tenant".into(), "blue".into());
        e.datacontenttype = Some("application/json; charset=utf-8".into());
        e
    }

    fn passes(filter: Value) -> bool {
        Filter::compile(&filter).passes(&event())
    }

    #[test]
    fn exact_prefix_and_suffix_compare_attributes_and_extensions() {
        assert!(passes(
            json!({"exact": {"type": "com.example.order.created"}})
        ));
        assert!(!passes(json!({"exact": {"type": "com.example.order"}})));
        assert!(passes(json!({"prefix": {"type": "com.example."}})));
        assert!(passes(
            json!({"suffix": {"type": ".created", "source": "source"}})
        ));
        assert!(!passes(
            json!({"suffix": {"type": ".created", "source": "other"}})
        ));
        assert!(passes(json!({"exact": {"tenant": "blue"}})));
        assert!(passes(
            json!({"exact": {"datamediatype": "application/json"}})
        ));
    }

    #[test]
    fn a_missing_extension_fails_and_a_missing_optional_attribute_reads_as_empty() {
        assert!(!passes(json!({"exact": {"region": "eu"}})));
        assert!(!passes(json!({"prefix": {"subject": "a"}})));
        assert!(passes(json!({"not": {"prefix": {"subject": "a"}}})));
    }

    #[test]
    fn all_any_and_not_combine() {
        assert!(passes(json!({"all": [
            {"prefix": {"type": "com.example"}},
            {"any": [{"exact": {"tenant": "red"}}, {"exact": {"tenant": "blue"}}]},
            {"not": {"exact": {"source": "evil"}}}
        ]})));
        assert!(!passes(json!({"any": [{"exact": {"tenant": "red"}}]})));
    }

    #[test]
    fn an_empty_filter_passes_as_upstream_ignores_it() {
        assert!(passes(json!({})));
        assert!(Filter::compile(&json!({})).problems().is_empty());
    }

    #[test]
    fn cesql_and_malformed_filters_are_reported_and_fail_every_event() {
        for f in [
            json!({"cesql": "type = 'x'"}),
            json!({"exact": {"type": "a"}, "prefix": {"type": "a"}}),
            json!({"exact": {"type": ""}}),
            json!({"exact": {"type": 3}}),
            json!({"all": [{"cesql": "true"}]}),
            json!({"not": {"cesql": "false"}}),
            json!("type"),
        ] {
            let compiled = Filter::compile(&f);
            assert!(!compiled.passes(&event()), "{f}");
            assert!(!compiled.problems().is_empty(), "{f}");
        }
    }
}
