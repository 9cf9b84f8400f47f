use super::*;
use kube::api::{DeleteParams, ListParams};

fn client() -> kube::Client {
    let emu = ferrolb_emulator::Emulator::new(ferrolb_emulator::Config::default());
    kube::Client::new(emu.router(), "default")
}

fn web() -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Service".into()),
        namespace: Some("default".into()),
        name: Some("web".into()),
        uid: Some("uid-web".into()),
        ..Default::default()
    }
}

fn warning(note: &str) -> Event {
    Event {
        type_: EventType::Warning,
        reason: "AllocationFailed".into(),
        note: Some(note.into()),
        action: "Allocate".into(),
        secondary: None,
    }
}

async fn listed(c: &kube::Client, ns: &str) -> Vec<K8sEvent> {
    Api::<K8sEvent>::namespaced(c.clone(), ns).list(&ListParams::default()).await.unwrap().items
}

#[tokio::test]
async fn a_repeat_bumps_the_series_and_a_new_note_is_a_new_event() {
    let c = client();
    let events = Events::new(c.clone(), "ferrolb-controller", "pod-a");
    events.publish(&warning("pool p is exhausted"), &web()).await.unwrap();
    let first = listed(&c, "default").await;
    assert_eq!(first.len(), 1);
    let e = &first[0];
    assert_eq!(e.reason.as_deref(), Some("AllocationFailed"));
    assert_eq!(e.type_.as_deref(), Some("Warning"));
    assert_eq!(e.action.as_deref(), Some("Allocate"));
    assert_eq!(e.note.as_deref(), Some("pool p is exhausted"));
    assert_eq!(e.reporting_controller.as_deref(), Some("ferrolb-controller"));
    assert_eq!(e.reporting_instance.as_deref(), Some("pod-a"));
    assert_eq!(e.regarding.as_ref().and_then(|r| r.uid.as_deref()), Some("uid-web"));
    assert!(e.event_time.is_some());
    assert!(e.series.is_none());

    events.publish(&warning("pool p is exhausted"), &web()).await.unwrap();
    events.publish(&warning("pool p is exhausted"), &web()).await.unwrap();
    let after = listed(&c, "default").await;
    assert_eq!(after.len(), 1, "repeats are one Event");
    assert_eq!(after[0].series.as_ref().map(|s| s.count), Some(3));

    events.publish(&warning("pool q is exhausted"), &web()).await.unwrap();
    let mut other = web();
    other.uid = Some("uid-web-2".into());
    events.publish(&warning("pool p is exhausted"), &other).await.unwrap();
    assert_eq!(listed(&c, "default").await.len(), 3, "another note or another object is another Event");
    assert_eq!(events.remembered(), 3);
}

#[tokio::test]
async fn a_repeat_of_a_deleted_event_creates_it_again() {
    let c = client();
    let events = Events::new(c.clone(), "ferrolb-controller", "pod-a");
    events.publish(&warning("x"), &web()).await.unwrap();
    let api = Api::<K8sEvent>::namespaced(c.clone(), "default");
    let name = listed(&c, "default").await[0].metadata.name.clone().unwrap();
    api.delete(&name, &DeleteParams::default()).await.unwrap();
    events.publish(&warning("x"), &web()).await.unwrap();
    let now = listed(&c, "default").await;
    assert_eq!(now.len(), 1);
    assert!(now[0].series.is_none(), "a fresh Event, not a series on a missing one");
    assert_ne!(now[0].metadata.name.as_deref(), Some(name.as_str()));
}

#[tokio::test]
async fn cluster_scoped_objects_get_their_events_in_default() {
    let c = client();
    let events = Events::new(c.clone(), "ferrolb-speaker", "node-1");
    let node = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Node".into()),
        name: Some("node-1".into()),
        ..Default::default()
    };
    events.publish(&warning("no interface"), &node).await.unwrap();
    let got = listed(&c, "default").await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].metadata.name.as_deref().map(|n| n.starts_with("node-1.")), Some(true));
}

#[tokio::test]
async fn a_refused_create_is_an_error() {
    let c = client();
    let events = Events::new(c.clone(), "ferrolb-controller", "pod-a");
    let mut bad = web();
    bad.namespace = Some("Not_A_Namespace".into());
    let e = events.publish(&warning("x"), &bad).await;
    assert!(e.is_err(), "{e:?}");
    assert_eq!(events.remembered(), 0, "nothing remembered for an Event that was not created");
}

#[tokio::test]
async fn a_note_over_a_kibibyte_is_cut_to_what_the_api_server_accepts() {
    let c = client();
    let events = Events::new(c.clone(), "ferrolb-controller", "pod-a");
    let long = "pool p: ".to_string() + &"é".repeat(900);
    events.publish(&warning(&long), &web()).await.unwrap();
    let note = listed(&c, "default").await[0].note.clone().unwrap();
    assert!(note.len() <= MAX_NOTE_BYTES, "{} bytes", note.len());
    assert!(note.starts_with("pool p: éé") && note.ends_with(" …"), "{note}");
}
