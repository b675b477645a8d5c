//! Cron schedules as upstream's CronJob controller reads them (robfig/cron v3
//! `ParseStandard`): five fields (minute, hour, day of month, month, day of week) with
//! `*`, `?`, lists, ranges, steps and month/day names; the descriptors `@yearly`,
//! `@annually`, `@monthly`, `@weekly`, `@daily`, `@midnight`, `@hourly`; an optional
//! `TZ=`/`CRON_TZ=` prefix. When both day fields are restricted a day matches either of
//! them (Vixie cron's OR); when one starts with `*` (and no step above 1) both must match.
//!
//! [`Schedule::next_after`] gives the next run after an instant, in the schedule's time
//! zone (IANA names via jiff, whose bundled database backs the system one).

use k8s_openapi::jiff::Timestamp;
use k8s_openapi::jiff::civil::{self, DateTime};
use k8s_openapi::jiff::tz::TimeZone;

/// A parsed schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    minute: u64,
    hour: u64,
    dom: u64,
    month: u64,
    dow: u64,
    /// The day-of-month field was `*` or `?`.
    dom_star: bool,
    /// The day-of-week field was `*` or `?`.
    dow_star: bool,
    /// From a `TZ=` prefix.
    tz: Option<TimeZone>,
}

/// Why a schedule does not parse (the message upstream's parser gives).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(String);

struct Bounds {
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const MINUTES: Bounds = Bounds {
    min: 0,
    max: 59,
    names: &[],
};
const HOURS: Bounds = Bounds {
    min: 0,
    max: 23,
    names: &[],
};
const DOM: Bounds = Bounds {
    min: 1,
    max: 31,
    names: &[],
};
const MONTHS: Bounds = Bounds {
    min: 1,
    max: 12,
    names: &[
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ],
};
const DOW: Bounds = Bounds {
    min: 0,
    max: 6,
    names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
};

/// Looks up an IANA time zone name (what `spec.timeZone` accepts).
pub fn time_zone(name: &str) -> Result<TimeZone, ParseError> {
    // Go's LoadLocation also accepts "UTC" and "Local"; "Local" is not valid for CronJobs.
    TimeZone::get(name).map_err(|e| ParseError(format!("unknown time zone {name}: {e}")))
}

impl Schedule {
    /// Parses `spec`.
    pub fn parse(spec: &str) -> Result<Self, ParseError> {
        let mut spec = spec.trim();
        let mut tz = None;
        if spec.starts_with("TZ=") || spec.starts_with("CRON_TZ=") {
            let (prefix, rest) = spec.split_once(char::is_whitespace).unwrap_or((spec, ""));
            let name = prefix.split_once('=').map_or("", |(_, n)| n);
            tz = Some(
                TimeZone::get(name)
                    .map_err(|e| ParseError(format!("provided bad location {name}: {e}")))?,
            );
            spec = rest.trim();
        }
        if spec.is_empty() {
            return Err(ParseError("empty spec string".into()));
        }
        let expanded = if spec.starts_with('@') {
            match spec {
                "@yearly" | "@annually" => "0 0 1 1 *",
                "@monthly" => "0 0 1 * *",
                "@weekly" => "0 0 * * 0",
                "@daily" | "@midnight" => "0 0 * * *",
                "@hourly" => "0 * * * *",
                _ => return Err(ParseError(format!("unrecognized descriptor: {spec}"))),
            }
        } else {
            spec
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(ParseError(format!(
                "expected exactly 5 fields, found {}: {fields:?}",
                fields.len()
            )));
        }
        let (minute, _) = field(fields[0], &MINUTES)?;
        let (hour, _) = field(fields[1], &HOURS)?;
        let (dom, dom_star) = field(fields[2], &DOM)?;
        let (month, _) = field(fields[3], &MONTHS)?;
        let (dow, dow_star) = field(fields[4], &DOW)?;
        Ok(Self {
            minute,
            hour,
            dom,
            month,
            dow,
            dom_star,
            dow_star,
            tz,
        })
    }

    /// The time zone of a `TZ=` prefix, if any.
    pub fn tz(&self) -> Option<&TimeZone> {
        self.tz.as_ref()
    }

    fn day_matches(&self, date: civil::Date) -> bool {
        let dom = bit(&self.dom, u32::try_from(date.day()).unwrap_or(0));
        let dow = bit(
            &self.dow,
            u32::try_from(date.weekday().to_sunday_zero_offset()).unwrap_or(0),
        );
        if self.dom_star || self.dow_star {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// The first run strictly after `t`, in the schedule's `TZ=` zone or else `tz`; `None`
    /// when there is none within five years (e.g. `0 0 30 2 *`).
    pub fn next_after(&self, t: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let tz = self.tz.as_ref().unwrap_or(tz);
        let local = t.to_zoned(tz.clone()).datetime();
        let mut dt = next_minute(local.with().second(0).subsec_nanosecond(0).build().ok()?)?;
        let last_year = dt.year() + 5;
        let midnight = civil::Time::midnight();
        while dt.year() <= last_year {
            if !bit(&self.month, u32::try_from(dt.month()).unwrap_or(0)) {
                let first = dt.date().first_of_month();
                dt = first
                    .checked_add(span_months(1))
                    .ok()?
                    .to_datetime(midnight);
                continue;
            }
            if !self.day_matches(dt.date()) {
                dt = dt.date().tomorrow().ok()?.to_datetime(midnight);
                continue;
            }
            if !bit(&self.hour, u32::try_from(dt.hour()).unwrap_or(0)) {
                dt = next_hour(dt)?;
                continue;
            }
            if !bit(&self.minute, u32::try_from(dt.minute()).unwrap_or(0)) {
                dt = next_minute(dt)?;
                continue;
            }
            // A time skipped by a DST change runs just after it (Go's normalization).
            let at = tz.to_ambiguous_zoned(dt).compatible().ok()?.timestamp();
            if at > t {
                return Some(at);
            }
            dt = next_minute(dt)?;
        }
        None
    }
}

fn span_months(n: i64) -> k8s_openapi::jiff::Span {
    k8s_openapi::jiff::Span::new().months(n)
}

fn next_minute(dt: DateTime) -> Option<DateTime> {
    dt.checked_add(k8s_openapi::jiff::Span::new().minutes(1))
        .ok()
}

fn next_hour(dt: DateTime) -> Option<DateTime> {
    dt.with()
        .minute(0)
        .build()
        .ok()?
        .checked_add(k8s_openapi::jiff::Span::new().hours(1))
        .ok()
}

fn bit(set: &u64, n: u32) -> bool {
    n < 64 && set & (1 << n) != 0
}

/// One field: a comma-separated list of ranges; also whether it is a `*`/`?` wildcard.
fn field(text: &str, b: &Bounds) -> Result<(u64, bool), ParseError> {
    let mut bits = 0;
    let mut star = false;
    for expr in text.split(',') {
        let (r, s) = range(expr, b)?;
        bits |= r;
        star |= s;
    }
    Ok((bits, star))
}

fn range(expr: &str, b: &Bounds) -> Result<(u64, bool), ParseError> {
    let range_and_step: Vec<&str> = expr.split('/').collect();
    let low_and_high: Vec<&str> = range_and_step[0].split('-').collect();
    let single = low_and_high.len() == 1;
    let (start, mut end, mut star);
    if low_and_high[0] == "*" || low_and_high[0] == "?" {
        (start, end, star) = (b.min, b.max, true);
    } else {
        start = int_or_name(low_and_high[0], b)?;
        end = match low_and_high.len() {
            1 => start,
            2 => int_or_name(low_and_high[1], b)?,
            _ => return Err(ParseError(format!("too many hyphens: {expr}"))),
        };
        star = false;
    }
    let step = match range_and_step.len() {
        1 => 1,
        2 => {
            let step = int(range_and_step[1])?;
            // "N/step" means "N-max/step".
            if single {
                end = b.max;
            }
            if step > 1 {
                star = false;
            }
            step
        }
        _ => return Err(ParseError(format!("too many slashes: {expr}"))),
    };
    if start < b.min {
        return Err(ParseError(format!(
            "beginning of range ({start}) below minimum ({}): {expr}",
            b.min
        )));
    }
    if end > b.max {
        return Err(ParseError(format!(
            "end of range ({end}) above maximum ({}): {expr}",
            b.max
        )));
    }
    if start > end {
        return Err(ParseError(format!(
            "beginning of range ({start}) beyond end of range ({end}): {expr}"
        )));
    }
    if step == 0 {
        return Err(ParseError(format!(
            "step of range should be a positive number: {expr}"
        )));
    }
    let mut bits = 0u64;
    let mut i = start;
    while i <= end {
        bits |= 1 << i;
        i += step;
    }
    Ok((bits, star))
}

fn int_or_name(s: &str, b: &Bounds) -> Result<u32, ParseError> {
    let lower = s.to_ascii_lowercase();
    if let Some(i) = b.names.iter().position(|n| *n == lower) {
        return Ok(u32::try_from(i).unwrap_or(0) + if b.min == 1 { 1 } else { 0 });
    }
    int(s)
}

fn int(s: &str) -> Result<u32, ParseError> {
    match s.parse::<i64>() {
        Ok(n) if n < 0 => Err(ParseError(format!(
            "negative number ({n}) not allowed: {s}"
        ))),
        Ok(n) => u32::try_from(n)
            .map_err(|_| ParseError(format!("failed to parse int from {s}: out of range"))),
        Err(e) => Err(ParseError(format!("failed to parse int from {s}: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn next(spec: &str, after: &str, tz: &str) -> String {
        let tz = TimeZone::get(tz).unwrap();
        Schedule::parse(spec)
            .unwrap()
            .next_after(ts(after), &tz)
            .unwrap()
            .to_string()
    }

    #[test]
    fn every_minute_and_steps() {
        assert_eq!(
            next("*/1 * * * *", "2026-01-01T10:00:00Z", "UTC"),
            "2026-01-01T10:01:00Z"
        );
        assert_eq!(
            next("* * * * *", "2026-01-01T10:00:30Z", "UTC"),
            "2026-01-01T10:01:00Z"
        );
        assert_eq!(
            next("*/15 * * * *", "2026-01-01T10:16:00Z", "UTC"),
            "2026-01-01T10:30:00Z"
        );
        assert_eq!(
            next("5/20 * * * *", "2026-01-01T10:30:00Z", "UTC"),
            "2026-01-01T10:45:00Z"
        );
        assert_eq!(
            next("0 9-17/4 * * *", "2026-01-01T13:00:00Z", "UTC"),
            "2026-01-01T17:00:00Z"
        );
        assert_eq!(
            next("0,30 * * * *", "2026-01-01T10:29:59Z", "UTC"),
            "2026-01-01T10:30:00Z"
        );
    }

    #[test]
    fn names_and_descriptors() {
        // 2026-01-01 is a Thursday.
        assert_eq!(
            next("0 12 * * MON-wed", "2026-01-01T00:00:00Z", "UTC"),
            "2026-01-05T12:00:00Z"
        );
        assert_eq!(
            next("0 0 1 Mar *", "2026-01-01T00:00:00Z", "UTC"),
            "2026-03-01T00:00:00Z"
        );
        assert_eq!(
            next("@yearly", "2026-01-01T00:00:00Z", "UTC"),
            "2027-01-01T00:00:00Z"
        );
        assert_eq!(
            next("@annually", "2026-06-01T00:00:00Z", "UTC"),
            "2027-01-01T00:00:00Z"
        );
        assert_eq!(
            next("@monthly", "2026-01-15T00:00:00Z", "UTC"),
            "2026-02-01T00:00:00Z"
        );
        assert_eq!(
            next("@weekly", "2026-01-01T00:00:00Z", "UTC"),
            "2026-01-04T00:00:00Z"
        );
        assert_eq!(
            next("@daily", "2026-01-01T00:00:00Z", "UTC"),
            "2026-01-02T00:00:00Z"
        );
        assert_eq!(
            next("@midnight", "2026-01-01T23:59:00Z", "UTC"),
            "2026-01-02T00:00:00Z"
        );
        assert_eq!(
            next("@hourly", "2026-01-01T00:00:00Z", "UTC"),
            "2026-01-01T01:00:00Z"
        );
    }

    #[test]
    fn restricted_day_fields_are_ored_like_vixie_cron() {
        // The 13th or any Friday: Friday 2026-01-02 comes first.
        assert_eq!(
            next("0 0 13 * 5", "2026-01-01T00:00:00Z", "UTC"),
            "2026-01-02T00:00:00Z"
        );
        // With a wildcard day-of-week only the 13th counts.
        assert_eq!(
            next("0 0 13 * *", "2026-01-01T00:00:00Z", "UTC"),
            "2026-01-13T00:00:00Z"
        );
        // `*` in day-of-month: both must match (any day that is a Friday).
        assert_eq!(
            next("0 0 * * 5", "2026-01-03T00:00:00Z", "UTC"),
            "2026-01-09T00:00:00Z"
        );
        // `*/2` is a restriction, not a wildcard: ORed.
        assert_eq!(
            next("0 0 */10 * 0", "2026-01-01T01:00:00Z", "UTC"),
            "2026-01-04T00:00:00Z"
        );
    }

    #[test]
    fn time_zones() {
        // 09:00 in New York (EST, UTC-5) is 14:00 UTC.
        assert_eq!(
            next("0 9 * * *", "2026-01-01T00:00:00Z", "America/New_York"),
            "2026-01-01T14:00:00Z"
        );
        // The TZ= prefix wins.
        assert_eq!(
            next("TZ=Asia/Tokyo 0 9 * * *", "2026-01-01T00:00:00Z", "UTC"),
            "2026-01-02T00:00:00Z"
        );
        assert_eq!(
            next(
                "CRON_TZ=Europe/Berlin 30 1 * * *",
                "2026-07-01T00:00:00Z",
                "UTC"
            ),
            "2026-07-01T23:30:00Z"
        );
        // 02:30 does not exist on 2026-03-08 in New York: it runs at 03:30 EDT (07:30 UTC).
        assert_eq!(
            next("30 2 * * *", "2026-03-08T05:00:00Z", "America/New_York"),
            "2026-03-08T07:30:00Z"
        );
        assert!(time_zone("Mars/Olympus").is_err());
        assert!(Schedule::parse("TZ=Nowhere/Land * * * * *").is_err());
    }

    #[test]
    fn impossible_dates_have_no_next_run() {
        let s = Schedule::parse("0 0 30 2 *").unwrap();
        assert_eq!(
            s.next_after(ts("2026-01-01T00:00:00Z"), &TimeZone::UTC),
            None
        );
        // Leap day: next one is 2028.
        assert_eq!(
            next("0 0 29 2 *", "2026-01-01T00:00:00Z", "UTC"),
            "2028-02-29T00:00:00Z"
        );
    }

    #[test]
    fn bad_schedules_are_rejected() {
        for bad in [
            "",
            "* * * *",
            "* * * * * *",
            "60 * * * *",
            "* 24 * * *",
            "* * 0 * *",
            "* * * 13 *",
            "* * * * 7",
            "5-1 * * * *",
            "*/0 * * * *",
            "1-2-3 * * * *",
            "*/2/3 * * * *",
            "-1 * * * *",
            "x * * * *",
            "@every-now",
            "* * * foo *",
        ] {
            assert!(Schedule::parse(bad).is_err(), "{bad:?} should not parse");
        }
        assert_eq!(
            Schedule::parse("61 * * * *").unwrap_err().to_string(),
            "end of range (61) above maximum (59): 61"
        );
    }
}
