//! API errors as the Kubernetes API server reports them: `meta.k8s.io/v1` `Status` objects with
//! the right HTTP code, `reason` and `details` (k8s.io/apimachinery/pkg/api/errors).

use serde_json::{Value, json};

use crate::schema::Cause;

/// A failed request, ready to be rendered as a `Status`.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
    /// Seconds for a `Retry-After` header (429).
    pub retry_after: Option<u64>,
}

/// What an error is about: `details.{group, kind, name}` (kind is the plural resource name).
#[derive(Clone, Copy, Debug)]
pub struct Subject<'a> {
    pub group: &'a str,
    pub resource: &'a str,
    pub name: &'a str,
}

impl Subject<'_> {
    /// `pods` or `pureflashstores.pureflash.io`, as messages name a resource.
    fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.resource.to_owned()
        } else {
            format!("{}.{}", self.resource, self.group)
        }
    }

    fn details(&self) -> Value {
        let mut details = json!({ "name": self.name, "kind": self.resource });
        if !self.group.is_empty() {
            details["group"] = json!(self.group);
        }
        details
    }
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }

    pub fn not_found(subject: Subject<'_>) -> ApiError {
        ApiError {
            details: Some(subject.details()),
            ..Self::new(
                404,
                "NotFound",
                format!("{} \"{}\" not found", subject.qualified(), subject.name),
            )
        }
    }

    /// A path that names no resource (unknown group, version or plural).
    pub fn no_route(path: &str) -> ApiError {
        Self::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        )
    }

    pub fn already_exists(subject: Subject<'_>) -> ApiError {
        ApiError {
            details: Some(subject.details()),
            ..Self::new(
                409,
                "AlreadyExists",
                format!(
                    "{} \"{}\" already exists",
                    subject.qualified(),
                    subject.name
                ),
            )
        }
    }

    /// Optimistic concurrency or precondition failure.
    pub fn conflict(subject: Subject<'_>, why: &str) -> ApiError {
        ApiError {
            details: Some(subject.details()),
            ..Self::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{}\": {why}",
                    subject.qualified(),
                    subject.name
                ),
            )
        }
    }

    /// The stored object changed since the client read it.
    pub fn stale(subject: Subject<'_>) -> ApiError {
        Self::conflict(
            subject,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// Server-side apply conflicts: one cause per field owned by another manager.
    pub fn apply_conflicts(subject: Subject<'_>, conflicts: &[(String, String)]) -> ApiError {
        let causes: Vec<Value> = conflicts
            .iter()
            .map(|(manager, field)| {
                json!({ "reason": "FieldManagerConflict", "message": format!("conflict with \"{manager}\""), "field": field })
            })
            .collect();
        let listing: Vec<String> = conflicts
            .iter()
            .map(|(manager, field)| format!("- {manager}: {field}"))
            .collect();
        let mut details = subject.details();
        details["causes"] = json!(causes);
        ApiError {
            details: Some(details),
            ..Self::new(
                409,
                "Conflict",
                format!(
                    "Apply failed with {} conflict{}: {}",
                    conflicts.len(),
                    if conflicts.len() == 1 { "" } else { "s" },
                    listing.join("\n")
                ),
            )
        }
    }

    /// Validation failure (422) with one cause per invalid field.
    pub fn invalid(kind: &str, group: &str, name: &str, causes: &[Cause]) -> ApiError {
        let qualified = if group.is_empty() {
            kind.to_owned()
        } else {
            format!("{kind}.{group}")
        };
        let listing: Vec<String> = causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        let summary = match listing.as_slice() {
            [one] => one.clone(),
            many => format!("[{}]", many.join(", ")),
        };
        let mut details = json!({
            "name": name,
            "kind": kind,
            "causes": causes.iter().map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field})).collect::<Vec<_>>(),
        });
        if !group.is_empty() {
            details["group"] = json!(group);
        }
        ApiError {
            details: Some(details),
            ..Self::new(
                422,
                "Invalid",
                format!("{qualified} \"{name}\" is invalid: {summary}"),
            )
        }
    }

    /// `401 Unauthorized`: credentials that authenticate nobody (`NewUnauthorized`).
    pub fn unauthorized() -> ApiError {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    /// `403 Forbidden` (`NewForbidden`): `pods "p" is forbidden: <why>`, `pods is forbidden:
    /// <why>` when nothing is named, `forbidden: <why>` for a path that is no resource. Details
    /// carry only what is known, as Go omits empty fields.
    pub fn forbidden(group: &str, resource: &str, name: &str, why: &str) -> ApiError {
        let subject = Subject {
            group,
            resource,
            name,
        };
        let message = match (resource, name) {
            ("", _) => format!("forbidden: {why}"),
            (_, "") => format!("{} is forbidden: {why}", subject.qualified()),
            _ => format!("{} \"{name}\" is forbidden: {why}", subject.qualified()),
        };
        let mut details = serde_json::Map::new();
        for (key, value) in [("name", name), ("group", group), ("kind", resource)] {
            if !value.is_empty() {
                details.insert(key.to_owned(), json!(value));
            }
        }
        ApiError {
            details: Some(Value::Object(details)),
            ..Self::new(403, "Forbidden", message)
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        Self::new(400, "BadRequest", message)
    }

    pub fn method_not_allowed(message: impl Into<String>) -> ApiError {
        Self::new(405, "MethodNotAllowed", message)
    }

    pub fn unsupported_media_type(content_type: &str) -> ApiError {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/merge-patch+json, application/json-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml (got {content_type})"
            ),
        )
    }

    /// `410 Gone` for a resourceVersion older than the retained history.
    pub fn expired(requested: u64, oldest: u64) -> ApiError {
        Self::new(
            410,
            "Expired",
            format!("too old resource version: {requested} ({oldest})"),
        )
    }

    pub fn too_many_requests(retry_after: u64) -> ApiError {
        ApiError {
            retry_after: Some(retry_after),
            ..Self::new(
                429,
                "TooManyRequests",
                "the server has received too many requests and has asked us to try again later",
            )
        }
    }

    /// `NewTooManyRequests(message, retryAfterSeconds)` with `details.causes` as (type,
    /// message) pairs: an eviction refused by a disruption budget. A wait of 0 sends no
    /// `Retry-After`.
    pub fn too_many_requests_because(
        message: &str,
        retry_after: u64,
        causes: &[(&str, &str)],
    ) -> ApiError {
        let causes: Vec<Value> = causes
            .iter()
            .map(|(kind, message)| json!({"reason": kind, "message": message}))
            .collect();
        ApiError {
            details: Some(json!({ "causes": causes })),
            retry_after: (retry_after > 0).then_some(retry_after),
            ..Self::new(429, "TooManyRequests", message)
        }
    }

    /// A failure `Status` a REST handler returned as its result (`errors.FromObject`): its code
    /// and message, and no reason.
    pub fn failure(code: u16, message: impl Into<String>) -> ApiError {
        Self::new(code, "", message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        Self::new(
            500,
            "InternalError",
            format!("Internal error occurred: {}", message.into()),
        )
    }

    /// The error as a `Status` object.
    pub fn status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "code": self.code,
        });
        // Go omits an empty reason.
        if !self.reason.is_empty() {
            status["reason"] = json!(self.reason);
        }
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        if let Some(seconds) = self.retry_after {
            let details = status["details"].as_object().cloned().unwrap_or_default();
            status["details"] = Value::Object(details);
            status["details"]["retryAfterSeconds"] = json!(seconds);
        }
        status
    }
}

/// The `Status` a REST handler returns for a success without an object (an eviction: 201).
pub fn success_code(code: u16) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": code})
}

/// The `Status` returned by deletes that do not return the object (and by collection deletes).
pub fn success_status(subject: Subject<'_>) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": subject.details(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD: Subject<'static> = Subject {
        group: "",
        resource: "pods",
        name: "p",
    };

    #[test]
    fn not_found_is_the_api_servers_status() {
        assert_eq!(
            ApiError::not_found(POD).status(),
            json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"pods \"p\" not found","reason":"NotFound","details":{"name":"p","kind":"pods"},"code":404})
        );
        let crd = Subject {
            group: "pureflash.io",
            resource: "pureflashstores",
            name: "s1",
        };
        assert_eq!(
            ApiError::not_found(crd).message,
            "pureflashstores.pureflash.io \"s1\" not found"
        );
        assert_eq!(
            ApiError::not_found(crd).status()["details"]["group"],
            "pureflash.io"
        );
    }

    #[test]
    fn unauthorized_and_forbidden() {
        assert_eq!(
            ApiError::unauthorized().status(),
            json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401})
        );
        let named = ApiError::forbidden("", "pods", "p", "why");
        assert_eq!(
            (named.code, named.reason, named.message.as_str()),
            (403, "Forbidden", "pods \"p\" is forbidden: why")
        );
        assert_eq!(
            named.status()["details"],
            json!({"name": "p", "kind": "pods"})
        );
        let collection = ApiError::forbidden("pureflash.io", "pureflashstores", "", "why");
        assert_eq!(
            collection.message,
            "pureflashstores.pureflash.io is forbidden: why"
        );
        let path = ApiError::forbidden("", "", "", "why");
        assert_eq!(path.message, "forbidden: why");
        assert_eq!(path.status()["details"], json!({}));
    }

    #[test]
    fn conflicts_and_invalid() {
        assert_eq!(
            ApiError::stale(POD).message,
            "Operation cannot be fulfilled on pods \"p\": the object has been modified; please apply your changes to the latest version and try again"
        );
        let cause = Cause {
            reason: "FieldValueRequired".into(),
            message: "Required value".into(),
            field: "spec.trays".into(),
        };
        let err = ApiError::invalid("PureFlashStore", "pureflash.io", "s1", &[cause]);
        assert_eq!(err.code, 422);
        assert_eq!(
            err.message,
            "PureFlashStore.pureflash.io \"s1\" is invalid: spec.trays: Required value"
        );
        assert_eq!(err.status()["details"]["causes"][0]["field"], "spec.trays");
        let conflict = ApiError::apply_conflicts(
            POD,
            &[(
                "kubectl".into(),
                ".spec.containers[name=\"pfs\"].image".into(),
            )],
        );
        assert!(
            conflict
                .message
                .starts_with("Apply failed with 1 conflict: - kubectl:")
        );
        assert_eq!(
            ApiError::too_many_requests(1).status()["details"]["retryAfterSeconds"],
            1
        );
    }
}
