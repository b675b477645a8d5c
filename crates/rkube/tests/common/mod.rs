//! Shared harness for black-box tests: a `rkube server` process on a free port in a temp data
//! dir, killed on drop, and helpers to run the real kubectl against it.

#![allow(dead_code, unreachable_pub)] // each test binary uses a different part of the harness

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The binary under test.
pub const RKUBE: &str = env!("CARGO_BIN_EXE_rkube");
/// kubectl 1.33 (the version rkube emulates).
pub const KUBECTL_133: &str = "/usr/bin/kubectl";
/// An old kubectl that must keep working.
pub const KUBECTL_127: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.27";

/// A running `rkube server`, killed (by PID) on drop.
pub struct Server {
    pub child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// The admin kubeconfig it wrote.
    pub kubeconfig: PathBuf,
    /// Keeps the data dir alive (None when the caller owns it).
    _dir: Option<tempfile::TempDir>,
}

impl Server {
    /// Starts a server with its own temp data dir.
    pub fn start(extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Self::start_in(dir.path(), extra);
        s._dir = Some(dir);
        s
    }

    /// Starts `rkube server` on a free port in `data_dir` and waits for its ready line.
    pub fn start_in(data_dir: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(RKUBE)
            .arg("server")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--https-listen-port", "0", "--disable-agent"])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn rkube");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("rkube server ready")
                    && let Some(rest) = line.split("local=").nth(1)
                {
                    let addr = rest.split_whitespace().next().unwrap().to_string();
                    let _ = tx.send(addr);
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => addr,
            Err(_) => {
                // Never leave the process behind when start-up fails.
                let _ = child.kill();
                let _ = child.wait();
                panic!("server did not report ready within 30 s");
            }
        };
        Server {
            child,
            addr,
            kubeconfig: data_dir.join("admin.kubeconfig"),
            _dir: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Runs kubectl (`bin`) with this server's kubeconfig.
    pub fn kubectl_with(&self, bin: &str, args: &[&str]) -> Output {
        assert!(
            Path::new(bin).exists(),
            "{bin} is missing: these tests drive the real kubectl"
        );
        Command::new(bin)
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env_remove("KUBECTL_EXTERNAL_DIFF")
            .output()
            .expect("run kubectl")
    }

    /// kubectl 1.33; panics with its output unless it succeeds; returns stdout.
    pub fn kubectl(&self, args: &[&str]) -> String {
        ok(self.kubectl_with(KUBECTL_133, args), args)
    }

    /// kubectl 1.33 expected to fail; returns stderr.
    pub fn kubectl_err(&self, args: &[&str]) -> String {
        let out = self.kubectl_with(KUBECTL_133, args);
        assert!(
            !out.status.success(),
            "kubectl {args:?} should fail:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// A kube-rs client for this server.
    pub async fn client(&self) -> kube::Client {
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .unwrap();
        kube::Client::try_from(config).unwrap()
    }
}

/// Stdout of a successful command, or a panic showing what it printed.
pub fn ok(out: Output, args: &[&str]) -> String {
    assert!(
        out.status.success(),
        "kubectl {args:?} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes `text` to a temp file and returns its path (kept alive by the returned guard).
pub fn manifest(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("manifest.yaml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

/// A running `rkube sim`, killed (by PID) on drop; its log lines are collected.
pub struct Sim {
    pub child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Sim {
    pub fn start(server: &Server, args: &[&str]) -> Sim {
        let mut child = Command::new(RKUBE)
            .arg("sim")
            .arg("--kubeconfig")
            .arg(&server.kubeconfig)
            .args(args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn rkube sim");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Sim {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a log line containing `text`; panics with the log so far otherwise.
    pub fn wait_for_log(&mut self, text: &str, timeout: Duration) -> String {
        if let Some(line) = self.seen.iter().find(|l| l.contains(text)) {
            return line.clone();
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(text) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => panic!(
                    "sim never logged {text:?} within {timeout:?}; log:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Sends SIGINT (by PID) and waits for a clean exit.
    pub fn interrupt(&mut self) {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "sim exited with {status}");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "sim did not exit within 15 s of SIGINT"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `kubectl ARGS -o json`, parsed.
pub fn json(server: &Server, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    serde_json::from_str(&server.kubectl(&all)).unwrap()
}

/// Polls `check` every 200 ms until it returns Some, or panics after `timeout`.
pub fn eventually<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}
