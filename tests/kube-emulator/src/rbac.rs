//! Authorization as the API server's RBAC authorizer decides it. Pure code — no HTTP, no
//! storage — so that every rule feature can be unit-tested on its own:
//! - [`Attributes::from_request`]: what a request asks to do, parsed from its method, path and
//!   query exactly as apiserver's `RequestInfoFactory` does (verb, API group, resource,
//!   subresource, namespace, name);
//! - [`Policy`]: the Roles, ClusterRoles and their bindings, read from stored objects, plus the
//!   bootstrap policy every cluster has (`system:discovery`, `system:public-info-viewer` and
//!   `system:basic-user`, bound to `system:authenticated`);
//! - [`Policy::authorize`]: the decision, following `plugin/pkg/auth/authorizer/rbac` and
//!   `pkg/registry/rbac/validation/rule.go` (which bindings apply to whom and where, which rules
//!   match which request);
//! - [`forbidden`]: the 403 the API server answers with (`responsewriters.Forbidden`);
//! - [`create_on_apply`] and [`forbidden_create_on_apply`]: a server-side apply that creates
//!   its object must also be allowed to `create` it (the patch handler's `withAuthorization`).
//!
//! Not emulated: aggregated ClusterRoles (`aggregationRule`), the escalation checks on writes of
//! RBAC objects (`escalate`/`bind`), impersonation, and the Node authorizer.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::errors::ApiError;
use crate::selectors::FieldSelector;

/// The API group of RBAC objects.
pub const RBAC_GROUP: &str = "rbac.authorization.k8s.io";
/// Every authenticated user is in this group.
pub const SYSTEM_AUTHENTICATED: &str = "system:authenticated";
/// Members are allowed everything without consulting RBAC (the privileged-group authorizer).
pub const SYSTEM_MASTERS: &str = "system:masters";

/// An authenticated user (k8s.io/apiserver `user.Info`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub groups: Vec<String>,
}

/// `system:serviceaccount:<namespace>:<name>`, the user name of a ServiceAccount's tokens.
pub fn service_account_username(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

/// The groups of a ServiceAccount's tokens (k8s.io/apiserver `serviceaccount.MakeGroupNames`,
/// plus the group every authenticated user gets).
pub fn service_account_groups(namespace: &str) -> Vec<String> {
    vec![
        "system:serviceaccounts".to_owned(),
        format!("system:serviceaccounts:{namespace}"),
        SYSTEM_AUTHENTICATED.to_owned(),
    ]
}

// ---------------------------------------------------------------------------------------------
// Request attributes

/// What a request asks to do (k8s.io/apiserver `authorizer.Attributes` from a `RequestInfo`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attributes {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection` for
    /// resource requests; the lower-case HTTP method for the others.
    pub verb: String,
    /// A request for an API resource; the others (discovery, `/version`, …) are only a path.
    pub resource_request: bool,
    pub path: String,
    /// `""` for the core group.
    pub api_group: String,
    pub api_version: String,
    pub namespace: Option<String>,
    /// The plural resource name, e.g. `pods`.
    pub resource: String,
    pub subresource: Option<String>,
    /// The object named by the path, or by a `metadata.name=` field selector of a list or watch.
    pub name: Option<String>,
}

/// Path segments that are verbs (`/api/v1/watch/namespaces/ns/pods`).
const SPECIAL_VERBS: [&str; 2] = ["proxy", "watch"];
/// The namespace subresources, which `/namespaces/{name}/{x}` can name instead of a resource.
const NAMESPACE_SUBRESOURCES: [&str; 2] = ["status", "finalize"];

impl Attributes {
    /// Parses a request like `RequestInfoFactory.NewRequestInfo`. `method` is the HTTP method
    /// (`GET`…), `query` the decoded query parameters.
    pub fn from_request(method: &str, path: &str, query: &[(String, String)]) -> Attributes {
        let mut attributes = Attributes {
            verb: method.to_lowercase(),
            path: path.to_owned(),
            ..Attributes::default()
        };
        let trimmed = path.trim_matches('/');
        let segments: Vec<&str> = if trimmed.is_empty() {
            Vec::new()
        } else {
            trimmed.split('/').collect()
        };
        let mut parts: &[&str] = &segments;
        if parts.len() < 3 || !matches!(parts[0], "api" | "apis") {
            return attributes;
        }
        let grouped = parts[0] == "apis";
        parts = &parts[1..];
        if grouped {
            // `/apis/{group}/{version}` is discovery; a resource needs one more segment.
            if parts.len() < 3 {
                return attributes;
            }
            attributes.api_group = parts[0].to_owned();
            parts = &parts[1..];
        }
        attributes.resource_request = true;
        attributes.api_version = parts[0].to_owned();
        parts = &parts[1..];

        if SPECIAL_VERBS.contains(&parts[0]) {
            if parts.len() < 2 {
                // The API server cannot tell the resource either; nothing is named.
                return attributes;
            }
            attributes.verb = parts[0].to_owned();
            parts = &parts[1..];
        } else {
            attributes.verb = match method {
                "POST" => "create",
                "GET" | "HEAD" => "get",
                "PUT" => "update",
                "PATCH" => "patch",
                "DELETE" => "delete",
                _ => "",
            }
            .to_owned();
        }

        if parts[0] == "namespaces"
            && let Some(namespace) = parts.get(1)
        {
            attributes.namespace = Some((*namespace).to_owned());
            // `/namespaces/{ns}/{resource}/…`, unless it is `/namespaces/{name}/status`.
            if parts.len() > 2 && !NAMESPACE_SUBRESOURCES.contains(&parts[2]) {
                parts = &parts[2..];
            }
        }

        // What is left reads resource/name/subresource (proxy takes no subresource).
        attributes.resource = parts[0].to_owned();
        attributes.name = parts.get(1).map(|n| (*n).to_owned());
        if attributes.verb != "proxy" {
            attributes.subresource = parts.get(2).map(|s| (*s).to_owned());
        }

        // A get without a name is a list or a watch; a field selector on metadata.name names
        // the object (so that rules with resourceNames can allow watching a single object).
        if attributes.name.is_none() && attributes.verb == "get" {
            let param = |key: &str| {
                query
                    .iter()
                    .find(|(k, _)| k == key)
                    .map(|(_, v)| v.as_str())
            };
            let watch = param("watch").is_some_and(go_bool);
            attributes.verb = if watch { "watch" } else { "list" }.to_owned();
            attributes.name = param("fieldSelector")
                .and_then(|selector| FieldSelector::parse(selector).ok())
                .and_then(|selector| selector.exact_match("metadata.name").map(str::to_owned))
                .filter(|name| is_valid_path_segment_name(name));
        }
        if attributes.name.is_none() && attributes.verb == "delete" {
            attributes.verb = "deletecollection".to_owned();
        }
        attributes
    }

    /// `pods` or `pods/status`: what rules' `resources` are matched against and what the
    /// Forbidden message names.
    pub fn combined_resource(&self) -> String {
        match &self.subresource {
            Some(subresource) => format!("{}/{subresource}", self.resource),
            None => self.resource.clone(),
        }
    }
}

/// Go's `strconv.ParseBool` truths, which the API server decodes `?watch=` with.
fn go_bool(value: &str) -> bool {
    matches!(value, "1" | "t" | "T" | "true" | "TRUE" | "True")
}

/// `path.IsValidPathSegmentName`: what a name must be to appear in a URL path.
pub fn is_valid_path_segment_name(name: &str) -> bool {
    name != "." && name != ".." && !name.contains('/') && !name.contains('%')
}

// ---------------------------------------------------------------------------------------------
// Rules and bindings

/// One rule of a Role or ClusterRole (`rbac/v1.PolicyRule`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyRule {
    pub verbs: Vec<String>,
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub resource_names: Vec<String>,
    pub non_resource_urls: Vec<String>,
}

fn strings(value: &Value, key: &str) -> Vec<String> {
    value
        .get(key)
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn text(value: &Value, key: &str) -> String {
    value
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// `*` in verbs, apiGroups, resources and nonResourceURLs matches everything.
const ALL: &str = "*";

impl PolicyRule {
    pub fn from_json(rule: &Value) -> PolicyRule {
        PolicyRule {
            verbs: strings(rule, "verbs"),
            api_groups: strings(rule, "apiGroups"),
            resources: strings(rule, "resources"),
            resource_names: strings(rule, "resourceNames"),
            non_resource_urls: strings(rule, "nonResourceURLs"),
        }
    }

    /// `RuleAllows`: every part of the request must be matched by the rule.
    pub fn allows(&self, request: &Attributes) -> bool {
        if !self.verb_matches(&request.verb) {
            return false;
        }
        if !request.resource_request {
            return self.non_resource_url_matches(&request.path);
        }
        self.api_group_matches(&request.api_group)
            && self.resource_matches(&request.combined_resource(), request.subresource.as_deref())
            && self.resource_name_matches(request.name.as_deref())
    }

    fn verb_matches(&self, verb: &str) -> bool {
        self.verbs.iter().any(|v| v == ALL || v == verb)
    }

    fn api_group_matches(&self, group: &str) -> bool {
        self.api_groups.iter().any(|g| g == ALL || g == group)
    }

    /// `*` matches every resource and subresource; `pods/status` matches that subresource only;
    /// `*/status` matches the status subresource of every resource.
    fn resource_matches(&self, combined: &str, subresource: Option<&str>) -> bool {
        self.resources.iter().any(|resource| {
            resource == ALL
                || resource == combined
                || subresource
                    .is_some_and(|sub| resource.strip_prefix("*/").is_some_and(|r| r == sub))
        })
    }

    /// A rule without resourceNames matches any name; one with them matches only requests that
    /// name one of them — never a create or an unfiltered list, which name nothing.
    fn resource_name_matches(&self, name: Option<&str>) -> bool {
        self.resource_names.is_empty()
            || self
                .resource_names
                .iter()
                .any(|n| n == name.unwrap_or_default())
    }

    /// `/healthz` matches itself; `/api/*` matches every path under `/api/`; `*` all paths.
    fn non_resource_url_matches(&self, path: &str) -> bool {
        self.non_resource_urls.iter().any(|url| {
            url == ALL
                || url == path
                || url
                    .strip_suffix('*')
                    .is_some_and(|prefix| path.starts_with(prefix))
        })
    }
}

/// What a binding grants (`rbac/v1.RoleRef`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleRef {
    /// `Role` or `ClusterRole`.
    pub kind: String,
    pub name: String,
}

/// Who a binding grants it to (`rbac/v1.Subject`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subject {
    /// `User`, `Group` or `ServiceAccount`.
    pub kind: String,
    pub name: String,
    /// For ServiceAccounts; a RoleBinding's subject defaults to the binding's namespace.
    pub namespace: String,
}

impl Subject {
    /// `appliesToUser`; `binding_namespace` is `""` for ClusterRoleBindings.
    fn applies_to(&self, user: &UserInfo, binding_namespace: &str) -> bool {
        match self.kind.as_str() {
            "User" => user.name == self.name,
            "Group" => user.groups.contains(&self.name),
            "ServiceAccount" => {
                let namespace = if self.namespace.is_empty() {
                    binding_namespace
                } else {
                    &self.namespace
                };
                !namespace.is_empty()
                    && user.name == service_account_username(namespace, &self.name)
            }
            _ => false,
        }
    }
}

/// A RoleBinding (with its namespace) or a ClusterRoleBinding (without).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    pub name: String,
    pub namespace: Option<String>,
    pub role_ref: RoleRef,
    pub subjects: Vec<Subject>,
}

impl Binding {
    pub fn from_json(binding: &Value) -> Binding {
        let metadata = binding.get("metadata").unwrap_or(&Value::Null);
        let role_ref = binding.get("roleRef").unwrap_or(&Value::Null);
        Binding {
            name: text(metadata, "name"),
            namespace: Some(text(metadata, "namespace")).filter(|ns| !ns.is_empty()),
            role_ref: RoleRef {
                kind: text(role_ref, "kind"),
                name: text(role_ref, "name"),
            },
            subjects: binding
                .get("subjects")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|subject| Subject {
                    kind: text(subject, "kind"),
                    name: text(subject, "name"),
                    namespace: text(subject, "namespace"),
                })
                .collect(),
        }
    }

    /// The first subject that is `user`, as the authorizer reports the source of an allow.
    fn subject_for(&self, user: &UserInfo) -> Option<&Subject> {
        let namespace = self.namespace.as_deref().unwrap_or_default();
        self.subjects.iter().find(|s| s.applies_to(user, namespace))
    }

    /// `clusterRoleBindingDescriber`/`roleBindingDescriber`, for the reason of an allow.
    fn describe(&self, subject: &Subject) -> String {
        let who = match (subject.kind.as_str(), self.namespace.as_deref()) {
            ("ServiceAccount", namespace) => {
                let ns = if subject.namespace.is_empty() {
                    namespace.unwrap_or_default()
                } else {
                    &subject.namespace
                };
                format!("ServiceAccount \"{}/{ns}\"", subject.name)
            }
            (kind, _) => format!("{kind} \"{}\"", subject.name),
        };
        match &self.namespace {
            Some(namespace) => format!(
                "RoleBinding \"{}/{namespace}\" of {} \"{}\" to {who}",
                self.name, self.role_ref.kind, self.role_ref.name
            ),
            None => format!(
                "ClusterRoleBinding \"{}\" of {} \"{}\" to {who}",
                self.name, self.role_ref.kind, self.role_ref.name
            ),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The policy and the decision

/// The result of authorizing a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// For an allow, the binding that allowed it; for a denial, the problems met resolving the
    /// user's bindings (a binding to a missing role), which the API server appends to the
    /// Forbidden message. Empty otherwise.
    pub reason: String,
}

/// Every Role, ClusterRole, RoleBinding and ClusterRoleBinding of the cluster, starting with
/// the bootstrap policy (see [`Policy::new`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// By (namespace, name).
    roles: BTreeMap<(String, String), Vec<PolicyRule>>,
    cluster_roles: BTreeMap<String, Vec<PolicyRule>>,
    role_bindings: Vec<Binding>,
    cluster_role_bindings: Vec<Binding>,
}

/// The bootstrap ClusterRoles every authenticated user is bound to (through ClusterRoleBindings
/// of the same names to the group `system:authenticated`), from
/// `plugin/pkg/auth/authorizer/rbac/bootstrappolicy`.
fn bootstrap_cluster_roles() -> Vec<(&'static str, Vec<PolicyRule>)> {
    let get_paths = |paths: &[&str]| PolicyRule {
        verbs: vec!["get".into()],
        non_resource_urls: paths.iter().map(|p| (*p).to_owned()).collect(),
        ..PolicyRule::default()
    };
    let create = |group: &str, resources: &[&str]| PolicyRule {
        verbs: vec!["create".into()],
        api_groups: vec![group.to_owned()],
        resources: resources.iter().map(|r| (*r).to_owned()).collect(),
        ..PolicyRule::default()
    };
    vec![
        (
            "system:discovery",
            vec![get_paths(&[
                "/api",
                "/api/*",
                "/apis",
                "/apis/*",
                "/healthz",
                "/livez",
                "/openapi",
                "/openapi/*",
                "/readyz",
                "/version",
                "/version/",
            ])],
        ),
        (
            "system:public-info-viewer",
            vec![get_paths(&[
                "/healthz",
                "/livez",
                "/readyz",
                "/version",
                "/version/",
            ])],
        ),
        (
            "system:basic-user",
            vec![
                create(
                    "authorization.k8s.io",
                    &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                ),
                create("authentication.k8s.io", &["selfsubjectreviews"]),
            ],
        ),
    ]
}

impl Default for Policy {
    fn default() -> Policy {
        Policy::new()
    }
}

impl Policy {
    /// The bootstrap policy alone: what any cluster grants before anything is created (not
    /// stored objects: `kubectl get clusterroles` does not list them).
    pub fn new() -> Policy {
        let mut policy = Policy {
            roles: BTreeMap::new(),
            cluster_roles: BTreeMap::new(),
            role_bindings: Vec::new(),
            cluster_role_bindings: Vec::new(),
        };
        for (name, rules) in bootstrap_cluster_roles() {
            policy.cluster_roles.insert(name.to_owned(), rules);
            policy.cluster_role_bindings.push(Binding {
                name: name.to_owned(),
                namespace: None,
                role_ref: RoleRef {
                    kind: "ClusterRole".into(),
                    name: name.to_owned(),
                },
                subjects: vec![Subject {
                    kind: "Group".into(),
                    name: SYSTEM_AUTHENTICATED.into(),
                    namespace: String::new(),
                }],
            });
        }
        policy
    }

    fn rules_of(role: &Value) -> Vec<PolicyRule> {
        role.get("rules")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(PolicyRule::from_json)
            .collect()
    }

    /// Adds a stored Role.
    pub fn add_role(&mut self, role: &Value) {
        let metadata = role.get("metadata").unwrap_or(&Value::Null);
        self.roles.insert(
            (text(metadata, "namespace"), text(metadata, "name")),
            Self::rules_of(role),
        );
    }

    /// Adds a stored ClusterRole (one named like a bootstrap role replaces it).
    pub fn add_cluster_role(&mut self, cluster_role: &Value) {
        let name = text(cluster_role.get("metadata").unwrap_or(&Value::Null), "name");
        self.cluster_roles
            .insert(name, Self::rules_of(cluster_role));
    }

    /// Adds a stored RoleBinding.
    pub fn add_role_binding(&mut self, binding: &Value) {
        self.role_bindings.push(Binding::from_json(binding));
    }

    /// Adds a stored ClusterRoleBinding.
    pub fn add_cluster_role_binding(&mut self, binding: &Value) {
        let mut binding = Binding::from_json(binding);
        binding.namespace = None;
        self.cluster_role_bindings.push(binding);
    }

    /// `GetRoleReferenceRules`: the rules a binding grants, or why it grants none. A
    /// RoleBinding's `Role` is looked up in the binding's namespace; a `ClusterRole` is global.
    fn rules_for(&self, binding: &Binding) -> Result<&[PolicyRule], String> {
        let name = &binding.role_ref.name;
        match binding.role_ref.kind.as_str() {
            "Role" => {
                let namespace = binding.namespace.clone().unwrap_or_default();
                self.roles
                    .get(&(namespace, name.clone()))
                    .map(Vec::as_slice)
                    .ok_or_else(|| format!("role.{RBAC_GROUP} \"{name}\" not found"))
            }
            "ClusterRole" => self
                .cluster_roles
                .get(name)
                .map(Vec::as_slice)
                .ok_or_else(|| format!("clusterrole.{RBAC_GROUP} \"{name}\" not found")),
            kind => Err(format!("unsupported role reference kind: \"{kind}\"")),
        }
    }

    /// `RBACAuthorizer.Authorize`: allowed when a rule granted to the user where the request
    /// happens matches it. ClusterRoleBindings grant everywhere (cluster-scoped resources and
    /// every namespace); RoleBindings only in their own namespace, whether they reference a
    /// Role there or a ClusterRole.
    pub fn authorize(&self, user: &UserInfo, request: &Attributes) -> Decision {
        if user.groups.iter().any(|g| g == SYSTEM_MASTERS) {
            return Decision {
                allowed: true,
                reason: String::new(),
            };
        }
        let namespace = request.namespace.as_deref().unwrap_or_default();
        let applicable = self.cluster_role_bindings.iter().chain(
            self.role_bindings
                .iter()
                .filter(|b| !namespace.is_empty() && b.namespace.as_deref() == Some(namespace)),
        );
        let mut errors: Vec<String> = Vec::new();
        for binding in applicable {
            let Some(subject) = binding.subject_for(user) else {
                continue;
            };
            match self.rules_for(binding) {
                Ok(rules) if rules.iter().any(|rule| rule.allows(request)) => {
                    return Decision {
                        allowed: true,
                        reason: format!("RBAC: allowed by {}", binding.describe(subject)),
                    };
                }
                Ok(_) => {}
                Err(error) => errors.push(error),
            }
        }
        // utilerrors.NewAggregate: one error as is, several deduplicated within brackets.
        let mut unique: Vec<String> = Vec::new();
        for error in errors {
            if !unique.contains(&error) {
                unique.push(error);
            }
        }
        let reason = match unique.as_slice() {
            [] => String::new(),
            [one] => format!("RBAC: {one}"),
            many => format!("RBAC: [{}]", many.join(", ")),
        };
        Decision {
            allowed: false,
            reason,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The answer to a denied request

/// `forbiddenMessage` (apiserver `responsewriters/errors.go`): who cannot do what, where.
pub fn forbidden_message(user: &UserInfo, request: &Attributes) -> String {
    let message = if !request.resource_request {
        format!(
            "User \"{}\" cannot {} path \"{}\"",
            user.name, request.verb, request.path
        )
    } else {
        let resource = request.combined_resource();
        match request.namespace.as_deref().filter(|ns| !ns.is_empty()) {
            Some(namespace) => format!(
                "User \"{}\" cannot {} resource \"{resource}\" in API group \"{}\" in the namespace \"{namespace}\"",
                user.name, request.verb, request.api_group
            ),
            None => format!(
                "User \"{}\" cannot {} resource \"{resource}\" in API group \"{}\" at the cluster scope",
                user.name, request.verb, request.api_group
            ),
        }
    };
    // The API server avoids writing anything that looks like HTML.
    message
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The 403 of a denied request: `pods "p" is forbidden: User "…" cannot …`, with the
/// authorizer's reason appended when there is one.
pub fn forbidden(user: &UserInfo, request: &Attributes, decision: &Decision) -> ApiError {
    let mut message = forbidden_message(user, request);
    if !decision.reason.is_empty() {
        message = format!("{message}: {}", decision.reason);
    }
    ApiError::forbidden(
        &request.api_group,
        &request.resource,
        request.name.as_deref().unwrap_or_default(),
        &message,
    )
}

// ---------------------------------------------------------------------------------------------
// Server-side apply that creates

/// The `create` authorization a request also needs, if any: a server-side apply
/// (`Content-Type: application/apply-patch+yaml`) of the main resource creates its object when
/// it does not exist, and the API server's patch handler then authorizes `create` of it as
/// well (`createAuthorizerAttributes`: the patch's attributes with the verb `create`). Patches
/// of other types answer 404, and subresources never create.
/// (kubernetes.io/docs/reference/using-api/api-concepts/#patch-and-apply)
pub fn create_on_apply(
    request: &Attributes,
    content_type: &str,
    exists: bool,
) -> Option<Attributes> {
    let media = content_type.split(';').next().unwrap_or_default().trim();
    let apply = matches!(
        media,
        "application/apply-patch+yaml"
            | "application/apply-patch+json"
            | "application/apply-patch+cbor"
    );
    (request.resource_request
        && request.verb == "patch"
        && apply
        && request.subresource.is_none()
        && request.name.is_some()
        && !exists)
        .then(|| Attributes {
            verb: "create".to_owned(),
            ..request.clone()
        })
}

/// The 403 of an apply that may patch but not create its object. Unlike a request's own
/// denial (see [`forbidden`]), the patch handler answers `errors.NewForbidden` with only the
/// authorizer's reason, which RBAC leaves empty unless one of the user's bindings could not be
/// resolved: `configmaps "settings" is forbidden: ` (sic, with the trailing space).
pub fn forbidden_create_on_apply(create: &Attributes, decision: &Decision) -> ApiError {
    ApiError::forbidden(
        &create.api_group,
        &create.resource,
        create.name.as_deref().unwrap_or_default(),
        &decision.reason,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn query(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn parse(method: &str, path: &str) -> Attributes {
        Attributes::from_request(method, path, &[])
    }

    fn user(name: &str, groups: &[&str]) -> UserInfo {
        let mut groups: Vec<String> = groups.iter().map(|g| (*g).to_owned()).collect();
        groups.push(SYSTEM_AUTHENTICATED.to_owned());
        UserInfo {
            name: name.to_owned(),
            groups,
        }
    }

    fn operator() -> UserInfo {
        UserInfo {
            name: service_account_username("pf", "op"),
            groups: service_account_groups("pf"),
        }
    }

    /// A request on a resource, named or not.
    fn request(verb: &str, group: &str, resource: &str, namespace: &str, name: &str) -> Attributes {
        let (resource, subresource) = match resource.split_once('/') {
            Some((r, s)) => (r.to_owned(), Some(s.to_owned())),
            None => (resource.to_owned(), None),
        };
        Attributes {
            verb: verb.into(),
            resource_request: true,
            path: String::new(),
            api_group: group.into(),
            api_version: "v1".into(),
            namespace: Some(namespace.to_owned()).filter(|n| !n.is_empty()),
            resource,
            subresource,
            name: Some(name.to_owned()).filter(|n| !n.is_empty()),
        }
    }

    fn rule(verbs: &[&str], groups: &[&str], resources: &[&str], names: &[&str]) -> Value {
        json!({"verbs": verbs, "apiGroups": groups, "resources": resources, "resourceNames": names})
    }

    fn role(namespace: &str, name: &str, rules: Vec<Value>) -> Value {
        json!({"metadata": {"namespace": namespace, "name": name}, "rules": rules})
    }

    fn cluster_role(name: &str, rules: Vec<Value>) -> Value {
        json!({"metadata": {"name": name}, "rules": rules})
    }

    fn binding(namespace: &str, name: &str, kind: &str, role: &str, subjects: Value) -> Value {
        let mut metadata = json!({"name": name});
        if !namespace.is_empty() {
            metadata["namespace"] = json!(namespace);
        }
        json!({"metadata": metadata, "roleRef": {"apiGroup": RBAC_GROUP, "kind": kind, "name": role}, "subjects": subjects})
    }

    fn sa(namespace: &str, name: &str) -> Value {
        json!([{"kind": "ServiceAccount", "name": name, "namespace": namespace}])
    }

    // --- Request attributes (RequestInfoFactory)

    #[test]
    fn verbs_come_from_the_method_and_the_shape_of_the_path() {
        let cases = [
            ("GET", "/api/v1/namespaces/pf/pods/p", "get"),
            ("HEAD", "/api/v1/namespaces/pf/pods/p", "get"),
            ("GET", "/api/v1/namespaces/pf/pods", "list"),
            ("POST", "/api/v1/namespaces/pf/pods", "create"),
            ("PUT", "/api/v1/namespaces/pf/pods/p", "update"),
            ("PATCH", "/api/v1/namespaces/pf/pods/p", "patch"),
            ("DELETE", "/api/v1/namespaces/pf/pods/p", "delete"),
            ("DELETE", "/api/v1/namespaces/pf/pods", "deletecollection"),
            ("GET", "/api/v1/watch/namespaces/pf/pods", "watch"),
            ("GET", "/api/v1/watch/namespaces/pf/pods/p", "watch"),
            ("OPTIONS", "/api/v1/namespaces/pf/pods", ""),
        ];
        for (method, path, verb) in cases {
            assert_eq!(parse(method, path).verb, verb, "{method} {path}");
        }
        let watch = Attributes::from_request(
            "GET",
            "/api/v1/namespaces/pf/pods",
            &query(&[("watch", "true")]),
        );
        assert_eq!(watch.verb, "watch");
        let watch = Attributes::from_request(
            "GET",
            "/api/v1/namespaces/pf/pods",
            &query(&[("watch", "1")]),
        );
        assert_eq!(watch.verb, "watch");
        let not_watch = Attributes::from_request(
            "GET",
            "/api/v1/namespaces/pf/pods",
            &query(&[("watch", "false")]),
        );
        assert_eq!(not_watch.verb, "list");
    }

    #[test]
    fn resources_namespaces_names_and_subresources() {
        let status = parse(
            "PATCH",
            "/apis/pureflash.io/v1alpha1/namespaces/pf/pureflashstores/s1/status",
        );
        assert_eq!(
            status,
            Attributes {
                verb: "patch".into(),
                resource_request: true,
                path: "/apis/pureflash.io/v1alpha1/namespaces/pf/pureflashstores/s1/status".into(),
                api_group: "pureflash.io".into(),
                api_version: "v1alpha1".into(),
                namespace: Some("pf".into()),
                resource: "pureflashstores".into(),
                subresource: Some("status".into()),
                name: Some("s1".into()),
            }
        );
        assert_eq!(status.combined_resource(), "pureflashstores/status");
        let node = parse("GET", "/api/v1/nodes/node-1");
        assert_eq!(
            (node.namespace, node.resource.as_str(), node.name.as_deref()),
            (None, "nodes", Some("node-1"))
        );
        let all_pods = parse("GET", "/api/v1/pods");
        assert_eq!((all_pods.verb.as_str(), all_pods.namespace), ("list", None));
        // A namespace object is addressed "in" itself, as the API server parses it.
        let namespace = parse("GET", "/api/v1/namespaces/pf");
        assert_eq!(
            (
                namespace.resource.as_str(),
                namespace.namespace.as_deref(),
                namespace.name.as_deref()
            ),
            ("namespaces", Some("pf"), Some("pf"))
        );
        let finalize = parse("PUT", "/api/v1/namespaces/pf/finalize");
        assert_eq!(
            (
                finalize.resource.as_str(),
                finalize.name.as_deref(),
                finalize.subresource.as_deref()
            ),
            ("namespaces", Some("pf"), Some("finalize"))
        );
        let namespaces = parse("GET", "/api/v1/namespaces");
        assert_eq!(
            (namespaces.verb.as_str(), namespaces.namespace),
            ("list", None)
        );
    }

    #[test]
    fn discovery_and_other_paths_are_non_resource_requests() {
        for path in [
            "/",
            "/api",
            "/api/v1",
            "/apis",
            "/apis/apps",
            "/apis/apps/v1",
            "/version",
            "/openapi/v3/apis/apps/v1",
            "/healthz",
            "/metrics",
        ] {
            let attributes = parse("GET", path);
            assert!(!attributes.resource_request, "{path}");
            assert_eq!(
                (attributes.verb.as_str(), attributes.path.as_str()),
                ("get", path)
            );
        }
        assert!(parse("GET", "/api/v1/pods").resource_request);
        assert!(parse("GET", "/apis/apps/v1/deployments").resource_request);
    }

    #[test]
    fn a_metadata_name_field_selector_names_the_object_of_a_list_or_watch() {
        let watch = Attributes::from_request(
            "GET",
            "/apis/coordination.k8s.io/v1/namespaces/pf/leases",
            &query(&[("watch", "true"), ("fieldSelector", "metadata.name=leader")]),
        );
        assert_eq!(
            (watch.verb.as_str(), watch.name.as_deref()),
            ("watch", Some("leader"))
        );
        let list = Attributes::from_request(
            "GET",
            "/api/v1/namespaces/pf/pods",
            &query(&[("fieldSelector", "spec.nodeName=n1,metadata.name==p")]),
        );
        assert_eq!(list.name.as_deref(), Some("p"));
        for selector in ["metadata.name!=p", "spec.nodeName=n1", "metadata.name=a/b"] {
            let list = Attributes::from_request(
                "GET",
                "/api/v1/namespaces/pf/pods",
                &query(&[("fieldSelector", selector)]),
            );
            assert_eq!(list.name, None, "{selector}");
        }
        // Only gets become list/watch; a collection delete is never named by a selector.
        let delete = Attributes::from_request(
            "DELETE",
            "/api/v1/namespaces/pf/pods",
            &query(&[("fieldSelector", "metadata.name=p")]),
        );
        assert_eq!(
            (delete.verb.as_str(), delete.name),
            ("deletecollection", None)
        );
    }

    // --- Rule matching

    #[test]
    fn rules_match_verbs_groups_and_resources() {
        let pods = PolicyRule::from_json(&rule(&["get", "list"], &[""], &["pods"], &[]));
        assert!(pods.allows(&request("get", "", "pods", "pf", "p")));
        assert!(pods.allows(&request("list", "", "pods", "pf", "")));
        assert!(!pods.allows(&request("delete", "", "pods", "pf", "p")));
        assert!(
            !pods.allows(&request("get", "apps", "pods", "pf", "p")),
            "group"
        );
        assert!(!pods.allows(&request("get", "", "secrets", "pf", "s")));
        assert!(
            !pods.allows(&request("get", "", "pods/status", "pf", "p")),
            "a resource does not cover its subresources"
        );
        assert!(!pods.allows(&request("get", "", "pods/log", "pf", "p")));

        let everything = PolicyRule::from_json(&rule(&["*"], &["*"], &["*"], &[]));
        for verb in [
            "get",
            "list",
            "watch",
            "create",
            "update",
            "patch",
            "delete",
            "deletecollection",
        ] {
            assert!(everything.allows(&request(
                verb,
                "pureflash.io",
                "pureflashstores",
                "pf",
                "s1"
            )));
            assert!(everything.allows(&request(verb, "", "pods/status", "pf", "p")));
        }
        let no_verbs = PolicyRule::from_json(&rule(&[], &["*"], &["*"], &[]));
        assert!(!no_verbs.allows(&request("get", "", "pods", "pf", "p")));
    }

    #[test]
    fn subresource_rules() {
        let status = PolicyRule::from_json(&rule(
            &["patch"],
            &["pureflash.io"],
            &["pureflashstores/status"],
            &[],
        ));
        assert!(status.allows(&request(
            "patch",
            "pureflash.io",
            "pureflashstores/status",
            "pf",
            "s1"
        )));
        assert!(!status.allows(&request(
            "patch",
            "pureflash.io",
            "pureflashstores",
            "pf",
            "s1"
        )));
        assert!(!status.allows(&request(
            "patch",
            "pureflash.io",
            "otherstores/status",
            "pf",
            "s1"
        )));

        let any_status = PolicyRule::from_json(&rule(&["update"], &["*"], &["*/status"], &[]));
        assert!(any_status.allows(&request("update", "", "pods/status", "pf", "p")));
        assert!(any_status.allows(&request("update", "apps", "deployments/status", "pf", "d")));
        assert!(!any_status.allows(&request("update", "", "pods", "pf", "p")));
        assert!(!any_status.allows(&request("update", "", "pods/statusx", "pf", "p")));
        assert!(!any_status.allows(&request("update", "", "pods/log", "pf", "p")));
        // `pods/*` is not a pattern for RBAC: it matches only a subresource literally named `*`.
        let literal = PolicyRule::from_json(&rule(&["get"], &[""], &["pods/*"], &[]));
        assert!(!literal.allows(&request("get", "", "pods/status", "pf", "p")));
    }

    #[test]
    fn resource_names_restrict_to_requests_naming_the_object() {
        let leader = PolicyRule::from_json(&rule(
            &[
                "get", "update", "patch", "delete", "list", "watch", "create",
            ],
            &["coordination.k8s.io"],
            &["leases"],
            &["leader"],
        ));
        assert!(leader.allows(&request(
            "get",
            "coordination.k8s.io",
            "leases",
            "pf",
            "leader"
        )));
        assert!(leader.allows(&request(
            "update",
            "coordination.k8s.io",
            "leases",
            "pf",
            "leader"
        )));
        assert!(!leader.allows(&request(
            "get",
            "coordination.k8s.io",
            "leases",
            "pf",
            "other"
        )));
        assert!(
            !leader.allows(&request(
                "create",
                "coordination.k8s.io",
                "leases",
                "pf",
                ""
            )),
            "a create names nothing"
        );
        assert!(
            !leader.allows(&request("list", "coordination.k8s.io", "leases", "pf", "")),
            "an unfiltered list names nothing"
        );
        let filtered_watch = Attributes::from_request(
            "GET",
            "/apis/coordination.k8s.io/v1/namespaces/pf/leases",
            &query(&[("watch", "1"), ("fieldSelector", "metadata.name=leader")]),
        );
        assert!(
            leader.allows(&filtered_watch),
            "a watch filtered to the name"
        );
        assert!(!leader.allows(&request(
            "deletecollection",
            "coordination.k8s.io",
            "leases",
            "pf",
            ""
        )));
    }

    #[test]
    fn non_resource_urls() {
        let rule = PolicyRule {
            verbs: vec!["get".into()],
            non_resource_urls: vec!["/healthz".into(), "/api/*".into()],
            ..PolicyRule::default()
        };
        assert!(rule.allows(&parse("GET", "/healthz")));
        assert!(rule.allows(&parse("GET", "/api/v1")));
        assert!(
            !rule.allows(&parse("GET", "/api")),
            "`/api/*` needs the slash"
        );
        assert!(!rule.allows(&parse("GET", "/healthz/ping")));
        assert!(!rule.allows(&parse("POST", "/healthz")), "verb");
        assert!(
            !rule.allows(&parse("GET", "/api/v1/pods")),
            "resource requests are never matched by nonResourceURLs"
        );
        let all = PolicyRule {
            verbs: vec!["*".into()],
            non_resource_urls: vec!["*".into()],
            ..PolicyRule::default()
        };
        assert!(all.allows(&parse("GET", "/metrics")));
    }

    // --- Bindings and the decision

    #[test]
    fn a_role_binding_grants_its_role_in_its_namespace_only() {
        let mut policy = Policy::new();
        policy.add_role(&role(
            "pf",
            "reader",
            vec![rule(&["get", "list", "watch"], &[""], &["pods"], &[])],
        ));
        policy.add_role_binding(&binding("pf", "reader", "Role", "reader", sa("pf", "op")));
        let op = operator();
        assert!(
            policy
                .authorize(&op, &request("list", "", "pods", "pf", ""))
                .allowed
        );
        assert!(
            policy
                .authorize(&op, &request("get", "", "pods", "pf", "p"))
                .allowed
        );
        assert!(
            !policy
                .authorize(&op, &request("list", "", "pods", "other", ""))
                .allowed
        );
        assert!(
            !policy
                .authorize(&op, &request("list", "", "pods", "", ""))
                .allowed,
            "a list across namespaces is cluster-scoped"
        );
        assert!(
            !policy
                .authorize(&op, &request("delete", "", "pods", "pf", "p"))
                .allowed
        );
        assert!(
            !policy
                .authorize(&op, &request("list", "", "secrets", "pf", ""))
                .allowed
        );
        let someone = user("alice", &[]);
        assert!(
            !policy
                .authorize(&someone, &request("list", "", "pods", "pf", ""))
                .allowed
        );
        assert_eq!(
            policy
                .authorize(&op, &request("list", "", "pods", "pf", ""))
                .reason,
            "RBAC: allowed by RoleBinding \"reader/pf\" of Role \"reader\" to ServiceAccount \"op/pf\""
        );
    }

    #[test]
    fn a_role_in_another_namespace_is_not_found() {
        let mut policy = Policy::new();
        policy.add_role(&role(
            "elsewhere",
            "reader",
            vec![rule(&["*"], &["*"], &["*"], &[])],
        ));
        policy.add_role_binding(&binding("pf", "reader", "Role", "reader", sa("pf", "op")));
        let decision = policy.authorize(&operator(), &request("list", "", "pods", "pf", ""));
        assert_eq!(
            decision,
            Decision {
                allowed: false,
                reason: "RBAC: role.rbac.authorization.k8s.io \"reader\" not found".into()
            }
        );
    }

    #[test]
    fn a_cluster_role_bound_by_a_role_binding_applies_in_that_namespace() {
        let mut policy = Policy::new();
        policy.add_cluster_role(&cluster_role(
            "store-editor",
            vec![rule(
                &["*"],
                &["pureflash.io"],
                &["pureflashstores", "pureflashstores/status"],
                &[],
            )],
        ));
        policy.add_role_binding(&binding(
            "pf",
            "edit",
            "ClusterRole",
            "store-editor",
            sa("pf", "op"),
        ));
        let op = operator();
        assert!(
            policy
                .authorize(
                    &op,
                    &request(
                        "patch",
                        "pureflash.io",
                        "pureflashstores/status",
                        "pf",
                        "s1"
                    )
                )
                .allowed
        );
        assert!(
            !policy
                .authorize(
                    &op,
                    &request(
                        "patch",
                        "pureflash.io",
                        "pureflashstores/status",
                        "other",
                        "s1"
                    )
                )
                .allowed
        );
        assert!(
            !policy
                .authorize(
                    &op,
                    &request("list", "pureflash.io", "pureflashstores", "", "")
                )
                .allowed
        );
    }

    #[test]
    fn a_cluster_role_binding_applies_everywhere() {
        let mut policy = Policy::new();
        policy.add_cluster_role(&cluster_role(
            "nodes",
            vec![
                rule(&["get", "list"], &[""], &["nodes"], &[]),
                rule(&["list"], &[""], &["pods"], &[]),
            ],
        ));
        policy.add_cluster_role_binding(&binding(
            "",
            "op-nodes",
            "ClusterRole",
            "nodes",
            sa("pf", "op"),
        ));
        let op = operator();
        assert!(
            policy
                .authorize(&op, &request("get", "", "nodes", "", "node-1"))
                .allowed
        );
        assert!(
            policy
                .authorize(&op, &request("list", "", "pods", "", ""))
                .allowed
        );
        assert!(
            policy
                .authorize(&op, &request("list", "", "pods", "any", ""))
                .allowed
        );
        assert!(
            !policy
                .authorize(&op, &request("delete", "", "nodes", "", "node-1"))
                .allowed
        );
    }

    #[test]
    fn a_cluster_role_binding_cannot_use_a_role() {
        let mut policy = Policy::new();
        policy.add_role(&role(
            "pf",
            "reader",
            vec![rule(&["*"], &["*"], &["*"], &[])],
        ));
        policy.add_cluster_role_binding(&binding("", "bad", "Role", "reader", sa("pf", "op")));
        let decision = policy.authorize(&operator(), &request("get", "", "pods", "pf", "p"));
        assert!(!decision.allowed);
        assert_eq!(
            decision.reason,
            "RBAC: role.rbac.authorization.k8s.io \"reader\" not found"
        );
    }

    #[test]
    fn subjects_users_groups_and_service_accounts() {
        let mut policy = Policy::new();
        policy.add_cluster_role(&cluster_role(
            "view",
            vec![rule(&["get"], &[""], &["configmaps"], &[])],
        ));
        policy.add_role_binding(&binding(
            "pf",
            "people",
            "ClusterRole",
            "view",
            json!([
                {"kind": "User", "name": "alice", "apiGroup": RBAC_GROUP},
                {"kind": "Group", "name": "ops", "apiGroup": RBAC_GROUP},
                // Without a namespace, a RoleBinding's ServiceAccount is in the binding's namespace.
                {"kind": "ServiceAccount", "name": "local"},
                {"kind": "ServiceAccount", "name": "remote", "namespace": "other"},
                {"kind": "Robot", "name": "alice"},
            ]),
        ));
        let get = request("get", "", "configmaps", "pf", "c");
        assert!(policy.authorize(&user("alice", &[]), &get).allowed);
        assert!(!policy.authorize(&user("bob", &[]), &get).allowed);
        assert!(policy.authorize(&user("bob", &["ops"]), &get).allowed);
        let sa_user = |ns: &str, name: &str| UserInfo {
            name: service_account_username(ns, name),
            groups: service_account_groups(ns),
        };
        assert!(policy.authorize(&sa_user("pf", "local"), &get).allowed);
        assert!(!policy.authorize(&sa_user("other", "local"), &get).allowed);
        assert!(policy.authorize(&sa_user("other", "remote"), &get).allowed);
        assert!(!policy.authorize(&sa_user("pf", "remote"), &get).allowed);
        assert!(
            !policy
                .authorize(
                    &user("system:serviceaccount:pf:local", &[]),
                    &request("get", "", "configmaps", "other", "c")
                )
                .allowed
        );

        // A ClusterRoleBinding's ServiceAccount without a namespace matches nobody.
        let mut policy = Policy::new();
        policy.add_cluster_role(&cluster_role(
            "view",
            vec![rule(&["get"], &[""], &["configmaps"], &[])],
        ));
        policy.add_cluster_role_binding(&binding(
            "",
            "sa",
            "ClusterRole",
            "view",
            json!([{"kind": "ServiceAccount", "name": "local"}]),
        ));
        assert!(!policy.authorize(&sa_user("pf", "local"), &get).allowed);
        // Groups of service accounts.
        policy.add_cluster_role_binding(&binding(
            "",
            "all-sa",
            "ClusterRole",
            "view",
            json!([{"kind": "Group", "name": "system:serviceaccounts:pf"}]),
        ));
        assert!(policy.authorize(&sa_user("pf", "anyone"), &get).allowed);
        assert!(!policy.authorize(&sa_user("other", "anyone"), &get).allowed);
    }

    #[test]
    fn missing_roles_are_the_reason_of_a_denial() {
        let mut policy = Policy::new();
        policy.add_role_binding(&binding("pf", "a", "Role", "gone", sa("pf", "op")));
        policy.add_role_binding(&binding(
            "pf",
            "b",
            "ClusterRole",
            "also-gone",
            sa("pf", "op"),
        ));
        policy.add_role_binding(&binding(
            "pf",
            "c",
            "ClusterRole",
            "also-gone",
            sa("pf", "op"),
        ));
        policy.add_role_binding(&binding("pf", "d", "Robot", "x", sa("pf", "op")));
        policy.add_role_binding(&binding(
            "pf",
            "e",
            "Role",
            "not-mine",
            sa("pf", "someone-else"),
        ));
        let decision = policy.authorize(&operator(), &request("get", "", "pods", "pf", "p"));
        assert_eq!(
            decision.reason,
            "RBAC: [role.rbac.authorization.k8s.io \"gone\" not found, clusterrole.rbac.authorization.k8s.io \"also-gone\" not found, unsupported role reference kind: \"Robot\"]"
        );
        // Resolution errors do not matter when another binding allows.
        policy.add_cluster_role(&cluster_role(
            "view",
            vec![rule(&["get"], &[""], &["pods"], &[])],
        ));
        policy.add_role_binding(&binding("pf", "f", "ClusterRole", "view", sa("pf", "op")));
        assert!(
            policy
                .authorize(&operator(), &request("get", "", "pods", "pf", "p"))
                .allowed
        );
    }

    #[test]
    fn the_bootstrap_policy_allows_discovery_to_any_authenticated_user() {
        let policy = Policy::new();
        let op = operator();
        for path in [
            "/api",
            "/api/v1",
            "/apis",
            "/apis/apps/v1",
            "/version",
            "/openapi/v3",
            "/openapi/v3/api/v1",
            "/healthz",
            "/readyz",
            "/livez",
        ] {
            assert!(policy.authorize(&op, &parse("GET", path)).allowed, "{path}");
        }
        assert!(!policy.authorize(&op, &parse("GET", "/metrics")).allowed);
        assert!(!policy.authorize(&op, &parse("POST", "/api")).allowed);
        assert!(!policy.authorize(&op, &parse("GET", "/api/v1/pods")).allowed);
        assert!(
            policy
                .authorize(
                    &op,
                    &request(
                        "create",
                        "authorization.k8s.io",
                        "selfsubjectaccessreviews",
                        "",
                        ""
                    )
                )
                .allowed
        );
        let unauthenticated = UserInfo {
            name: "x".into(),
            groups: vec![],
        };
        assert!(
            !policy
                .authorize(&unauthenticated, &parse("GET", "/version"))
                .allowed
        );
    }

    #[test]
    fn system_masters_is_allowed_everything() {
        let admin = user("admin", &[SYSTEM_MASTERS]);
        let policy = Policy::new();
        assert!(
            policy
                .authorize(&admin, &request("delete", "", "nodes", "", "n"))
                .allowed
        );
        assert!(policy.authorize(&admin, &parse("GET", "/metrics")).allowed);
    }

    // --- Forbidden messages

    #[test]
    fn forbidden_messages_are_the_api_servers() {
        let op = operator();
        let denied = Decision {
            allowed: false,
            reason: String::new(),
        };
        let delete = forbidden(
            &op,
            &request("delete", "", "pods", "pf", "store-1-pfs"),
            &denied,
        );
        assert_eq!(delete.code, 403);
        assert_eq!(
            delete.message,
            "pods \"store-1-pfs\" is forbidden: User \"system:serviceaccount:pf:op\" cannot delete resource \"pods\" in API group \"\" in the namespace \"pf\""
        );
        assert_eq!(
            delete.status(),
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": delete.message,
                   "reason": "Forbidden", "details": {"name": "store-1-pfs", "kind": "pods"}, "code": 403})
        );
        let list = forbidden(
            &op,
            &request("list", "pureflash.io", "pureflashstores", "pf", ""),
            &denied,
        );
        assert_eq!(
            list.message,
            "pureflashstores.pureflash.io is forbidden: User \"system:serviceaccount:pf:op\" cannot list resource \"pureflashstores\" in API group \"pureflash.io\" in the namespace \"pf\""
        );
        assert_eq!(
            list.status()["details"],
            json!({"group": "pureflash.io", "kind": "pureflashstores"})
        );
        let status = forbidden(
            &op,
            &request(
                "patch",
                "pureflash.io",
                "pureflashstores/status",
                "pf",
                "s1",
            ),
            &denied,
        );
        assert_eq!(
            status.message,
            "pureflashstores.pureflash.io \"s1\" is forbidden: User \"system:serviceaccount:pf:op\" cannot patch resource \"pureflashstores/status\" in API group \"pureflash.io\" in the namespace \"pf\""
        );
        let node = forbidden(&op, &request("get", "", "nodes", "", "node-1"), &denied);
        assert_eq!(
            node.message,
            "nodes \"node-1\" is forbidden: User \"system:serviceaccount:pf:op\" cannot get resource \"nodes\" in API group \"\" at the cluster scope"
        );
        let path = forbidden(&op, &parse("GET", "/metrics"), &denied);
        assert_eq!(
            path.message,
            "forbidden: User \"system:serviceaccount:pf:op\" cannot get path \"/metrics\""
        );
        assert_eq!(path.status()["details"], json!({}));
        let with_reason = Decision {
            allowed: false,
            reason: "RBAC: role.rbac.authorization.k8s.io \"r\" not found".into(),
        };
        assert!(
            forbidden(&op, &request("get", "", "pods", "pf", "p"), &with_reason)
                .message
                .ends_with(
                    "in the namespace \"pf\": RBAC: role.rbac.authorization.k8s.io \"r\" not found"
                )
        );
        let html = forbidden(
            &user("<b>&", &[]),
            &request("get", "", "pods", "pf", "p"),
            &denied,
        );
        assert!(
            html.message.contains("User \"&lt;b&gt;&amp;\""),
            "{}",
            html.message
        );
    }

    // --- Server-side apply that creates

    #[test]
    fn an_apply_to_a_missing_object_also_needs_create() {
        let apply = "application/apply-patch+yaml";
        let patch = parse("PATCH", "/api/v1/namespaces/pf/configmaps/settings");
        assert_eq!(
            create_on_apply(&patch, apply, false),
            Some(Attributes {
                verb: "create".into(),
                ..patch.clone()
            }),
            "the same object, namespace and path, with the verb create"
        );
        assert_eq!(
            create_on_apply(&patch, "application/apply-patch+yaml; charset=utf-8", false)
                .map(|c| c.name),
            Some(Some("settings".to_owned()))
        );
        assert_eq!(create_on_apply(&patch, apply, true), None, "it exists");
        for other in [
            "application/merge-patch+json",
            "application/strategic-merge-patch+json",
            "application/json-patch+json",
        ] {
            assert_eq!(create_on_apply(&patch, other, false), None, "{other}");
        }
        let status = parse("PATCH", "/api/v1/namespaces/pf/pods/p/status");
        assert_eq!(
            create_on_apply(&status, apply, false),
            None,
            "subresources never create"
        );
        let put = parse("PUT", "/api/v1/namespaces/pf/configmaps/settings");
        assert_eq!(create_on_apply(&put, apply, false), None);
    }

    #[test]
    fn patch_alone_does_not_allow_an_apply_to_create() {
        let mut policy = Policy::new();
        policy.add_role(&role(
            "pf",
            "patcher",
            vec![rule(&["get", "patch"], &[""], &["configmaps"], &[])],
        ));
        policy.add_role_binding(&binding("pf", "patcher", "Role", "patcher", sa("pf", "op")));
        let op = operator();
        let patch = parse("PATCH", "/api/v1/namespaces/pf/configmaps/settings");
        assert!(policy.authorize(&op, &patch).allowed);
        let create = create_on_apply(&patch, "application/apply-patch+yaml", false).unwrap();
        let decision = policy.authorize(&op, &create);
        assert!(!decision.allowed);
        let error = forbidden_create_on_apply(&create, &decision);
        assert_eq!(
            error.status(),
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                   "message": "configmaps \"settings\" is forbidden: ",
                   "reason": "Forbidden", "details": {"name": "settings", "kind": "configmaps"}, "code": 403})
        );

        // With create too, on that name only (resourceNames apply to the created object).
        policy.add_role(&role(
            "pf",
            "creator",
            vec![rule(&["create"], &[""], &["configmaps"], &["settings"])],
        ));
        policy.add_role_binding(&binding("pf", "creator", "Role", "creator", sa("pf", "op")));
        assert!(policy.authorize(&op, &create).allowed);
        let other = parse("PATCH", "/api/v1/namespaces/pf/configmaps/other");
        let create_other = create_on_apply(&other, "application/apply-patch+yaml", false).unwrap();
        assert!(!policy.authorize(&op, &create_other).allowed);

        // A binding to a missing role: the reason is RBAC's.
        policy.add_role_binding(&binding("pf", "broken", "Role", "missing", sa("pf", "op")));
        let decision = policy.authorize(&op, &create_other);
        assert_eq!(
            forbidden_create_on_apply(&create_other, &decision).message,
            "configmaps \"other\" is forbidden: RBAC: role.rbac.authorization.k8s.io \"missing\" not found"
        );
    }
}
