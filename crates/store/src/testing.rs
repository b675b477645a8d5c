//! Test helpers: throwaway etcd servers.
//!
//! [`EtcdProcess::start`] runs a single-member etcd on free loopback ports with a fresh
//! temporary data dir and waits until it serves requests. Dropping it kills the server and
//! removes the data dir. The binary is `$RKUBE_ETCD_BIN`, or `etcd` on `PATH`.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// How long [`EtcdProcess::start`] waits for etcd to become healthy.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How often `start` retries with new ports when etcd could not bind the ones it was given
/// (another process took them between our check and etcd's bind).
const START_ATTEMPTS: usize = 3;
/// The request limit: a 1.5 MiB value plus its key and the request's framing.
const MAX_REQUEST_BYTES: u64 = 2 * 1024 * 1024;
/// The backend quota: 4 GiB.
const QUOTA_BACKEND_BYTES: u64 = 4 * 1024 * 1024 * 1024;
/// The member name.
const NAME: &str = "rkube-test";

/// An etcd server on free loopback ports with a temporary data dir, killed (by PID) and
/// removed on drop.
///
/// Besides `Drop`, a small watchdog (`sh`) kills the server if this process dies without
/// dropping it (a static that is never dropped, an abort, a SIGKILL of the test binary): it
/// waits for the end of a pipe only this process holds.
pub struct EtcdProcess {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    child: Child,
    watchdog: Option<(Child, ChildStdin)>,
    data_dir: PathBuf,
    log_path: PathBuf,
    // Dropped (removed) after the server is dead: fields drop after `Drop::drop` ran.
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for EtcdProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdProcess")
            .field("endpoint", &self.endpoint)
            .field("pid", &self.child.id())
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

impl EtcdProcess {
    /// Starts etcd and waits (up to 20 s) until it answers a health check. On failure the error
    /// carries the end of etcd's log.
    pub fn start() -> io::Result<Self> {
        let bin = find_etcd()?;
        let mut attempt = 1;
        loop {
            match Self::start_once(&bin) {
                Ok(process) => return Ok(process),
                Err((err, port_taken)) if port_taken && attempt < START_ATTEMPTS => {
                    attempt += 1;
                    tracing::debug!(error = %err, "etcd could not bind its ports; retrying");
                }
                Err((err, _)) => return Err(err),
            }
        }
    }

    /// One start. The flag says whether it failed because a port was taken.
    fn start_once(bin: &Path) -> Result<Self, (io::Error, bool)> {
        let no_retry = |err: io::Error| (err, false);
        let (client_port, peer_port) = free_ports().map_err(no_retry)?;
        let dir = tempfile::Builder::new()
            .prefix("rkube-etcd-")
            .tempdir()
            .map_err(no_retry)?;
        let data_dir = dir.path().join("data");
        let log_path = dir.path().join("etcd.log");
        let log = File::create(&log_path).map_err(no_retry)?;
        let log_err = log.try_clone().map_err(no_retry)?;

        let client_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let mut cmd = Command::new(bin);
        cmd.arg("--name")
            .arg(NAME)
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--listen-client-urls")
            .arg(&client_url)
            .arg("--advertise-client-urls")
            .arg(&client_url)
            .arg("--listen-peer-urls")
            .arg(&peer_url)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer_url)
            .arg("--initial-cluster")
            .arg(format!("{NAME}={peer_url}"))
            .arg("--initial-cluster-state")
            .arg("new")
            .arg("--initial-cluster-token")
            .arg(format!("rkube-test-{client_port}"))
            .arg("--max-request-bytes")
            .arg(MAX_REQUEST_BYTES.to_string())
            .arg("--quota-backend-bytes")
            .arg(QUOTA_BACKEND_BYTES.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err));
        // etcd also reads its flags from ETCD_* variables: keep the caller's out of it.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("ETCD_") {
                cmd.env_remove(name);
            }
        }
        let child = cmd.spawn().map_err(|err| {
            no_retry(io::Error::new(
                err.kind(),
                format!("cannot run etcd ({}): {err}", bin.display()),
            ))
        })?;
        let mut process = EtcdProcess {
            endpoint: client_url,
            watchdog: None,
            child,
            data_dir,
            log_path,
            _dir: dir,
        };
        process.watchdog = spawn_watchdog(process.child.id(), &process.data_dir);

        // From here on, dropping `process` kills etcd.
        match process.wait_healthy(client_port) {
            Ok(()) => {
                tracing::debug!(endpoint = %process.endpoint, pid = process.pid(), "etcd is up");
                Ok(process)
            }
            Err(err) => {
                let tail = process.log_tail(40);
                let port_taken = tail.contains("address already in use");
                Err((
                    io::Error::new(
                        err.kind(),
                        format!(
                            "etcd ({}) did not start: {err}\n--- last lines of {} ---\n{tail}",
                            bin.display(),
                            process.log_path.display()
                        ),
                    ),
                    port_taken,
                ))
            }
        }
    }

    /// Waits until the client port answers `/health` with `"health":"true"`, or etcd exits.
    fn wait_healthy(&mut self, client_port: u16) -> io::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, client_port));
        let mut last: String;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Err(io::Error::other(format!("etcd exited with {status}")));
            }
            match health(addr) {
                Ok(true) => return Ok(()),
                Ok(false) => last = "etcd answers but is not healthy yet".into(),
                Err(err) => last = err.to_string(),
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "not healthy after {} s (last check: {last})",
                        START_TIMEOUT.as_secs()
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's data directory (inside the temporary directory removed on drop).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The last `lines` lines of the server's log.
    fn log_tail(&self, lines: usize) -> String {
        match std::fs::read(&self.log_path) {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                let all: Vec<&str> = text.lines().collect();
                all[all.len().saturating_sub(lines)..].join("\n")
            }
            Err(err) => format!("(cannot read the log: {err})"),
        }
    }
}

impl Drop for EtcdProcess {
    fn drop(&mut self) {
        // The watchdog first: once etcd is reaped its PID may be reused, and the watchdog must
        // not kill whatever gets it.
        if let Some((mut watchdog, stdin)) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
            drop(stdin);
        }
        if let Err(err) = self.child.kill() {
            // Already exited (and reaped): nothing to kill.
            tracing::debug!(error = %err, "killing etcd");
        }
        let _ = self.child.wait();
        // `_dir` is removed when the fields drop, after this.
    }
}

/// `$RKUBE_ETCD_BIN`, or `etcd` on `PATH`.
fn find_etcd() -> io::Result<PathBuf> {
    if let Some(bin) = std::env::var_os("RKUBE_ETCD_BIN").filter(|b| !b.is_empty()) {
        let bin = PathBuf::from(bin);
        return if bin.is_file() {
            Ok(bin)
        } else {
            Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("RKUBE_ETCD_BIN={} is not a file", bin.display()),
            ))
        };
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("etcd"))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                "etcd not found: install it (Debian: etcd-server) or set RKUBE_ETCD_BIN",
            )
        })
}

/// Two distinct free loopback ports. Both listeners are held until both ports are known.
fn free_ports() -> io::Result<(u16, u16)> {
    let a = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let b = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok((a.local_addr()?.port(), b.local_addr()?.port()))
}

/// One `GET /health` over HTTP/1.0: whether etcd reports itself healthy.
fn health(addr: SocketAddr) -> io::Result<bool> {
    let timeout = Duration::from_millis(500);
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut response = Vec::new();
    // HTTP/1.0: the server closes the connection after the response.
    stream.take(64 * 1024).read_to_end(&mut response)?;
    let response = String::from_utf8_lossy(&response);
    let compact: String = response.chars().filter(|c| !c.is_whitespace()).collect();
    Ok(compact.contains(r#""health":"true""#))
}

/// Starts `sh` waiting for EOF on a pipe whose write end only this process holds; at EOF (this
/// process is gone) it kills etcd, if `pid` still is that etcd (its command line names the
/// data dir). Best effort: `None` when `sh` cannot be started.
fn spawn_watchdog(pid: u32, data_dir: &Path) -> Option<(Child, ChildStdin)> {
    const SCRIPT: &str = r#"while read -r _; do :; done
grep -qaF -- "$2" "/proc/$1/cmdline" 2>/dev/null && kill -9 "$1" 2>/dev/null
exit 0"#;
    let spawned = Command::new("sh")
        .arg("-c")
        .arg(SCRIPT)
        .arg("rkube-etcd-watchdog")
        .arg(pid.to_string())
        .arg(data_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    match spawned {
        Ok(mut child) => match child.stdin.take() {
            Some(stdin) => Some((child, stdin)),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                None
            }
        },
        Err(err) => {
            tracing::warn!(error = %err, "cannot start the etcd watchdog");
            None
        }
    }
}
