//! The operator's Event recorder against the API emulator over real HTTP: Events carry the API
//! server's time even when this machine's clock is off, repeats count on the first Event's
//! series, an Event deleted under its series is created anew, and long notes are cut rather
//! than refused (the emulator enforces events.k8s.io/v1's validation).

use k8s_openapi::api::core::v1::{Namespace, ObjectReference};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use pureflash_operator::clock::{self, ClusterClock};
use pureflash_operator::controller::events::{EventType, NOTE_LIMIT, Record, Recorder};

const NAMESPACE: &str = "storage";

async fn client_of(emulator: &kube_emulator::Emulator) -> Client {
    let kubeconfig = Kubeconfig::from_yaml(&emulator.kubeconfig()).expect("kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("config");
    let client = Client::try_from(config).expect("client");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": NAMESPACE}}))
        .expect("namespace");
    namespaces
        .create(&PostParams::default(), &namespace)
        .await
        .expect("create the namespace");
    client
}

fn store_1() -> ObjectReference {
    ObjectReference {
        api_version: Some("pureflash.io/v1alpha1".into()),
        kind: Some("PureFlashStore".into()),
        namespace: Some(NAMESPACE.into()),
        name: Some("store-1".into()),
        uid: Some("7d1c1f0e-0000-4000-8000-000000000001".into()),
        ..ObjectReference::default()
    }
}

fn restarted(note: &str) -> Record<'static> {
    Record {
        kind: EventType::Warning,
        reason: "StoreRestarted",
        action: "Restart",
        note: note.into(),
    }
}

async fn events(client: &Client) -> Vec<Event> {
    let api: Api<Event> = Api::namespaced(client.clone(), NAMESPACE);
    api.list(&ListParams::default()).await.expect("list").items
}

#[tokio::test]
async fn events_are_stamped_with_the_servers_time_and_repeats_form_a_series() {
    const BEHIND_MS: i64 = -3_600_000;
    let emulator = kube_emulator::Emulator::start().await.expect("emulator");
    emulator.set_clock_offset_ms(BEHIND_MS);
    let client = client_of(&emulator).await;
    let clock = ClusterClock::default();
    clock.record(clock::sample(&client).await.expect("the server's time"));
    let recorder = Recorder::new(client.clone(), "pureflash-operator", "op-0", clock);
    // The server's time, give or take its Date header's whole seconds and this test's pace.
    let near_server_time = |at: jiff::Timestamp| {
        let server_now = jiff::Timestamp::now() + jiff::SignedDuration::from_millis(BEHIND_MS);
        (at - server_now).get_seconds().abs() <= 3
    };

    recorder
        .publish(
            &store_1(),
            restarted("offline for 31s: pod store-1-pfs killed"),
        )
        .await
        .expect("first event");
    recorder
        .publish(
            &store_1(),
            restarted("offline for 40s: pod store-1-pfs killed"),
        )
        .await
        .expect("repeat");
    let listed = events(&client).await;
    assert_eq!(listed.len(), 1, "a repeat counts on the first Event");
    let event = &listed[0];
    let first_at = event.event_time.as_ref().expect("eventTime").0;
    assert!(
        near_server_time(first_at),
        "eventTime {first_at} is the local clock's, not the server's"
    );
    let series = event.series.as_ref().expect("a series");
    assert_eq!(series.count, 2);
    assert!(near_server_time(series.last_observed_time.0));
    assert!(series.last_observed_time.0 >= first_at);
    assert_eq!(
        event.note.as_deref(),
        Some("offline for 31s: pod store-1-pfs killed"),
        "the first note stands"
    );
    assert_eq!(
        (
            event.reporting_controller.as_deref(),
            event.reporting_instance.as_deref()
        ),
        (Some("pureflash-operator"), Some("op-0"))
    );

    // Deleted under its series (by a user, or expired): the next repeat is a new Event.
    let api: Api<Event> = Api::namespaced(client.clone(), NAMESPACE);
    api.delete(
        event.metadata.name.as_deref().unwrap(),
        &DeleteParams::default(),
    )
    .await
    .expect("delete");
    recorder
        .publish(&store_1(), restarted("offline for 50s"))
        .await
        .expect("recreated");
    let listed = events(&client).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].note.as_deref(), Some("offline for 50s"));
    assert!(listed[0].series.is_none());

    // Another reason is another Event; a note past the API's limit is cut, not refused.
    let long = format!("ZooKeeper said: {}", "x".repeat(3000));
    recorder
        .publish(
            &store_1(),
            Record {
                kind: EventType::Warning,
                reason: "ReconcileFailed",
                action: "Reconcile",
                note: long,
            },
        )
        .await
        .expect("a long note is recorded");
    let failed = events(&client)
        .await
        .into_iter()
        .find(|e| e.reason.as_deref() == Some("ReconcileFailed"))
        .expect("the ReconcileFailed Event");
    let note = failed.note.expect("note");
    assert!(note.starts_with("ZooKeeper said: xxx") && note.len() <= NOTE_LIMIT);
}

/// Two Events of one series written at once (a failed reconcile's Event still on its way, slow
/// API server, while the retry fails again): one Event, counted twice, not two Events.
#[tokio::test]
async fn repeats_written_at_once_count_on_one_event() {
    let emulator = kube_emulator::Emulator::start().await.expect("emulator");
    let client = client_of(&emulator).await;
    let recorder = Recorder::new(
        client.clone(),
        "pureflash-operator",
        "op-0",
        ClusterClock::default(),
    );
    emulator.faults().inject(
        kube_emulator::Matcher::verb("create").on("events"),
        kube_emulator::Action::Delay(std::time::Duration::from_millis(500)),
        1,
    );
    let store = store_1();
    let (first, second) = tokio::join!(
        recorder.publish(&store, restarted("reconcile failed: timeout")),
        recorder.publish(&store, restarted("reconcile failed: timeout")),
    );
    first.expect("first");
    second.expect("second");
    let listed = events(&client).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(
        listed[0].series.as_ref().map(|series| series.count),
        Some(2)
    );
}
