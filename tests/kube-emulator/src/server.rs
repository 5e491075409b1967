//! The HTTP face of the emulator: authenticates and authorizes requests (bearer tokens, RBAC),
//! routes Kubernetes API paths to `state` calls, negotiates Table output, streams watches,
//! serves discovery, and applies injected faults.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use crate::auth::{AuditLog, AuditRecord, Caller, Tokens};
use crate::convert;
use crate::errors::{ApiError, Subject};
use crate::faults::{Action, Faults, RequestInfo};
use crate::meta;
use crate::rbac::{self, Attributes};
use crate::resources::ResourceType;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::state::{
    DeleteOptions, EventType, Eviction, FieldValidation, ObjectKey, Part, PatchType, Selection,
    State, WriteOptions,
};
use crate::table::{self, IncludeObject};

/// The Kubernetes version the emulator claims (kubectl picks its matching binary from it).
pub const VERSION: (&str, &str) = ("1", "33");

/// What every request handler shares.
pub struct Shared {
    pub state: Mutex<State>,
    pub faults: Faults,
    pub tokens: Tokens,
    pub audit: AuditLog,
    /// How often watches that asked for bookmarks get one.
    pub bookmark_interval: Duration,
}

/// A parsed request path.
enum Route {
    Version,
    Health,
    CoreVersions,
    Groups,
    Group(String),
    Resources {
        group: String,
        version: String,
    },
    OpenApiRoot,
    OpenApi {
        group: String,
        version: String,
    },
    Resource {
        rt: Arc<ResourceType>,
        namespace: Option<String>,
        name: Option<String>,
        subresource: Option<String>,
    },
}

type Query = Vec<(String, String)>;

fn param<'a>(query: &'a Query, key: &str) -> Option<&'a str> {
    query
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn flag(query: &Query, key: &str) -> bool {
    matches!(param(query, key), Some("true" | "1"))
}

fn json_response(code: u16, body: &Value, warnings: &[String]) -> Response {
    let mut response = Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::OK))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(serde_json::to_vec(body).unwrap_or_default()))
        .expect("valid response");
    for warning in warnings {
        let text = format!("299 - \"{}\"", warning.replace('"', "\\\""));
        if let Ok(value) = HeaderValue::from_str(&text) {
            response.headers_mut().append("Warning", value);
        }
    }
    response
}

fn error_response(error: &ApiError) -> Response {
    let mut response = json_response(error.code, &error.status(), &[]);
    if let Some(seconds) = error.retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

/// The field manager of a write: `?fieldManager=`, else the client's name from its User-Agent
/// (`kubectl/v1.33.0 (linux/amd64)` → `kubectl`), as the API server does.
fn field_manager(query: &Query, headers: &HeaderMap) -> String {
    if let Some(manager) = param(query, "fieldManager") {
        return manager.to_owned();
    }
    let agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("unknown");
    agent.split('/').next().unwrap_or("unknown").to_owned()
}

fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("as=Table"))
}

impl Shared {
    fn route(&self, path: &str) -> Result<Route, ApiError> {
        let segments: Vec<&str> = path
            .trim_matches('/')
            .split('/')
            .filter(|s| !s.is_empty())
            .collect();
        let state = self.state.lock().expect("state lock");
        let resource = |group: &str, version: &str, rest: &[&str]| -> Result<Route, ApiError> {
            // The deprecated `/watch/` form: the verb was taken from the path already.
            let rest = match rest {
                ["watch", tail @ ..] => tail,
                _ => rest,
            };
            let lookup = |plural: &str| {
                state
                    .registry
                    .lookup(group, version, plural)
                    .ok_or_else(|| ApiError::no_route(path))
            };
            let (namespace, rest) = match rest {
                ["namespaces", ns, plural, tail @ ..]
                    if !(group.is_empty() && matches!(*plural, "status" | "finalize")) =>
                {
                    (Some((*ns).to_owned()), [&[*plural][..], tail].concat())
                }
                _ => (None, rest.to_vec()),
            };
            let (rt, name, subresource) = match rest.as_slice() {
                [plural] => (lookup(plural)?, None, None),
                [plural, name] => (lookup(plural)?, Some((*name).to_owned()), None),
                [plural, name, sub] => (
                    lookup(plural)?,
                    Some((*name).to_owned()),
                    Some((*sub).to_owned()),
                ),
                _ => return Err(ApiError::no_route(path)),
            };
            if namespace.is_some() && !rt.namespaced {
                return Err(ApiError::no_route(path));
            }
            if let Some(sub) = &subresource
                && !(sub == "status" && rt.status_subresource)
                && !(sub == "eviction" && rt.has_eviction())
            {
                return Err(ApiError::no_route(path));
            }
            Ok(Route::Resource {
                rt,
                namespace,
                name,
                subresource,
            })
        };
        match segments.as_slice() {
            ["version"] => Ok(Route::Version),
            ["healthz" | "livez" | "readyz", ..] => Ok(Route::Health),
            ["api"] => Ok(Route::CoreVersions),
            ["api", "v1"] => Ok(Route::Resources {
                group: String::new(),
                version: "v1".into(),
            }),
            ["api", "v1", rest @ ..] => resource("", "v1", rest),
            ["apis"] => Ok(Route::Groups),
            ["apis", group] => Ok(Route::Group((*group).to_owned())),
            ["apis", group, version] => Ok(Route::Resources {
                group: (*group).to_owned(),
                version: (*version).to_owned(),
            }),
            ["apis", group, version, rest @ ..] => resource(group, version, rest),
            ["openapi", "v3"] => Ok(Route::OpenApiRoot),
            ["openapi", "v3", "api", version] => Ok(Route::OpenApi {
                group: String::new(),
                version: (*version).to_owned(),
            }),
            ["openapi", "v3", "apis", group, version] => Ok(Route::OpenApi {
                group: (*group).to_owned(),
                version: (*version).to_owned(),
            }),
            _ => Err(ApiError::no_route(path)),
        }
    }
}

impl Shared {
    /// Authentication and RBAC authorization, as the API server's filters do them before any
    /// routing: the error to answer with, if any. Requests without credentials are the
    /// administrator's; resource requests with a registered token are audited.
    fn authorize(&self, authorization: Option<&str>, request: &Attributes) -> Option<ApiError> {
        let credential = match self.tokens.caller(authorization) {
            Caller::Admin => return None,
            Caller::Unknown => return Some(ApiError::unauthorized()),
            Caller::Token(credential) => credential,
        };
        let audit = |allowed: bool| {
            if request.resource_request {
                self.audit
                    .record(AuditRecord::new(&credential.user, request, allowed));
            }
        };
        let state = self.state.lock().expect("state lock");
        if let Some((namespace, name)) = &credential.service_account
            && !state.service_account_exists(namespace, name)
        {
            audit(false);
            return Some(ApiError::unauthorized());
        }
        let decision = state.rbac_policy().authorize(&credential.user, request);
        audit(decision.allowed);
        (!decision.allowed).then(|| rbac::forbidden(&credential.user, request, &decision))
    }

    /// The `create` authorization of a server-side apply that creates its object (see
    /// [`rbac::create_on_apply`]), for token callers; audited as a `create`. The API server
    /// authorizes it once the object is ready to be created, after the patch was applied and
    /// the result validated, so the apply is first tried as a dry run: its errors come first.
    #[allow(clippy::too_many_arguments)]
    fn authorize_create_on_apply(
        &self,
        state: &mut State,
        authorization: Option<&str>,
        request: &Attributes,
        content_type: &str,
        rt: &ResourceType,
        namespace: Option<&str>,
        patch: &Value,
        options: &WriteOptions,
    ) -> Result<(), ApiError> {
        let Caller::Token(credential) = self.tokens.caller(authorization) else {
            return Ok(());
        };
        let name = request.name.as_deref().unwrap_or_default();
        let exists = state.get(rt, namespace, name).is_ok();
        let Some(create) = rbac::create_on_apply(request, content_type, exists) else {
            return Ok(());
        };
        let trial = WriteOptions {
            dry_run: true,
            ..options.clone()
        };
        state.patch(
            rt,
            namespace,
            name,
            PatchType::Apply,
            patch.clone(),
            Part::Main,
            &trial,
        )?;
        let decision = state.rbac_policy().authorize(&credential.user, &create);
        self.audit.record(AuditRecord::new(
            &credential.user,
            &create,
            decision.allowed,
        ));
        if decision.allowed {
            Ok(())
        } else {
            Err(rbac::forbidden_create_on_apply(&create, &decision))
        }
    }
}

/// The single entry point: every request comes here.
pub async fn handle(shared: Arc<Shared>, request: Request<Body>) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    let query: Query =
        serde_urlencoded::from_str(parts.uri.query().unwrap_or_default()).unwrap_or_default();
    let mut attributes = Attributes::from_request(parts.method.as_str(), &path, &query);
    // The API server answers `GET …/pods/p?watch=true` with the object; the emulator serves a
    // watch of it, so that is what gets authorized.
    if attributes.resource_request && attributes.verb == "get" && flag(&query, "watch") {
        attributes.verb = "watch".to_owned();
    }
    let authorization = parts
        .headers
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or_default());
    if let Some(error) = shared.authorize(authorization, &attributes) {
        return error_response(&error);
    }
    let route = match shared.route(&path) {
        Ok(route) => route,
        Err(error) => return error_response(&error),
    };
    let Route::Resource {
        rt,
        namespace,
        name,
        subresource,
    } = route
    else {
        return discovery(&shared, &route, &parts.headers);
    };
    // The verb authorized, where the path allows it (`name` is the path's, not a selector's).
    // An eviction is a create of one Pod's subresource, and nothing else.
    let eviction = subresource.as_deref() == Some("eviction");
    let verb = match (attributes.verb.as_str(), name.is_some()) {
        ("create", true) if eviction => "create",
        (_, _) if eviction => {
            return error_response(&ApiError::method_not_allowed(
                "the server does not allow this method on the requested resource",
            ));
        }
        ("watch", _) => "watch",
        ("get", true) => "get",
        ("list", false) => "list",
        ("create", false) => "create",
        ("update", true) => "update",
        ("patch", true) => "patch",
        ("delete", true) => "delete",
        ("deletecollection", false) => "deletecollection",
        _ => {
            return error_response(&ApiError::method_not_allowed(format!(
                "{} is not supported on {path}",
                parts.method
            )));
        }
    };
    let bytes = match axum::body::to_bytes(body, 64 << 20).await {
        Ok(bytes) => bytes,
        Err(error) => {
            return error_response(&ApiError::bad_request(format!(
                "cannot read the request body: {error}"
            )));
        }
    };
    let info = RequestInfo {
        verb,
        resource: &rt.plural,
        namespace: namespace.as_deref(),
        name: name.as_deref(),
        subresource: subresource.as_deref(),
        body: &bytes,
        dry_run: param(&query, "dryRun") == Some("All"),
    };
    match shared.faults.take(&info) {
        Some(Action::Fail(code)) => {
            return error_response(&injected(code, &rt, name.as_deref().unwrap_or_default()));
        }
        Some(Action::Delay(delay)) => tokio::time::sleep(delay).await,
        None => {}
    }
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_owned();
    let part = if subresource.is_some() {
        Part::Status
    } else {
        Part::Main
    };
    let ns = namespace.as_deref();
    let options = WriteOptions {
        field_manager: field_manager(&query, &parts.headers),
        dry_run: param(&query, "dryRun") == Some("All"),
        field_validation: match param(&query, "fieldValidation") {
            Some("Strict") => FieldValidation::Strict,
            Some("Ignore") => FieldValidation::Ignore,
            _ => FieldValidation::Warn,
        },
        force: flag(&query, "force"),
    };
    if eviction {
        let result = decode(&bytes, &content_type).and_then(|body| {
            let (request, warnings) = eviction_request(
                &body,
                ns.unwrap_or_default(),
                &query,
                options.field_validation,
            )?;
            let mut state = shared.state.lock().expect("state lock");
            let code = state.evict(
                ns.unwrap_or_default(),
                name.as_deref().unwrap_or_default(),
                &request,
            )?;
            Ok((code, warnings))
        });
        return match result {
            Ok((code, warnings)) => {
                json_response(code, &crate::errors::success_code(code), &warnings)
            }
            Err(error) => error_response(&error),
        };
    }
    let result = match verb {
        "watch" => return watch(shared, rt, ns, name.as_deref(), &query).await,
        "get" => {
            let state = shared.state.lock().expect("state lock");
            state.get(&rt, ns, name.as_deref().unwrap_or_default()).map(|object| {
                if wants_table(&parts.headers) {
                    return json_response(200, &render_table(&rt, &[object], &query, &state.current_rv().to_string(), state.clock.now()), &[]);
                }
                json_response(200, &object, &[])
            })
        }
        "list" => list(&shared, &rt, ns, &query, &parts.headers),
        "create" => decode(&bytes, &content_type).and_then(|body| {
            let mut state = shared.state.lock().expect("state lock");
            state.create(&rt, ns, body, &options).map(|o| json_response(o.code, &o.object, &o.warnings))
        }),
        "update" => decode(&bytes, &content_type).and_then(|body| {
            let mut state = shared.state.lock().expect("state lock");
            state.update(&rt, ns, name.as_deref().unwrap_or_default(), body, part, &options).map(|o| json_response(o.code, &o.object, &o.warnings))
        }),
        "patch" => patch_type(&content_type).and_then(|patch_type| {
            let body = decode(&bytes, &content_type)?;
            let mut state = shared.state.lock().expect("state lock");
            if patch_type == PatchType::Apply && part == Part::Main {
                shared.authorize_create_on_apply(&mut state, authorization, &attributes, &content_type, &rt, ns, &body, &options)?;
            }
            state.patch(&rt, ns, name.as_deref().unwrap_or_default(), patch_type, body, part, &options).map(|o| json_response(o.code, &o.object, &o.warnings))
        }),
        "delete" => delete_options(&bytes, &query).and_then(|options| {
            let mut state = shared.state.lock().expect("state lock");
            let name = name.as_deref().unwrap_or_default();
            state.delete(&rt, ns, name, &options).map(|o| json_response(o.code, &o.object, &[]))
        }),
        "deletecollection" => delete_options(&bytes, &query).and_then(|options| {
            let selection = selection(&rt, ns, &query)?;
            let mut state = shared.state.lock().expect("state lock");
            let names: Vec<(String, String)> = state
                .objects(&rt)
                .filter(|o| selection.matches(o))
                .map(|o| (o.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default().to_owned(), o["metadata"]["name"].as_str().unwrap_or_default().to_owned()))
                .collect();
            let mut items = Vec::new();
            for (namespace, name) in names {
                let namespace = (!namespace.is_empty()).then_some(namespace);
                items.push(state.delete(&rt, namespace.as_deref(), &name, &options)?.object);
            }
            let list = json!({"kind": format!("{}List", rt.kind), "apiVersion": rt.api_version(), "metadata": {"resourceVersion": state.current_rv().to_string()}, "items": items});
            Ok(json_response(200, &list, &[]))
        }),
        _ => unreachable!("verbs are enumerated above"),
    };
    match result {
        Ok(response) => response,
        Err(error) => error_response(&error),
    }
}

fn injected(code: u16, rt: &ResourceType, name: &str) -> ApiError {
    let subject = Subject {
        group: &rt.group,
        resource: &rt.plural,
        name,
    };
    match code {
        429 => ApiError::too_many_requests(1),
        // As a ResourceQuota or an admission webhook refuses an object.
        403 => ApiError::forbidden(
            &rt.group,
            &rt.plural,
            name,
            "exceeded quota: injected fault",
        ),
        409 => ApiError::stale(subject),
        404 => ApiError::not_found(subject),
        410 => ApiError::expired(0, 0),
        code => ApiError {
            code,
            ..ApiError::internal("injected fault")
        },
    }
}

/// A request body: JSON, or YAML for server-side apply.
fn decode(bytes: &Bytes, content_type: &str) -> Result<Value, ApiError> {
    if content_type.contains("protobuf") {
        return crate::protobuf::decode(bytes).map_err(|e| ApiError::unsupported_media_type(&e));
    }
    if content_type.contains("cbor") {
        return Err(ApiError::unsupported_media_type(content_type));
    }
    if content_type.starts_with("application/apply-patch+yaml") || content_type.contains("yaml") {
        return serde_yaml::from_slice(bytes)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
    })
}

fn patch_type(content_type: &str) -> Result<PatchType, ApiError> {
    let media = content_type.split(';').next().unwrap_or_default().trim();
    match media {
        "application/merge-patch+json" => Ok(PatchType::Merge),
        "application/json-patch+json" => Ok(PatchType::Json),
        "application/strategic-merge-patch+json" => Ok(PatchType::Strategic),
        "application/apply-patch+yaml" | "application/apply-patch+json" => Ok(PatchType::Apply),
        other => Err(ApiError::unsupported_media_type(other)),
    }
}

fn delete_options(bytes: &Bytes, query: &Query) -> Result<DeleteOptions, ApiError> {
    let body: Value = if bytes.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(bytes)
            .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?
    };
    Ok(delete_options_of(&body, query))
}

/// A policy/v1 (or v1beta1) `Eviction` body, decoded and checked as the API server's create
/// handler and eviction REST do: its version, its namespace, its `deleteOptions` (the query's
/// `dryRun` counts too), and the `Warning`s of fields an `Eviction` does not have (an error
/// under `fieldValidation=Strict`), which the server otherwise ignores.
fn eviction_request(
    body: &Value,
    namespace: &str,
    query: &Query,
    validation: FieldValidation,
) -> Result<(Eviction, Vec<String>), ApiError> {
    let api_version = body
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("policy/v1");
    if !matches!(api_version, "policy/v1" | "policy/v1beta1") {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({api_version}) does not match the expected API version (policy/v1)"
        )));
    }
    let kind = body
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("Eviction");
    if kind != "Eviction" {
        let version = api_version.rsplit('/').next().unwrap_or_default();
        return Err(ApiError::bad_request(format!(
            "{kind} in version \"{version}\" cannot be handled as a Eviction: no kind \"{kind}\" is registered for version \"{api_version}\" in scheme \"pkg/api/legacyscheme/scheme.go:30\""
        )));
    }
    let body_namespace = body
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !body_namespace.is_empty() && body_namespace != namespace {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    let unknown: Vec<String> = body
        .as_object()
        .into_iter()
        .flatten()
        .map(|(field, _)| field)
        .filter(|field| {
            !matches!(
                field.as_str(),
                "apiVersion" | "kind" | "metadata" | "deleteOptions"
            )
        })
        .map(|field| format!("unknown field \"{field}\""))
        .collect();
    let warnings = match validation {
        FieldValidation::Strict if !unknown.is_empty() => {
            return Err(ApiError::bad_request(format!(
                "Eviction in version \"v1\" cannot be handled as a Eviction: strict decoding error: {}",
                unknown.join(", ")
            )));
        }
        FieldValidation::Warn => unknown,
        _ => Vec::new(),
    };
    // The query carries CreateOptions: only its dryRun applies to the delete.
    let options = body.get("deleteOptions").filter(|o| o.is_object());
    let mut delete_options = delete_options_of(options.unwrap_or(&json!({})), &Vec::new());
    delete_options.dry_run |= param(query, "dryRun") == Some("All");
    let eviction = Eviction {
        name: body
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        delete_options,
    };
    Ok((eviction, warnings))
}

/// `DeleteOptions` from a body (or an eviction's `deleteOptions`) and the query.
fn delete_options_of(body: &Value, query: &Query) -> DeleteOptions {
    let grace = body
        .get("gracePeriodSeconds")
        .and_then(Value::as_u64)
        .or_else(|| param(query, "gracePeriodSeconds").and_then(|g| g.parse().ok()));
    let propagation = body
        .get("propagationPolicy")
        .and_then(Value::as_str)
        .or_else(|| param(query, "propagationPolicy"))
        .map(str::to_owned);
    let orphan = propagation.as_deref() == Some("Orphan")
        || body.get("orphanDependents") == Some(&json!(true));
    let dry_run = body
        .get("dryRun")
        .and_then(Value::as_array)
        .is_some_and(|d| d.iter().any(|v| v == "All"))
        || param(query, "dryRun") == Some("All");
    DeleteOptions {
        grace_period_seconds: grace,
        uid: body
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(str::to_owned),
        resource_version: body
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_owned),
        orphan,
        dry_run,
    }
}

fn selection(
    rt: &ResourceType,
    namespace: Option<&str>,
    query: &Query,
) -> Result<Selection, ApiError> {
    let labels = param(query, "labelSelector")
        .filter(|s| !s.is_empty())
        .map(LabelSelector::parse)
        .transpose()
        .map_err(ApiError::bad_request)?;
    let fields = param(query, "fieldSelector")
        .filter(|s| !s.is_empty())
        .map(FieldSelector::parse)
        .transpose()
        .map_err(ApiError::bad_request)?;
    if let Some(fields) = &fields
        && let Some(unsupported) = fields.fields().into_iter().find(|f| !rt.supports_field(f))
    {
        return Err(ApiError::bad_request(format!(
            "field label not supported: {unsupported}"
        )));
    }
    // Selectors are evaluated on stored objects, with the stored form's field names.
    let fields = fields.map(|f| f.renamed(|label| convert::field_label(rt, label)));
    Ok(Selection {
        namespace: namespace.map(str::to_owned),
        labels,
        fields,
    })
}

fn render_table(
    rt: &ResourceType,
    objects: &[Value],
    query: &Query,
    resource_version: &str,
    now: SystemTime,
) -> Value {
    let include = match param(query, "includeObject") {
        Some("None") => IncludeObject::None,
        Some("Object") => IncludeObject::Object,
        _ => IncludeObject::Metadata,
    };
    table::render(
        &rt.group,
        &rt.kind,
        &rt.columns,
        objects,
        include,
        resource_version,
        meta::unix_seconds(now),
    )
}

fn list(
    shared: &Shared,
    rt: &ResourceType,
    namespace: Option<&str>,
    query: &Query,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let selection = selection(rt, namespace, query)?;
    let limit = param(query, "limit").and_then(|l| l.parse().ok());
    let after: Option<ObjectKey> = match param(query, "continue").filter(|c| !c.is_empty()) {
        None => None,
        Some(token) => {
            use base64::Engine;
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(token)
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
            let decoded =
                decoded.ok_or_else(|| ApiError::bad_request("continue key is not valid"))?;
            Some((
                decoded["ns"].as_str().unwrap_or_default().to_owned(),
                decoded["name"].as_str().unwrap_or_default().to_owned(),
            ))
        }
    };
    let state = shared.state.lock().expect("state lock");
    let list = state.list(rt, &selection, limit, after.as_ref());
    if wants_table(headers) {
        let items = list["items"].as_array().cloned().unwrap_or_default();
        let mut table = render_table(
            rt,
            &items,
            query,
            &state.current_rv().to_string(),
            state.clock.now(),
        );
        if let Some(token) = list.pointer("/metadata/continue") {
            table["metadata"]["continue"] = token.clone();
        }
        return Ok(json_response(200, &table, &[]));
    }
    Ok(json_response(200, &list, &[]))
}

/// One watch event line; stored objects are rendered as `rt`'s version (bookmarks are built
/// in it, errors are Status objects).
fn event_line(kind: &str, object: &Value, rt: &ResourceType) -> Bytes {
    let object = match kind {
        "ERROR" | "BOOKMARK" => object.clone(),
        _ => convert::to_version(rt, object),
    };
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

fn bookmark(rt: &ResourceType, rv: u64, initial_events_end: bool) -> Value {
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if initial_events_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    json!({"kind": rt.kind, "apiVersion": rt.api_version(), "metadata": metadata})
}

/// `?watch=true`: initial state or history replay, then live events, bookmarks, timeout.
async fn watch(
    shared: Arc<Shared>,
    rt: Arc<ResourceType>,
    namespace: Option<&str>,
    name: Option<&str>,
    query: &Query,
) -> Response {
    let mut selection = match selection(&rt, namespace, query) {
        Ok(selection) => selection,
        Err(error) => return error_response(&error),
    };
    if let Some(name) = name {
        match FieldSelector::parse(&format!("metadata.name={name}")) {
            Ok(by_name) => selection.fields = Some(by_name),
            Err(error) => return error_response(&ApiError::bad_request(error)),
        }
    }
    let rv: Option<u64> = param(query, "resourceVersion")
        .filter(|v| !v.is_empty())
        .and_then(|v| v.parse().ok());
    let send_initial = flag(query, "sendInitialEvents");
    let bookmarks = flag(query, "allowWatchBookmarks");
    let timeout = param(query, "timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .map(Duration::from_secs);

    // Under one lock: what to send first, and the subscription for what follows.
    let (mut first, mut receiver, mut last_rv, expired) = {
        let state = shared.state.lock().expect("state lock");
        let receiver = state.subscribe();
        let current = state.current_rv();
        let mut first: Vec<Bytes> = Vec::new();
        let mut expired = false;
        match rv {
            Some(rv) if rv > 0 && !send_initial => match state.events_since(rv) {
                Ok(events) => {
                    for event in events {
                        if event.storage == rt.storage_key()
                            && let Some(kind) = visible(
                                &selection,
                                event.kind,
                                &event.object,
                                event.previous.as_deref(),
                            )
                        {
                            first.push(event_line(kind, &event.object, &rt));
                        }
                    }
                }
                Err(error) => {
                    // As the API server's watch cache does: 200, then one ERROR event, then the end.
                    first.push(event_line("ERROR", &error.status(), &rt));
                    expired = true;
                }
            },
            _ => {
                for object in state.objects(&rt).filter(|o| selection.matches(o)) {
                    first.push(event_line("ADDED", object, &rt));
                }
                if send_initial {
                    first.push(event_line("BOOKMARK", &bookmark(&rt, current, true), &rt));
                }
            }
        }
        (first, receiver, current, expired)
    };
    let (sender, lines) = mpsc::channel::<Bytes>(256);
    let mut epoch = shared.faults.watch_epoch();
    epoch.borrow_and_update();
    let interval = shared.bookmark_interval;
    tokio::spawn(async move {
        for line in first.drain(..) {
            if sender.send(line).await.is_err() {
                return;
            }
        }
        if expired {
            return;
        }
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        let mut ticker = tokio::time::interval(interval);
        ticker.tick().await;
        loop {
            let until_deadline = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let line = tokio::select! {
                _ = until_deadline => return,
                _ = epoch.changed() => return,
                _ = ticker.tick(), if bookmarks => event_line("BOOKMARK", &bookmark(&rt, last_rv, false), &rt),
                received = receiver.recv() => match received {
                    Ok(event) => {
                        if event.rv <= last_rv {
                            continue;
                        }
                        last_rv = event.rv;
                        if event.storage != rt.storage_key() {
                            continue;
                        }
                        match visible(&selection, event.kind, &event.object, event.previous.as_deref()) {
                            Some(kind) => event_line(kind, &event.object, &rt),
                            None => continue,
                        }
                    }
                    // A slow watcher is cut off; it re-watches (and may get 410).
                    Err(broadcast::error::RecvError::Lagged(_)) | Err(broadcast::error::RecvError::Closed) => return,
                },
            };
            if sender.send(line).await.is_err() {
                return;
            }
        }
    });
    let stream = futures::stream::unfold(lines, |mut lines| async move {
        lines
            .recv()
            .await
            .map(|line| (Ok::<_, Infallible>(line), lines))
    });
    Response::builder()
        .status(200)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(Body::from_stream(stream))
        .expect("valid response")
}

/// How an event looks through a selection: objects entering or leaving it are ADDED or DELETED.
fn visible(
    selection: &Selection,
    kind: EventType,
    object: &Value,
    previous: Option<&Value>,
) -> Option<&'static str> {
    let now = selection.matches(object);
    match kind {
        EventType::Added | EventType::Deleted => now.then_some(kind.as_str()),
        EventType::Modified => match (previous.is_some_and(|p| selection.matches(p)), now) {
            (true, true) => Some("MODIFIED"),
            (false, true) => Some("ADDED"),
            (true, false) => Some("DELETED"),
            (false, false) => None,
        },
    }
}

const VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

fn discovery(shared: &Shared, route: &Route, _headers: &HeaderMap) -> Response {
    let state = shared.state.lock().expect("state lock");
    let body = match route {
        Route::Version => json!({
            "major": VERSION.0, "minor": VERSION.1, "gitVersion": format!("v{}.{}.0", VERSION.0, VERSION.1),
            "gitCommit": "kube-emulator", "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z",
            "goVersion": "go1.24.0", "compiler": "gc", "platform": "linux/amd64"
        }),
        Route::Health => {
            return Response::builder()
                .status(200)
                .body(Body::from("ok"))
                .expect("valid response");
        }
        Route::CoreVersions => {
            json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]})
        }
        Route::Groups => {
            let mut groups: Vec<(String, Vec<String>)> = Vec::new();
            for rt in state.registry.all().filter(|rt| !rt.group.is_empty()) {
                match groups.iter_mut().find(|(g, _)| *g == rt.group) {
                    Some((_, versions)) if !versions.contains(&rt.version) => {
                        versions.push(rt.version.clone())
                    }
                    Some(_) => {}
                    None => groups.push((rt.group.clone(), vec![rt.version.clone()])),
                }
            }
            json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups.iter().map(|(g, v)| group_document(g, v)).collect::<Vec<_>>()})
        }
        Route::Group(group) => {
            let versions: Vec<String> = state
                .registry
                .all()
                .filter(|rt| rt.group == *group)
                .map(|rt| rt.version.clone())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            if versions.is_empty() {
                return error_response(&ApiError::no_route(&format!("/apis/{group}")));
            }
            let mut document = group_document(group, &versions);
            document["kind"] = json!("APIGroup");
            document["apiVersion"] = json!("v1");
            document
        }
        Route::Resources { group, version } => {
            let types: Vec<&Arc<ResourceType>> = state
                .registry
                .all()
                .filter(|rt| rt.group == *group && rt.version == *version)
                .collect();
            if types.is_empty() {
                return error_response(&ApiError::no_route(&format!("{group}/{version}")));
            }
            let mut resources = Vec::new();
            for rt in types {
                let mut resource = json!({
                    "name": rt.plural, "singularName": rt.singular, "namespaced": rt.namespaced, "kind": rt.kind,
                    "verbs": VERBS, "storageVersionHash": format!("{:x}", rt.kind.len() * 7919 + rt.plural.len()),
                });
                if !rt.short_names.is_empty() {
                    resource["shortNames"] = json!(rt.short_names);
                }
                if !rt.categories.is_empty() {
                    resource["categories"] = json!(rt.categories);
                }
                resources.push(resource);
                // kubectl drain evicts through this one when discovery lists it, and deletes
                // otherwise.
                if rt.has_eviction() {
                    resources.push(json!({"name": format!("{}/eviction", rt.plural), "singularName": "", "namespaced": rt.namespaced, "group": "policy", "version": "v1", "kind": "Eviction", "verbs": ["create"]}));
                }
                if rt.status_subresource {
                    resources.push(json!({"name": format!("{}/status", rt.plural), "singularName": "", "namespaced": rt.namespaced, "kind": rt.kind, "verbs": ["get", "patch", "update"]}));
                }
            }
            let group_version = if group.is_empty() {
                version.clone()
            } else {
                format!("{group}/{version}")
            };
            json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources})
        }
        Route::OpenApiRoot => crate::openapi::root(state.registry.all().map(|rt| rt.as_ref())),
        Route::OpenApi { group, version } => {
            let types: Vec<&ResourceType> = state
                .registry
                .all()
                .filter(|rt| rt.group == *group && rt.version == *version)
                .map(|rt| rt.as_ref())
                .collect();
            if types.is_empty() {
                return error_response(&ApiError::no_route(&format!(
                    "/openapi/v3/{group}/{version}"
                )));
            }
            crate::openapi::group_version(types.into_iter())
        }
        Route::Resource { .. } => unreachable!("resources are not discovery"),
    };
    json_response(200, &body, &[])
}

fn group_document(group: &str, versions: &[String]) -> Value {
    let entries: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    json!({"name": group, "versions": entries, "preferredVersion": entries.first().cloned().unwrap_or(Value::Null)})
}
