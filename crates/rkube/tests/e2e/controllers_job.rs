//! The job, TTL-after-finished and cronjob controllers against a real `rkube server` with
//! simulated nodes (`rkube sim`), driven with kubectl 1.33: Jobs run their pods to
//! completion within `parallelism`, fail at `backoffLimit` or `activeDeadlineSeconds`,
//! track Indexed completions, suspend and resume, and are deleted after their TTL;
//! CronJobs create Jobs on schedule, honour Forbid and prune their history.

use crate::common;

use std::collections::BTreeMap;
use std::io::BufReader;
use std::process::{Command, Stdio};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use common::{KUBECTL_133, Server, Sim, eventually, json, manifest};
use serde_json::Value;

/// A server with two simulated nodes.
fn cluster() -> (Server, Sim) {
    let server = Server::start(&[]);
    let mut sim = Sim::start(&server, &["--nodes", "2"]);
    sim.wait_for_log("registered 2 nodes", Duration::from_secs(60));
    (server, sim)
}

fn apply(server: &Server, yaml: &str) {
    let (_dir, path) = manifest(yaml);
    server.kubectl(&["apply", "-f", path.to_str().unwrap()]);
}

/// A Job whose pods exit with `exit` after `secs` seconds (`None`: they run until
/// deleted); `spec` adds JobSpec fields (YAML lines indented by two).
fn job_yaml(name: &str, exit: Option<i32>, secs: u32, spec: &str) -> String {
    let annotations = match exit {
        Some(code) => format!(
            "      annotations:\n        sim.rkube.io/exit-code: \"{code}\"\n        sim.rkube.io/run-seconds: \"{secs}\"\n"
        ),
        None => String::new(),
    };
    format!(
        "apiVersion: batch/v1
kind: Job
metadata:
  name: {name}
spec:
{spec}
  template:
    metadata:
{annotations}      labels:
        app: {name}
    spec:
      restartPolicy: Never
      containers:
      - name: work
        image: localhost/busybox:1
"
    )
}

fn job(server: &Server, name: &str) -> Value {
    json(server, &["get", "job", name])
}

/// The condition `type_` of the Job, if `True`.
fn condition(job: &Value, type_: &str) -> Option<Value> {
    job["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_ && c["status"] == "True")
        .cloned()
}

fn wait_condition(server: &Server, name: &str, type_: &str, timeout: Duration) -> Value {
    eventually(&format!("job {name} {type_}"), timeout, || {
        let j = job(server, name);
        condition(&j, type_).map(|_| j)
    })
}

fn pods_of(server: &Server, job: &str) -> Vec<Value> {
    json(server, &["get", "pods", "-l", &format!("job-name={job}")])["items"]
        .as_array()
        .unwrap()
        .clone()
}

/// Reasons of the events about `kind/name`.
fn event_reasons(server: &Server, kind: &str, name: &str) -> Vec<String> {
    let events = json(
        server,
        &[
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.kind={kind},involvedObject.name={name}"),
        ],
    );
    events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["reason"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn wait_event(server: &Server, kind: &str, name: &str, reason: &str, timeout: Duration) {
    eventually(&format!("event {reason} on {kind}/{name}"), timeout, || {
        event_reasons(server, kind, name)
            .iter()
            .any(|r| r == reason)
            .then_some(())
    });
}

/// Watches the Job's pods with `kubectl get -w` and keeps the largest number of active
/// ones seen at once.
struct ActiveSampler {
    child: std::process::Child,
    max: Arc<Mutex<usize>>,
    seen: Arc<Mutex<usize>>,
}

impl ActiveSampler {
    fn start(server: &Server, job: &str) -> Self {
        let mut child = Command::new(KUBECTL_133)
            .args([
                "get",
                "pods",
                "-l",
                &format!("job-name={job}"),
                "-w",
                "--output-watch-events",
                "-o",
                "json",
            ])
            .env("KUBECONFIG", &server.kubeconfig)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let max = Arc::new(Mutex::new(0));
        let seen = Arc::new(Mutex::new(0));
        let (m, s) = (max.clone(), seen.clone());
        std::thread::spawn(move || {
            let mut active: BTreeMap<String, bool> = BTreeMap::new();
            let events =
                serde_json::Deserializer::from_reader(BufReader::new(stdout)).into_iter::<Value>();
            for ev in events.map_while(Result::ok) {
                let pod = &ev["object"];
                let name = pod["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let phase = pod["status"]["phase"].as_str().unwrap_or_default();
                let is_active = ev["type"] != "DELETED"
                    && !matches!(phase, "Succeeded" | "Failed")
                    && pod["metadata"]["deletionTimestamp"].is_null();
                active.insert(name, is_active);
                let n = active.values().filter(|a| **a).count();
                let mut max = m.lock();
                *max = (*max).max(n);
                *s.lock() = active.len();
            }
        });
        Self { child, max, seen }
    }

    fn max_active(&self) -> usize {
        *self.max.lock()
    }

    fn pods_seen(&self) -> usize {
        *self.seen.lock()
    }
}

impl Drop for ActiveSampler {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn job_completes_five_pods_two_at_a_time() {
    let (server, _sim) = cluster();
    let sampler = ActiveSampler::start(&server, "par");
    std::thread::sleep(Duration::from_millis(500));
    apply(
        &server,
        &job_yaml("par", Some(0), 1, "  completions: 5\n  parallelism: 2"),
    );
    server.kubectl(&[
        "wait",
        "--for=condition=complete",
        "job/par",
        "--timeout=120s",
    ]);
    let j = job(&server, "par");
    let status = &j["status"];
    assert_eq!(status["succeeded"], 5, "{status}");
    assert_eq!(status["active"].as_i64().unwrap_or(0), 0, "{status}");
    assert!(status["completionTime"].is_string(), "{status}");
    assert!(status["startTime"].is_string(), "{status}");
    assert!(condition(&j, "SuccessCriteriaMet").is_some(), "{status}");
    // Every pod was counted and let go.
    let unc = &status["uncountedTerminatedPods"];
    assert!(
        unc["succeeded"].as_array().is_none_or(Vec::is_empty),
        "{status}"
    );
    let pods = pods_of(&server, "par");
    assert_eq!(pods.len(), 5, "one pod per completion");
    for p in &pods {
        assert!(
            p["metadata"]["finalizers"]
                .as_array()
                .is_none_or(Vec::is_empty),
            "{p}"
        );
        assert_eq!(p["status"]["phase"], "Succeeded");
        assert_eq!(
            p["metadata"]["labels"]["batch.kubernetes.io/job-name"],
            "par"
        );
        assert!(
            p["metadata"]["generateName"]
                .as_str()
                .unwrap()
                .starts_with("par-")
        );
        assert_eq!(p["metadata"]["ownerReferences"][0]["kind"], "Job");
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(sampler.pods_seen(), 5);
    let max = sampler.max_active();
    assert!(max <= 2, "{max} pods were active at once");
    assert_eq!(max, 2, "parallelism 2 should run two at once");
    let reasons = event_reasons(&server, "Job", "par");
    assert_eq!(
        reasons.iter().filter(|r| *r == "SuccessfulCreate").count(),
        5,
        "{reasons:?}"
    );
    wait_event(&server, "Job", "par", "Completed", Duration::from_secs(10));
    let table = server.kubectl(&["get", "job", "par", "--no-headers"]);
    assert!(table.contains("5/5"), "{table}");
}

#[test]
fn failing_job_stops_at_the_backoff_limit() {
    let (server, _sim) = cluster();
    apply(&server, &job_yaml("boom", Some(1), 0, "  backoffLimit: 2"));
    // Three failures: at once, after 10 s, after 20 more.
    let j = wait_condition(&server, "boom", "Failed", Duration::from_secs(90));
    let failed = condition(&j, "Failed").unwrap();
    assert_eq!(failed["reason"], "BackoffLimitExceeded", "{j}");
    assert_eq!(
        failed["message"],
        "Job has reached the specified backoff limit"
    );
    let target = condition(&j, "FailureTarget").unwrap();
    assert_eq!(target["reason"], "BackoffLimitExceeded");
    assert_eq!(j["status"]["failed"], 3, "{}", j["status"]);
    assert!(j["status"]["completionTime"].is_null());
    let pods = pods_of(&server, "boom");
    assert_eq!(pods.len(), 3, "no pod after the limit");
    // The replacements waited for the back-off: ~10 s, then ~20 s.
    let mut created: Vec<i64> = pods
        .iter()
        .map(|p| {
            let t = p["metadata"]["creationTimestamp"].as_str().unwrap();
            let t: k8s_openapi::jiff::Timestamp = t.parse().unwrap();
            t.as_second()
        })
        .collect();
    created.sort();
    let gaps = [created[1] - created[0], created[2] - created[1]];
    assert!(gaps[0] >= 9 && gaps[1] >= 19, "back-off gaps {gaps:?}");
    wait_event(
        &server,
        "Job",
        "boom",
        "BackoffLimitExceeded",
        Duration::from_secs(10),
    );
    server.kubectl(&["wait", "--for=condition=failed", "job/boom", "--timeout=5s"]);
}

#[test]
fn indexed_job_records_completed_indexes() {
    let (server, _sim) = cluster();
    apply(
        &server,
        &job_yaml(
            "idx",
            Some(0),
            1,
            "  completions: 3\n  parallelism: 2\n  completionMode: Indexed",
        ),
    );
    let j = wait_condition(&server, "idx", "Complete", Duration::from_secs(90));
    assert_eq!(j["status"]["completedIndexes"], "0-2", "{}", j["status"]);
    assert_eq!(j["status"]["succeeded"], 3);
    let mut indexes: Vec<String> = pods_of(&server, "idx")
        .iter()
        .map(|p| {
            let ix = p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
                .as_str()
                .unwrap()
                .to_string();
            assert_eq!(
                p["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"],
                ix.as_str()
            );
            assert_eq!(p["spec"]["hostname"], format!("idx-{ix}"));
            assert!(
                p["metadata"]["name"]
                    .as_str()
                    .unwrap()
                    .starts_with(&format!("idx-{ix}-"))
            );
            ix
        })
        .collect();
    indexes.sort();
    assert_eq!(indexes, ["0", "1", "2"]);
}

#[test]
fn active_deadline_fails_a_long_running_job() {
    let (server, _sim) = cluster();
    apply(
        &server,
        &job_yaml(
            "slow",
            None,
            0,
            "  activeDeadlineSeconds: 3\n  parallelism: 2\n  completions: 2",
        ),
    );
    eventually("two running pods", Duration::from_secs(30), || {
        let pods = pods_of(&server, "slow");
        (pods
            .iter()
            .filter(|p| p["status"]["phase"] == "Running")
            .count()
            == 2)
            .then_some(())
    });
    let j = wait_condition(&server, "slow", "Failed", Duration::from_secs(30));
    let failed = condition(&j, "Failed").unwrap();
    assert_eq!(failed["reason"], "DeadlineExceeded", "{j}");
    assert_eq!(
        failed["message"],
        "Job was active longer than specified deadline"
    );
    assert_eq!(j["status"]["active"].as_i64().unwrap_or(0), 0);
    assert_eq!(j["status"]["failed"], 2, "deleted pods count as failed");
    // The running pods were deleted (the finalizer let go of them).
    eventually("pods gone", Duration::from_secs(30), || {
        pods_of(&server, "slow").is_empty().then_some(())
    });
    wait_event(
        &server,
        "Job",
        "slow",
        "DeadlineExceeded",
        Duration::from_secs(10),
    );
}

#[test]
fn suspend_deletes_pods_and_resume_recreates_them() {
    let (server, _sim) = cluster();
    apply(
        &server,
        &job_yaml(
            "pause",
            None,
            0,
            "  suspend: true\n  parallelism: 1\n  completions: 1",
        ),
    );
    let j = wait_condition(&server, "pause", "Suspended", Duration::from_secs(20));
    assert!(
        j["status"]["startTime"].is_null(),
        "a suspended job has not started"
    );
    assert!(pods_of(&server, "pause").is_empty());
    // Resume: a pod runs and startTime is set.
    server.kubectl(&[
        "patch",
        "job",
        "pause",
        "-p",
        r#"{"spec":{"suspend":false}}"#,
    ]);
    eventually("a running pod", Duration::from_secs(30), || {
        pods_of(&server, "pause")
            .iter()
            .any(|p| p["status"]["phase"] == "Running")
            .then_some(())
    });
    let j = job(&server, "pause");
    let cond = j["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Suspended")
        .unwrap()
        .clone();
    assert_eq!(
        (cond["status"].as_str(), cond["reason"].as_str()),
        (Some("False"), Some("JobResumed"))
    );
    let started = j["status"]["startTime"].as_str().unwrap().to_string();
    // Suspend again: the active pod is deleted.
    server.kubectl(&[
        "patch",
        "job",
        "pause",
        "-p",
        r#"{"spec":{"suspend":true}}"#,
    ]);
    wait_condition(&server, "pause", "Suspended", Duration::from_secs(20));
    eventually("no pods", Duration::from_secs(30), || {
        pods_of(&server, "pause").is_empty().then_some(())
    });
    assert_eq!(
        job(&server, "pause")["status"]["active"]
            .as_i64()
            .unwrap_or(0),
        0
    );
    // Resuming once more resets startTime (deleted pods add back-off: give it time).
    std::thread::sleep(Duration::from_secs(1));
    server.kubectl(&[
        "patch",
        "job",
        "pause",
        "-p",
        r#"{"spec":{"suspend":false}}"#,
    ]);
    eventually("startTime reset", Duration::from_secs(20), || {
        let j = job(&server, "pause");
        (j["status"]["startTime"]
            .as_str()
            .is_some_and(|s| s != started))
        .then_some(())
    });
    eventually("a pod again", Duration::from_secs(60), || {
        pods_of(&server, "pause")
            .iter()
            .any(|p| p["status"]["phase"] == "Running")
            .then_some(())
    });
    let reasons = event_reasons(&server, "Job", "pause");
    assert!(reasons.iter().any(|r| r == "Suspended"), "{reasons:?}");
    assert!(reasons.iter().any(|r| r == "Resumed"), "{reasons:?}");
    // Deleting the Job lets go of its running pod: no tracking finalizer is left behind.
    server.kubectl(&["delete", "job", "pause", "--wait=false"]);
    eventually("finalizers released", Duration::from_secs(30), || {
        pods_of(&server, "pause")
            .iter()
            .all(|p| {
                !p["metadata"]["finalizers"]
                    .as_array()
                    .is_some_and(|f| f.iter().any(|f| f == "batch.kubernetes.io/job-tracking"))
            })
            .then_some(())
    });
}

#[test]
fn finished_job_is_deleted_after_its_ttl() {
    let (server, _sim) = cluster();
    apply(
        &server,
        &job_yaml("short", Some(0), 0, "  ttlSecondsAfterFinished: 2"),
    );
    wait_condition(&server, "short", "Complete", Duration::from_secs(60));
    eventually("job deleted", Duration::from_secs(30), || {
        let out = server.kubectl(&["get", "jobs", "-o", "name"]);
        (!out.contains("job.batch/short")).then_some(())
    });
    // A Job without a TTL stays.
    apply(&server, &job_yaml("keep", Some(0), 0, "  completions: 1"));
    wait_condition(&server, "keep", "Complete", Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(3));
    job(&server, "keep");
}

#[test]
fn cronjob_time_zone_and_schedule_are_checked() {
    let server = Server::start(&[]);
    let bad_zone = "apiVersion: batch/v1
kind: CronJob
metadata:
  name: tz
spec:
  schedule: \"0 9 * * *\"
  timeZone: Mars/Olympus
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers:
          - name: c
            image: localhost/busybox:1
";
    let (_dir, path) = manifest(bad_zone);
    let err = server.kubectl_err(&["apply", "-f", path.to_str().unwrap()]);
    assert!(err.contains("spec.timeZone"), "{err}");
    assert!(err.contains("unknown time zone Mars/Olympus"), "{err}");
    // A real zone is fine.
    apply(&server, &bad_zone.replace("Mars/Olympus", "Europe/Berlin"));
    // A schedule the controller cannot read gets a warning event.
    apply(
        &server,
        &bad_zone
            .replace("name: tz", "name: badsched")
            .replace("0 9 * * *", "61 * * * *")
            .replace("  timeZone: Mars/Olympus\n", ""),
    );
    wait_event(
        &server,
        "CronJob",
        "badsched",
        "UnparseableSchedule",
        Duration::from_secs(20),
    );
}

fn cronjob_yaml(name: &str, policy: &str, exit: Option<i32>, extra: &str) -> String {
    let annotations = match exit {
        Some(code) => {
            format!("          annotations:\n            sim.rkube.io/exit-code: \"{code}\"\n")
        }
        None => String::new(),
    };
    format!(
        "apiVersion: batch/v1
kind: CronJob
metadata:
  name: {name}
spec:
  schedule: \"*/1 * * * *\"
  concurrencyPolicy: {policy}
{extra}  jobTemplate:
    metadata:
      labels:
        cron: {name}
    spec:
      template:
        metadata:
{annotations}          labels:
            cron: {name}
        spec:
          restartPolicy: Never
          containers:
          - name: c
            image: localhost/busybox:1
"
    )
}

fn jobs_of(server: &Server, cron: &str) -> Vec<Value> {
    json(server, &["get", "jobs", "-l", &format!("cron={cron}")])["items"]
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn cronjob_creates_jobs_forbids_overlap_and_prunes_history() {
    let (server, _sim) = cluster();
    // `hold` runs forever: Forbid must skip the next run.
    apply(&server, &cronjob_yaml("hold", "Forbid", None, ""));
    // `quick` finishes at once: one successful Job is kept.
    apply(
        &server,
        &cronjob_yaml(
            "quick",
            "Allow",
            Some(0),
            "  successfulJobsHistoryLimit: 1\n",
        ),
    );
    let first = eventually("the first job of hold", Duration::from_secs(75), || {
        jobs_of(&server, "hold").first().cloned()
    });
    let name = first["metadata"]["name"].as_str().unwrap().to_string();
    let scheduled =
        first["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"]
            .as_str()
            .unwrap()
            .to_string();
    let t: k8s_openapi::jiff::Timestamp = scheduled.parse().unwrap();
    assert_eq!(t.as_second() % 60, 0, "runs on the minute: {scheduled}");
    assert_eq!(name, format!("hold-{}", t.as_second() / 60));
    assert_eq!(first["metadata"]["ownerReferences"][0]["kind"], "CronJob");
    assert_eq!(first["metadata"]["ownerReferences"][0]["controller"], true);
    let cj = json(&server, &["get", "cronjob", "hold"]);
    assert_eq!(
        cj["status"]["active"][0]["name"],
        name.as_str(),
        "{}",
        cj["status"]
    );
    assert!(cj["status"]["lastScheduleTime"].is_string());
    // The next minute: not started, JobAlreadyActive.
    wait_event(
        &server,
        "CronJob",
        "hold",
        "JobAlreadyActive",
        Duration::from_secs(75),
    );
    assert_eq!(
        jobs_of(&server, "hold").len(),
        1,
        "Forbid allows one job at a time"
    );

    // quick: by now two runs have happened; only the newest successful Job is kept.
    wait_event(
        &server,
        "CronJob",
        "quick",
        "SuccessfulDelete",
        Duration::from_secs(75),
    );
    eventually("one job kept", Duration::from_secs(20), || {
        (jobs_of(&server, "quick").len() == 1).then_some(())
    });
    let cj = json(&server, &["get", "cronjob", "quick"]);
    assert!(
        cj["status"]["lastSuccessfulTime"].is_string(),
        "{}",
        cj["status"]
    );
    let reasons = event_reasons(&server, "CronJob", "quick");
    assert!(
        reasons.iter().any(|r| r == "SuccessfulCreate"),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r == "SawCompletedJob"),
        "{reasons:?}"
    );
}
