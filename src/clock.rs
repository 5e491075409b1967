//! The cluster's clock: the time the Kubernetes API server keeps, as this replica reckons it.
//!
//! Status times (`offlineSince`, `lastRestartTime`, the recent restarts) are written by the
//! replica leading at the time and compared with "now" by whichever replica leads later. Were
//! each replica to use its own clock, a new leader whose clock runs ahead would cut a grace
//! period or a backoff short by the difference, and restart a store early. So every replica
//! reckons in one shared time, the API server's: it learns how far its own clock is from the
//! server's from the `Date` header of the server's answers, and adds that offset to its clock.
//!
//! A `Date` header has whole seconds, so one answer only bounds the offset to an interval a
//! second plus the round trip wide. Answers taken at different fractions of the server's
//! second bound it from different sides; the intersection of recent answers' intervals is
//! narrow ([`OffsetEstimate`], pure). [`follow`] keeps asking; [`ClusterClock`] is what
//! everyone else reads.
//!
//! "This replica's clock" is its wall clock as read once, carried on by the monotonic clock
//! ([`local_now`]): a step of the wall clock (an NTP correction, a person with `date -s`)
//! would otherwise move "now" by the step until the next answer, and a step forward would
//! cut grace periods short by as much.

use std::collections::VecDeque;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use kube::Client;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::metrics::Metrics;

/// How many recent answers bound the offset: at one every [`SAMPLE_EVERY`], about five
/// minutes, over which two clocks drift apart by far less than the answers' precision.
const WINDOW: usize = 32;

/// How often the server is asked once the offset is known. Not a whole number of seconds, so
/// that successive answers fall at different fractions of the server's second.
const SAMPLE_EVERY: Duration = Duration::from_millis(10_137);

/// The first answers come this far apart (five of them span the server's second), so the
/// offset is narrow before this replica first leads.
const FIRST_SAMPLES: usize = 5;
const FIRST_SAMPLE_GAP: Duration = Duration::from_millis(203);

/// Answers implying an offset beyond this are ignored.
const IMPLAUSIBLE_OFFSET: SignedDuration = SignedDuration::from_hours(365 * 24);

/// An offset beyond this is worth a warning: the clocks of the cluster are not in step.
const NOTABLE_OFFSET: SignedDuration = SignedDuration::from_secs(2);

/// What one answer says about the offset (server time − local time): within `[low, high]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OffsetBounds {
    pub low: SignedDuration,
    pub high: SignedDuration,
}

impl OffsetBounds {
    /// The bounds an answer sets: the request left at local time `sent`, the answer's headers
    /// arrived at `received`, and the server stamped it `date` (whole seconds). The server's
    /// clock read some `s` in `[date, date + 1s)` at a local time `t` in `[sent, received]`, so
    /// the offset `s − t` lies in `[date − received, date + 1s − sent]`.
    pub fn of_answer(sent: Timestamp, received: Timestamp, date: Timestamp) -> OffsetBounds {
        OffsetBounds {
            low: date.duration_since(received),
            // Added to the duration, not to `date`: a Date near the end of time must not panic.
            high: date.duration_since(sent) + SignedDuration::from_secs(1),
        }
    }

    fn intersect(self, other: OffsetBounds) -> Option<OffsetBounds> {
        let bounds = OffsetBounds {
            low: self.low.max(other.low),
            high: self.high.min(other.high),
        };
        (bounds.low <= bounds.high).then_some(bounds)
    }

    /// The middle of the bounds: off by at most half their width.
    pub fn midpoint(self) -> SignedDuration {
        self.low + (self.high - self.low) / 2
    }
}

/// The offset from recent answers: the intersection of their bounds.
#[derive(Debug, Default)]
pub struct OffsetEstimate {
    answers: VecDeque<OffsetBounds>,
}

impl OffsetEstimate {
    /// Takes one answer in. Answers that contradict it (no offset satisfies both: one of the
    /// clocks was stepped, or drifted over a long window) are forgotten, oldest first; the
    /// newest answer always stands.
    pub fn record(&mut self, answer: OffsetBounds) {
        if answer.low > answer.high {
            // The local clock was stepped back while the request was out: it says nothing.
            return;
        }
        if answer.low.abs() > IMPLAUSIBLE_OFFSET || answer.high.abs() > IMPLAUSIBLE_OFFSET {
            // A broken Date header (or clock), not a cluster to keep time with.
            return;
        }
        self.answers.push_back(answer);
        if self.answers.len() > WINDOW {
            self.answers.pop_front();
        }
        while self.answers.len() > 1 && self.bounds().is_none() {
            self.answers.pop_front();
        }
    }

    /// The narrowest bounds all remembered answers agree on; `None` before the first one.
    pub fn bounds(&self) -> Option<OffsetBounds> {
        let mut answers = self.answers.iter().copied();
        let first = answers.next()?;
        answers.try_fold(first, OffsetBounds::intersect)
    }

    pub fn offset(&self) -> Option<SignedDuration> {
        self.bounds().map(OffsetBounds::midpoint)
    }
}

/// A wall-clock reading and the monotonic instant it was taken at.
#[derive(Clone, Copy, Debug)]
struct Anchor {
    instant: Instant,
    wall: Timestamp,
}

impl Anchor {
    /// The wall-clock time at `instant`, as the monotonic clock counts from the anchor.
    fn at(self, instant: Instant) -> Timestamp {
        let elapsed = instant.saturating_duration_since(self.instant);
        self.wall.checked_add(elapsed).unwrap_or(self.wall)
    }
}

/// This replica's time: its wall clock as first read, carried on by the monotonic clock, so
/// that no step of the wall clock moves it.
fn local_now() -> Timestamp {
    static ANCHOR: LazyLock<Anchor> = LazyLock::new(|| Anchor {
        instant: Instant::now(),
        wall: Timestamp::now(),
    });
    ANCHOR.at(Instant::now())
}

/// The API server's time as this replica reckons it; cheap to clone, shared by every task.
/// Until the server has answered once, it is this replica's own clock.
#[derive(Clone, Debug, Default)]
pub struct ClusterClock {
    estimate: Arc<Mutex<OffsetEstimate>>,
}

impl ClusterClock {
    pub fn now(&self) -> Timestamp {
        let local = local_now();
        let offset = self.offset().unwrap_or(SignedDuration::ZERO);
        local.checked_add(offset).unwrap_or(local)
    }

    /// Server time − local time, once known.
    pub fn offset(&self) -> Option<SignedDuration> {
        self.lock().offset()
    }

    pub fn bounds(&self) -> Option<OffsetBounds> {
        self.lock().bounds()
    }

    pub fn record(&self, answer: OffsetBounds) {
        self.lock().record(answer);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OffsetEstimate> {
        // Nothing panics while holding it; a poisoned estimate is still a valid one.
        self.estimate.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Why an answer could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    #[error("asking the API server for /version failed: {0}")]
    Request(#[from] kube::Error),
    #[error("the API server's answer has no usable Date header ({0})")]
    NoDate(String),
    #[error("the API server did not answer /version within {0:?}")]
    TimedOut(std::time::Duration),
}

/// How long one time sample may take. The client's own bound is minutes (a watch's); a
/// sample stuck on a bad connection would leave the estimate unknown, and a leader that
/// starts meanwhile acting in its own time, until it finally came.
const SAMPLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Asks the API server the time once (`GET /version`, which every authenticated client may
/// read) and returns what its answer says about the offset.
pub async fn sample(client: &Client) -> Result<OffsetBounds, SampleError> {
    tokio::time::timeout(SAMPLE_TIMEOUT, sample_unbounded(client))
        .await
        .unwrap_or(Err(SampleError::TimedOut(SAMPLE_TIMEOUT)))
}

async fn sample_unbounded(client: &Client) -> Result<OffsetBounds, SampleError> {
    let request = http::Request::get("/version")
        .body(kube::client::Body::empty())
        .expect("a static request is valid");
    let sent = local_now();
    let response = client.send(request).await?;
    let received = local_now();
    let date = response
        .headers()
        .get(http::header::DATE)
        .ok_or_else(|| SampleError::NoDate("missing".into()))?;
    let date = date
        .to_str()
        .map_err(|e| SampleError::NoDate(e.to_string()))
        .and_then(|text| {
            jiff::fmt::rfc2822::parse(text)
                .map(|zoned| zoned.timestamp())
                .map_err(|e| SampleError::NoDate(format!("{text:?}: {e}")))
        })?;
    // Read to the end (a few hundred bytes), so the connection can serve the next request.
    let _ = response.into_body().collect_bytes().await;
    Ok(OffsetBounds::of_answer(sent, received, date))
}

/// Keeps `clock` in step with the API server until `stop`: a few quick answers first, then one
/// every [`SAMPLE_EVERY`]. Failed answers are logged and change nothing (the last estimate
/// stands: clocks do not jump when the network does).
pub async fn follow(
    client: Client,
    clock: ClusterClock,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let mut attempts = 0usize;
    let mut failing = false;
    let mut reported: Option<SignedDuration> = None;
    loop {
        attempts += 1;
        match sample(&client).await {
            Ok(answer) => {
                clock.record(answer);
                failing = false;
                if let Some(bounds) = clock.bounds() {
                    let offset = bounds.midpoint();
                    metrics.api_clock_offset.set(offset.as_secs_f64());
                    report(offset, &mut reported, bounds);
                }
            }
            // Said once per failing streak; the last estimate stands meanwhile.
            Err(error) if !std::mem::replace(&mut failing, true) => {
                warn!(%error, "the API server's time could not be read; asking again every 10 s");
            }
            Err(error) => debug!(%error, "the API server's time was not read"),
        }
        // Quick answers only at the start: a server that does not answer is not asked faster.
        let pause = if attempts < FIRST_SAMPLES && !failing {
            FIRST_SAMPLE_GAP
        } else {
            SAMPLE_EVERY
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// Logs the offset when it first becomes known and whenever it moves by more than a second.
fn report(offset: SignedDuration, reported: &mut Option<SignedDuration>, bounds: OffsetBounds) {
    let moved = reported.is_none_or(|last| (offset - last).abs() > SignedDuration::from_secs(1));
    if !moved {
        return;
    }
    *reported = Some(offset);
    let uncertainty = (bounds.high - bounds.low) / 2;
    if offset.abs() > NOTABLE_OFFSET {
        warn!(
            offset = ?offset,
            ?uncertainty,
            "this replica's clock is off the API server's; status times are kept in the server's time"
        );
    } else {
        info!(offset = ?offset, ?uncertainty, "in step with the API server's clock");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: f64) -> Timestamp {
        Timestamp::from_duration(SignedDuration::from_secs_f64(1_800_000_000.0 + seconds)).unwrap()
    }

    fn secs(s: f64) -> SignedDuration {
        SignedDuration::from_secs_f64(s)
    }

    /// The answer a server whose clock is `offset` ahead would give to a request sent at local
    /// `sent` that it handles `handled` later and that comes back after `round_trip`.
    fn answer(offset: f64, sent: f64, handled: f64, round_trip: f64) -> OffsetBounds {
        let server = at(sent + handled) + secs(offset);
        let date = Timestamp::from_second(server.as_second()).unwrap();
        OffsetBounds::of_answer(at(sent), at(sent + round_trip), date)
    }

    #[test]
    fn one_answer_bounds_the_offset_to_a_second_and_the_round_trip() {
        let bounds = answer(42.3, 0.0, 0.01, 0.02);
        assert!(bounds.low <= secs(42.3) && secs(42.3) <= bounds.high);
        assert!(bounds.high - bounds.low <= secs(1.02));
    }

    #[test]
    fn answers_at_different_fractions_of_a_second_narrow_it() {
        for offset in [-3600.7, -1.25, 0.0, 0.49, 17.999] {
            let mut estimate = OffsetEstimate::default();
            for i in 0..FIRST_SAMPLES {
                estimate.record(answer(offset, i as f64 * 0.203, 0.002, 0.004));
            }
            let bounds = estimate.bounds().unwrap();
            assert!(bounds.low <= secs(offset) && secs(offset) <= bounds.high);
            assert!(
                bounds.high - bounds.low <= secs(0.21),
                "{offset}: {bounds:?}"
            );
            assert!((estimate.offset().unwrap() - secs(offset)).abs() <= secs(0.105));
        }
    }

    #[test]
    fn a_stepped_clock_drops_the_answers_that_contradict_the_new_one() {
        let mut estimate = OffsetEstimate::default();
        for i in 0..10 {
            estimate.record(answer(5.0, i as f64 * 10.137, 0.001, 0.002));
        }
        assert!((estimate.offset().unwrap() - secs(5.0)).abs() < secs(0.5));
        // The local clock is stepped back by 30 s (say, NTP corrected it): the offset grows.
        estimate.record(answer(35.0, 200.0, 0.001, 0.002));
        assert!((estimate.offset().unwrap() - secs(35.0)).abs() < secs(0.51));
        estimate.record(answer(35.0, 210.4, 0.001, 0.002));
        let bounds = estimate.bounds().unwrap();
        assert!(bounds.low <= secs(35.0) && secs(35.0) <= bounds.high);
    }

    #[test]
    fn answers_from_the_end_of_time_are_ignored_not_a_panic() {
        let mut estimate = OffsetEstimate::default();
        let last_second = Timestamp::from_second(Timestamp::MAX.as_second()).unwrap();
        estimate.record(OffsetBounds::of_answer(at(0.0), at(0.01), last_second));
        assert_eq!(estimate.bounds(), None);
        estimate.record(answer(3.0, 1.0, 0.001, 0.002));
        estimate.record(OffsetBounds::of_answer(at(2.0), at(2.01), Timestamp::MIN));
        assert!((estimate.offset().unwrap() - secs(3.0)).abs() < secs(0.51));
    }

    #[test]
    fn the_window_keeps_the_newest_answers() {
        let mut estimate = OffsetEstimate::default();
        for i in 0..(WINDOW * 3) {
            estimate.record(answer(-0.5, i as f64 * 10.137, 0.0, 0.001));
        }
        assert_eq!(estimate.answers.len(), WINDOW);
        assert!(estimate.bounds().is_some());
    }

    #[test]
    fn local_time_runs_on_the_monotonic_clock_from_one_wall_reading() {
        let anchor = Anchor {
            instant: Instant::now(),
            wall: Timestamp::from_second(1_790_000_000).unwrap(),
        };
        let later = anchor.instant + Duration::from_millis(2_500);
        assert_eq!(
            anchor.at(later),
            Timestamp::from_second(1_790_000_000).unwrap() + SignedDuration::from_millis(2_500)
        );
        assert_eq!(anchor.at(anchor.instant), anchor.wall);
        // Nothing at all before the anchor's instant (it is taken before any caller's).
        assert!(
            anchor
                .instant
                .checked_sub(Duration::from_secs(1))
                .is_none_or(|earlier| anchor.at(earlier) == anchor.wall)
        );
    }

    #[test]
    fn without_answers_the_clock_is_the_local_one() {
        let clock = ClusterClock::default();
        assert_eq!(clock.offset(), None);
        let before = local_now();
        let now = clock.now();
        assert!(now >= before && now.duration_since(before) < SignedDuration::from_secs(1));
        clock.record(answer(-120.0, 0.0, 0.0, 0.0));
        let shifted = clock.now();
        let behind = local_now().duration_since(shifted);
        assert!(behind > secs(119.0) && behind < secs(121.5), "{behind:?}");
    }
}
