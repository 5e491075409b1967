//! Fault injection for tests: fail or delay the next requests that match, drop watch streams.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;

/// Which requests a fault applies to; `None` matches anything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Matcher {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`.
    pub verb: Option<String>,
    /// Plural resource name, e.g. `pods`, `pureflashstores`.
    pub resource: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    /// `status` to target only status writes; `""` ([`Matcher::without_subresource`]) only the
    /// object itself. `None` matches both: a `patch` of `pods` then catches the kubelet's (the
    /// node agent's) status patches too.
    pub subresource: Option<String>,
    /// Only requests whose body does not contain this text (a Lease release, say, which
    /// carries no `"holderIdentity":"…"`, unlike a renewal).
    pub body_lacks: Option<String>,
    /// Only dry runs (`dryRun=All` in the query), or only real requests.
    pub dry_run: Option<bool>,
}

impl Matcher {
    pub fn verb(verb: &str) -> Matcher {
        Matcher {
            verb: Some(verb.to_owned()),
            ..Matcher::default()
        }
    }

    pub fn on(mut self, resource: &str) -> Matcher {
        self.resource = Some(resource.to_owned());
        self
    }

    pub fn named(mut self, name: &str) -> Matcher {
        self.name = Some(name.to_owned());
        self
    }

    pub fn subresource(mut self, subresource: &str) -> Matcher {
        self.subresource = Some(subresource.to_owned());
        self
    }

    /// Only requests on the object itself, none on a subresource: a Pod patch by a controller,
    /// not the kubelet's status patch.
    pub fn without_subresource(mut self) -> Matcher {
        self.subresource = Some(String::new());
        self
    }

    pub fn body_lacks(mut self, text: &str) -> Matcher {
        self.body_lacks = Some(text.to_owned());
        self
    }

    pub fn dry_run(mut self, dry_run: bool) -> Matcher {
        self.dry_run = Some(dry_run);
        self
    }

    fn matches(&self, request: &RequestInfo<'_>) -> bool {
        let field = |want: &Option<String>, have: Option<&str>| {
            want.as_deref().is_none_or(|w| Some(w) == have)
        };
        field(&self.verb, Some(request.verb))
            && field(&self.resource, Some(request.resource))
            && field(&self.namespace, request.namespace)
            && field(&self.name, request.name)
            && field(&self.subresource, Some(request.subresource.unwrap_or("")))
            && self
                .dry_run
                .is_none_or(|dry_run| dry_run == request.dry_run)
            && self.body_lacks.as_deref().is_none_or(|text| {
                !request
                    .body
                    .windows(text.len().max(1))
                    .any(|w| w == text.as_bytes())
            })
    }
}

/// The request being checked.
#[derive(Clone, Copy, Debug)]
pub struct RequestInfo<'a> {
    pub verb: &'a str,
    pub resource: &'a str,
    pub namespace: Option<&'a str>,
    pub name: Option<&'a str>,
    pub subresource: Option<&'a str>,
    pub body: &'a [u8],
    pub dry_run: bool,
}

/// What happens to a matching request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Answer with this HTTP status (500, 429 with Retry-After 1, 409, 403 as a quota refusal,
    /// …) instead of serving.
    Fail(u16),
    /// Serve, but only after this long.
    Delay(Duration),
}

#[derive(Debug)]
struct Rule {
    matcher: Matcher,
    action: Action,
    remaining: usize,
}

/// The fault rules of one emulator.
#[derive(Debug)]
pub struct Faults {
    rules: Mutex<Vec<Rule>>,
    watch_epoch: watch::Sender<u64>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            rules: Mutex::new(Vec::new()),
            watch_epoch: watch::channel(0).0,
        }
    }
}

impl Faults {
    /// The next `count` requests matching `matcher` get `action`.
    pub fn inject(&self, matcher: Matcher, action: Action, count: usize) {
        self.rules.lock().expect("faults lock").push(Rule {
            matcher,
            action,
            remaining: count,
        });
    }

    /// How many more requests the pending faults will catch: 0 once every fault has struck
    /// (a delayed request is then being held, or served).
    pub fn pending(&self) -> usize {
        self.rules
            .lock()
            .expect("faults lock")
            .iter()
            .map(|r| r.remaining)
            .sum()
    }

    /// Removes every pending fault.
    pub fn clear(&self) {
        self.rules.lock().expect("faults lock").clear();
    }

    /// Ends every open watch stream (clients see the connection close and must re-watch).
    pub fn drop_watches(&self) {
        self.watch_epoch.send_modify(|epoch| *epoch += 1);
    }

    pub(crate) fn watch_epoch(&self) -> watch::Receiver<u64> {
        self.watch_epoch.subscribe()
    }

    /// The action for this request, consuming one use of the first matching rule.
    pub(crate) fn take(&self, request: &RequestInfo<'_>) -> Option<Action> {
        let mut rules = self.rules.lock().expect("faults lock");
        let index = rules
            .iter()
            .position(|r| r.remaining > 0 && r.matcher.matches(request))?;
        rules[index].remaining -= 1;
        let action = rules[index].action;
        rules.retain(|r| r.remaining > 0);
        Some(action)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_match_and_run_out() {
        let faults = Faults::default();
        faults.inject(Matcher::verb("patch").on("pods"), Action::Fail(500), 2);
        let patch = RequestInfo {
            verb: "patch",
            resource: "pods",
            namespace: Some("ns"),
            name: Some("p"),
            subresource: None,
            body: b"",
            dry_run: false,
        };
        let get = RequestInfo {
            verb: "get",
            ..patch
        };
        assert_eq!(faults.take(&get), None);
        assert_eq!(faults.pending(), 2);
        assert_eq!(faults.take(&patch), Some(Action::Fail(500)));
        assert_eq!(faults.take(&patch), Some(Action::Fail(500)));
        assert_eq!(faults.pending(), 0);
        assert_eq!(faults.take(&patch), None);
    }

    #[test]
    fn a_rule_can_spare_requests_whose_body_has_a_text() {
        let faults = Faults::default();
        faults.inject(
            Matcher::verb("update")
                .on("leases")
                .body_lacks("holderIdentity"),
            Action::Fail(409),
            1,
        );
        let renewal = RequestInfo {
            verb: "update",
            resource: "leases",
            namespace: Some("ns"),
            name: Some("op"),
            subresource: None,
            body: br#"{"spec":{"holderIdentity":"a"}}"#,
            dry_run: false,
        };
        let release = RequestInfo {
            body: br#"{"spec":{"leaseDurationSeconds":15}}"#,
            ..renewal
        };
        assert_eq!(faults.take(&renewal), None);
        assert_eq!(faults.take(&release), Some(Action::Fail(409)));
    }

    #[test]
    fn a_rule_without_a_subresource_catches_status_writes_unless_told_not_to() {
        let faults = Faults::default();
        let patch = RequestInfo {
            verb: "patch",
            resource: "pods",
            namespace: Some("ns"),
            name: Some("p"),
            subresource: None,
            body: b"{}",
            dry_run: false,
        };
        let status = RequestInfo {
            subresource: Some("status"),
            ..patch
        };
        faults.inject(Matcher::verb("patch").on("pods"), Action::Fail(500), 1);
        assert_eq!(faults.take(&status), Some(Action::Fail(500)));

        faults.inject(
            Matcher::verb("patch").on("pods").without_subresource(),
            Action::Fail(409),
            1,
        );
        assert_eq!(faults.take(&status), None);
        assert_eq!(faults.take(&patch), Some(Action::Fail(409)));

        faults.inject(
            Matcher::verb("patch").on("pods").subresource("status"),
            Action::Fail(500),
            1,
        );
        assert_eq!(faults.take(&patch), None);
        assert_eq!(faults.take(&status), Some(Action::Fail(500)));
    }

    #[test]
    fn a_rule_can_target_dry_runs_alone() {
        let faults = Faults::default();
        faults.inject(
            Matcher::verb("create").on("pods").dry_run(true),
            Action::Fail(403),
            1,
        );
        let create = RequestInfo {
            verb: "create",
            resource: "pods",
            namespace: Some("ns"),
            name: None,
            subresource: None,
            body: b"{}",
            dry_run: false,
        };
        assert_eq!(faults.take(&create), None);
        let dry_run = RequestInfo {
            dry_run: true,
            ..create
        };
        assert_eq!(faults.take(&dry_run), Some(Action::Fail(403)));
    }
}
