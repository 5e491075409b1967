//! Object metadata rules: names, generated names, timestamps, labels (apimachinery validation).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::schema::Cause;

/// The server's clock: the machine's, shifted by an offset a test may set to play a cluster
/// whose clock differs from its clients' (its kubelets' too: see the node agent's). Shared by
/// the timestamps the server sets and the `Date` header of its answers.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    offset_ms: Arc<AtomicI64>,
}

impl Clock {
    pub fn now(&self) -> SystemTime {
        let offset = self.offset_ms.load(Ordering::Relaxed);
        let magnitude = Duration::from_millis(offset.unsigned_abs());
        if offset >= 0 {
            SystemTime::now() + magnitude
        } else {
            SystemTime::now() - magnitude
        }
    }

    /// Server time − machine time, in milliseconds.
    pub fn set_offset_ms(&self, offset_ms: i64) {
        self.offset_ms.store(offset_ms, Ordering::Relaxed);
    }
}

/// RFC 3339 with seconds, as the API server writes timestamps.
pub fn timestamp(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

pub fn unix_seconds(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// `generateName` + 5 characters from the API server's alphabet (no vowels, no confusables).
pub fn generate_name(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let random = uuid::Uuid::new_v4();
    let suffix: String = random.as_bytes()[..5]
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect();
    let max_prefix = 63 - 5;
    format!("{}{suffix}", &prefix[..prefix.len().min(max_prefix)])
}

fn cause(reason: &str, field: &str, message: String) -> Cause {
    Cause {
        reason: reason.into(),
        message,
        field: field.into(),
    }
}

/// DNS-1123 subdomain: most object names.
pub fn check_subdomain(name: &str, field: &str) -> Option<Cause> {
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    (!valid).then(|| {
        cause(
            "FieldValueInvalid",
            field,
            format!(
                "Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
            ),
        )
    })
}

/// DNS-1123 label: namespace names.
pub fn check_label_name(name: &str, field: &str) -> Option<Cause> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    (!valid).then(|| {
        cause(
            "FieldValueInvalid",
            field,
            format!(
                "Invalid value: \"{name}\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
            ),
        )
    })
}

/// DNS-1035 label: Service names (they become DNS names, so they start with a letter).
pub fn check_dns1035_label(name: &str, field: &str) -> Option<Cause> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
        && !name.ends_with('-');
    (!valid).then(|| {
        cause(
            "FieldValueInvalid",
            field,
            format!(
                "Invalid value: \"{name}\": a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
            ),
        )
    })
}

/// `path.ValidatePathSegmentName`: RBAC object names (`system:controller:x` is fine), which
/// only have to be usable in a URL path.
pub fn check_path_segment_name(name: &str, field: &str) -> Option<Cause> {
    let problem = match name {
        "." | ".." => format!("may not be '{name}'"),
        _ if name.contains('/') => "may not contain '/'".to_owned(),
        _ if name.contains('%') => "may not contain '%'".to_owned(),
        _ => return None,
    };
    Some(cause(
        "FieldValueInvalid",
        field,
        format!("Invalid value: \"{name}\": {problem}"),
    ))
}

/// `ValidateQualifiedName`: an optional DNS subdomain prefix and `/`, then a name of at most
/// 63 alphanumerics, `-`, `_` or `.` that starts and ends alphanumeric.
pub fn qualified_name_ok(name: &str) -> bool {
    let (prefix, name) = match name.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, name),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .last()
            .is_some_and(|b| b.is_ascii_alphanumeric());
    name_ok && prefix.is_none_or(|p| check_subdomain(p, "").is_none())
}

pub fn label_value_ok(value: &str) -> bool {
    value.is_empty()
        || (value.len() <= 63
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && value
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphanumeric())
            && value
                .bytes()
                .last()
                .is_some_and(|b| b.is_ascii_alphanumeric()))
}

/// Labels and annotation keys, as `ValidateObjectMeta` checks them.
pub fn check_labels_and_annotations(metadata: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    if let Some(labels) = metadata.get("labels").and_then(Value::as_object) {
        for (key, value) in labels {
            if !qualified_name_ok(key) {
                causes.push(cause("FieldValueInvalid", "metadata.labels", format!("Invalid value: \"{key}\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character")));
            }
            match value.as_str() {
                Some(v) if label_value_ok(v) => {}
                _ => causes.push(cause("FieldValueInvalid", "metadata.labels", format!("Invalid value: {value}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"))),
            }
        }
    }
    if let Some(annotations) = metadata.get("annotations").and_then(Value::as_object) {
        for (key, value) in annotations {
            if !qualified_name_ok(key) {
                causes.push(cause("FieldValueInvalid", "metadata.annotations", format!("Invalid value: \"{key}\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character")));
            }
            if !value.is_string() {
                causes.push(cause(
                    "FieldValueTypeInvalid",
                    &format!("metadata.annotations.{key}"),
                    "Invalid value: annotation values must be strings".into(),
                ));
            }
        }
    }
    causes
}

/// Owner references, as `ValidateOwnerReferences` checks them: each names its owner fully,
/// and at most one is the controller.
pub fn check_owner_references(metadata: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let Some(owners) = metadata.get("ownerReferences").and_then(Value::as_array) else {
        return causes;
    };
    let mut controllers = Vec::new();
    for owner in owners {
        let field = |name: &str| owner.get(name).and_then(Value::as_str).unwrap_or_default();
        for (name, what) in [
            ("apiVersion", "version"),
            ("kind", "kind"),
            ("name", "name"),
            ("uid", "uid"),
        ] {
            if field(name).is_empty() {
                causes.push(cause(
                    "FieldValueInvalid",
                    &format!("metadata.ownerReferences.{name}"),
                    format!("Invalid value: \"\": {what} must not be empty"),
                ));
            }
        }
        if owner.get("controller") == Some(&Value::Bool(true)) {
            controllers.push(format!("{}/{}", field("kind"), field("name")));
        }
    }
    if controllers.len() > 1 {
        causes.push(cause(
            "FieldValueInvalid",
            "metadata.ownerReferences",
            format!(
                "Only one reference can have Controller set to true. Found \"true\" in references for {}",
                controllers.join(" and ")
            ),
        ));
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn owner_references_name_their_owner_and_one_controller_at_most() {
        let owner = |uid: &str, controller: bool| json!({"apiVersion": "v1", "kind": "Thing", "name": "t", "uid": uid, "controller": controller});
        let meta = |owners: Value| json!({"ownerReferences": owners});
        assert!(
            check_owner_references(&meta(json!([owner("a", true), owner("b", false)]))).is_empty()
        );
        let two = check_owner_references(&meta(json!([owner("a", true), owner("b", true)])));
        assert_eq!(two.len(), 1);
        assert!(
            two[0]
                .message
                .starts_with("Only one reference can have Controller set to true")
        );
        let unnamed = check_owner_references(&meta(json!([{"apiVersion": "v1", "kind": "Thing"}])));
        let fields: Vec<&str> = unnamed.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "metadata.ownerReferences.name",
                "metadata.ownerReferences.uid"
            ]
        );
    }

    #[test]
    fn names() {
        assert!(check_subdomain("pfs-1.example", "metadata.name").is_none());
        assert!(check_subdomain("Bad_Name", "metadata.name").is_some());
        assert!(check_label_name("ns-1", "metadata.name").is_none());
        assert!(check_label_name("a.b", "metadata.name").is_some());
        assert!(check_dns1035_label("metrics-1", "metadata.name").is_none());
        for bad in ["1metrics", "metrics.x", "metrics-", "Metrics"] {
            assert!(check_dns1035_label(bad, "metadata.name").is_some(), "{bad}");
        }
        assert!(check_path_segment_name("system:controller:x", "metadata.name").is_none());
        assert_eq!(
            check_path_segment_name("a/b", "metadata.name")
                .unwrap()
                .message,
            "Invalid value: \"a/b\": may not contain '/'"
        );
        assert!(check_path_segment_name("..", "metadata.name").is_some());
        let generated = generate_name("pfs-");
        assert_eq!(generated.len(), 9);
        assert!(generated.starts_with("pfs-") && check_subdomain(&generated, "").is_none());
    }

    #[test]
    fn labels() {
        assert!(
            check_labels_and_annotations(
                &json!({"labels": {"app.kubernetes.io/name": "pf", "x": ""}})
            )
            .is_empty()
        );
        assert_eq!(
            check_labels_and_annotations(&json!({"labels": {"-x": "y", "a": "b c"}})).len(),
            2
        );
        assert_eq!(
            check_labels_and_annotations(&json!({"annotations": {"a": 1}})).len(),
            1
        );
    }
}
