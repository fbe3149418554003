//! Bounded request sizes and robustness against garbage, in-process.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::support::{self, get, parse_response, raw};

#[test]
fn an_oversized_body_is_413() {
    let app = support::app();
    let a = app.addr();
    // Declared too large: refused before the body is read.
    let head = "POST /api/orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1048576\r\nConnection: close\r\n\r\n";
    let r = parse_response(&raw(a, head.as_bytes()).unwrap());
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(r.error().contains("65536"), "{}", r.text());

    // Chunked, so only counting stops it.
    let mut req = b"POST /api/orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    for _ in 0..20 {
        req.extend_from_slice(format!("{:x}\r\n", 8192).as_bytes());
        req.extend_from_slice(&[b' '; 8192]);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let r = parse_response(&raw(a, &req).unwrap());
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(get(a, "/healthz").status, 200);
    let m = support::scrape(a);
    assert_eq!(
        m.value(
            "http_requests_total",
            &[
                ("method", "POST"),
                ("route", "/api/orders"),
                ("status", "413")
            ]
        ),
        2.0
    );
}

#[test]
fn oversized_headers_are_431() {
    let app = support::app();
    let a = app.addr();
    let big = "x".repeat(20 * 1024);
    let req = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\nConnection: close\r\n\r\n");
    let r = parse_response(&raw(a, req.as_bytes()).unwrap());
    assert_eq!(r.status, 431);
    assert_eq!(get(a, "/healthz").status, 200);
}

#[test]
fn garbage_does_not_stop_the_server() {
    let app = support::app();
    let a = app.addr();
    let mut noise = Vec::new();
    let mut x: u32 = 0x1234_5678;
    for _ in 0..4096 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        noise.push(x as u8);
    }
    let long_line = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(64 * 1024));
    let payloads: Vec<&[u8]> = vec![
        &noise,
        b"\0\0\0\0\0\0\0\0\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
        b"HELLO\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Header Without Colon\r\n\r\n",
        long_line.as_bytes(),
    ];
    for p in payloads {
        let out = raw(a, p).expect("the server answers or closes, it does not hang");
        if !out.is_empty() {
            let r = parse_response(&out);
            assert!(
                (400..500).contains(&r.status) || r.status == 505,
                "status {}",
                r.status
            );
        }
    }
    // A client that sends half a head and goes away.
    let mut s = TcpStream::connect(a).unwrap();
    s.write_all(b"GET / HTT").unwrap();
    drop(s);
    // A client that says nothing is cut off by the header timeout, not kept forever.
    let mut idle = TcpStream::connect(a).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut buf = [0u8; 64];
    let started = std::time::Instant::now();
    let _ = idle.read(&mut buf);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "idle connection held {:?}",
        started.elapsed()
    );

    assert_eq!(get(a, "/healthz").status, 200);
    assert_eq!(get(a, "/").status, 200);
    support::scrape(a);
}
