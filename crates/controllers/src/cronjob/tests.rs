//! Unit tests of the cronjob controller's timing and Job building.

use k8s_openapi::api::batch::v1::{
    CronJob, CronJobSpec, CronJobStatus, Job, JobCondition, JobStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::jiff::tz::TimeZone;

use super::*;

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn cronjob(schedule: &str, created: &str, last: Option<&str>, deadline: Option<i64>) -> CronJob {
    CronJob {
        metadata: ObjectMeta {
            name: Some("hello".into()),
            namespace: Some("default".into()),
            uid: Some("cj-uid".into()),
            creation_timestamp: Some(Time(ts(created))),
            ..Default::default()
        },
        spec: Some(CronJobSpec {
            schedule: schedule.into(),
            starting_deadline_seconds: deadline,
            successful_jobs_history_limit: Some(3),
            failed_jobs_history_limit: Some(1),
            ..Default::default()
        }),
        status: Some(CronJobStatus {
            last_schedule_time: last.map(|l| Time(ts(l))),
            ..Default::default()
        }),
    }
}

fn mrst(cj: &CronJob, now: &str, deadline: bool) -> (Option<String>, Missed) {
    let sched = Schedule::parse(&cj.spec.as_ref().unwrap().schedule).unwrap();
    let (_, t, m) =
        most_recent_schedule_time(cj, ts(now), &sched, &TimeZone::UTC, deadline).unwrap();
    (t.map(|t| t.to_string()), m)
}

#[test]
fn nothing_due_before_the_first_run() {
    let cj = cronjob("*/5 * * * *", "2026-01-01T10:01:00Z", None, None);
    assert_eq!(
        mrst(&cj, "2026-01-01T10:04:59Z", true),
        (None, Missed::None)
    );
    assert_eq!(
        mrst(&cj, "2026-01-01T10:05:30Z", true),
        (Some("2026-01-01T10:05:00Z".into()), Missed::None)
    );
}

#[test]
fn missed_runs_give_the_most_recent_one() {
    let cj = cronjob(
        "*/5 * * * *",
        "2026-01-01T10:01:00Z",
        Some("2026-01-01T10:05:00Z"),
        None,
    );
    assert_eq!(
        mrst(&cj, "2026-01-01T10:31:00Z", true),
        (Some("2026-01-01T10:30:00Z".into()), Missed::Few)
    );
    // Irregular schedules are walked exactly.
    let cj = cronjob("30 6-16/4 * * 1-5", "2026-01-05T00:00:00Z", None, None);
    assert_eq!(
        mrst(&cj, "2026-01-07T12:00:00Z", true).0.as_deref(),
        Some("2026-01-07T10:30:00Z")
    );
}

#[test]
fn more_than_a_hundred_missed_is_many() {
    let cj = cronjob("* * * * *", "2026-01-01T00:00:00Z", None, None);
    assert_eq!(
        mrst(&cj, "2026-01-01T03:00:30Z", true),
        (Some("2026-01-01T03:00:00Z".into()), Missed::Many)
    );
    // A starting deadline limits how far back runs are looked for.
    let cj = cronjob("* * * * *", "2026-01-01T00:00:00Z", None, Some(200));
    assert_eq!(mrst(&cj, "2026-01-01T03:00:30Z", true).1, Missed::Few);
}

#[test]
fn runs_older_than_the_starting_deadline_are_skipped() {
    // Hourly, last ran at 10:00, now 11:30 with a 10 minute deadline: 11:00 is too old.
    let cj = cronjob(
        "0 * * * *",
        "2026-01-01T09:00:00Z",
        Some("2026-01-01T10:00:00Z"),
        Some(600),
    );
    assert_eq!(
        mrst(&cj, "2026-01-01T11:30:00Z", true),
        (None, Missed::None)
    );
    // Without the deadline it would run.
    assert_eq!(
        mrst(&cj, "2026-01-01T11:30:00Z", false).0.as_deref(),
        Some("2026-01-01T11:00:00Z")
    );
}

#[test]
fn impossible_schedules_never_run() {
    let cj = cronjob("0 0 31 2 *", "2026-01-01T00:00:00Z", None, None);
    assert_eq!(
        mrst(&cj, "2027-01-01T00:00:00Z", true),
        (None, Missed::None)
    );
    let sched = Schedule::parse("0 0 31 2 *").unwrap();
    assert_eq!(
        next_schedule_delay(&cj, ts("2026-01-01T00:00:00Z"), &sched, &TimeZone::UTC),
        None
    );
}

#[test]
fn requeue_waits_for_the_next_run() {
    let cj = cronjob(
        "*/1 * * * *",
        "2026-01-01T10:00:00Z",
        Some("2026-01-01T10:05:00Z"),
        None,
    );
    let sched = Schedule::parse("*/1 * * * *").unwrap();
    let d = next_schedule_delay(&cj, ts("2026-01-01T10:05:20Z"), &sched, &TimeZone::UTC).unwrap();
    assert_eq!(d, Duration::from_millis(40_100));
}

#[test]
fn jobs_are_named_by_minutes_and_annotated_in_the_time_zone() {
    let mut cj = cronjob("0 9 * * *", "2026-01-01T00:00:00Z", None, None);
    cj.spec.as_mut().unwrap().job_template.metadata = Some(ObjectMeta {
        labels: Some([("app".to_string(), "x".to_string())].into()),
        ..Default::default()
    });
    let t = ts("2026-01-01T14:00:00Z");
    let tz = TimeZone::get("America/New_York").unwrap();
    let job = job_from_template(&cj, t, &tz);
    assert_eq!(job.metadata.name.as_deref(), Some("hello-29454600"));
    assert_eq!(
        job.metadata.annotations.as_ref().unwrap()[SCHEDULED_TIMESTAMP],
        "2026-01-01T09:00:00-05:00"
    );
    let utc = job_from_template(&cj, t, &TimeZone::UTC);
    assert_eq!(
        utc.metadata.annotations.as_ref().unwrap()[SCHEDULED_TIMESTAMP],
        "2026-01-01T14:00:00Z"
    );
    assert_eq!(job.metadata.labels.unwrap()["app"], "x");
    let owner = &job.metadata.owner_references.unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
        ("CronJob", "cj-uid", Some(true))
    );
}

fn finished_job(name: &str, kind: &str, start: &str) -> Job {
    Job {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: None,
        status: Some(JobStatus {
            start_time: Some(Time(ts(start))),
            conditions: Some(vec![JobCondition {
                type_: kind.into(),
                status: "True".into(),
                ..Default::default()
            }]),
            ..Default::default()
        }),
    }
}

#[test]
fn history_limits_prune_the_oldest_finished_jobs() {
    let cj = cronjob("* * * * *", "2026-01-01T00:00:00Z", None, None);
    let jobs = [
        finished_job("a", "Complete", "2026-01-01T00:01:00Z"),
        finished_job("b", "Complete", "2026-01-01T00:02:00Z"),
        finished_job("c", "Complete", "2026-01-01T00:03:00Z"),
        finished_job("d", "Complete", "2026-01-01T00:04:00Z"),
        finished_job("e", "Failed", "2026-01-01T00:05:00Z"),
        finished_job("f", "Failed", "2026-01-01T00:06:00Z"),
    ];
    let refs: Vec<&Job> = jobs.iter().collect();
    let names: Vec<String> = jobs_to_prune(&cj, &refs)
        .iter()
        .map(|j| j.name_any())
        .collect();
    assert_eq!(names, ["a", "e"]);
}
