//! Leader election on a `coordination.k8s.io/v1` Lease, so that only one operator replica
//! writes (status, Pods, Events, the metadata DB) while the others keep their views warm.
//!
//! This module owns the Lease: creating, renewing, taking over and releasing it, and the
//! `leading` signal the rest of the operator acts on. The decisions ([`step_as`], [`held`],
//! [`Complaints`]) are pure and take the time as an argument; the loop ([`run`]) applies them
//! with optimistic concurrency (every write carries the Lease's resourceVersion, so two
//! candidates cannot both win).
//!
//! Timing never compares one replica's clock with another's (like client-go): a follower
//! measures the Lease's expiry on its own monotonic clock, from when it last saw the Lease
//! change, and the leader measures its term from just before its last successful renewal was
//! sent. A leader that cannot renew within `renew_deadline` (shorter than the lease duration)
//! stops leading even while a request is still in flight, so it stops before anyone else may
//! take over. On shutdown the Lease is released, so a standby takes over at once; the caller
//! decides when, once nothing acts on this replica's leadership any more.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::backoff::Backoff;

/// First retry delay after a failed Lease request.
const RETRY_MIN: Duration = Duration::from_millis(500);
/// Retries of a persistent failure (missing RBAC, missing namespace) slow down to this.
const RETRY_MAX: Duration = Duration::from_secs(10);
/// A failure that goes on is warned about again this often.
const WARN_EVERY: Duration = Duration::from_secs(30);
/// Reads and writes a release tries before leaving the Lease to expire.
const RELEASE_ATTEMPTS: usize = 3;
/// The longest a release may take (with its retries), at most the renew deadline.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a wait for the end of a term looks at the boot clock too (see `Terms::boot_end`).
const LAPSE_CHECK: Duration = Duration::from_secs(1);
/// How long a stop waits at least for a Lease request under way to land before releasing the
/// Lease (and for two request timeouts, its read and its write, where they are longer, up to
/// [`LANDING_WAIT_MAX`]: a stop must fit the Pod's termination grace whatever the lease).
const LANDING_WAIT: Duration = Duration::from_secs(2);
const LANDING_WAIT_MAX: Duration = Duration::from_secs(5);
/// The least a Lease request is given to answer, however short the lease: an API server under
/// load may well take a few hundred milliseconds.
const MIN_REQUEST_TIMEOUT: Duration = Duration::from_secs(1);

/// Lease settings.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    /// This replica's identity (the Pod name in a cluster).
    pub identity: String,
    /// How long a lease is valid without renewal: a standby takes over after this. Published
    /// in whole seconds, rounded up (see [`lease_seconds`]).
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

    /// The longest one Lease request may wait for its answer: half the renewal period (at
    /// least [`MIN_REQUEST_TIMEOUT`]), so that a renewal stuck on a dead connection is given up
    /// with time left for another try on a fresh one before the term ends. (An attempt, a read
    /// and a write, may take longer in all.)
    pub fn request_timeout(&self) -> Duration {
        (self.renew_every / 2).max(MIN_REQUEST_TIMEOUT)
    }

    /// How soon a failed renewal is tried again while leading: the backoff's delay, but at
    /// least four tries per renewal period, so that an API server back within the term finds
    /// a renewal before the term ends.
    fn leading_retry(&self, backoff: Duration) -> Duration {
        backoff.min(self.renew_every / 4)
    }
}

/// The Lease's `leaseDurationSeconds` for `duration`: rounded up, and at least 1 s, so that
/// what followers wait for is never shorter than what the leader's own deadline assumes
/// (truncating 1.5 s to 1 s, or 500 ms to 0 s, would let a standby take over early).
pub fn lease_seconds(duration: Duration) -> i32 {
    let seconds = duration.as_secs() + u64::from(duration.subsec_nanos() > 0);
    i32::try_from(seconds.max(1)).unwrap_or(i32::MAX)
}

/// A client for the Lease requests alone. kube's default client retries 429/503/504 for
/// minutes and waits for an answer forever; a leader must instead find out within its renew
/// deadline that it cannot renew, and retry on its own schedule. (Every attempt is also bounded
/// by a timeout in [`run`]; this keeps a dead connection from being reused for the next one.)
pub fn lease_client(mut config: kube::Config, lease: &LeaseConfig) -> kube::Result<Client> {
    config.default_retry = false;
    // A connection that cannot be made (an API server gone without a reset) fails as soon as
    // one that does not answer, leaving time to try another.
    config.connect_timeout = Some(lease.request_timeout());
    config.write_timeout = Some(lease.request_timeout());
    config.read_timeout = Some(lease.request_timeout());
    // Count the read timeout from each request, not from when a pooled connection went idle.
    config.reset_reader_on_write = true;
    Client::try_from(config)
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
    /// Someone else holds it; unless the Lease changes, it is ours to take at `until`.
    Follow { holder: String, until: Instant },
    /// We hold it, but gave it up (see [`Candidate::Resigned`]): release it again.
    Release,
}

/// How this replica stands for leader, as far as what it sees of ZooKeeper goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Candidate {
    /// Its ZooKeeper view is trusted: it takes a released Lease at once.
    Seeing,
    /// Its view is not trusted: it leaves a released Lease to a replica that can see
    /// ZooKeeper for a lease duration (someone must still lead, and say `Unknown`, when none
    /// can).
    Blind,
    /// Blind, and it released the Lease for that reason: a Lease still naming it (its release
    /// failed) is released again rather than renewed, and a released one is left to the
    /// others for two lease durations, so that leadership does not come straight back.
    Resigned,
}

/// Someone else's Lease as this replica last saw it, and since when (on this replica's own
/// clock) it has looked like that.
#[derive(Clone, Debug)]
pub struct Sighting {
    spec: LeaseSpec,
    since: Instant,
    /// Since when the Lease has been missing, if it went while held.
    absent_since: Option<Instant>,
}

/// The step for `me`, standing as `candidate`, given the current Lease spec, observed at
/// `now` (after the read that returned it completed, so that a late answer makes us wait
/// longer, never shorter).
///
/// `last_seen` is what the previous calls saw; a holder's renewal is recognised by the spec
/// changing, never by comparing its `renewTime` with our clock (the replicas' clocks may
/// disagree by more than the lease duration). A leader that could not see ZooKeeper releases
/// the Lease for a replica that can (see [`Candidacy`]), which must not lose it to another
/// blind one.
pub fn step_as(
    lease: Option<&LeaseSpec>,
    me: &str,
    last_seen: &mut Option<Sighting>,
    now: Instant,
    default_duration: Duration,
    candidate: Candidate,
    holding: bool,
) -> Step {
    let Some(spec) = lease else {
        // Deleted under our own term (by hand): made again at once, whatever our view. As
        // followers wait a Lease duration from their first sighting of it missing, nobody
        // would lead meanwhile, and the others are waiting us out anyway.
        if holding {
            *last_seen = None;
            return Step::Create;
        }
        // Deleted while someone else held it (by hand, to force an election, say): that holder
        // acts on until its next renewal finds the Lease gone, so it is waited out like a
        // Lease that stopped changing, from when it was first seen missing. Meanwhile the
        // holder, if alive, creates it again and goes on leading.
        if let Some(seen) = last_seen.as_mut().filter(|seen| {
            seen.spec
                .holder_identity
                .as_deref()
                .is_some_and(|h| !h.is_empty())
        }) {
            let until =
                *seen.absent_since.get_or_insert(now) + published(&seen.spec, default_duration);
            if now < until {
                let holder = seen.spec.holder_identity.clone().unwrap_or_default();
                return Step::Follow { holder, until };
            }
            *last_seen = None;
            return Step::Create;
        }
        // No Lease, or a released one deleted: as free as a released one, and left alike by a
        // replica that cannot see ZooKeeper to one that can, from when it was first seen
        // missing.
        if let Some(wait) = released_wait(candidate, default_duration) {
            let seen = last_seen.get_or_insert_with(|| Sighting {
                spec: LeaseSpec::default(),
                since: now,
                absent_since: None,
            });
            let until = *seen.absent_since.get_or_insert(now) + wait;
            if now < until {
                return Step::Follow {
                    holder: String::new(),
                    until,
                };
            }
        }
        *last_seen = None;
        return Step::Create;
    };
    let holder = spec.holder_identity.clone().unwrap_or_default();
    if holder == me {
        *last_seen = None;
        return if candidate == Candidate::Resigned {
            Step::Release
        } else {
            Step::Renew
        };
    }
    // Released (no holder, no renewal: what `release` writes) is ours at once. A holder
    // cleared by hand (to force a failover, say) is not: the former holder acts on until its
    // next renewal finds the Lease changed, so it is waited out like any holder, from the
    // first sighting of the cleared Lease. The former holder steps down at that renewal and
    // waits like the others.
    let released = holder.is_empty() && spec.renew_time.is_none();
    if released && candidate == Candidate::Seeing {
        return Step::TakeOver;
    }
    let since = match last_seen {
        Some(seen) if seen.spec == *spec && seen.absent_since.is_none() => seen.since,
        _ => {
            *last_seen = Some(Sighting {
                spec: spec.clone(),
                since: now,
                absent_since: None,
            });
            now
        }
    };
    let wait = published(spec, default_duration);
    let until = since
        + match candidate {
            Candidate::Seeing => wait,
            // Released: the replica that released it waits longest, so that leadership does
            // not come straight back to it.
            Candidate::Blind if released => wait,
            // A holder gone silent (crashed) is succeeded first by a replica that can see
            // ZooKeeper: first sightings of the last renewal differ by up to a poll period
            // (a third of the duration), so a blind one waits a whole duration more. Won by a
            // blind one, the term would only mark every store Unknown, until it hands over.
            Candidate::Blind | Candidate::Resigned => wait * 2,
        };
    // (See `released_wait` for a missing Lease.)
    if now >= until {
        Step::TakeOver
    } else {
        Step::Follow { holder, until }
    }
}

/// How long a free Lease (none, or released) is left by `candidate` to a replica that can see
/// ZooKeeper; `None`: taken at once.
fn released_wait(candidate: Candidate, default_duration: Duration) -> Option<Duration> {
    match candidate {
        Candidate::Seeing => None,
        Candidate::Blind => Some(default_duration),
        Candidate::Resigned => Some(default_duration * 2),
    }
}

/// How long a Lease that stopped changing is waited out: the holder's published duration (it
/// is the one that promised to stop by then), but never less than this replica's own. A
/// shorter published one is not a promise the holder made: a `leaseDurationSeconds` edited
/// down by hand, which the holder only overwrites at its next renewal, and meanwhile it leads
/// on by its own deadline.
fn published(spec: &LeaseSpec, default_duration: Duration) -> Duration {
    spec.lease_duration_seconds
        .filter(|&seconds| seconds > 0)
        .map_or(default_duration, |seconds| {
            Duration::from_secs(seconds as u64).max(default_duration)
        })
}

/// The Lease spec after `me` creates, renews or takes it over at `now` (wall-clock time, for
/// people reading the Lease; no replica's timing depends on it).
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
        lease_duration_seconds: Some(lease_seconds(duration)),
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

/// Which failed Lease requests to warn about: the first of a run of failures, a different
/// failure, and one that goes on at most every [`WARN_EVERY`] — so that a missing RBAC rule
/// or namespace is visible at the default log level without a warning every retry.
#[derive(Debug, Default)]
pub struct Complaints {
    /// The failure last warned about, and when.
    warned: Option<(String, Instant)>,
}

impl Complaints {
    /// A request failed with `error` at `now`: whether to warn about it.
    pub fn failed(&mut self, error: &str, now: Instant) -> bool {
        let warn = match &self.warned {
            Some((last, at)) => last != error || now.duration_since(*at) >= WARN_EVERY,
            None => true,
        };
        if warn {
            self.warned = Some((error.to_owned(), now));
        }
        warn
    }

    /// A request succeeded: whether failures had been warned about (and now are over).
    pub fn succeeded(&mut self) -> bool {
        self.warned.take().is_some()
    }
}

/// Until when this replica's term lasts for sure, as the election counts it on the monotonic
/// clock: the start of the last renewal plus the renew deadline, pushed on by each renewal.
/// Shared with everything that writes, which checks it itself before a write: the news that a
/// term ended (`leading` turning false) reaches other tasks only once the election's task runs
/// again, and after a stall of the whole process (stopped, frozen, starved of CPU) the others
/// may run first.
///
/// It also counts the terms begun: `leading` is a watch, which keeps only the latest value, so
/// a term lost and a new one won before a reader looks (a stalled reader) would read as one
/// term going on; the count tells them apart.
///
/// A deadline [pinned](TermDeadline::pinned) to the current term holds for that term alone: a
/// task started for one term never writes in the next, even if whoever should stop it has not
/// heard of the change yet.
#[derive(Clone, Debug, Default)]
pub struct TermDeadline {
    terms: Arc<Mutex<Terms>>,
    /// The term this deadline is for, if pinned.
    term: Option<u64>,
}

#[derive(Debug, Default)]
struct Terms {
    end: Option<Instant>,
    /// `end` on the boot clock ([`boot_clock`]), which counts the time the machine spends
    /// suspended; the monotonic clock stops then, and a leader resumed after its Lease expired
    /// would otherwise find its term still holding, and write until its next renewal told it
    /// otherwise, while its successor writes too. (A paused VM's clocks all stop: that pause
    /// is not seen, as a stop of the process is, and a resumed leader acts until its next
    /// renewal; the wall clock would see it once corrected, but would also end terms for
    /// every step NTP makes.)
    boot_end: Option<Duration>,
    /// The start of the election's last attempt on both clocks
    /// ([`TermDeadline::renewal_starts`]): a term's end is mapped from the start of the attempt
    /// that brought it, so that a suspend during that attempt does not lengthen the term.
    renewal_start: Option<(Instant, Duration)>,
    begun: u64,
}

/// Time since boot, suspended time included (`CLOCK_BOOTTIME`); `None` where there is none
/// (another OS, or a kernel or sandbox that refuses the clock).
fn boot_clock() -> Option<Duration> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let now =
            rustix::time::clock_gettime_dynamic(rustix::time::DynamicClockId::Boottime).ok()?;
        return Some(Duration::new(
            u64::try_from(now.tv_sec).ok()?,
            u32::try_from(now.tv_nsec).ok()?,
        ));
    }
    #[allow(unreachable_code)]
    None
}

impl TermDeadline {
    /// Whether the term still holds now.
    pub fn holds(&self) -> bool {
        self.holds_at(Instant::now())
    }

    fn holds_at(&self, now: Instant) -> bool {
        self.holds_at_on(now, boot_clock())
    }

    /// Whether the term holds at `now` on the monotonic clock and `boot` on the boot clock.
    fn holds_at_on(&self, now: Instant, boot: Option<Duration>) -> bool {
        let terms = self.lock();
        self.term.is_none_or(|term| term == terms.begun)
            && terms.end.is_some_and(|end| now < end)
            && match (terms.boot_end, boot) {
                (Some(end), Some(boot)) => boot < end,
                _ => true,
            }
    }

    /// The election starts an attempt at `started` on the monotonic clock, `boot` on the boot
    /// clock (read before `started`: a suspend between the two reads then shortens the term,
    /// never lengthens it): the term it may bring is mapped onto the boot clock from here.
    fn renewal_starts(&self, started: Instant, boot: Option<Duration>) {
        self.lock().renewal_start = boot.map(|boot| (started, boot));
    }

    /// The end of the term this deadline is for, if it is the current one.
    fn end(&self) -> Option<Instant> {
        let terms = self.lock();
        terms
            .end
            .filter(|_| self.term.is_none_or(|term| term == terms.begun))
    }

    /// Resolves once the term no longer holds: at its end, unless renewals moved it on
    /// meanwhile (then at the new end), or at once if there is no term.
    pub async fn lapsed(&self) {
        loop {
            let Some(end) = self.end() else { return };
            if !self.holds() {
                return;
            }
            // In steps, so that a term the boot clock ended (after a suspend) is seen lapsed
            // within a second, not when the stopped monotonic clock reaches its end.
            tokio::time::sleep_until(end.min(Instant::now() + LAPSE_CHECK)).await;
        }
    }

    /// How many terms have begun so far: the current one's number while leading.
    fn terms_begun(&self) -> u64 {
        self.lock().begun
    }

    /// Whether the term this deadline is pinned to is still the latest one begun (whether or
    /// not it holds now). An unpinned deadline always is.
    pub fn is_latest_term(&self) -> bool {
        self.term.is_none_or(|term| term == self.terms_begun())
    }

    /// This deadline for the current term alone.
    pub fn pinned(&self) -> TermDeadline {
        TermDeadline {
            terms: Arc::clone(&self.terms),
            term: Some(self.terms_begun()),
        }
    }

    fn set(&self, end: Option<Instant>) {
        let mut terms = self.lock();
        if terms.end.is_none() && end.is_some() {
            terms.begun += 1;
        }
        // Mapped onto the boot clock when the end moves (a renewal), from the renewal's start,
        // not at every look: mapped anew after a suspend, it would move on by the time the
        // monotonic clock stood still.
        if terms.end != end {
            terms.boot_end = end.and_then(|end| {
                let (started, boot) = terms.renewal_start?;
                Some(boot + end.saturating_duration_since(started))
            });
        }
        terms.end = end;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Terms> {
        // Nothing panics while holding it.
        self.terms.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What the rest of the replica and its election tell each other about its candidacy.
pub struct Candidacy {
    /// Whether the replica's ZooKeeper view is trusted, and has been for a while (see
    /// [`Candidate`]): a link that keeps dropping, trusted for moments, does not count.
    pub sees_zookeeper: watch::Receiver<bool>,
    /// Bumped to give up the Lease now: the replica led on a view it could not trust for too
    /// long. It has stopped its term, and starts none until the election has set
    /// `resigned` to the same number: no term of it acts from then until the Lease is
    /// released. The replica stands as [`Candidate::Resigned`] until it sees ZooKeeper again.
    pub resign: watch::Receiver<u64>,
    pub resigned: watch::Sender<u64>,
}

/// Resolves when `receiver` changes; never, once its sender is gone.
async fn changed(receiver: &mut watch::Receiver<impl Sized>) {
    if receiver.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Runs the election until `stop`; `leading` says whether this replica leads now, `deadline`
/// until when for sure, `answered` whether a Lease request has succeeded yet.
///
/// Cancelling `stop` releases the Lease (if this replica holds it), letting a standby take over
/// at once: cancel it only once nothing acts on this replica's leadership any more. Until then
/// a leader keeps renewing.
pub async fn run(
    client: Client,
    config: LeaseConfig,
    leading: watch::Sender<bool>,
    answered: watch::Sender<bool>,
    deadline: TermDeadline,
    mut candidacy: Candidacy,
    stop: CancellationToken,
) {
    let leases: Api<Lease> = Api::namespaced(client, &config.namespace);
    let mut last_seen = None;
    // While leading: when the term ends unless renewed (the last renewal's start + deadline).
    let mut term_end: Option<Instant> = None;
    let mut backoff = Backoff::new(RETRY_MIN, RETRY_MAX);
    let mut complaints = Complaints::default();
    // Gave the Lease up for not seeing ZooKeeper, and has not seen it since.
    let mut resigned = false;
    // When our last term ran out for want of a renewal, unless one has begun since.
    let mut lapsed_at: Option<Instant> = None;
    let publish = |term_end: &mut Option<Instant>, lapsed_at: &mut Option<Instant>, lost: bool| {
        let was_leading = term_end.is_some();
        let now = Instant::now();
        update_leading(&leading, &deadline, term_end, &config, now, lost);
        if term_end.is_some() {
            *lapsed_at = None;
        } else if was_leading {
            *lapsed_at = Some(now);
        }
    };
    loop {
        publish(&mut term_end, &mut lapsed_at, false);
        // Taken before the request: the Lease's renewal happens after this, so a term counted
        // from here ends before any follower (which starts counting once it sees the renewal)
        // may take over.
        let boot = boot_clock();
        let started = Instant::now();
        deadline.renewal_starts(started, boot);
        // Seeing ZooKeeper (steadily) again: a candidate like any other.
        let sees_zookeeper = *candidacy.sees_zookeeper.borrow_and_update();
        resigned &= !sees_zookeeper;
        let candidate = match (sees_zookeeper, resigned) {
            (true, _) => Candidate::Seeing,
            (false, false) => Candidate::Blind,
            (false, true) => Candidate::Resigned,
        };
        // No attempt outlives our term; a candidate's takes no longer than a renewal may. (A
        // request hung on a dead connection is given up sooner, by the client's read timeout,
        // with time left to try again.)
        let bound = term_end.unwrap_or(started + config.renew_deadline);
        // A stop that has come is never raced by a new attempt (one at the start, say).
        if stop.is_cancelled() {
            break;
        }
        let outcome = {
            let attempted = tokio::time::timeout_at(
                bound,
                attempt(
                    &leases,
                    &config,
                    &mut last_seen,
                    candidate,
                    term_end.is_some(),
                ),
            );
            tokio::pin!(attempted);
            tokio::select! {
                biased;
                _ = stop.cancelled() => {
                    // One under way is let land first (briefly): a takeover sent and then
                    // abandoned could land after the release below has read the Lease (and
                    // found it not ours), leaving it to a replica on its way out until it
                    // expires.
                    let landing = (config.request_timeout() * 2).clamp(LANDING_WAIT, LANDING_WAIT_MAX);
                    let _ = tokio::time::timeout(landing, &mut attempted).await;
                    break;
                }
                outcome = &mut attempted => outcome,
            }
        };
        // A follower looks again when the Lease would be ours, if that comes before the next
        // regular look: a standby takes over as soon as the holder's time is up.
        let mut take_over_at = None;
        let failure = match outcome {
            Ok(Ok(found)) => {
                let holding = matches!(found, Attempt::Holding);
                // Taken again (after its wait): a leader like any other from now on.
                resigned &= !holding;
                if let Attempt::Following { until } = found {
                    take_over_at = until;
                }
                if complaints.succeeded() {
                    info!(lease = %config.name, "Lease requests succeed again");
                }
                answered.send_if_modified(|answered| !std::mem::replace(answered, true));
                backoff.reset();
                term_end = holding.then(|| started + config.renew_deadline);
                publish(&mut term_end, &mut lapsed_at, !holding);
                None
            }
            Ok(Err(error)) => Some(error.to_string()),
            Err(_elapsed) => Some("no answer in time".to_owned()),
        };
        // The next regular look is timed from this one's start, not its end: a renewal then
        // has a third of the lease duration to get through before the term ends, however
        // slowly the API answered the last one (timed from the end, an API taking a sixth of
        // the duration per renewal would end every term).
        let wake = match failure {
            None => started + config.renew_every,
            Some(error) => {
                if complaints.failed(&error, Instant::now()) {
                    warn!(lease = %config.name, namespace = %config.namespace, %error, "Lease request failed; retrying");
                } else {
                    debug!(lease = %config.name, %error, "Lease request failed");
                }
                publish(&mut term_end, &mut lapsed_at, false);
                let delay = backoff.next_delay();
                let delay = match term_end {
                    Some(_) => config.leading_retry(delay),
                    None => delay,
                };
                Instant::now() + delay
            }
        };
        // Wake at the term's end at the latest, to stop leading on time.
        let wake = term_end.map_or(wake, |end| end.min(wake));
        let wake = take_over_at.map_or(wake, |at| at.min(wake));
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep_until(wake) => {}
            // A follower seeing ZooKeeper again may take a released Lease at once.
            () = changed(&mut candidacy.sees_zookeeper), if term_end.is_none() => {}
            () = changed(&mut candidacy.resign) => {
                let asked = *candidacy.resign.borrow_and_update();
                // Whatever term the election holds now, none of it acts: the replica starts
                // none until this is acknowledged. Released whatever the view says this very
                // moment: the replica has judged its view over time (a link that keeps
                // dropping is trusted now and then).
                info!(lease = %config.name, "handing the lease over: releasing it for a replica that can see ZooKeeper");
                resigned = true;
                term_end = None;
                deadline.set(None);
                leading.send_replace(false);
                let bound = config.renew_deadline.min(RELEASE_TIMEOUT);
                if tokio::time::timeout(bound, release(&leases, &config)).await.is_err() {
                    warn!(lease = %config.name, "could not release the lease in time; released at the next look");
                }
                last_seen = None;
                candidacy.resigned.send_replace(asked);
            }
        }
    }
    publish(&mut term_end, &mut lapsed_at, false);
    deadline.set(None);
    leading.send_replace(false);
    if lapsed_at.is_some_and(|at| at.elapsed() < config.duration) {
        // A term that ran out (renewals failing: an overloaded API server) cut off the writes
        // it had under way, which may still be queued at the server. A Lease still naming
        // this replica is left to expire: released, a standby would take over at once and
        // could act before they land.
        info!(lease = %config.name, "the term ran out shortly before the stop: the lease, if still ours, is left to expire");
        return;
    }
    // A release that cannot get through is not worth waiting for (the Lease then expires); and
    // the whole stop must fit the Pod's termination grace period (the chart's 45 s) whatever
    // the lease duration.
    let bound = config.renew_deadline.min(RELEASE_TIMEOUT);
    if tokio::time::timeout(bound, release(&leases, &config))
        .await
        .is_err()
    {
        warn!(lease = %config.name, "could not release the lease in time; a standby takes over once it expires");
    }
}

/// Publishes whether we lead at `now`: only while the term has not ended. `lost` says the last
/// attempt found the Lease held by someone else (rather than our renewals failing).
fn update_leading(
    leading: &watch::Sender<bool>,
    deadline: &TermDeadline,
    term_end: &mut Option<Instant>,
    config: &LeaseConfig,
    now: Instant,
    lost: bool,
) {
    if term_end.is_some_and(|end| now >= end) {
        *term_end = None;
    }
    deadline.set(*term_end);
    let leads = term_end.is_some();
    if leads == *leading.borrow() {
        return;
    }
    if leads {
        info!(lease = %config.name, identity = %config.identity, "became leader");
    } else if lost {
        warn!(lease = %config.name, "lost the lease to another replica; stepping down");
    } else {
        warn!(lease = %config.name, deadline = ?config.renew_deadline, "could not renew the lease in time; stepping down");
    }
    leading.send_replace(leads);
}

/// What one attempt found.
enum Attempt {
    /// We hold the Lease (created, renewed or taken over).
    Holding,
    /// Someone else holds it; it is ours to take at `until`, if known, unless it changes.
    Following { until: Option<Instant> },
}

async fn attempt(
    leases: &Api<Lease>,
    config: &LeaseConfig,
    last_seen: &mut Option<Sighting>,
    candidate: Candidate,
    holding: bool,
) -> kube::Result<Attempt> {
    match attempt_once(leases, config, last_seen, candidate, holding).await? {
        // Our renewal met a Lease changed since it was read (someone edited its labels, or an
        // earlier renewal of ours landed late): read it again rather than step down; if
        // another replica holds it now, the second look says so.
        Tried::Conflict { renewing: true } => {
            debug!(lease = %config.name, "the Lease changed under a renewal; reading it again");
            match attempt_once(leases, config, last_seen, candidate, holding).await? {
                Tried::Done(found) => Ok(found),
                // Changed again under the second renewal, and still ours when read: not lost,
                // not renewed either. A failed attempt: the term runs on to its deadline while
                // the renewal is retried.
                Tried::Conflict { renewing: true } => Err(kube::Error::Api(Box::new(
                    kube::core::Status::failure(
                        "the Lease changed under two renewals in a row",
                        "Conflict",
                    )
                    .with_code(409),
                ))),
                Tried::Conflict { renewing: false } => Ok(Attempt::Following { until: None }),
            }
        }
        Tried::Conflict { renewing: false } => Ok(Attempt::Following { until: None }),
        Tried::Done(found) => Ok(found),
    }
}

/// What one read-and-write found.
enum Tried {
    Done(Attempt),
    /// The write lost a race (409); `renewing`: it was a renewal of our own Lease.
    Conflict {
        renewing: bool,
    },
}

async fn attempt_once(
    leases: &Api<Lease>,
    config: &LeaseConfig,
    last_seen: &mut Option<Sighting>,
    candidate: Candidate,
    holding: bool,
) -> kube::Result<Tried> {
    let current = leases.get_opt(&config.name).await?;
    let spec = current.as_ref().and_then(|l| l.spec.clone());
    match step_as(
        spec.as_ref(),
        &config.identity,
        last_seen,
        Instant::now(),
        config.duration,
        candidate,
        holding,
    ) {
        Step::Follow { until, .. } => Ok(Tried::Done(Attempt::Following { until: Some(until) })),
        Step::Release => {
            let mut lease = current.expect("a lease to release");
            if let Some(spec) = lease.spec.as_mut() {
                released(spec);
            }
            // A conflict is looked at again at the next attempt, like any change.
            match leases
                .replace(&config.name, &PostParams::default(), &lease)
                .await
            {
                Ok(_) => Ok(Tried::Done(Attempt::Following { until: None })),
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    Ok(Tried::Conflict { renewing: false })
                }
                Err(error) => Err(error),
            }
        }
        Step::Create if current.is_none() => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(config.name.clone()),
                    namespace: Some(config.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(held(
                    None,
                    &config.identity,
                    Timestamp::now(),
                    config.duration,
                )),
            };
            match leases.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Tried::Done(Attempt::Holding)),
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    Ok(Tried::Conflict { renewing: false })
                }
                Err(error) => Err(error),
            }
        }
        // A Lease that exists without a spec (made by hand, say) is free: taken over in
        // place, as creating it again would only meet "already exists".
        step @ (Step::Renew | Step::TakeOver | Step::Create) => {
            let mut lease = current.expect("a lease to renew or take over");
            lease.spec = Some(held(
                spec.as_ref(),
                &config.identity,
                Timestamp::now(),
                config.duration,
            ));
            // The resourceVersion read above makes this a compare-and-swap.
            match leases
                .replace(&config.name, &PostParams::default(), &lease)
                .await
            {
                Ok(_) => Ok(Tried::Done(Attempt::Holding)),
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(Tried::Conflict {
                    renewing: step == Step::Renew,
                }),
                Err(error) => Err(error),
            }
        }
    }
}

/// The Lease spec as a release leaves it: no holder, no renewal (what [`step_as`] reads as
/// released).
fn released(spec: &mut LeaseSpec) {
    spec.holder_identity = None;
    spec.renew_time = None;
}

/// Gives the Lease up, if we hold it, so a standby does not wait for it to expire.
async fn release(leases: &Api<Lease>, config: &LeaseConfig) {
    // A conflict is most likely our own renewal, abandoned in flight when the stop came and
    // landed after the read: read again and retry.
    for _ in 0..RELEASE_ATTEMPTS {
        let mut lease = match leases.get_opt(&config.name).await {
            Ok(Some(lease)) => lease,
            Ok(None) => return,
            Err(error) => {
                warn!(lease = %config.name, %error, "could not read the lease to release it; a standby takes over once it expires");
                return;
            }
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(config.identity.as_str()) {
            return;
        }
        released(spec);
        match leases
            .replace(&config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => {
                info!(lease = %config.name, "released the lease");
                return;
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                debug!(lease = %config.name, "the lease changed while releasing it; reading it again");
            }
            Err(error) => {
                warn!(lease = %config.name, %error, "could not release the lease; a standby takes over once it expires");
                return;
            }
        }
    }
    warn!(lease = %config.name, "the lease kept changing while releasing it; a standby takes over once it expires");
}

#[cfg(test)]
mod tests {
    use super::*;

    const DURATION: Duration = Duration::from_secs(15);

    /// [`step_as`] for a replica that sees ZooKeeper, as most cases are.
    fn step(
        lease: Option<&LeaseSpec>,
        me: &str,
        last_seen: &mut Option<Sighting>,
        now: Instant,
        default_duration: Duration,
    ) -> Step {
        step_as(
            lease,
            me,
            last_seen,
            now,
            default_duration,
            Candidate::Seeing,
            false,
        )
    }

    /// A machine suspended stops the monotonic clock, not the boot clock: a leader resumed
    /// past its term's end on the boot clock does not write on.
    #[test]
    fn a_term_ends_by_the_boot_clock_too() {
        let config = LeaseConfig::new("op", "default", "a", DURATION);
        let (leading, _) = watch::channel(false);
        let deadline = TermDeadline::default();
        let start = Instant::now();
        deadline.lock().renewal_start = Some((start, Duration::from_secs(1000)));
        let boot = |secs: f64| Some(Duration::from_secs_f64(1000.0 + secs));
        let mut term_end = Some(start + config.renew_deadline);
        update_leading(&leading, &deadline, &mut term_end, &config, start, false);
        assert!(deadline.holds_at_on(start, boot(0.0)));
        // Resumed a minute later by the boot clock, a moment later by the stopped monotonic
        // clock; the election, not renewed yet, publishes the same term end again.
        let resumed = start + Duration::from_millis(10);
        update_leading(&leading, &deadline, &mut term_end, &config, resumed, false);
        assert!(!deadline.holds_at_on(resumed, boot(60.0)));
        assert!(!deadline.pinned().holds_at_on(resumed, boot(60.0)));
        // Within the term on both, it holds; past it on the monotonic clock, it does not.
        assert!(deadline.holds_at_on(resumed, boot(1.0)));
        assert!(!deadline.holds_at_on(start + config.renew_deadline, boot(1.0)));
        // A renewal begun after the resume starts a new stretch on both clocks.
        deadline.lock().renewal_start = Some((resumed, Duration::from_secs(1060)));
        let mut renewed = Some(resumed + config.renew_deadline);
        update_leading(&leading, &deadline, &mut renewed, &config, resumed, false);
        assert!(deadline.holds_at_on(resumed, boot(60.0)));
        // Where there is no boot clock, the monotonic one decides alone.
        assert!(deadline.holds_at_on(resumed, None));
    }

    #[test]
    fn a_term_holds_until_its_deadline_whoever_hears_of_it_first() {
        let config = LeaseConfig::new("op", "default", "a", DURATION);
        let (leading, _) = watch::channel(false);
        let deadline = TermDeadline::default();
        let start = Instant::now();
        assert!(
            !deadline.holds_at(start),
            "no term before the first renewal"
        );
        let mut term_end = Some(start + config.renew_deadline);
        update_leading(&leading, &deadline, &mut term_end, &config, start, false);
        assert!(*leading.borrow());
        assert!(deadline.holds_at(start + config.renew_deadline - Duration::from_millis(1)));
        // Past the deadline the term is over for a writer that checks, even while the election
        // has not run again to say so.
        assert!(!deadline.holds_at(start + config.renew_deadline));
        assert!(*leading.borrow());
        update_leading(
            &leading,
            &deadline,
            &mut term_end,
            &config,
            start + config.renew_deadline,
            false,
        );
        assert!(!*leading.borrow());
        assert!(!deadline.holds_at(start));
    }

    fn wall(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    fn lease(holder: Option<&str>, renewed: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_owned),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(wall(renewed))),
            acquire_time: Some(MicroTime(wall(0))),
            lease_transitions: Some(2),
            ..LeaseSpec::default()
        }
    }

    /// A clock for the pure decisions: instants `seconds` after a fixed origin.
    struct Clock(Instant);

    impl Clock {
        fn new() -> Clock {
            Clock(Instant::now())
        }

        fn at(&self, seconds: u64) -> Instant {
            self.0 + Duration::from_secs(seconds)
        }
    }

    /// A renewal that hangs, or fails fast, at the start of its window leaves time for more
    /// tries before the term ends: a hung request is given up at half the renewal period,
    /// and failures are retried at least four times per period.
    #[test]
    fn a_failed_renewal_is_tried_again_within_the_term() {
        let config = LeaseConfig::new("l", "ns", "me", Duration::from_secs(15));
        assert_eq!(config.request_timeout(), Duration::from_millis(2500));
        // The renewal at 5 s hangs until 7.5 s; the retry comes by 8.75 s, before the 10 s end.
        let hung_retry =
            config.renew_every + config.request_timeout() + config.leading_retry(RETRY_MAX);
        assert!(config.renew_deadline.saturating_sub(hung_retry) >= Duration::from_secs(1));
        assert_eq!(
            config.leading_retry(RETRY_MIN),
            RETRY_MIN,
            "a short backoff stands"
        );
        // A short lease still gives each request a second.
        let short = LeaseConfig::new("l", "ns", "me", Duration::from_secs(3));
        assert_eq!(short.request_timeout(), MIN_REQUEST_TIMEOUT);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lapse_is_awaited_through_renewals() {
        let deadline = TermDeadline::default();
        let start = Instant::now();
        deadline.set(Some(start + Duration::from_secs(10)));
        let lapsed = tokio::spawn({
            let deadline = deadline.clone();
            async move {
                deadline.lapsed().await;
                Instant::now()
            }
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        // Renewed: the term now runs to 20 s.
        deadline.set(Some(start + Duration::from_secs(20)));
        assert_eq!(lapsed.await.unwrap(), start + Duration::from_secs(20));
        // No term: lapsed already.
        deadline.set(None);
        deadline.lapsed().await;
    }

    #[test]
    fn renewals_go_on_with_a_term_and_a_term_won_again_is_another() {
        let deadline = TermDeadline::default();
        let start = Instant::now();
        assert_eq!(deadline.terms_begun(), 0);
        deadline.set(Some(start + Duration::from_secs(10)));
        let first = deadline.terms_begun();
        deadline.set(Some(start + Duration::from_secs(20)));
        assert_eq!(deadline.terms_begun(), first, "a renewal is the same term");
        // Lost and won again, as a reader that stalled meanwhile would only see the end of.
        let pinned = deadline.pinned();
        assert!(pinned.holds_at(start + Duration::from_secs(15)));
        deadline.set(None);
        deadline.set(Some(start + Duration::from_secs(40)));
        assert_eq!(deadline.terms_begun(), first + 1);
        assert!(deadline.holds_at(start + Duration::from_secs(15)));
        assert!(
            !pinned.holds_at(start + Duration::from_secs(15)),
            "a task of the first term does not write in the second"
        );
        assert!(!pinned.is_latest_term());
        assert!(deadline.pinned().is_latest_term());
    }

    #[test]
    fn the_steps() {
        let clock = Clock::new();
        let mut seen = None;
        assert_eq!(
            step(None, "a", &mut seen, clock.at(0), DURATION),
            Step::Create
        );
        assert_eq!(
            step(
                Some(&lease(Some("a"), 0)),
                "a",
                &mut seen,
                clock.at(100),
                DURATION
            ),
            Step::Renew,
            "our own lease is renewed even if late"
        );
        let released = LeaseSpec {
            renew_time: None,
            ..lease(None, 0)
        };
        assert_eq!(
            step(Some(&released), "a", &mut seen, clock.at(1), DURATION),
            Step::TakeOver,
            "released"
        );
    }

    /// A released Lease goes first to a replica that can see ZooKeeper; one that cannot takes
    /// it only after it has stayed released for a lease duration (someone must still lead,
    /// and say Unknown, when no replica sees ZooKeeper).
    #[test]
    fn a_replica_that_cannot_see_zookeeper_leaves_a_released_lease_to_one_that_can() {
        let clock = Clock::new();
        let released = LeaseSpec {
            renew_time: None,
            ..lease(None, 0)
        };
        let mut blind = None;
        let wait = Step::Follow {
            holder: String::new(),
            until: clock.at(16),
        };
        let blind_step = |seen: &mut Option<Sighting>, at| {
            step_as(
                Some(&released),
                "a",
                seen,
                clock.at(at),
                DURATION,
                Candidate::Blind,
                false,
            )
        };
        assert_eq!(blind_step(&mut blind, 1), wait);
        assert_eq!(blind_step(&mut blind, 15), wait);
        assert_eq!(blind_step(&mut blind, 16), Step::TakeOver);
        // Seeing ZooKeeper again meanwhile: at once.
        let mut seeing = None;
        blind_step(&mut seeing, 1);
        let as_ = |lease: &LeaseSpec, seen: &mut Option<Sighting>, at, candidate| {
            step_as(
                Some(lease),
                "a",
                seen,
                clock.at(at),
                DURATION,
                candidate,
                false,
            )
        };
        assert_eq!(
            as_(&released, &mut seeing, 2, Candidate::Seeing),
            Step::TakeOver
        );
        // The replica that released it waits twice as long, so that another blind one, if
        // any, takes it: leadership does not come straight back.
        let mut resigned = None;
        assert_eq!(
            as_(&released, &mut resigned, 1, Candidate::Resigned),
            Step::Follow {
                holder: String::new(),
                until: clock.at(31)
            }
        );
        assert_eq!(
            as_(&released, &mut resigned, 31, Candidate::Resigned),
            Step::TakeOver
        );
        // A holder gone silent is waited out for a lease duration by a replica that can see
        // ZooKeeper, for two by one that cannot: the one that can succeeds it. Our own is
        // renewed, unless we resigned it (a release that did not get through is made again).
        let theirs = lease(Some("b"), 0);
        let follow = |until| Step::Follow {
            holder: "b".into(),
            until: clock.at(until),
        };
        let mut seeing = None;
        assert_eq!(as_(&theirs, &mut seeing, 0, Candidate::Seeing), follow(15));
        assert_eq!(
            as_(&theirs, &mut seeing, 15, Candidate::Seeing),
            Step::TakeOver
        );
        for candidate in [Candidate::Blind, Candidate::Resigned] {
            let mut blind = None;
            assert_eq!(as_(&theirs, &mut blind, 0, candidate), follow(30));
            assert_eq!(as_(&theirs, &mut blind, 29, candidate), follow(30));
            assert_eq!(as_(&theirs, &mut blind, 30, candidate), Step::TakeOver);
        }
        let ours = lease(Some("a"), 0);
        assert_eq!(as_(&ours, &mut None, 0, Candidate::Blind), Step::Renew);
        assert_eq!(as_(&ours, &mut None, 0, Candidate::Resigned), Step::Release);

        // No Lease at all (deleted by hand during a handover, say): alike.
        let missing = |seen: &mut Option<Sighting>, at, candidate| {
            step_as(None, "a", seen, clock.at(at), DURATION, candidate, false)
        };
        assert_eq!(missing(&mut None, 0, Candidate::Seeing), Step::Create);
        // Its holder makes it again at once, even one that cannot see ZooKeeper: nobody else
        // would lead until a Lease duration from when they saw it missing.
        for candidate in [Candidate::Seeing, Candidate::Blind] {
            let mut seen = Some(Sighting {
                spec: lease(Some("b"), 0),
                since: clock.at(0),
                absent_since: None,
            });
            assert_eq!(
                step_as(None, "a", &mut seen, clock.at(1), DURATION, candidate, true),
                Step::Create
            );
            assert!(seen.is_none());
        }
        let mut blind = None;
        let wait_until = |at| Step::Follow {
            holder: String::new(),
            until: clock.at(at),
        };
        assert_eq!(missing(&mut blind, 2, Candidate::Blind), wait_until(17));
        assert_eq!(missing(&mut blind, 16, Candidate::Blind), wait_until(17));
        assert_eq!(missing(&mut blind, 17, Candidate::Blind), Step::Create);
        let mut resigned = None;
        assert_eq!(
            missing(&mut resigned, 2, Candidate::Resigned),
            wait_until(32)
        );
        // A released Lease deleted: counted from when it went missing.
        let mut seen = None;
        assert_eq!(
            as_(&released, &mut seen, 0, Candidate::Blind),
            wait_until(15)
        );
        assert_eq!(missing(&mut seen, 5, Candidate::Blind), wait_until(20));
    }

    #[test]
    fn a_holder_cleared_by_hand_is_waited_out() {
        let clock = Clock::new();
        let mut seen = None;
        // Its former holder acts on until its next renewal finds the Lease changed.
        let cleared = lease(None, 0);
        let follow = |until| Step::Follow {
            holder: String::new(),
            until,
        };
        assert_eq!(
            step(Some(&cleared), "a", &mut seen, clock.at(0), DURATION),
            follow(clock.at(15))
        );
        assert_eq!(
            step(Some(&cleared), "a", &mut seen, clock.at(14), DURATION),
            follow(clock.at(15))
        );
        assert_eq!(
            step(Some(&cleared), "a", &mut seen, clock.at(15), DURATION),
            Step::TakeOver
        );
        // The former holder, at its next renewal, steps down and waits like the others.
        let mut its_memory = None;
        assert_eq!(
            step(Some(&cleared), "b", &mut its_memory, clock.at(1), DURATION),
            follow(clock.at(16))
        );
    }

    #[test]
    fn a_lease_expires_a_duration_after_it_was_first_seen_unchanged() {
        let clock = Clock::new();
        let mut seen = None;
        let b = lease(Some("b"), 0);
        let follow = |until| Step::Follow {
            holder: "b".into(),
            until,
        };
        // However old its renewTime, a lease seen for the first time is followed for a whole
        // duration: we cannot tell how far the holder's clock is from ours.
        assert_eq!(
            step(Some(&b), "a", &mut seen, clock.at(0), DURATION),
            follow(clock.at(15))
        );
        assert_eq!(
            step(Some(&b), "a", &mut seen, clock.at(14), DURATION),
            follow(clock.at(15))
        );
        assert_eq!(
            step(Some(&b), "a", &mut seen, clock.at(15), DURATION),
            Step::TakeOver,
            "unchanged for exactly a duration"
        );
    }

    #[test]
    fn a_renewal_restarts_the_wait() {
        let clock = Clock::new();
        let mut seen = None;
        step(
            Some(&lease(Some("b"), 0)),
            "a",
            &mut seen,
            clock.at(0),
            DURATION,
        );
        assert_eq!(
            step(
                Some(&lease(Some("b"), 5)),
                "a",
                &mut seen,
                clock.at(10),
                DURATION
            ),
            Step::Follow {
                holder: "b".into(),
                until: clock.at(25)
            }
        );
        assert_eq!(
            step(
                Some(&lease(Some("b"), 5)),
                "a",
                &mut seen,
                clock.at(24),
                DURATION
            ),
            Step::Follow {
                holder: "b".into(),
                until: clock.at(25)
            }
        );
        assert_eq!(
            step(
                Some(&lease(Some("b"), 5)),
                "a",
                &mut seen,
                clock.at(25),
                DURATION
            ),
            Step::TakeOver
        );
    }

    #[test]
    fn clock_skew_between_replicas_does_not_matter() {
        let clock = Clock::new();
        // The holder's clock is an hour behind ours, and it renews every 5 s: its renewTime
        // always looks long expired to us, yet it is healthy.
        let mut seen = None;
        for tick in 0..40 {
            let renewed = -3600 + 5 * tick as i64;
            assert!(
                matches!(
                    step(
                        Some(&lease(Some("b"), renewed)),
                        "a",
                        &mut seen,
                        clock.at(5 * tick),
                        DURATION
                    ),
                    Step::Follow { .. }
                ),
                "a renewing holder is followed (tick {tick})"
            );
        }
        // The holder's clock is an hour ahead of ours, and it stopped renewing: its renewTime
        // looks valid for an hour, yet it is gone.
        let mut seen = None;
        let stale = lease(Some("b"), 3600);
        step(Some(&stale), "a", &mut seen, clock.at(0), DURATION);
        assert_eq!(
            step(Some(&stale), "a", &mut seen, clock.at(15), DURATION),
            Step::TakeOver
        );
    }

    #[test]
    fn the_holders_published_duration_counts() {
        let clock = Clock::new();
        let mut seen = None;
        let long = LeaseSpec {
            lease_duration_seconds: Some(40),
            ..lease(Some("b"), 0)
        };
        assert_eq!(
            step(Some(&long), "a", &mut seen, clock.at(0), DURATION),
            Step::Follow {
                holder: "b".into(),
                until: clock.at(40)
            }
        );
        let mut seen = None;
        let unset = LeaseSpec {
            lease_duration_seconds: Some(0),
            ..lease(Some("b"), 0)
        };
        assert_eq!(
            step(Some(&unset), "a", &mut seen, clock.at(0), DURATION),
            Step::Follow {
                holder: "b".into(),
                until: clock.at(15)
            },
            "no usable duration: ours"
        );
        let mut seen = None;
        let edited_down = LeaseSpec {
            lease_duration_seconds: Some(1),
            ..lease(Some("b"), 0)
        };
        assert_eq!(
            step(Some(&edited_down), "a", &mut seen, clock.at(0), DURATION),
            Step::Follow {
                holder: "b".into(),
                until: clock.at(15)
            },
            "never shorter than ours: the holder leads on by its own deadline"
        );
    }

    #[test]
    fn published_seconds_never_undercut_the_duration() {
        for (millis, seconds) in [(1, 1), (500, 1), (1000, 1), (1500, 2), (15_000, 15)] {
            let duration = Duration::from_millis(millis);
            assert_eq!(lease_seconds(duration), seconds, "{duration:?}");
            assert!(Duration::from_secs(seconds as u64) >= duration);
        }
        let spec = held(None, "a", wall(0), Duration::from_millis(1500));
        assert_eq!(spec.lease_duration_seconds, Some(2));
    }

    #[test]
    fn holding_counts_transitions_and_keeps_the_acquire_time() {
        let renewed = held(Some(&lease(Some("a"), 5)), "a", wall(10), DURATION);
        assert_eq!(
            (
                renewed.acquire_time.unwrap().0,
                renewed.renew_time.unwrap().0,
                renewed.lease_transitions
            ),
            (wall(0), wall(10), Some(2))
        );
        let taken = held(Some(&lease(Some("b"), 5)), "a", wall(30), DURATION);
        assert_eq!(
            (
                taken.holder_identity.as_deref(),
                taken.acquire_time.unwrap().0,
                taken.lease_transitions
            ),
            (Some("a"), wall(30), Some(3))
        );
        assert_eq!(
            held(None, "a", wall(0), DURATION).lease_transitions,
            Some(0)
        );
    }

    #[test]
    fn failures_are_warned_about_first_on_change_and_then_every_30s() {
        let clock = Clock::new();
        let mut complaints = Complaints::default();
        assert!(!complaints.succeeded(), "nothing to recover from");
        assert!(complaints.failed("forbidden", clock.at(0)));
        assert!(!complaints.failed("forbidden", clock.at(1)));
        assert!(!complaints.failed("forbidden", clock.at(29)));
        assert!(complaints.failed("forbidden", clock.at(30)));
        assert!(!complaints.failed("forbidden", clock.at(31)));
        assert!(
            complaints.failed("not found", clock.at(32)),
            "another error"
        );
        assert!(complaints.succeeded());
        assert!(
            complaints.failed("not found", clock.at(33)),
            "a new run of failures"
        );
    }

    #[test]
    fn a_lease_deleted_under_its_holder_is_waited_out_not_created_at_once() {
        let clock = Clock::new();
        let mut seen = None;
        let theirs = lease(Some("b"), 0);
        assert!(matches!(
            step(Some(&theirs), "a", &mut seen, clock.at(0), DURATION),
            Step::Follow { .. }
        ));
        // Deleted at 4 s: b may act until its next renewal finds that out.
        assert_eq!(
            step(None, "a", &mut seen, clock.at(4), DURATION),
            Step::Follow {
                holder: "b".into(),
                until: clock.at(19)
            }
        );
        assert!(matches!(
            step(None, "a", &mut seen, clock.at(18), DURATION),
            Step::Follow { .. }
        ));
        // b is alive and creates it again: followed afresh, from when it is seen.
        let again = lease(Some("b"), 6);
        assert_eq!(
            step(Some(&again), "a", &mut seen, clock.at(6), DURATION),
            Step::Follow {
                holder: "b".into(),
                until: clock.at(21)
            }
        );
        // Deleted again and b is gone: created once the wait is over.
        assert!(matches!(
            step(None, "a", &mut seen, clock.at(10), DURATION),
            Step::Follow { .. }
        ));
        assert_eq!(
            step(None, "a", &mut seen, clock.at(25), DURATION),
            Step::Create
        );
    }

    #[test]
    fn a_lease_missing_from_the_start_or_after_a_release_is_created_at_once() {
        let clock = Clock::new();
        let mut seen = None;
        assert_eq!(
            step(None, "a", &mut seen, clock.at(0), DURATION),
            Step::Create
        );
        // As `release` leaves it: no holder, no renewal.
        let released = LeaseSpec {
            renew_time: None,
            ..lease(None, 0)
        };
        assert_eq!(
            step(Some(&released), "a", &mut seen, clock.at(1), DURATION),
            Step::TakeOver
        );
        assert_eq!(
            step(None, "a", &mut seen, clock.at(2), DURATION),
            Step::Create
        );
    }

    /// The election against an API server: the emulator the e2e tests use, in process.
    mod against_an_api_server {
        use super::*;
        use kube_emulator::{Action, Emulator, Matcher};

        /// Generous: these wait for things that happen within seconds, or never.
        const PATIENCE: Duration = Duration::from_secs(30);

        async fn emulator() -> (Emulator, Client, LeaseConfig) {
            let emulator = Emulator::start().await.unwrap();
            let config = kube::Config::new(emulator.url().parse().unwrap());
            let lease = LeaseConfig::new("op", "default", "a", Duration::from_secs(3));
            let client = lease_client(config, &lease).unwrap();
            (emulator, client, lease)
        }

        /// Runs an election; returns whether it leads, its stop, and its task.
        fn elect(
            client: Client,
            config: LeaseConfig,
        ) -> (
            watch::Receiver<bool>,
            CancellationToken,
            tokio::task::JoinHandle<()>,
        ) {
            let (leading, _, stop, election) = elect_answering(client, config);
            (leading, stop, election)
        }

        /// [`elect`], also returning whether a Lease request has been answered.
        fn elect_answering(
            client: Client,
            config: LeaseConfig,
        ) -> (
            watch::Receiver<bool>,
            watch::Receiver<bool>,
            CancellationToken,
            tokio::task::JoinHandle<()>,
        ) {
            let (leading_tx, leading) = watch::channel(false);
            let (answered_tx, answered) = watch::channel(false);
            let stop = CancellationToken::new();
            let candidacy = Candidacy {
                sees_zookeeper: watch::channel(true).1,
                resign: watch::channel(0).1,
                resigned: watch::channel(0).0,
            };
            let election = tokio::spawn(run(
                client,
                config,
                leading_tx,
                answered_tx,
                TermDeadline::default(),
                candidacy,
                stop.clone(),
            ));
            (leading, answered, stop, election)
        }

        async fn becomes(leading: &mut watch::Receiver<bool>, want: bool) {
            tokio::time::timeout(PATIENCE, leading.wait_for(|&l| l == want))
                .await
                .unwrap_or_else(|_| panic!("leading never became {want}"))
                .unwrap();
        }

        fn holder(lease: &Lease) -> Option<&str> {
            lease.spec.as_ref()?.holder_identity.as_deref()
        }

        /// The API server accepts Lease requests and never answers them (in practice: an
        /// overloaded server, or retries of 429/503 with long backoffs).
        fn hang_lease_requests(emulator: &Emulator) {
            let hang = Action::Delay(Duration::from_secs(3600));
            for verb in ["get", "update"] {
                emulator
                    .faults()
                    .inject(Matcher::verb(verb).on("leases"), hang, 1000);
            }
        }

        #[tokio::test]
        async fn a_leader_whose_renewals_hang_stops_leading() {
            let (emulator, _, config) = emulator().await;
            // kube's default client (which waits for answers forever): the election must bound
            // its requests itself, whatever client it is given.
            let url = emulator.url().parse().unwrap();
            let client = Client::try_from(kube::Config::new(url)).unwrap();
            let (mut leading, stop, election) = elect(client, config);
            becomes(&mut leading, true).await;
            hang_lease_requests(&emulator);
            becomes(&mut leading, false).await;
            stop.cancel();
            election.await.unwrap();
        }

        /// Elects a leader, lets `faults` loose on its Lease requests, and checks that its term
        /// never wavers over `renewals` renewal periods.
        async fn leads_through(faults: &[(&str, Action, usize)], renewals: u32, what: &str) {
            let (emulator, client, config) = emulator().await;
            let renew_every = config.renew_every;
            let (mut leading, stop, election) = elect(client, config);
            becomes(&mut leading, true).await;
            leading.borrow_and_update();
            for (verb, action, count) in faults {
                emulator
                    .faults()
                    .inject(Matcher::verb(verb).on("leases"), *action, *count);
            }
            tokio::time::sleep(renew_every * renewals).await;
            assert!(!leading.has_changed().unwrap(), "{what} ended the term");
            assert!(*leading.borrow());
            stop.cancel();
            election.await.unwrap();
        }

        /// A leader whose renewals fail for a moment (an API server restarting) retries
        /// often enough to renew before its term ends: leadership never wavers. Three
        /// failures in a row: with the backoff alone (0.5 s, 1 s, 2 s) the retries would
        /// outlast the 2 s term.
        #[tokio::test]
        async fn renewals_failing_for_a_moment_do_not_end_the_term() {
            leads_through(&[("update", Action::Fail(503), 3)], 4, "a short API outage").await;
        }

        /// Whether the replica can take part in the election at all (its readiness): only
        /// once a Lease request has been answered.
        #[tokio::test]
        async fn a_replica_that_cannot_reach_its_lease_never_reads_answered() {
            let (emulator, client, config) = emulator().await;
            emulator
                .faults()
                .inject(Matcher::verb("get").on("leases"), Action::Fail(403), 1000);
            let (leading, mut answered, stop, election) =
                elect_answering(client.clone(), config.clone());
            tokio::time::sleep(config.duration * 2).await;
            assert!(!*answered.borrow_and_update());
            assert!(!*leading.borrow());
            stop.cancel();
            election.await.unwrap();

            emulator.faults().clear();
            let (_, mut answered, stop, election) = elect_answering(client, config);
            tokio::time::timeout(PATIENCE, answered.wait_for(|&a| a))
                .await
                .expect("answered")
                .unwrap();
            stop.cancel();
            election.await.unwrap();
        }

        /// A renewal (a read and a write) taking 0.4 s of the lease duration's 3 s, well within
        /// the third a renewal has before the term ends (with slack for a loaded machine, the
        /// emulator sharing this runtime).
        #[tokio::test]
        async fn a_slow_api_server_does_not_end_the_term() {
            let slow = Action::Delay(Duration::from_millis(200));
            let faults = [("get", slow, 1000), ("update", slow, 1000)];
            leads_through(&faults, 4, "a slow API server").await;
        }

        /// Twice in a row, the renewal meets a changed Lease, still ours: it reads it again.
        #[tokio::test]
        async fn a_renewal_that_meets_a_changed_lease_reads_it_again_instead_of_stepping_down() {
            let conflicts = [("update", Action::Fail(409), 2)];
            leads_through(&conflicts, 3, "a conflict on its own Lease").await;
        }

        #[tokio::test]
        async fn the_lease_client_reports_an_unavailable_server_instead_of_retrying() {
            let (emulator, client, _) = emulator().await;
            let leases: Api<Lease> = Api::namespaced(client, "default");
            emulator
                .faults()
                .inject(Matcher::verb("get").on("leases"), Action::Fail(503), 1);
            let error = leases.get_opt("op").await.unwrap_err();
            assert!(
                matches!(&error, kube::Error::Api(status) if status.code == 503),
                "{error}"
            );
            assert_eq!(leases.get_opt("op").await.unwrap(), None, "served again");
        }

        #[tokio::test]
        async fn a_lease_whose_holder_clock_runs_ahead_is_taken_once_it_stops_changing() {
            let (_emulator, client, config) = emulator().await;
            let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
            // Its renewTime says it is valid for another hour; its holder is gone.
            let mut ahead = held(
                None,
                "b",
                Timestamp::now() + jiff::SignedDuration::from_hours(1),
                Duration::from_secs(1),
            );
            ahead.acquire_time = None;
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some("op".into()),
                    ..ObjectMeta::default()
                },
                spec: Some(ahead),
            };
            leases.create(&PostParams::default(), &lease).await.unwrap();
            let (mut leading, stop, election) = elect(client, config);
            becomes(&mut leading, true).await;
            let taken = leases.get("op").await.unwrap();
            assert_eq!(holder(&taken), Some("a"));
            stop.cancel();
            election.await.unwrap();
        }

        #[tokio::test]
        async fn a_lease_made_without_a_spec_is_taken_in_place() {
            let (_emulator, client, config) = emulator().await;
            let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
            let bare = Lease {
                metadata: ObjectMeta {
                    name: Some("op".into()),
                    ..ObjectMeta::default()
                },
                spec: None,
            };
            leases.create(&PostParams::default(), &bare).await.unwrap();
            let (mut leading, stop, election) = elect(client, config);
            becomes(&mut leading, true).await;
            assert_eq!(holder(&leases.get("op").await.unwrap()), Some("a"));
            stop.cancel();
            election.await.unwrap();
        }

        /// Stopped while its takeover is on its way to the API server, a standby still leaves
        /// the Lease released: the takeover lands first, then the release. Were the takeover
        /// abandoned in flight, the release would read the Lease not ours yet and leave it, and
        /// the takeover landing after would hand the Lease to a replica gone.
        #[tokio::test]
        async fn a_standby_stopped_during_its_takeover_leaves_the_lease_released() {
            let (emulator, client, config) = emulator().await;
            let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
            let gone = held(None, "b", Timestamp::now(), Duration::from_secs(1));
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some("op".into()),
                    ..ObjectMeta::default()
                },
                spec: Some(gone),
            };
            leases.create(&PostParams::default(), &lease).await.unwrap();
            let slow = Action::Delay(Duration::from_millis(300));
            emulator
                .faults()
                .inject(Matcher::verb("update").on("leases"), slow, 1);
            let (leading, stop, election) = elect(client, config);
            // The takeover's write is held at the server: stop then.
            tokio::time::timeout(PATIENCE, async {
                while emulator.faults().pending() > 0 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
            .await
            .expect("a takeover");
            stop.cancel();
            election.await.unwrap();
            assert!(!*leading.borrow());
            let after = leases.get("op").await.unwrap();
            assert_eq!(holder(&after), None, "{after:?}");
        }

        /// A leader whose term lapsed (its renewals hung) and that is stopped right after the
        /// API server answers again leaves its Lease to expire: the writes the lapse cut off
        /// may still be queued at the server, and a release would let a standby act first.
        #[tokio::test]
        async fn stopping_after_the_term_lapsed_leaves_the_lease_to_expire() {
            let (emulator, client, config) = emulator().await;
            let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
            let (mut leading, stop, election) = elect(client, config);
            becomes(&mut leading, true).await;
            hang_lease_requests(&emulator);
            becomes(&mut leading, false).await;
            emulator.faults().clear();
            stop.cancel();
            election.await.unwrap();
            assert_eq!(holder(&leases.get("op").await.unwrap()), Some("a"));
        }

        #[tokio::test]
        async fn stopping_releases_the_lease() {
            let (_emulator, client, config) = emulator().await;
            let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
            let (mut leading, stop, election) = elect(client, config);
            becomes(&mut leading, true).await;
            assert_eq!(holder(&leases.get("op").await.unwrap()), Some("a"));
            stop.cancel();
            election.await.unwrap();
            assert!(!*leading.borrow());
            assert_eq!(holder(&leases.get("op").await.unwrap()), None);
        }
    }
}
