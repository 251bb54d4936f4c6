//! Calendars: change freezes and maintenance windows, as date ranges or a
//! recurring window (a cron expression for its start and a duration), in
//! UTC or a named time zone. A calendar only says whether an instant is
//! inside it; the rule that owns it says what that means.

use std::time::Duration;

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::Deserialize;

/// One date range as written: `from` inclusive, `until` exclusive; each a
/// date ("2026-12-20", midnight), a local time ("2026-12-20T16:00") in the
/// calendar's zone, or an RFC 3339 instant with its offset.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DateRange {
    pub from: String,
    pub until: String,
}

/// A calendar's fields, gathered from its rule's table.
#[derive(Debug, Clone, Default)]
pub struct CalendarConfig {
    pub dates: Vec<DateRange>,
    pub cron: Option<String>,
    pub duration: Option<String>,
    pub tz: Option<String>,
    pub silence: bool,
}

/// A checked calendar.
#[derive(Debug, Clone)]
pub struct Calendar {
    tz: Tz,
    ranges: Vec<(DateTime<Utc>, DateTime<Utc>)>,
    recurring: Option<(croner::Cron, Duration)>,
    /// A maintenance window: alerts start no run while it is on.
    pub silence: bool,
}

impl Calendar {
    /// The calendar the fields describe; `None` when they describe none.
    pub fn from_config(c: &CalendarConfig) -> Result<Option<Calendar>, String> {
        if c.dates.is_empty() && c.cron.is_none() {
            if c.duration.is_some() || c.tz.is_some() {
                return Err(
                    "`duration` and `tz` belong to a calendar; add `dates` or `cron`".to_owned(),
                );
            }
            return Ok(None);
        }
        let tz: Tz = match &c.tz {
            None => Tz::UTC,
            Some(name) => name.parse().map_err(|_| {
                format!("`{name}` is not a time zone; write an IANA name such as \"Europe/Berlin\" or \"UTC\"")
            })?,
        };
        let mut ranges = Vec::new();
        for range in &c.dates {
            // Across a clock change, a range takes the wider reading.
            let from = instant(&range.from, tz, Bound::Earliest)?;
            let until = instant(&range.until, tz, Bound::Latest)?;
            if until <= from {
                return Err(format!(
                    "the date range {} .. {} ends before it starts (`until` is exclusive)",
                    range.from, range.until
                ));
            }
            ranges.push((from, until));
        }
        let recurring = match (&c.cron, &c.duration) {
            (Some(cron), Some(duration)) => {
                let parsed = cron.parse::<croner::Cron>().map_err(|e| {
                    format!("`{cron}` is not a cron expression ({e}); write e.g. \"0 16 * * FRI\"")
                })?;
                let duration = super::duration(duration)?;
                if duration > MOST_DURATION || duration.is_zero() {
                    return Err(format!(
                        "`duration = \"{}\"` is not a window; write one between a second and a year",
                        humantime::format_duration(duration)
                    ));
                }
                // A cron that never fires would be a window never on.
                if parsed
                    .find_next_occurrence(&Utc::now().with_timezone(&tz), false)
                    .is_err()
                {
                    return Err(format!(
                        "`{cron}` never fires; a window on it would never be on"
                    ));
                }
                Some((parsed, duration))
            }
            (Some(_), None) => {
                return Err(
                    "a recurring window needs `duration` (how long it lasts from each start), e.g. duration = \"64h\""
                        .to_owned(),
                );
            }
            (None, Some(_)) => return Err("`duration` belongs to `cron`".to_owned()),
            (None, None) => None,
        };
        Ok(Some(Calendar {
            tz,
            ranges,
            recurring,
            silence: c.silence,
        }))
    }

    /// When the window `now` is in ends, if it is in one.
    pub fn ends(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let in_range = self
            .ranges
            .iter()
            .filter(|(from, until)| *from <= now && now < *until)
            .map(|(_, until)| *until)
            .max();
        let in_recurring = self.recurring.as_ref().and_then(|(cron, duration)| {
            let duration = chrono::Duration::from_std(*duration).ok()?;
            // The first start after now - duration: inside if it is not
            // after now.
            let after = now.checked_sub_signed(duration)?.with_timezone(&self.tz);
            let start = cron.find_next_occurrence(&after, false).ok()?;
            let start = start.with_timezone(&Utc);
            (start <= now).then_some(start + duration)
        });
        in_range.max(in_recurring)
    }

    pub fn contains(&self, now: DateTime<Utc>) -> bool {
        self.ends(now).is_some()
    }

    /// The reason a write inside the calendar is stopped, in words.
    pub fn describe(&self, now: DateTime<Utc>) -> String {
        match self.ends(now) {
            Some(end) => format!(
                "inside a {} until {} ({})",
                if self.silence {
                    "maintenance window"
                } else {
                    "change freeze"
                },
                end.with_timezone(&self.tz).format("%Y-%m-%d %H:%M %Z"),
                self.tz.name()
            ),
            None => "outside its calendar".to_owned(),
        }
    }
}

/// The longest recurring window.
const MOST_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);

/// Which reading of a local time a clock change makes ambiguous.
#[derive(Clone, Copy)]
enum Bound {
    Earliest,
    Latest,
}

/// Parses a calendar bound in `tz`.
fn instant(text: &str, tz: Tz, bound: Bound) -> Result<DateTime<Utc>, String> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&Utc));
    }
    let local = if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        date.and_hms_opt(0, 0, 0)
    } else {
        NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M")
            .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S"))
            .ok()
    }
    .ok_or_else(|| {
        format!(
            "`{text}` is not a date or time; write \"2026-12-20\", \"2026-12-20T16:00\" (in `tz`) or an RFC 3339 instant"
        )
    })?;
    let local = tz.from_local_datetime(&local);
    match bound {
        Bound::Earliest => local.earliest(),
        Bound::Latest => local.latest(),
    }
    .map(|at| at.with_timezone(&Utc))
    .ok_or_else(|| {
        format!(
            "`{text}` does not exist in {} (a clock change skips it)",
            tz.name()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn calendar(c: CalendarConfig) -> Calendar {
        Calendar::from_config(&c).unwrap().unwrap()
    }

    #[test]
    fn a_date_range_is_read_in_its_time_zone_and_ends_before_until() {
        let c = calendar(CalendarConfig {
            dates: vec![DateRange {
                from: "2026-12-20".into(),
                until: "2027-01-04T08:00".into(),
            }],
            tz: Some("Europe/Berlin".into()),
            ..Default::default()
        });
        // Midnight in Berlin is 23:00 UTC the day before.
        assert!(!c.contains(at("2026-12-19T22:59:59Z")));
        assert!(c.contains(at("2026-12-19T23:00:00Z")));
        assert!(c.contains(at("2027-01-04T06:59:59Z")));
        assert!(!c.contains(at("2027-01-04T07:00:00Z")));
        assert!(
            c.describe(at("2026-12-24T12:00:00Z"))
                .contains("2027-01-04 08:00 CET")
        );
    }

    #[test]
    fn a_recurring_window_starts_on_its_cron_and_lasts_its_duration() {
        // Friday 16:00 in New York until Monday 08:00.
        let c = calendar(CalendarConfig {
            cron: Some("0 16 * * FRI".into()),
            duration: Some("64h".into()),
            tz: Some("America/New_York".into()),
            ..Default::default()
        });
        // 2026-12-04 is a Friday; 16:00 EST is 21:00 UTC.
        assert!(!c.contains(at("2026-12-04T20:59:00Z")));
        assert!(c.contains(at("2026-12-04T21:00:00Z")));
        assert!(c.contains(at("2026-12-06T12:00:00Z")));
        assert!(c.contains(at("2026-12-07T12:59:00Z")));
        assert!(!c.contains(at("2026-12-07T13:00:00Z")));
        assert!(!c.contains(at("2026-12-09T12:00:00Z")));
    }

    #[test]
    fn bad_calendars_say_what_to_write() {
        let err = |c: CalendarConfig| Calendar::from_config(&c).unwrap_err();
        let tz = err(CalendarConfig {
            cron: Some("0 16 * * FRI".into()),
            duration: Some("1h".into()),
            tz: Some("Mars/Olympus".into()),
            ..Default::default()
        });
        assert!(tz.contains("Europe/Berlin"), "{tz}");
        let no_duration = err(CalendarConfig {
            cron: Some("0 16 * * FRI".into()),
            ..Default::default()
        });
        assert!(no_duration.contains("duration"), "{no_duration}");
        let backwards = err(CalendarConfig {
            dates: vec![DateRange {
                from: "2027-01-04".into(),
                until: "2026-12-20".into(),
            }],
            ..Default::default()
        });
        assert!(backwards.contains("ends before it starts"), "{backwards}");
        let garbage = err(CalendarConfig {
            dates: vec![DateRange {
                from: "next friday".into(),
                until: "2026-12-20".into(),
            }],
            ..Default::default()
        });
        assert!(garbage.contains("next friday"), "{garbage}");
    }
}
