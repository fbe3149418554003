//! Bad inputs get the right status and message, every rejection is counted, and the receiver
//! keeps serving; stalled clients are cut off.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aiops_webhook::NoAdvisor;
use serde_json::json;

use crate::support::*;

struct Case {
    name: &'static str,
    path: &'static str,
    content_type: Option<&'static str>,
    token: Option<&'static str>,
    body: Vec<u8>,
    status: u16,
    message: &'static str,
    reason: &'static str,
}

#[test]
fn bad_inputs_are_rejected_precisely_and_the_receiver_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start();
    let r = Receiver::start(dir.path(), Some(&sink.url()), Arc::new(NoAdvisor));
    let good = payload("Good", &[alert("f1")]).to_string().into_bytes();
    let v3 = payload("Good", &[alert("f1")])
        .to_string()
        .replace("\"version\":\"4\"", "\"version\":\"3\"");
    let mut no_fp = payload("Good", &[alert("f1")]);
    no_fp["alerts"][0]["fingerprint"] = json!("");
    let cases = vec![
        Case {
            name: "no token",
            path: "/",
            content_type: Some("application/json"),
            token: None,
            body: good.clone(),
            status: 401,
            message: "missing bearer token",
            reason: "unauthorized",
        },
        Case {
            name: "wrong token",
            path: "/",
            content_type: Some("application/json"),
            token: Some("nope"),
            body: good.clone(),
            status: 401,
            message: "wrong bearer token",
            reason: "unauthorized",
        },
        Case {
            name: "no content type",
            path: "/",
            content_type: None,
            token: Some(TOKEN),
            body: good.clone(),
            status: 415,
            message: "content type must be application/json, got none",
            reason: "unsupported_media_type",
        },
        Case {
            name: "form content type",
            path: "/",
            content_type: Some("application/x-www-form-urlencoded"),
            token: Some(TOKEN),
            body: good.clone(),
            status: 415,
            message: "got application/x-www-form-urlencoded",
            reason: "unsupported_media_type",
        },
        Case {
            name: "version 3",
            path: "/",
            content_type: Some("application/json"),
            token: Some(TOKEN),
            body: v3.into_bytes(),
            status: 400,
            message: "unsupported payload version \"3\"",
            reason: "bad_version",
        },
        Case {
            name: "truncated JSON",
            path: "/",
            content_type: Some("application/json"),
            token: Some(TOKEN),
            body: good[..good.len() / 2].to_vec(),
            status: 400,
            message: "not valid JSON",
            reason: "malformed",
        },
        Case {
            name: "binary garbage",
            path: "/",
            content_type: Some("application/json"),
            token: Some(TOKEN),
            body: vec![0xff, 0x00, 0xfe],
            status: 400,
            message: "not valid JSON",
            reason: "malformed",
        },
        Case {
            name: "empty fingerprint",
            path: "/",
            content_type: Some("application/json"),
            token: Some(TOKEN),
            body: no_fp.to_string().into_bytes(),
            status: 400,
            message: "alerts[0].fingerprint is empty",
            reason: "malformed",
        },
        Case {
            name: "other path",
            path: "/api/v1/alerts",
            content_type: Some("application/json"),
            token: Some(TOKEN),
            body: good.clone(),
            status: 404,
            message: "no such endpoint",
            reason: "not_found",
        },
    ];
    for (i, c) in cases.iter().enumerate() {
        let before = metric(
            r.addr,
            &format!(
                "aiops_notifications_rejected_total{{reason=\"{}\"}}",
                c.reason
            ),
        );
        let a = post_raw(r.addr, c.path, c.content_type, c.token, &c.body);
        assert_eq!(a.status, c.status, "{}: {:?}", c.name, a.body);
        let msg = a.body["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{}: error shape {:?}", c.name, a.body));
        assert!(
            msg.contains(c.message),
            "{}: {msg:?} should contain {:?}",
            c.name,
            c.message
        );
        assert!(
            a.body["hint"].is_string(),
            "{}: every error has a hint",
            c.name
        );
        let after = metric(
            r.addr,
            &format!(
                "aiops_notifications_rejected_total{{reason=\"{}\"}}",
                c.reason
            ),
        );
        assert_eq!(
            after,
            before + 1.0,
            "{}: counted under {}",
            c.name,
            c.reason
        );
        // And a valid request still succeeds afterwards.
        let ok = post(r.addr, &payload(&format!("After{i}"), &[alert("f1")]));
        assert_eq!(
            ok.status, 200,
            "{}: the receiver keeps serving: {:?}",
            c.name, ok.body
        );
    }
    // Nothing rejected ever reaches the outbox: exactly the valid ones are delivered.
    wait_until(
        Duration::from_secs(10),
        "the valid notifications to be delivered",
        || sink.delivered().len() == cases.len(),
    );
    let texts = sink.texts();
    assert!(texts.iter().all(|t| t.contains("After")), "{texts:?}");
    let (status, _) = get(r.addr, "/healthz");
    assert_eq!(status, 200);
}

#[test]
fn a_correct_token_is_accepted_with_any_scheme_case() {
    let dir = tempfile::tempdir().unwrap();
    let r = Receiver::start(dir.path(), None, Arc::new(NoAdvisor));
    let body = payload("Tok", &[alert("f1")]).to_string();
    let resp = client()
        .post(format!("http://{}/", r.addr))
        .header("content-type", "application/json; charset=utf-8")
        .header("authorization", format!("bearer {TOKEN}"))
        .send(body.as_bytes())
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let a = post_raw(
        r.addr,
        "/",
        Some("application/json"),
        Some(&format!("{TOKEN}x")),
        body.as_bytes(),
    );
    assert_eq!(a.status, 401);
    // GET on the notification path is 405 with Allow.
    let resp = client().get(format!("http://{}/", r.addr)).call().unwrap();
    assert_eq!(resp.status().as_u16(), 405);
    assert_eq!(resp.headers().get("allow").unwrap(), "POST");
}

#[test]
fn stalled_clients_are_cut_off_and_the_receiver_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let r = Receiver::start(dir.path(), None, Arc::new(NoAdvisor));

    // Half the headers, then silence: the connection is closed after header_timeout_secs = 1.
    let mut s = TcpStream::connect(r.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Ty")
        .unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "closed after {waited:?}"
    );
    let text = String::from_utf8_lossy(&buf);
    assert!(buf.is_empty() || text.starts_with("HTTP/1.1 408"), "{text}");

    // Headers complete, body stalls half-way: 408 after body_timeout_secs = 1.
    let mut s = TcpStream::connect(r.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{{\"version\": \"4\","
    );
    s.write_all(head.as_bytes()).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).unwrap();
    let waited = started.elapsed();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("not received within 1 s"), "{text}");
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "answered after {waited:?}"
    );
    assert_eq!(
        metric(
            r.addr,
            "aiops_notifications_rejected_total{reason=\"timeout\"}"
        ),
        1.0
    );

    let ok = post(r.addr, &payload("AfterStall", &[alert("f1")]));
    assert_eq!(ok.status, 200);
}
