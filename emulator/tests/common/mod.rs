//! Helpers shared by the emulator's integration tests: raw HTTP against the
//! in-process router, and reading watch streams line by line.
#![allow(dead_code)]

use std::time::Duration;

use axum::body::Body;
use ferrolb_emulator::Emulator;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

/// A raw response: status, headers, parsed JSON body.
pub struct Resp {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Value,
}

pub async fn call(emu: &Emulator, method: &str, uri: &str, content_type: &str, body: impl Into<Body>) -> Resp {
    let req = http::Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", content_type)
        .body(body.into())
        .unwrap();
    let resp = emu.router().oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    Resp { status, headers, body }
}

pub async fn get(emu: &Emulator, uri: &str) -> Resp {
    call(emu, "GET", uri, "application/json", Body::empty()).await
}

pub async fn post(emu: &Emulator, uri: &str, v: &Value) -> Resp {
    call(emu, "POST", uri, "application/json", v.to_string()).await
}

pub async fn put(emu: &Emulator, uri: &str, v: &Value) -> Resp {
    call(emu, "PUT", uri, "application/json", v.to_string()).await
}

pub async fn patch(emu: &Emulator, uri: &str, ct: &str, v: &Value) -> Resp {
    call(emu, "PATCH", uri, ct, v.to_string()).await
}

pub async fn delete(emu: &Emulator, uri: &str) -> Resp {
    call(emu, "DELETE", uri, "application/json", Body::empty()).await
}

/// An open watch: yields one parsed event per line.
pub struct Watch {
    body: Body,
    buf: Vec<u8>,
}

pub async fn watch(emu: &Emulator, uri: &str) -> (u16, Watch) {
    let req = http::Request::builder().method("GET").uri(uri).body(Body::empty()).unwrap();
    let resp = emu.router().oneshot(req).await.unwrap();
    (resp.status().as_u16(), Watch { body: resp.into_body(), buf: Vec::new() })
}

impl Watch {
    /// The next event, `None` when the stream ends, panics after `within` without one.
    pub async fn next_within(&mut self, within: Duration) -> Option<Value> {
        tokio::time::timeout(within, self.next()).await.expect("no watch event in time")
    }

    pub async fn next(&mut self) -> Option<Value> {
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                return Some(serde_json::from_slice(&line).expect("watch lines are JSON"));
            }
            match self.body.frame().await {
                Some(Ok(f)) => {
                    if let Ok(d) = f.into_data() {
                        self.buf.extend_from_slice(&d);
                    }
                }
                _ => return None,
            }
        }
    }

    /// Next event that is not a bookmark.
    pub async fn next_change(&mut self) -> Value {
        loop {
            let ev = self.next_within(Duration::from_secs(10)).await.expect("stream ended");
            if ev["type"] != "BOOKMARK" {
                return ev;
            }
        }
    }
}

pub fn cm(name: &str, labels: Value) -> Value {
    serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels}, "data": {"k": "v"}})
}

pub fn rv(v: &Value) -> u64 {
    v["metadata"]["resourceVersion"].as_str().expect("resourceVersion").parse().expect("numeric rv")
}

pub fn pool_crd() -> Value {
    serde_json::to_value(ferrolb_crds::crds()[0].clone()).unwrap()
}
