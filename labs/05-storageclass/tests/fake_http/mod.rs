//! What every fake API server in these tests does first with a request the
//! kube client sent: split it, and read its body as JSON (Null when empty).

use http::Request;
use http::request::Parts;
use kube::client::Body;
use serde_json::Value;

pub async fn read_json(request: Request<Body>) -> (Parts, Value) {
    let (parts, body) = request.into_parts();
    let bytes = body.collect_bytes().await.unwrap();
    let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
    (parts, body)
}
