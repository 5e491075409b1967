//! Events about PureFlashStores (events.k8s.io/v1), as `kubectl describe` shows them.
//!
//! This module owns how an Event is written:
//! - it is stamped with the API server's time ([`ClusterClock`]), like every time the operator
//!   writes: kube's own recorder stamps the replica's clock, and a replica whose clock is off
//!   would show Events from the future (`kubectl` prints `<invalid>` ages) or from long ago;
//! - a repeat of an Event (same object, type, reason and action) within [`SERIES_WINDOW`] of
//!   the previous one only counts up the first one's `series`, as client-go's recorder does,
//!   so a store held back on every reconcile costs one object, not one per reconcile. The
//!   note stays the first one's, as the API keeps notes immutable;
//! - texts are cut to the API's limits (a 1 kB note) instead of the whole Event being
//!   rejected, and an Event that vanished under its series (deleted, or expired) is created
//!   anew.
//!
//! Which series are open is decided by [`SeriesBook`], pure and fed the time.

use std::collections::HashMap;
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
pub use kube::runtime::events::EventType;
use serde_json::json;

use crate::clock::ClusterClock;

/// A repeat later than this after the previous one starts a new Event (client-go's window).
pub const SERIES_WINDOW: SignedDuration = SignedDuration::from_mins(6);

/// `note` may hold at most this many bytes (`NoteLengthLimit`).
pub const NOTE_LIMIT: usize = 1024;
/// `reportingInstance`, `reason` and `action` may hold at most this many bytes.
pub const SHORT_TEXT_LIMIT: usize = 128;
/// Event names are DNS subdomains of at most this many bytes.
const NAME_LIMIT: usize = 253;

/// One thing to say about an object.
pub struct Record<'a> {
    pub kind: EventType,
    /// Why, in PascalCase, from the operator's fixed list.
    pub reason: &'a str,
    /// What the operator did or meant to do, in PascalCase.
    pub action: &'a str,
    /// For people; cut to [`NOTE_LIMIT`] bytes.
    pub note: String,
}

/// Which Events a repeat counts on.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SeriesKey {
    /// The object: `(apiVersion, kind, namespace, name, uid)`. A store deleted and created
    /// again under its name is another object.
    regarding: [Option<String>; 5],
    kind: &'static str,
    reason: String,
    action: String,
}

impl SeriesKey {
    pub fn of(regarding: &ObjectReference, record: &Record<'_>) -> SeriesKey {
        SeriesKey {
            regarding: [
                regarding.api_version.clone(),
                regarding.kind.clone(),
                regarding.namespace.clone(),
                regarding.name.clone(),
                regarding.uid.clone(),
            ],
            kind: type_name(record.kind),
            reason: record.reason.to_owned(),
            action: record.action.to_owned(),
        }
    }
}

/// What to write for one more occurrence of an Event.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// A new Event.
    Create,
    /// Count it on the open series of the Event `name`: it has now happened `count` times.
    Repeat { name: String, count: i32 },
}

#[derive(Debug)]
struct OpenSeries {
    name: String,
    count: i32,
    last: Timestamp,
}

/// The series this replica has open, by key: what a repeat should write.
#[derive(Debug, Default)]
pub struct SeriesBook {
    open: HashMap<SeriesKey, OpenSeries>,
}

impl SeriesBook {
    /// What one more occurrence of `key` at `now` writes. Series idle for [`SERIES_WINDOW`]
    /// are closed first (also keeping the book small).
    pub fn next(&mut self, key: &SeriesKey, now: Timestamp) -> Next {
        self.open
            .retain(|_, series| now.duration_since(series.last) < SERIES_WINDOW);
        match self.open.get(key) {
            Some(series) => Next::Repeat {
                name: series.name.clone(),
                count: series.count.saturating_add(1),
            },
            None => Next::Create,
        }
    }

    /// The Event `name` was created for `key` at `now`.
    pub fn created(&mut self, key: SeriesKey, name: String, now: Timestamp) {
        self.open.insert(
            key,
            OpenSeries {
                name,
                count: 1,
                last: now,
            },
        );
    }

    /// The series of `key` was counted up to `count` at `now`.
    pub fn repeated(&mut self, key: &SeriesKey, count: i32, now: Timestamp) {
        if let Some(series) = self.open.get_mut(key) {
            series.count = count;
            series.last = now;
        }
    }

    /// The Event of `key` is gone from the API: the next occurrence creates a new one.
    pub fn vanished(&mut self, key: &SeriesKey) {
        self.open.remove(key);
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.open.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }
}

/// Writes the operator's Events; one per replica, shared by every reconcile.
pub struct Recorder {
    client: Client,
    controller: String,
    instance: String,
    clock: ClusterClock,
    series: std::sync::Mutex<SeriesBook>,
    /// One write at a time per series: two under way at once (a failed reconcile's Event
    /// written in the background while its retry fails again against a slow API server)
    /// would each create an Event, or patch in the same count.
    turns: std::sync::Mutex<HashMap<SeriesKey, Arc<tokio::sync::Mutex<()>>>>,
}

/// A series' turn to be written, taken or waited for; forgotten by the last one to leave it.
struct Turn<'a> {
    turns: &'a std::sync::Mutex<HashMap<SeriesKey, Arc<tokio::sync::Mutex<()>>>>,
    key: SeriesKey,
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut turns = self.turns.lock().unwrap_or_else(|e| e.into_inner());
        // The map's and this one's: no one else waits (clones are made under this lock).
        if Arc::strong_count(&self.lock) == 2 {
            turns.remove(&self.key);
        }
    }
}

impl Recorder {
    /// `controller` is the reporting controller (a qualified name), `instance` this replica.
    pub fn new(client: Client, controller: &str, instance: &str, clock: ClusterClock) -> Recorder {
        Recorder {
            client,
            controller: controller.to_owned(),
            instance: cut(instance, SHORT_TEXT_LIMIT).into_owned(),
            clock,
            series: std::sync::Mutex::default(),
            turns: std::sync::Mutex::default(),
        }
    }

    fn turn(&self, key: &SeriesKey) -> Turn<'_> {
        let mut turns = self.turns.lock().unwrap_or_else(|e| e.into_inner());
        let lock = Arc::clone(turns.entry(key.clone()).or_default());
        Turn {
            turns: &self.turns,
            key: key.clone(),
            lock,
        }
    }

    /// Records `record` about `regarding`: a new Event, or one more in its open series.
    pub async fn publish(
        &self,
        regarding: &ObjectReference,
        record: Record<'_>,
    ) -> Result<(), kube::Error> {
        let key = SeriesKey::of(regarding, &record);
        let turn = self.turn(&key);
        let _in_turn = Arc::clone(&turn.lock).lock_owned().await;
        // Timed once the turn is ours: a write waited for is later than the one before it.
        let now = self.clock.now();
        let events: Api<Event> = Api::namespaced(
            self.client.clone(),
            regarding.namespace.as_deref().unwrap_or("default"),
        );
        let next = self.book().next(&key, now);
        if let Next::Repeat { name, count } = next {
            let series = json!({"series": {"count": count, "lastObservedTime": MicroTime(now)}});
            match events
                .patch(&name, &PatchParams::default(), &Patch::Merge(&series))
                .await
            {
                Ok(_) => {
                    self.book().repeated(&key, count, now);
                    return Ok(());
                }
                Err(kube::Error::Api(status)) if status.code == 404 => self.book().vanished(&key),
                Err(error) => return Err(error),
            }
        }
        let event = new_event(&self.controller, &self.instance, regarding, &record, now);
        let name = event.metadata.name.clone().unwrap_or_default();
        events.create(&PostParams::default(), &event).await?;
        self.book().created(key, name, now);
        Ok(())
    }

    fn book(&self) -> std::sync::MutexGuard<'_, SeriesBook> {
        // Nothing panics while holding it; a poisoned book is still a valid one.
        self.series.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The first Event of a series, as the API wants it (`ValidateEventCreate`).
pub fn new_event(
    controller: &str,
    instance: &str,
    regarding: &ObjectReference,
    record: &Record<'_>,
    now: Timestamp,
) -> Event {
    // Unique per object and nanosecond, as client-go names them; the prefix gives way to the
    // suffix when the object's name is long, and a cut one must still end alphanumeric (a
    // DNS subdomain's labels do).
    let suffix = format!(".{:x}", now.as_nanosecond());
    let prefix = regarding.name.as_deref().unwrap_or(controller);
    let prefix = cut_plain(prefix, NAME_LIMIT - suffix.len())
        .trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    let name = format!("{prefix}{suffix}");
    Event {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: regarding.namespace.clone(),
            ..ObjectMeta::default()
        },
        event_time: Some(MicroTime(now)),
        regarding: Some(regarding.clone()),
        reporting_controller: Some(controller.to_owned()),
        reporting_instance: Some(instance.to_owned()),
        type_: Some(type_name(record.kind).to_owned()),
        reason: Some(cut_plain(record.reason, SHORT_TEXT_LIMIT).to_owned()),
        action: Some(cut_plain(record.action, SHORT_TEXT_LIMIT).to_owned()),
        note: Some(cut(&record.note, NOTE_LIMIT).into_owned()),
        ..Event::default()
    }
}

fn type_name(kind: EventType) -> &'static str {
    match kind {
        EventType::Normal => "Normal",
        EventType::Warning => "Warning",
    }
}

/// `text` in at most `limit` bytes: whole, or cut at a character boundary and marked with `…`.
pub fn cut(text: &str, limit: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= limit {
        return text.into();
    }
    const MARK: &str = "…";
    format!(
        "{}{MARK}",
        cut_plain(text, limit.saturating_sub(MARK.len()))
    )
    .into()
}

/// The longest prefix of `text` of at most `limit` bytes that ends at a character boundary.
fn cut_plain(text: &str, limit: usize) -> &str {
    let mut end = limit.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(uid: &str) -> ObjectReference {
        ObjectReference {
            api_version: Some("pureflash.io/v1alpha1".into()),
            kind: Some("PureFlashStore".into()),
            namespace: Some("storage".into()),
            name: Some("store-1".into()),
            uid: Some(uid.into()),
            ..ObjectReference::default()
        }
    }

    fn record(reason: &'static str, note: &str) -> Record<'static> {
        Record {
            kind: EventType::Warning,
            reason,
            action: "Restart",
            note: note.into(),
        }
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_790_000_000 + seconds).unwrap()
    }

    #[test]
    fn repeats_within_the_window_count_on_the_first_event() {
        let mut book = SeriesBook::default();
        let key = SeriesKey::of(&store("u1"), &record("StoreRestarted", "first"));
        assert_eq!(book.next(&key, at(0)), Next::Create);
        book.created(key.clone(), "store-1.a".into(), at(0));
        // Another note is the same Event: notes do not tell series apart.
        let same = SeriesKey::of(&store("u1"), &record("StoreRestarted", "second"));
        assert_eq!(same, key);
        let next = book.next(&same, at(300));
        assert_eq!(
            next,
            Next::Repeat {
                name: "store-1.a".into(),
                count: 2
            }
        );
        book.repeated(&same, 2, at(300));
        // The window runs from the last occurrence, not the first.
        assert_eq!(
            book.next(&key, at(300 + 359)),
            Next::Repeat {
                name: "store-1.a".into(),
                count: 3
            }
        );
    }

    #[test]
    fn a_quiet_window_closes_the_series() {
        let mut book = SeriesBook::default();
        let key = SeriesKey::of(&store("u1"), &record("StoreRestarted", ""));
        book.created(key.clone(), "store-1.a".into(), at(0));
        assert_eq!(book.next(&key, at(360)), Next::Create);
        assert!(book.is_empty(), "closed series are dropped");
    }

    #[test]
    fn another_reason_type_action_or_object_is_another_event() {
        let mut book = SeriesBook::default();
        let base = record("StoreRestarted", "");
        let key = SeriesKey::of(&store("u1"), &base);
        book.created(key.clone(), "store-1.a".into(), at(0));
        let others = [
            SeriesKey::of(&store("u1"), &record("RestartSkipped", "")),
            SeriesKey::of(
                &store("u1"),
                &Record {
                    kind: EventType::Normal,
                    ..record("StoreRestarted", "")
                },
            ),
            SeriesKey::of(
                &store("u1"),
                &Record {
                    action: "Observe",
                    ..record("StoreRestarted", "")
                },
            ),
            // The store deleted and created again under its name.
            SeriesKey::of(&store("u2"), &base),
        ];
        for other in others {
            assert_eq!(book.next(&other, at(1)), Next::Create, "{other:?}");
        }
        assert_eq!(book.len(), 1);
    }

    #[test]
    fn a_vanished_event_is_created_anew() {
        let mut book = SeriesBook::default();
        let key = SeriesKey::of(&store("u1"), &record("StoreRestarted", ""));
        book.created(key.clone(), "store-1.a".into(), at(0));
        book.vanished(&key);
        assert_eq!(book.next(&key, at(1)), Next::Create);
    }

    #[test]
    fn a_clock_stepping_back_keeps_the_series_open() {
        let mut book = SeriesBook::default();
        let key = SeriesKey::of(&store("u1"), &record("StoreRestarted", ""));
        book.created(key.clone(), "store-1.a".into(), at(100));
        assert!(matches!(
            book.next(&key, at(40)),
            Next::Repeat { count: 2, .. }
        ));
    }

    #[test]
    fn new_events_carry_what_the_api_requires_within_its_limits() {
        let long_note = "é".repeat(700); // 1400 bytes
        let event = new_event(
            "pureflash-operator",
            "op-0",
            &store("u1"),
            &record("StoreRestarted", &long_note),
            at(0),
        );
        let note = event.note.unwrap();
        assert!(note.len() <= NOTE_LIMIT, "{}", note.len());
        assert!(note.ends_with('…') && note.starts_with("éé"));
        assert_eq!(event.event_time, Some(MicroTime(at(0))));
        assert_eq!(event.type_.as_deref(), Some("Warning"));
        assert_eq!(
            (event.reason.as_deref(), event.action.as_deref()),
            (Some("StoreRestarted"), Some("Restart"))
        );
        assert_eq!(
            (
                event.reporting_controller.as_deref(),
                event.reporting_instance.as_deref()
            ),
            (Some("pureflash-operator"), Some("op-0"))
        );
        assert_eq!(event.metadata.namespace.as_deref(), Some("storage"));
        let name = event.metadata.name.unwrap();
        assert_eq!(
            name,
            format!("store-1.{:x}", at(0).as_nanosecond()),
            "named after the object and the time"
        );
        assert!(event.series.is_none() && event.deprecated_count.is_none());
    }

    #[test]
    fn a_long_object_name_leaves_room_for_the_time() {
        let mut long = store("u1");
        long.name = Some("s".repeat(253));
        let event = new_event("c", "i", &long, &record("R", "n"), at(0));
        let name = event.metadata.name.unwrap();
        assert_eq!(name.len(), 253);
        assert!(name.ends_with(&format!(".{:x}", at(0).as_nanosecond())));
    }

    #[test]
    fn a_long_name_cut_at_a_dash_or_dot_still_makes_a_valid_name() {
        let mut long = store("u1");
        // The cut falls just after the dash.
        let keep = NAME_LIMIT - format!(".{:x}", at(0).as_nanosecond()).len();
        long.name = Some(format!("{}-.{}", "s".repeat(keep - 2), "t".repeat(20)));
        let name = new_event("c", "i", &long, &record("R", "n"), at(0))
            .metadata
            .name
            .unwrap();
        assert!(name.len() <= NAME_LIMIT);
        assert!(
            name.starts_with(&format!("{}.", "s".repeat(keep - 2))),
            "{name}"
        );
        assert!(
            name.split('.')
                .all(|label| !label.is_empty() && !label.ends_with('-')),
            "{name}"
        );
    }

    #[test]
    fn texts_are_cut_at_character_boundaries() {
        assert_eq!(cut("short", 10), "short");
        assert_eq!(cut("abcdef", 6), "abcdef");
        assert_eq!(cut("abcdefg", 6), "abc…");
        // "é" is two bytes: a cut through it backs off to the boundary before.
        assert_eq!(cut("aéééé", 7), "aé…");
        assert!(cut(&"x".repeat(200), SHORT_TEXT_LIMIT).len() <= SHORT_TEXT_LIMIT);
    }
}
