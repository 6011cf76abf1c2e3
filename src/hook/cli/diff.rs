//! A small structural diff of two JSON documents, for showing what a hook changed in a Job.

use serde_json::Value;

/// One difference, at a JSON pointer.
#[derive(Debug, PartialEq)]
pub(crate) enum Change {
    Added(String, Value),
    Removed(String, Value),
    Changed(String, Value, Value),
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::Added(path, value) => write!(f, "+ {path}: {value}"),
            Change::Removed(path, value) => write!(f, "- {path}: {value}"),
            Change::Changed(path, before, after) => write!(f, "~ {path}: {before} -> {after}"),
        }
    }
}

/// The differences from `before` to `after`, objects compared member by member and arrays
/// element by element.
pub(crate) fn diff(before: &Value, after: &Value) -> Vec<Change> {
    let mut changes = Vec::new();
    walk(String::new(), before, after, &mut changes);
    changes
}

fn walk(path: String, before: &Value, after: &Value, out: &mut Vec<Change>) {
    match (before, after) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in a {
                let child = format!("{path}/{}", escape(key));
                match b.get(key) {
                    Some(other) => walk(child, value, other, out),
                    None => out.push(Change::Removed(child, value.clone())),
                }
            }
            for (key, value) in b {
                if !a.contains_key(key) {
                    out.push(Change::Added(
                        format!("{path}/{}", escape(key)),
                        value.clone(),
                    ));
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (index, value) in a.iter().enumerate() {
                let child = format!("{path}/{index}");
                match b.get(index) {
                    Some(other) => walk(child, value, other, out),
                    None => out.push(Change::Removed(child, value.clone())),
                }
            }
            for (index, value) in b.iter().enumerate().skip(a.len()) {
                out.push(Change::Added(format!("{path}/{index}"), value.clone()));
            }
        }
        _ if before != after => out.push(Change::Changed(path, before.clone(), after.clone())),
        _ => {}
    }
}

/// JSON pointer escaping (RFC 6901).
fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn changed_added_and_removed_members_are_reported_with_their_pointer() {
        let before = json!({"a": {"x": 1, "gone": true}, "list": [1]});
        let after = json!({"a": {"x": 2, "k/v": "new"}, "list": [1, 2]});
        let changes: Vec<String> = diff(&before, &after)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            changes,
            vec![
                "~ /a/x: 1 -> 2",
                "- /a/gone: true",
                "+ /a/k~1v: \"new\"",
                "+ /list/1: 2",
            ]
        );
    }
}
