//! Who is calling, and what they were allowed to do: the bearer tokens tests register (the API
//! server's static token authenticator, and ServiceAccount tokens that stay valid only while
//! their ServiceAccount exists), and the audit log of every resource request made with them.
//!
//! A request without credentials is the tests' administrator and is allowed everything, so
//! that tests that never register a token see no authorization at all.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::rbac::{self, Attributes, UserInfo};

/// What a registered token authenticates as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credential {
    pub user: UserInfo,
    /// `(namespace, name)` for ServiceAccount tokens: the account must exist for the token to
    /// authenticate, as for the API server's ServiceAccount token authenticator.
    pub service_account: Option<(String, String)>,
}

/// Who a request comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// No `Authorization` header: the tests' administrator.
    Admin,
    /// A registered bearer token.
    Token(Credential),
    /// Credentials that authenticate nobody: `401 Unauthorized`.
    Unknown,
}

/// The registered bearer tokens.
#[derive(Debug, Default)]
pub struct Tokens {
    by_token: Mutex<HashMap<String, Credential>>,
}

impl Tokens {
    /// Registers `token` for `user`; like every authenticated user, it is also in the group
    /// `system:authenticated`. Registering a token again replaces its user.
    pub fn add(&self, token: &str, user: &str, groups: &[&str]) {
        self.insert(token, user, groups, None);
    }

    /// Registers `token` for the ServiceAccount `namespace/name`
    /// (`system:serviceaccount:<namespace>:<name>`, in the groups of service accounts).
    pub fn add_service_account(&self, token: &str, namespace: &str, name: &str) {
        let groups = rbac::service_account_groups(namespace);
        let groups: Vec<&str> = groups.iter().map(String::as_str).collect();
        self.insert(
            token,
            &rbac::service_account_username(namespace, name),
            &groups,
            Some((namespace.to_owned(), name.to_owned())),
        );
    }

    fn insert(
        &self,
        token: &str,
        user: &str,
        groups: &[&str],
        service_account: Option<(String, String)>,
    ) {
        let mut all: Vec<String> = groups.iter().map(|g| (*g).to_owned()).collect();
        if !all.iter().any(|g| g == rbac::SYSTEM_AUTHENTICATED) {
            all.push(rbac::SYSTEM_AUTHENTICATED.to_owned());
        }
        let credential = Credential {
            user: UserInfo {
                name: user.to_owned(),
                groups: all,
            },
            service_account,
        };
        self.by_token
            .lock()
            .expect("tokens lock")
            .insert(token.to_owned(), credential);
    }

    /// Who sent a request with this `Authorization` header value (`None`: no header). Only
    /// `Bearer` tokens are understood; anything else authenticates nobody.
    pub fn caller(&self, authorization: Option<&str>) -> Caller {
        let Some(authorization) = authorization else {
            return Caller::Admin;
        };
        let token = authorization
            .strip_prefix("Bearer ")
            .or_else(|| authorization.strip_prefix("bearer "))
            .map(str::trim);
        match token.and_then(|t| self.by_token.lock().expect("tokens lock").get(t).cloned()) {
            Some(credential) => Caller::Token(credential),
            None => Caller::Unknown,
        }
    }
}

/// One resource request made with a registered token, as authorization saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRecord {
    pub user: String,
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`.
    pub verb: String,
    /// `""` for the core group.
    pub api_group: String,
    /// The plural resource name, e.g. `pods`.
    pub resource: String,
    pub subresource: Option<String>,
    pub namespace: Option<String>,
    /// The object named by the path, or by a `metadata.name=` field selector.
    pub name: Option<String>,
    pub allowed: bool,
}

impl AuditRecord {
    pub fn new(user: &UserInfo, request: &Attributes, allowed: bool) -> AuditRecord {
        AuditRecord {
            user: user.name.clone(),
            verb: request.verb.clone(),
            api_group: request.api_group.clone(),
            resource: request.resource.clone(),
            subresource: request.subresource.clone(),
            namespace: request.namespace.clone(),
            name: request.name.clone(),
            allowed,
        }
    }
}

/// Every audited request, in the order they arrived.
#[derive(Debug, Default)]
pub struct AuditLog {
    records: Mutex<Vec<AuditRecord>>,
}

impl AuditLog {
    pub fn record(&self, record: AuditRecord) {
        self.records.lock().expect("audit lock").push(record);
    }

    pub fn records(&self) -> Vec<AuditRecord> {
        self.records.lock().expect("audit lock").clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_authenticate_their_users() {
        let tokens = Tokens::default();
        tokens.add("t1", "alice", &["ops"]);
        tokens.add_service_account("t2", "pf", "op");
        assert_eq!(tokens.caller(None), Caller::Admin);
        assert_eq!(tokens.caller(Some("Bearer nope")), Caller::Unknown);
        assert_eq!(tokens.caller(Some("Basic YWxpY2U6eA==")), Caller::Unknown);
        let Caller::Token(alice) = tokens.caller(Some("Bearer t1")) else {
            panic!("t1 is registered");
        };
        assert_eq!(alice.user.name, "alice");
        assert_eq!(alice.user.groups, ["ops", "system:authenticated"]);
        assert_eq!(alice.service_account, None);
        let Caller::Token(op) = tokens.caller(Some("Bearer t2")) else {
            panic!("t2 is registered");
        };
        assert_eq!(op.user.name, "system:serviceaccount:pf:op");
        assert_eq!(
            op.user.groups,
            [
                "system:serviceaccounts",
                "system:serviceaccounts:pf",
                "system:authenticated"
            ]
        );
        assert_eq!(op.service_account, Some(("pf".into(), "op".into())));
    }

    #[test]
    fn the_audit_log_keeps_the_order() {
        let log = AuditLog::default();
        let user = UserInfo {
            name: "alice".into(),
            groups: vec![],
        };
        let list = Attributes::from_request("GET", "/api/v1/namespaces/pf/pods", &[]);
        let delete = Attributes::from_request("DELETE", "/api/v1/namespaces/pf/pods/p", &[]);
        log.record(AuditRecord::new(&user, &list, true));
        log.record(AuditRecord::new(&user, &delete, false));
        let records = log.records();
        assert_eq!(
            records
                .iter()
                .map(|r| (r.verb.as_str(), r.name.as_deref(), r.allowed))
                .collect::<Vec<_>>(),
            [("list", None, true), ("delete", Some("p"), false)]
        );
        assert_eq!(records[0].namespace.as_deref(), Some("pf"));
    }
}
