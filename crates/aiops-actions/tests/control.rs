//! The control socket: requests, progress streaming, errors, and who may use it.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use aiops_actions::control::{ClientError, ControlClient, ErrorCode, ReplyData, Request};
use aiops_actions::{Gate, Proposal, Refusal};
use aiops_core::Config;
use aiops_core::config::ActionKind;

use crate::support::*;

/// A gate serving its control socket on a runtime of its own; stops on drop (and waits, bounded,
/// for the server to finish, so that what it writes at shutdown is on disk).
struct Served {
    gate: Arc<Gate>,
    socket: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<()>>,
    rt: Option<tokio::runtime::Runtime>,
}

impl Served {
    fn start(config: &Config) -> Self {
        let gate = Arc::new(gate(config));
        let socket = config.webhook.control_socket.clone();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let g = gate.clone();
        let path = socket.clone();
        let served = rt.spawn(async move {
            g.serve_control(&path, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        // Wait (bounded) for the socket to accept.
        for _ in 0..500 {
            if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Self {
            gate,
            socket,
            stop: Some(tx),
            served: Some(served),
            rt: Some(rt),
        }
    }

    fn client(&self) -> ControlClient {
        ControlClient::new(&self.socket, "aiops-operators")
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(rt) = self.rt.take() {
            if let Some(served) = self.served.take() {
                let _ = rt.block_on(async {
                    tokio::time::timeout(std::time::Duration::from_secs(10), served).await
                });
            }
            rt.shutdown_timeout(std::time::Duration::from_secs(5));
        }
    }
}

fn propose(g: &Gate, group: &str) -> String {
    match g
        .propose(&alert(group, UNIT), &diagnosis(UNIT, ActionKind::Restart))
        .unwrap()
    {
        Proposal::Pending { id, .. } => id.to_string(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn list_show_approve_and_reject_over_the_socket_as_root() {
    let dir = tempdir();
    let sup = Supervisor::start(dir.path());
    let s = Served::start(&config(dir.path(), &sup.socket));
    let id = propose(&s.gate, "sock");
    let c = s.client();
    let ReplyData::Actions(list) = c.call(&Request::List { all: false }, &mut |_| {}).unwrap()
    else {
        panic!()
    };
    assert_eq!(list.len(), 1);
    let ReplyData::Show(show) = c
        .call(&Request::Show { id: id.clone() }, &mut |_| {})
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(show.evidence_now.len(), 1);
    assert!(
        show.evidence_now[0]
            .error
            .as_deref()
            .unwrap_or("")
            .contains("cannot reach Prometheus")
    );
    // Stale (nothing to confirm against) without --force: refused with a hint.
    match c.call(
        &Request::Approve {
            id: None,
            force: false,
        },
        &mut |_| {},
    ) {
        Err(ClientError::Remote {
            code: ErrorCode::Refused,
            reason: Some(Refusal::Stale),
            hint: Some(h),
            ..
        }) => assert!(h.contains("--force")),
        other => panic!("{other:?}"),
    }
    let mut progress = Vec::new();
    let ReplyData::Finished(f) = c
        .call(
            &Request::Approve {
                id: None,
                force: true,
            },
            &mut |m| progress.push(m.to_owned()),
        )
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(f.action.id.as_str(), id);
    assert!(
        progress
            .iter()
            .any(|m| m.starts_with("approved by root (uid 0)")),
        "{progress:?}"
    );
    assert!(
        progress
            .iter()
            .any(|m| m.contains("restarting aiops-demo-app.service")),
        "{progress:?}"
    );
    assert_eq!(sup.restarts(), 1);
    // The approver is the peer's uid, recorded by name.
    assert_eq!(
        f.action
            .entered(aiops_actions::ActionState::Approved)
            .unwrap()
            .by
            .name,
        "root"
    );
    match c.call(
        &Request::Reject {
            id,
            reason: "late".into(),
        },
        &mut |_| {},
    ) {
        Err(ClientError::Remote {
            code: ErrorCode::Refused,
            reason: Some(Refusal::AlreadyHandled),
            message,
            ..
        }) => {
            assert!(message.contains("approved by root"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    match c.call(
        &Request::Show {
            id: "deadbeef".into(),
        },
        &mut |_| {},
    ) {
        Err(ClientError::Remote {
            code: ErrorCode::NotFound,
            message,
            ..
        }) => assert!(message.contains("aiops pending"), "{message}"),
        other => panic!("{other:?}"),
    }
    let ReplyData::AuditVerify(r) = c.call(&Request::AuditVerify, &mut |_| {}).unwrap() else {
        panic!()
    };
    assert!(r.ok, "{r:?}");
}

#[test]
fn garbage_and_oversized_requests_get_errors_and_the_server_stays_up() {
    use std::io::{BufRead, BufReader, Write};
    let dir = tempdir();
    let sup = Supervisor::start(dir.path());
    let s = Served::start(&config(dir.path(), &sup.socket));
    for payload in [
        b"not json\n".to_vec(),
        b"{\"op\":\"format_disk\"}\n".to_vec(),
        vec![b'x'; 70 * 1024],
    ] {
        let mut stream = std::os::unix::net::UnixStream::connect(&s.socket).unwrap();
        let _ = stream.write_all(&payload);
        let mut line = String::new();
        BufReader::new(&stream).read_line(&mut line).unwrap();
        assert!(line.contains("\"code\":\"bad_request\""), "{line}");
    }
    assert!(
        s.client()
            .call(&Request::List { all: true }, &mut |_| {})
            .is_ok()
    );
}

#[test]
fn a_missing_socket_says_what_to_do() {
    let dir = tempdir();
    let err = ControlClient::new(&dir.path().join("nope.sock"), "aiops-operators")
        .call(&Request::List { all: false }, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("is aiops-webhook running? (systemctl status aiops-webhook)"),
        "{err}"
    );
}

const CLIENT_ENV: &str = "AIOPS_ACTIONS_TEST_CONTROL_SOCKET";

/// Not a test on its own: the child of `a_non_operator_is_refused_by_uid`, run as another user.
#[test]
fn client_child() {
    let Some(path) = std::env::var_os(CLIENT_ENV) else {
        return;
    };
    let r = ControlClient::new(Path::new(&path), "x").call(
        &Request::Approve {
            id: None,
            force: true,
        },
        &mut |_| {},
    );
    match r {
        Ok(_) => println!("RESULT ok"),
        Err(e) => println!("RESULT {e}"),
    }
}

/// This test binary again, as `nobody`, running only the child test `child` against `socket`.
fn child_as_nobody(child: &str, socket: &Path) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args(["--exact", child, "--nocapture", "--test-threads=1"])
        .env(CLIENT_ENV, socket)
        .uid(65534)
        .gid(65534);
    c
}

/// As root: a served gate whose operators group is `root`, so that `nobody` is refused. `None`
/// (after saying why) when not root. Drops in order: the server, the supervisor, the directory.
fn served_refusing_nobody() -> Option<(Served, Supervisor, tempfile::TempDir)> {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: connecting as another uid needs root");
        return None;
    }
    let dir = tempdir();
    let sup = Supervisor::start(dir.path());
    let mut c = config(dir.path(), &sup.socket);
    // nobody is not in group root.
    c.webhook.operators_group = "root".into();
    Some((Served::start(&c), sup, dir))
}

fn run_as_nobody(socket: &Path) -> Option<String> {
    let out = child_as_nobody("control::client_child", socket)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    stdout
        .lines()
        .find_map(|l| l.split_once("RESULT ").map(|(_, r)| r.to_owned()))
}

#[test]
fn a_non_operator_is_refused_by_uid() {
    let Some((s, sup, _dir)) = served_refusing_nobody() else {
        return;
    };
    propose(&s.gate, "nobody");
    let result = run_as_nobody(&s.socket).expect("the child printed a result");
    assert!(
        result.contains("nobody (uid 65534) may not approve")
            && result.contains("usermod -aG root nobody"),
        "{result}"
    );
    assert_eq!(sup.restarts(), 0);
    let audit = s.gate.audit_log().tail(100).unwrap();
    let refusal = audit.iter().find(|e| e.event == "refused").unwrap();
    assert_eq!(refusal.actor.uid, Some(65534));
    assert!(
        refusal
            .detail
            .as_deref()
            .unwrap()
            .contains("unauthorized approve")
    );
    drop(s);

    // The same user in the operators group (here: its primary group) may approve.
    let dir = tempdir();
    let sup = Supervisor::start(dir.path());
    let mut c = config(dir.path(), &sup.socket);
    c.webhook.operators_group = "nogroup".into();
    let s = Served::start(&c);
    propose(&s.gate, "member");
    let result = run_as_nobody(&s.socket).expect("the child printed a result");
    assert_eq!(result, "ok");
    assert_eq!(sup.restarts(), 1);
}

const ABUSER_ENV: &str = "AIOPS_ACTIONS_TEST_ABUSER";

/// Not a test on its own: the abuser of the two tests below, run as `nobody`. `idle N`: opens
/// N connections, prints `ready K`, sends nothing and holds them until stdin closes (at most
/// 120 s). `spam SECS`: four threads send `list` requests for SECS seconds; prints `answered K`.
#[test]
fn abuser_child() {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::os::unix::net::UnixStream;
    use std::time::{Duration, Instant};
    let Some(spec) = std::env::var_os(ABUSER_ENV) else {
        return;
    };
    let socket = PathBuf::from(std::env::var_os(CLIENT_ENV).unwrap());
    let spec = spec.into_string().unwrap();
    let (mode, n) = spec.split_once(' ').unwrap();
    let n: u64 = n.parse().unwrap();
    match mode {
        "idle" => {
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut held = Vec::new();
            while (held.len() as u64) < n && Instant::now() < deadline {
                if let Ok(s) = UnixStream::connect(&socket) {
                    held.push(s);
                }
            }
            println!("ready {}", held.len());
            std::io::stdout().flush().unwrap();
            let (tx, rx) = std::sync::mpsc::channel::<()>();
            std::thread::spawn(move || {
                let _ = std::io::stdin().read(&mut [0u8; 1]);
                let _ = tx.send(());
            });
            let _ = rx.recv_timeout(Duration::from_secs(120));
            drop(held);
        }
        "spam" => {
            let deadline = Instant::now() + Duration::from_secs(n);
            let threads: Vec<_> = (0..4)
                .map(|_| {
                    let socket = socket.clone();
                    std::thread::spawn(move || {
                        let mut answered = 0u64;
                        while Instant::now() < deadline {
                            let Ok(mut s) = UnixStream::connect(&socket) else {
                                continue;
                            };
                            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                            if s.write_all(b"{\"op\":\"list\"}\n").is_err() {
                                continue;
                            }
                            let mut line = String::new();
                            if BufReader::new(&s).read_line(&mut line).unwrap_or(0) > 0
                                && line.contains("not in group")
                            {
                                answered += 1;
                            }
                        }
                        answered
                    })
                })
                .collect();
            let answered: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
            println!("answered {answered}");
        }
        other => panic!("unknown abuser mode {other}"),
    }
}

fn abuser_as_nobody(socket: &Path, spec: &str) -> std::process::Child {
    child_as_nobody("control::abuser_child", socket)
        .env(ABUSER_ENV, spec)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// The number after `prefix` in the child's stdout.
fn read_number(out: &mut impl std::io::BufRead, prefix: &str) -> u64 {
    for _ in 0..1000 {
        let mut line = String::new();
        if out.read_line(&mut line).unwrap() == 0 {
            break;
        }
        // The harness may print "test control::abuser_child ... " in front.
        if let Some((_, n)) = line.split_once(prefix) {
            return n.trim().parse().unwrap();
        }
    }
    panic!("the abuser printed no {prefix:?} line")
}

#[test]
fn idle_connections_of_another_uid_do_not_stall_root() {
    use std::io::BufRead;
    use std::time::{Duration, Instant};
    let Some((s, _sup, _dir)) = served_refusing_nobody() else {
        return;
    };
    let mut abuser = abuser_as_nobody(&s.socket, "idle 300");
    let mut out = std::io::BufReader::new(abuser.stdout.take().unwrap());
    let held = read_number(&mut out, "ready ");
    assert!(held > 0, "the abuser connected");
    let mut client = s.client();
    client.read_timeout = Duration::from_secs(20);
    let t = Instant::now();
    let listed = client.call(&Request::List { all: false }, &mut |_| {});
    let waited = t.elapsed();
    // Root's own idle connection is closed soon, with a reason.
    let t_idle = Instant::now();
    let idle = std::os::unix::net::UnixStream::connect(&s.socket).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut line = String::new();
    let _ = std::io::BufReader::new(&idle).read_line(&mut line);
    let idle_closed_after = t_idle.elapsed();
    drop(abuser.stdin.take());
    let _ = abuser.kill();
    let _ = abuser.wait();
    assert!(listed.is_ok(), "{listed:?}");
    assert!(
        waited < Duration::from_secs(3),
        "root's list took {waited:?} while uid 65534 held {held} idle connections"
    );
    assert!(line.contains("no request within 1 s"), "{line}");
    assert!(
        idle_closed_after < Duration::from_secs(3),
        "{idle_closed_after:?}"
    );
}

#[test]
fn refusals_of_another_uid_are_paced_and_summarised_in_the_audit() {
    use aiops_actions::admission::{AUDITED_PER_WINDOW, REFUSAL_BURST, REFUSALS_PER_SEC};
    let Some((s, _sup, _dir)) = served_refusing_nobody() else {
        return;
    };
    let secs = 3;
    let abuser = abuser_as_nobody(&s.socket, &format!("spam {secs}"));
    let output = abuser.wait_with_output().unwrap();
    let answered = read_number(&mut output.stdout.as_slice(), "answered ");
    // Root is served meanwhile and afterwards.
    assert!(
        s.client()
            .call(&Request::List { all: true }, &mut |_| {})
            .is_ok()
    );
    let gate = s.gate.clone();
    drop(s); // writes the summary of the window in progress
    let bound = REFUSAL_BURST + REFUSALS_PER_SEC * (secs as f64 + 1.0);
    assert!(
        answered > 0 && answered as f64 <= bound,
        "answered {answered} refusals in {secs} s (pace bound {bound})"
    );
    let audit = gate.audit_log().tail(100_000).unwrap();
    let nobody: Vec<_> = audit
        .iter()
        .filter(|e| e.actor.uid == Some(65534) && e.event == "refused")
        .collect();
    let one_by_one = nobody
        .iter()
        .filter(|e| {
            e.detail
                .as_deref()
                .unwrap_or("")
                .starts_with("unauthorized list")
        })
        .count() as u64;
    let summaries: Vec<&str> = nobody
        .iter()
        .filter_map(|e| e.detail.as_deref())
        .filter(|d| d.contains("more refused requests"))
        .collect();
    assert!(
        one_by_one <= AUDITED_PER_WINDOW,
        "{one_by_one} refusals audited one by one"
    );
    assert_eq!(summaries.len(), 1, "{summaries:?}");
    let summarised: u64 = summaries[0]
        .split(' ')
        .next()
        .unwrap()
        .replace(',', "")
        .parse()
        .unwrap();
    assert!(
        one_by_one + summarised >= answered,
        "{one_by_one} + {summarised} < {answered}: {summaries:?}"
    );
    assert!(gate.audit_verify().ok);
}
