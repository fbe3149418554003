//! Property tests: parsers never panic, the record format round-trips, torn tails are cut.

use aiops_core::alertmanager::Notification;
use aiops_webhook::log::{self, Decoded};
use proptest::prelude::*;

proptest! {
    #[test]
    fn the_payload_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = Notification::parse(&bytes);
    }

    #[test]
    fn the_payload_parser_never_panics_on_near_valid_json(
        version in prop_oneof![Just("\"4\"".to_owned()), Just("4".to_owned()), Just("null".to_owned()), "\"[0-9]{0,3}\""],
        group in ".{0,40}",
        alerts in 0usize..4,
        cut in 0usize..600,
    ) {
        let alert = r#"{"status":"firing","labels":{},"annotations":{},"startsAt":"2026-01-01T00:00:00Z","endsAt":"0001-01-01T00:00:00Z","fingerprint":"f"}"#;
        let list = vec![alert; alerts].join(",");
        let body = format!(r#"{{"version":{version},"groupKey":{},"status":"firing","alerts":[{list}]}}"#, serde_json::to_string(&group).unwrap());
        let _ = Notification::parse(body.as_bytes());
        let cut = cut.min(body.len());
        let _ = Notification::parse(&body.as_bytes()[..cut]);
    }

    #[test]
    fn the_record_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = log::decode(&bytes);
        let _ = log::decode_all(&bytes);
        let mut with_magic = vec![0xA1];
        with_magic.extend_from_slice(&bytes);
        let _ = log::decode(&with_magic);
    }

    #[test]
    fn records_round_trip(payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..20), first in 0u64..1_000_000) {
        let mut buf = Vec::new();
        for (i, p) in payloads.iter().enumerate() {
            log::encode(first + i as u64, p, &mut buf);
        }
        let (records, used) = log::decode_all(&buf);
        prop_assert_eq!(used, buf.len());
        prop_assert_eq!(records.len(), payloads.len());
        for (i, r) in records.iter().enumerate() {
            prop_assert_eq!(r.seq, first + i as u64);
            prop_assert_eq!(&r.payload, &payloads[i]);
        }
    }

    #[test]
    fn a_flipped_bit_is_never_taken_for_a_record(payload in proptest::collection::vec(any::<u8>(), 1..200), at in any::<proptest::sample::Index>(), bit in 0u8..8) {
        let mut buf = Vec::new();
        log::encode(7, &payload, &mut buf);
        let i = at.index(buf.len());
        buf[i] ^= 1 << bit;
        match log::decode(&buf) {
            Decoded::Record { seq, payload_at, len } => {
                // Only a flip that leaves seq and payload intact could pass the checksum.
                prop_assert!(seq == 7 && buf[payload_at..len] == payload[..], "corruption accepted");
            }
            Decoded::Incomplete | Decoded::Corrupt(_) => {}
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn recovery_cuts_a_torn_tail_and_appending_goes_on(n in 1usize..30, cut in any::<proptest::sample::Index>(), garbage in proptest::collection::vec(any::<u8>(), 0..64)) {
        let dir = tempfile::tempdir().unwrap();
        let (mut app, _) = log::recover(dir.path(), 1).unwrap();
        let payloads: Vec<Vec<u8>> = (0..n).map(|i| format!("notification {i}").repeat(i % 5 + 1).into_bytes()).collect();
        for p in &payloads {
            app.write([p.as_slice()]).unwrap();
        }
        app.sync().unwrap();
        drop(app);
        let seg = log::list_segments(dir.path()).unwrap().pop().unwrap().1;
        let mut bytes = std::fs::read(&seg).unwrap();
        let keep = cut.index(bytes.len() + 1);
        bytes.truncate(keep);
        bytes.extend_from_slice(&garbage);
        std::fs::write(&seg, &bytes).unwrap();

        let (mut app, rec) = log::recover(dir.path(), 1).unwrap();
        let kept = rec.next_seq - 1;
        prop_assert!(kept as usize <= n);
        let mut reader = log::Reader::new(dir.path(), 1);
        let got = reader.read(kept, 1000).unwrap();
        prop_assert_eq!(got.len() as u64, kept);
        for r in &got {
            prop_assert_eq!(&r.payload, &payloads[r.seq as usize - 1]);
        }
        // Every record that was fully before the cut survived.
        let mut whole = 0;
        let mut at = 0;
        for p in &payloads {
            at += log::HEADER_LEN + p.len();
            if at <= keep { whole += 1; }
        }
        prop_assert!(kept as usize >= whole);
        let seq = app.write([&b"after recovery"[..]]).unwrap();
        app.sync().unwrap();
        prop_assert_eq!(seq, kept + 1);
        let mut reader = log::Reader::new(dir.path(), seq);
        let again = reader.read(seq, 10).unwrap();
        prop_assert_eq!(&again[0].payload, &b"after recovery".to_vec());
    }
}
