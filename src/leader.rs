//! Leader election on a `coordination.k8s.io/v1` Lease, so that only one operator replica
//! writes (status, Pods, Events, the metadata DB) while the others keep their views warm.
//!
//! The decision ([`step`]) is pure; the loop ([`run`]) applies it with optimistic concurrency
//! (every write carries the Lease's resourceVersion, so two candidates cannot both win). A
//! leader that cannot renew within `renew_deadline` (shorter than the lease duration) stops
//! leading before anyone else may take over; on shutdown it releases the Lease so a standby
//! takes over at once.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Lease settings.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    /// This replica's identity (the Pod name in a cluster).
    pub identity: String,
    /// How long a lease is valid without renewal: a standby takes over after this.
    pub duration: Duration,
    /// How often the leader renews.
    pub renew_every: Duration,
    /// A leader that has not renewed for this long stops leading (less than `duration`).
    pub renew_deadline: Duration,
}

impl LeaseConfig {
    pub fn new(name: &str, namespace: &str, identity: &str, duration: Duration) -> LeaseConfig {
        LeaseConfig {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            identity: identity.to_owned(),
            duration,
            renew_every: duration / 3,
            renew_deadline: duration * 2 / 3,
        }
    }
}

/// What to do about the Lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// No Lease yet: create it, holding it.
    Create,
    /// We hold it: renew.
    Renew,
    /// Held by nobody, or its holder stopped renewing: take it.
    TakeOver,
    /// Someone else holds it until `expires`.
    Follow { holder: String, expires: Timestamp },
}

/// The step for `me` given the current Lease spec, at `now`.
pub fn step(
    lease: Option<&LeaseSpec>,
    me: &str,
    now: Timestamp,
    default_duration: Duration,
) -> Step {
    let Some(spec) = lease else {
        return Step::Create;
    };
    let holder = spec.holder_identity.clone().unwrap_or_default();
    if holder == me {
        return Step::Renew;
    }
    if holder.is_empty() {
        return Step::TakeOver;
    }
    let seconds = spec
        .lease_duration_seconds
        .map(i64::from)
        .unwrap_or(default_duration.as_secs() as i64);
    let renewed = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .map(|t| t.0);
    let expires = renewed
        .and_then(|at| at.checked_add(SignedDuration::from_secs(seconds)).ok())
        .unwrap_or(Timestamp::MIN);
    if expires <= now {
        Step::TakeOver
    } else {
        Step::Follow { holder, expires }
    }
}

/// The Lease spec after `me` creates, renews or takes it over at `now`.
pub fn held(
    previous: Option<&LeaseSpec>,
    me: &str,
    now: Timestamp,
    duration: Duration,
) -> LeaseSpec {
    let already_mine = previous.is_some_and(|p| p.holder_identity.as_deref() == Some(me));
    let transitions = previous.and_then(|p| p.lease_transitions).unwrap_or(0);
    LeaseSpec {
        holder_identity: Some(me.to_owned()),
        lease_duration_seconds: Some(duration.as_secs() as i32),
        acquire_time: if already_mine {
            previous.and_then(|p| p.acquire_time.clone())
        } else {
            Some(MicroTime(now))
        },
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(if already_mine || previous.is_none() {
            transitions
        } else {
            transitions + 1
        }),
        ..LeaseSpec::default()
    }
}

/// Runs the election until `shutdown`; `leading` says whether this replica leads now.
pub async fn run(
    client: Client,
    config: LeaseConfig,
    leading: watch::Sender<bool>,
    shutdown: CancellationToken,
) {
    let leases: Api<Lease> = Api::namespaced(client, &config.namespace);
    let mut last_renewal: Option<tokio::time::Instant> = None;
    loop {
        let wait = match attempt(&leases, &config).await {
            Ok(true) => {
                last_renewal = Some(tokio::time::Instant::now());
                if !*leading.borrow() {
                    info!(lease = %config.name, identity = %config.identity, "became leader");
                    leading.send_replace(true);
                }
                config.renew_every
            }
            Ok(false) => {
                if *leading.borrow() {
                    warn!(lease = %config.name, "lost the lease to another replica; stepping down");
                    leading.send_replace(false);
                }
                last_renewal = None;
                config.renew_every
            }
            Err(error) => {
                debug!(%error, "lease request failed");
                let overdue = last_renewal.is_some_and(|at| at.elapsed() >= config.renew_deadline);
                if *leading.borrow() && overdue {
                    warn!(lease = %config.name, %error, "could not renew the lease in time; stepping down");
                    leading.send_replace(false);
                    last_renewal = None;
                }
                Duration::from_millis(500)
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }
    if *leading.borrow() {
        leading.send_replace(false);
        release(&leases, &config).await;
    }
}

/// One round: returns whether we hold the Lease afterwards.
async fn attempt(leases: &Api<Lease>, config: &LeaseConfig) -> kube::Result<bool> {
    let now = Timestamp::now();
    let current = leases.get_opt(&config.name).await?;
    let spec = current.as_ref().and_then(|l| l.spec.clone());
    match step(spec.as_ref(), &config.identity, now, config.duration) {
        Step::Follow { .. } => Ok(false),
        Step::Create => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(config.name.clone()),
                    namespace: Some(config.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(held(None, &config.identity, now, config.duration)),
            };
            match leases.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
                Err(error) => Err(error),
            }
        }
        Step::Renew | Step::TakeOver => {
            let mut lease = current.expect("a lease to renew or take over");
            lease.spec = Some(held(spec.as_ref(), &config.identity, now, config.duration));
            // The resourceVersion read above makes this a compare-and-swap.
            match leases
                .replace(&config.name, &PostParams::default(), &lease)
                .await
            {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
                Err(error) => Err(error),
            }
        }
    }
}

/// Gives the Lease up so a standby does not wait for it to expire.
async fn release(leases: &Api<Lease>, config: &LeaseConfig) {
    let Ok(Some(mut lease)) = leases.get_opt(&config.name).await else {
        return;
    };
    let Some(spec) = lease.spec.as_mut() else {
        return;
    };
    if spec.holder_identity.as_deref() != Some(config.identity.as_str()) {
        return;
    }
    spec.holder_identity = None;
    spec.renew_time = None;
    match leases
        .replace(&config.name, &PostParams::default(), &lease)
        .await
    {
        Ok(_) => info!(lease = %config.name, "released the lease"),
        Err(error) => debug!(%error, "could not release the lease (it will expire)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DURATION: Duration = Duration::from_secs(15);

    fn t(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    fn lease(holder: Option<&str>, renewed: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_owned),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(t(renewed))),
            acquire_time: Some(MicroTime(t(0))),
            lease_transitions: Some(2),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn the_steps() {
        assert_eq!(step(None, "a", t(0), DURATION), Step::Create);
        assert_eq!(
            step(Some(&lease(Some("a"), 0)), "a", t(100), DURATION),
            Step::Renew,
            "our own lease is renewed even if late"
        );
        assert_eq!(
            step(Some(&lease(None, 0)), "a", t(1), DURATION),
            Step::TakeOver,
            "released"
        );
        assert_eq!(
            step(Some(&lease(Some("b"), 0)), "a", t(14), DURATION),
            Step::Follow {
                holder: "b".into(),
                expires: t(15)
            }
        );
        assert_eq!(
            step(Some(&lease(Some("b"), 0)), "a", t(15), DURATION),
            Step::TakeOver,
            "expired exactly at renew + duration"
        );
        let no_times = LeaseSpec {
            holder_identity: Some("b".into()),
            ..LeaseSpec::default()
        };
        assert_eq!(
            step(Some(&no_times), "a", t(0), DURATION),
            Step::TakeOver,
            "a lease never renewed is free"
        );
    }

    #[test]
    fn holding_counts_transitions_and_keeps_the_acquire_time() {
        let renewed = held(Some(&lease(Some("a"), 5)), "a", t(10), DURATION);
        assert_eq!(
            (
                renewed.acquire_time.unwrap().0,
                renewed.renew_time.unwrap().0,
                renewed.lease_transitions
            ),
            (t(0), t(10), Some(2))
        );
        let taken = held(Some(&lease(Some("b"), 5)), "a", t(30), DURATION);
        assert_eq!(
            (
                taken.holder_identity.as_deref(),
                taken.acquire_time.unwrap().0,
                taken.lease_transitions
            ),
            (Some("a"), t(30), Some(3))
        );
        assert_eq!(held(None, "a", t(0), DURATION).lease_transitions, Some(0));
    }
}
