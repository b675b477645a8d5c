//! The node agent against a real containerd: `rkube server` with its agent (own data dir,
//! own containerd, a unique bridge, cluster CIDR and cgroup parent) runs busybox pods built
//! with `rkube image`. Needs root, containerd, runc, the CNI plugins and busybox-static
//! (scripts/lib.sh installs them); otherwise the test says why and skips.
//!
//! The harness ([`AgentServer`]) cleans up whatever the run left, even on failure: sandboxes
//! (through CRI), the server and its containerd (by PID), mounts under the data dir, the
//! bridge and the cgroup parent.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rkube_kubelet::cri::{RemoteRuntime, Runtime};
use serde_json::Value;

use crate::common::{KUBECTL_133, RKUBE, eventually, ok};

/// Why this machine cannot run the test, if it cannot.
fn missing_prerequisite() -> Option<String> {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().next().map(str::to_string))
        })
        .unwrap_or_default();
    if uid != "0" {
        return Some("not root (containerd and CNI need root)".into());
    }
    for (path, package) in [
        ("/usr/bin/containerd", "containerd"),
        ("/usr/bin/ctr", "containerd"),
        ("/usr/sbin/runc", "runc"),
        ("/usr/lib/cni/bridge", "containernetworking-plugins"),
        ("/usr/lib/cni/host-local", "containernetworking-plugins"),
        ("/bin/busybox", "busybox-static"),
    ] {
        if !Path::new(path).exists() {
            return Some(format!("{path} is missing (apt-get install {package})"));
        }
    }
    None
}

/// `rkube server` with its node agent, torn down completely on drop.
struct AgentServer {
    child: Option<Child>,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
    bridge: String,
    cgroup_parent: String,
    node: String,
}

impl AgentServer {
    fn data(&self) -> &Path {
        self.dir.path()
    }

    fn socket(&self) -> PathBuf {
        self.data().join("containerd/containerd.sock")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.data().join("server.log")).unwrap_or_default()
    }

    fn start() -> AgentServer {
        let dir = tempfile::tempdir().unwrap();
        let n = std::process::id();
        let images = dir.path().join("agent/images");
        for (kind, file) in [("busybox", "busybox.tar"), ("pause", "pause.tar")] {
            let out = Command::new(RKUBE)
                .args(["image", kind, "--out"])
                .arg(images.join(file))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "rkube image {kind}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let bridge = format!("rkt{}", n % 100_000);
        let cgroup_parent = format!("/rkube-e2e-{n}");
        let node = format!("e2e-node-{n}");
        let cluster_cidr = format!("10.{}.0.0/16", 200 + n % 50);
        let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
        let child = Command::new(RKUBE)
            .arg("server")
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--https-listen-port", "0"])
            .args(["--node-name", &node, "--cni-bridge", &bridge])
            .args([
                "--cgroup-parent",
                &cgroup_parent,
                "--cluster-cidr",
                &cluster_cidr,
            ])
            .args(["--node-ip", "127.0.0.1"])
            .env("RUST_LOG", "info,rkube_kubelet=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn rkube server");
        let server = AgentServer {
            child: Some(child),
            kubeconfig: dir.path().join("admin.kubeconfig"),
            dir,
            bridge,
            cgroup_parent,
            node,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !server.log().contains("rkube server ready") {
            assert!(
                Instant::now() < deadline,
                "server not ready in 30 s:\n{}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    fn kubectl(&self, args: &[&str]) -> String {
        let out = Command::new(KUBECTL_133)
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .output()
            .expect("run kubectl");
        ok(out, args)
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        serde_json::from_str(&self.kubectl(&all)).unwrap()
    }

    fn apply(&self, yaml: &str) {
        let mut child = Command::new(KUBECTL_133)
            .args(["apply", "-f", "-"])
            .env("KUBECONFIG", &self.kubeconfig)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(yaml.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success(), "kubectl apply failed");
    }

    /// Stops the server with SIGTERM (the agent stops its containerd), SIGKILL after 10 s.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// containerd's PID from the agent's log line `started containerd pid=N`.
    fn containerd_pid(&self) -> Option<u32> {
        let log = self.log();
        let line = log
            .lines()
            .rev()
            .find(|l| l.contains("started containerd"))?;
        let rest = line.split("pid=").nth(1)?;
        rest.split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    }
}

/// Removes every sandbox of the test's containerd (a failed run may leave some).
async fn remove_all_sandboxes(socket: &Path) {
    let Ok(rt) = RemoteRuntime::connect(socket).await else {
        return;
    };
    for sb in rt.list_pod_sandbox(None).await.unwrap_or_default() {
        let _ = rt.stop_pod_sandbox(&sb.id).await;
        let _ = rt.remove_pod_sandbox(&sb.id).await;
    }
}

/// Removes `dir` and everything below it from every cgroup hierarchy (deepest first).
fn remove_cgroup_tree(rel: &str) {
    fn rmdir_tree(d: &Path) {
        if let Ok(entries) = std::fs::read_dir(d) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    rmdir_tree(&e.path());
                }
            }
        }
        let _ = std::fs::remove_dir(d);
    }
    let rel = rel.trim_start_matches('/');
    let mut roots = vec![PathBuf::from("/sys/fs/cgroup")];
    if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
        roots.extend(entries.flatten().map(|e| e.path()));
    }
    for r in roots {
        let d = r.join(rel);
        if d.is_dir() {
            rmdir_tree(&d);
        }
    }
}

/// Mount points at or below `dir`, deepest first.
fn mounts_under(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let prefix = dir.to_string_lossy().to_string();
    let mut points: Vec<String> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|p| p.starts_with(&prefix))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    points
}

impl Drop for AgentServer {
    fn drop(&mut self) {
        if self.child.is_some() {
            let socket = self.socket();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            // The test thread may be a tokio runtime thread: run the clean-up elsewhere.
            let _ = std::thread::spawn(move || rt.block_on(remove_all_sandboxes(&socket))).join();
        }
        let containerd = self.containerd_pid();
        self.stop();
        if let Some(pid) = containerd
            && Path::new(&format!("/proc/{pid}")).exists()
        {
            let cmdline =
                std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if cmdline.contains(&*self.data().to_string_lossy()) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
        for point in mounts_under(self.data()) {
            let _ = Command::new("umount").args(["-l", &point]).status();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .stderr(Stdio::null())
            .status();
        remove_cgroup_tree(&self.cgroup_parent);
        if std::thread::panicking() {
            eprintln!("--- server log ---\n{}", self.log());
        }
    }
}

/// `kubectl get pods -w -o json`: every version of every pod, as it arrives (polling could
/// miss short-lived states such as ErrImagePull). The kubectl process is killed on drop.
struct PodWatch {
    child: Child,
    rx: std::sync::mpsc::Receiver<(Instant, Value)>,
}

impl PodWatch {
    fn start(server: &AgentServer) -> PodWatch {
        let mut child = Command::new(KUBECTL_133)
            .args(["get", "pods", "-w", "-o", "json"])
            .env("KUBECONFIG", &server.kubeconfig)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let stream = serde_json::Deserializer::from_reader(std::io::BufReader::new(stdout));
            for v in stream.into_iter::<Value>().map_while(Result::ok) {
                if tx.send((Instant::now(), v)).is_err() {
                    return;
                }
            }
        });
        PodWatch { child, rx }
    }

    /// The first version of pod `name` that satisfies `check`, and when it arrived.
    fn wait(
        &self,
        what: &str,
        name: &str,
        timeout: Duration,
        mut check: impl FnMut(&Value) -> bool,
    ) -> (Instant, Value) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok((at, pod)) if pod["metadata"]["name"] == name && check(&pod) => {
                    return (at, pod);
                }
                Ok(_) => {}
                Err(_) => panic!("timed out waiting for {what}"),
            }
        }
    }
}

impl Drop for PodWatch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pod_yaml(name: &str, image: &str, command: &str, restart: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  restartPolicy: {restart}
  terminationGracePeriodSeconds: 2
  containers:
  - name: main
    image: {image}
    imagePullPolicy: IfNotPresent
    command: ["/bin/sh", "-c", "{command}"]
    env:
    - name: GREETING
      value: hello-from-env
    resources:
      limits:
        memory: 64Mi
        cpu: 500m
"#
    )
}

/// Does `ip` lie in the IPv4 `cidr`?
fn in_cidr(ip: &str, cidr: &str) -> bool {
    let (base, bits) = cidr.split_once('/').unwrap();
    let bits: u32 = bits.parse().unwrap();
    let a: std::net::Ipv4Addr = ip.parse().unwrap();
    let b: std::net::Ipv4Addr = base.parse().unwrap();
    let mask = if bits == 0 {
        0
    } else {
        u32::MAX << (32 - bits)
    };
    u32::from(a) & mask == u32::from(b) & mask
}

#[test]
fn image_build_rejects_short_names_and_missing_dirs() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(RKUBE)
        .args(["image", "build", "--name", "busybox", "--from"])
        .arg(dir.path())
        .arg("--out")
        .arg(dir.path().join("x.tar"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("fully qualified"));
    let out = Command::new(RKUBE)
        .args([
            "image",
            "build",
            "--name",
            "localhost/x:1",
            "--from",
            "/nonexistent-rootfs",
            "--out",
        ])
        .arg(dir.path().join("x.tar"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent-rootfs"));
}

#[test]
fn runs_real_pods_on_containerd() {
    if let Some(why) = missing_prerequisite() {
        eprintln!("SKIPPED kubelet::runs_real_pods_on_containerd: {why}");
        return;
    }
    let server = AgentServer::start();

    // The node registers, gets its pod CIDR from the node IPAM controller and turns Ready.
    let node = eventually(
        "the node to register with a pod CIDR",
        Duration::from_secs(30),
        || {
            let out = Command::new(KUBECTL_133)
                .args(["get", "node", &server.node, "-o", "json"])
                .env("KUBECONFIG", &server.kubeconfig)
                .output()
                .unwrap();
            let node: Value = serde_json::from_slice(&out.stdout).ok()?;
            node["spec"]["podCIDR"].as_str()?;
            Some(node)
        },
    );
    let cidr = node["spec"]["podCIDR"].as_str().unwrap().to_string();
    let conditions = node["status"]["conditions"].as_array().unwrap();
    assert!(
        conditions
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True"),
        "{node}"
    );
    assert!(
        node["status"]["nodeInfo"]["containerRuntimeVersion"]
            .as_str()
            .unwrap()
            .starts_with("containerd://"),
        "{node}"
    );
    assert_eq!(node["status"]["capacity"]["pods"], "110");
    eventually("the node lease", Duration::from_secs(15), || {
        let out = Command::new(KUBECTL_133)
            .args(["get", "lease", "-n", "kube-node-lease", &server.node])
            .env("KUBECONFIG", &server.kubeconfig)
            .output()
            .unwrap();
        out.status.success().then_some(())
    });
    // The conflist uses that CIDR and the test's bridge.
    let conflist =
        std::fs::read_to_string(server.data().join("agent/cni/net.d/10-rkube.conflist")).unwrap();
    assert!(
        conflist.contains(&cidr) && conflist.contains(&server.bridge),
        "{conflist}"
    );

    // 1. A busybox pod that echoes and sleeps runs, with an IP in the node's CIDR.
    let watch = PodWatch::start(&server);
    std::thread::sleep(Duration::from_millis(500));
    let created = Instant::now();
    server.apply(&pod_yaml(
        "echo",
        "localhost/busybox:1",
        "trap 'echo got TERM; exit 0' TERM; echo $GREETING; while :; do sleep 1; done",
        "Always",
    ));
    let (at, pod) = watch.wait("pod echo Running", "echo", Duration::from_secs(60), |p| {
        p["status"]["phase"] == "Running" && p["status"]["podIP"].is_string()
    });
    let status = pod["status"].clone();
    eprintln!(
        "kubelet e2e: pod created (kubectl apply started) -> Running seen by a watch in {:?}",
        at - created
    );
    let ip = status["podIP"].as_str().unwrap();
    assert!(in_cidr(ip, &cidr), "pod IP {ip} outside node CIDR {cidr}");
    assert_eq!(status["hostIP"], "127.0.0.1");
    assert_eq!(status["qosClass"], "Guaranteed");
    assert!(status["startTime"].is_string());
    let cs = &status["containerStatuses"][0];
    assert!(cs["state"]["running"]["startedAt"].is_string(), "{status}");
    assert!(
        cs["containerID"]
            .as_str()
            .unwrap()
            .starts_with("containerd://"),
        "{status}"
    );
    assert!(
        !cs["imageID"].as_str().unwrap_or_default().is_empty(),
        "{status}"
    );
    assert_eq!(cs["ready"], true);
    for t in [
        "PodScheduled",
        "Initialized",
        "ContainersReady",
        "Ready",
        "PodReadyToStartContainers",
    ] {
        let c = status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == t);
        assert_eq!(
            c.map(|c| c["status"].clone()),
            Some(Value::from("True")),
            "{t}: {status}"
        );
    }
    // Its limits reached the container's cgroup (<parent>/pod<uid>/<container id>).
    let uid = pod["metadata"]["uid"].as_str().unwrap();
    let id = cs["containerID"]
        .as_str()
        .unwrap()
        .trim_start_matches("containerd://");
    let rel = format!(
        "{}/pod{uid}/{id}",
        server.cgroup_parent.trim_start_matches('/')
    );
    let v1 = Path::new("/sys/fs/cgroup/memory").join(&rel);
    let (memory, cpu) = if v1.exists() {
        (
            std::fs::read_to_string(v1.join("memory.limit_in_bytes")).unwrap(),
            std::fs::read_to_string(
                Path::new("/sys/fs/cgroup/cpu")
                    .join(&rel)
                    .join("cpu.cfs_quota_us"),
            )
            .unwrap(),
        )
    } else {
        let v2 = Path::new("/sys/fs/cgroup").join(&rel);
        (
            std::fs::read_to_string(v2.join("memory.max")).unwrap(),
            std::fs::read_to_string(v2.join("cpu.max")).unwrap(),
        )
    };
    assert_eq!(memory.trim(), "67108864");
    assert!(cpu.trim().starts_with("50000"), "cpu quota {cpu}");
    // The container's output reaches its log file (env values work).
    let logs = server.data().join("agent/pods");
    eventually(
        "the echo in the container log",
        Duration::from_secs(10),
        || {
            let mut found = false;
            for e in walk(&logs) {
                let mut text = String::new();
                if std::fs::File::open(&e)
                    .and_then(|mut f| f.read_to_string(&mut text))
                    .is_ok()
                {
                    found |= text.contains("hello-from-env");
                }
            }
            found.then_some(())
        },
    );

    // 2. A missing image: ErrImagePull with the runtime's message, then ImagePullBackOff.
    let reason = |p: &Value| {
        p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    server.apply(&pod_yaml(
        "missing",
        "localhost/does-not-exist:1",
        "true",
        "Always",
    ));
    let (_, pod) = watch.wait("ErrImagePull", "missing", Duration::from_secs(60), |p| {
        reason(p) == "ErrImagePull"
    });
    let status = &pod["status"];
    let message = status["containerStatuses"][0]["state"]["waiting"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(message.contains("does-not-exist"), "{status}");
    assert_eq!(status["phase"], "Pending");
    watch.wait(
        "ImagePullBackOff",
        "missing",
        Duration::from_secs(30),
        |p| reason(p) == "ImagePullBackOff",
    );

    // 3. A container that exits 1 under restartPolicy Always restarts, then backs off.
    server.apply(&pod_yaml(
        "crash",
        "localhost/busybox:1",
        "exit 1",
        "Always",
    ));
    let (_, pod) = watch.wait("CrashLoopBackOff", "crash", Duration::from_secs(60), |p| {
        let restarts = p["status"]["containerStatuses"][0]["restartCount"]
            .as_i64()
            .unwrap_or(0);
        restarts >= 1 && reason(p) == "CrashLoopBackOff"
    });
    let status = &pod["status"];
    let cs = &status["containerStatuses"][0];
    assert_eq!(cs["lastState"]["terminated"]["exitCode"], 1, "{status}");
    assert_eq!(status["phase"], "Running", "{status}");
    drop(watch);

    // 4. Deleting everything leaves no pods and no sandboxes.
    server.kubectl(&["delete", "pods", "--all", "--wait=false"]);
    eventually("all pods gone", Duration::from_secs(60), || {
        let list = server.json(&["get", "pods"]);
        list["items"]
            .as_array()
            .is_some_and(|a| a.is_empty())
            .then_some(())
    });
    // The echo pod's shell got SIGTERM (graceful stop) and said so in its log.
    let log = walk(&logs)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("default_echo_"))
        .map(|p| std::fs::read_to_string(p).unwrap_or_default())
        .collect::<String>();
    assert!(
        log.contains("got TERM"),
        "no graceful stop in the log:\n{log}"
    );
    let socket = server.socket();
    let (sandboxes, containers) = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let cri = RemoteRuntime::connect(&socket).await.unwrap();
            (
                cri.list_pod_sandbox(None).await.unwrap(),
                cri.list_containers(None).await.unwrap(),
            )
        })
    })
    .join()
    .unwrap();
    assert!(sandboxes.is_empty(), "sandboxes left: {sandboxes:?}");
    assert!(containers.is_empty(), "containers left: {containers:?}");
    drop(server);
}

/// Files below `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
