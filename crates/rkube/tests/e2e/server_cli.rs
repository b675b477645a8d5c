//! Black-box tests of the `rkube` binary: help text, start-up on both store backends, and the
//! one-line errors for bad data dirs and unreachable etcd.

use crate::common;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{RKUBE, Server};
use rkube_store::testing::EtcdProcess;

/// `GET /readyz` through kubectl (HTTPS with the admin credentials): (ok, body or error).
fn readyz(server: &Server) -> (bool, String) {
    let out = server.kubectl_with(common::KUBECTL_133, &["get", "--raw", "/readyz"]);
    let text = if out.status.success() {
        out.stdout
    } else {
        out.stderr
    };
    (
        out.status.success(),
        String::from_utf8_lossy(&text).into_owned(),
    )
}

/// Runs `rkube server` expecting it to fail; returns its output.
fn run_failing(args: &[&str], timeout: Duration) -> Output {
    let start = Instant::now();
    let mut child = Command::new(RKUBE)
        .args(args)
        .env("RUST_LOG", "off")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            panic!("rkube {args:?} did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "rkube {args:?} should fail");
    out
}

/// The error line rkube printed (logging is off, so stderr is just the error).
fn error_line(out: &Output) -> String {
    let text = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(text.lines().count(), 1, "one line: {text}");
    assert!(text.starts_with("error: "), "{text}");
    text
}

#[test]
fn help_explains_every_server_flag() {
    let out = Command::new(RKUBE)
        .args(["server", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--data-dir",
        "--bind-address",
        "--https-listen-port",
        "--write-kubeconfig",
        "--datastore-endpoint",
        "--disable-agent",
        "[default: /var/lib/rkube]",
        "[default: 6443]",
    ] {
        assert!(help.contains(flag), "server --help lacks {flag}:\n{help}");
    }
    let top = Command::new(RKUBE).arg("--help").output().unwrap();
    let top = String::from_utf8(top.stdout).unwrap();
    assert!(top.contains("server"), "{top}");
}

#[test]
fn embedded_server_is_ready_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(dir.path(), &[]);
    assert_eq!(readyz(&server), (true, "ok".to_string()));
    assert!(dir.path().join("db").join("wal.log").exists());
    assert!(dir.path().join("tls").join("ca.crt").exists());
    assert!(dir.path().join("admin.kubeconfig").exists());

    let status = Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "server ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "clean exit on SIGTERM: {exit:?}");
}

#[test]
fn second_server_on_the_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let first = Server::start_in(dir.path(), &[]);
    let data_dir = dir.path().to_str().unwrap();
    let out = run_failing(
        &["server", "--data-dir", data_dir, "--https-listen-port", "0"],
        Duration::from_secs(10),
    );
    let line = error_line(&out);
    assert!(line.contains("in use by another rkube process"), "{line}");
    assert!(line.contains(&format!("pid {}", first.pid())), "{line}");
    assert!(line.contains("--data-dir"), "names the fix: {line}");
    // The first server is unaffected.
    assert!(readyz(&first).0);
}

#[test]
fn corrupt_store_is_reported_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    std::fs::create_dir_all(&db).unwrap();
    let file = db.join("snapshot");
    let garbage = b"this is not a store ".repeat(1000);
    std::fs::write(&file, &garbage).unwrap();
    let out = run_failing(
        &[
            "server",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--https-listen-port",
            "0",
        ],
        Duration::from_secs(10),
    );
    let line = error_line(&out);
    assert!(line.contains("corrupt"), "{line}");
    assert!(
        line.contains(&file.display().to_string()),
        "names the file: {line}"
    );
    assert!(
        std::fs::read(&file).unwrap() == garbage,
        "file left untouched"
    );
}

#[test]
fn data_dir_that_is_a_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let out = run_failing(
        &[
            "server",
            "--data-dir",
            file.to_str().unwrap(),
            "--https-listen-port",
            "0",
        ],
        Duration::from_secs(10),
    );
    let line = error_line(&out);
    assert!(line.contains("data dir"), "{line}");
    assert!(line.contains("--data-dir"), "{line}");
    assert_eq!(std::fs::read(&file).unwrap(), b"x");
}

#[test]
fn unreachable_etcd_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    // A port nothing listens on: bind one, then free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let out = run_failing(
        &[
            "server",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--https-listen-port",
            "0",
            "--datastore-endpoint",
            &endpoint,
        ],
        Duration::from_secs(20),
    );
    let line = error_line(&out);
    assert!(line.contains(&endpoint), "{line}");
    assert!(
        line.contains("--datastore-endpoint"),
        "names the fix: {line}"
    );
    assert!(line.contains("unavailable"), "{line}");
}

#[test]
fn bad_datastore_endpoint_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_failing(
        &[
            "server",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--datastore-endpoint",
            "http://no-port-here",
        ],
        Duration::from_secs(10),
    );
    let line = error_line(&out);
    assert!(line.contains("no port"), "{line}");
}

#[test]
fn etcd_backed_server_is_ready() {
    let etcd = EtcdProcess::start().expect("start etcd");
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_in(dir.path(), &["--datastore-endpoint", &etcd.endpoint]);
    assert_eq!(readyz(&server), (true, "ok".to_string()));
    assert!(
        !dir.path().join("db").exists(),
        "no embedded store when etcd is used"
    );
    // When etcd goes away, the server stops reporting ready.
    drop(etcd);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (ready, body) = readyz(&server);
        if !ready {
            assert!(body.contains("etcd failed"), "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "still ready without etcd");
        std::thread::sleep(Duration::from_millis(200));
    }
}
