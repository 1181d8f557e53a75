//! The `now` tool's arithmetic: an instant shown in UTC or at a fixed offset from it.
//!
//! Only fixed offsets: named zones (`Europe/Paris`) need the tz database, and with it the
//! question of which version of it; an offset means the same everywhere.

use chrono::{DateTime, Datelike, FixedOffset, SecondsFormat, Utc};
use rmcp::schemars;
use serde::Serialize;

/// The farthest real time zones are from UTC (UTC-12:00 to UTC+14:00, rounded up to be
/// symmetric).
const MAX_OFFSET_MINUTES: i32 = 14 * 60;

/// The structured result of `now`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Now {
    /// The time in RFC 3339, e.g. `2026-05-05T14:03:07+02:00` (`Z` for UTC).
    pub rfc3339: String,
    /// The day of the week in English, e.g. `Tuesday`.
    pub weekday: String,
    /// The offset from UTC used, e.g. `+02:00`.
    pub utc_offset: String,
    /// Seconds since 1970-01-01T00:00:00Z.
    pub unix_seconds: i64,
}

impl Now {
    /// One line for people and models.
    pub fn text(&self) -> String {
        format!(
            "{}, {} (UTC{})",
            self.weekday, self.rfc3339, self.utc_offset
        )
    }
}

/// Reads `UTC` (in any case) or an offset written `+HH:MM` / `-HH:MM`.
pub fn parse_timezone(timezone: &str) -> Result<FixedOffset, String> {
    let refuse = || {
        format!(
            "unsupported timezone {timezone:?}: use \"UTC\" or a fixed offset from UTC such as \
             \"+02:00\" or \"-05:30\" (named zones like \"Europe/Paris\" are not supported)"
        )
    };
    let trimmed = timezone.trim();
    if trimmed.eq_ignore_ascii_case("utc") {
        return FixedOffset::east_opt(0).ok_or_else(refuse);
    }
    let (sign, rest) = match trimmed.split_at_checked(1) {
        Some(("+", rest)) => (1, rest),
        Some(("-", rest)) => (-1, rest),
        _ => return Err(refuse()),
    };
    // `+2:00` as well as `+02:00`: people write both.
    let number = |part: &str, lengths: std::ops::RangeInclusive<usize>| -> Option<i32> {
        (lengths.contains(&part.len()) && part.bytes().all(|b| b.is_ascii_digit()))
            .then(|| part.parse().ok())
            .flatten()
    };
    let Some((hours, minutes)) = rest.split_once(':') else {
        return Err(refuse());
    };
    let (Some(hours), Some(minutes)) = (number(hours, 1..=2), number(minutes, 2..=2)) else {
        return Err(refuse());
    };
    let total = hours * 60 + minutes;
    if minutes >= 60 || total > MAX_OFFSET_MINUTES {
        return Err(format!(
            "{timezone:?} is not a real UTC offset: offsets run from -14:00 to +14:00"
        ));
    }
    FixedOffset::east_opt(sign * total * 60).ok_or_else(refuse)
}

/// `instant` as seen at `offset`.
pub fn describe(instant: DateTime<Utc>, offset: FixedOffset) -> Now {
    let local = instant.with_timezone(&offset);
    let seconds = offset.local_minus_utc();
    let sign = if seconds < 0 { '-' } else { '+' };
    let minutes = seconds.abs() / 60;
    Now {
        rfc3339: local.to_rfc3339_opts(SecondsFormat::Secs, true),
        weekday: weekday_name(local.weekday()).to_owned(),
        utc_offset: format!("{sign}{:02}:{:02}", minutes / 60, minutes % 60),
        unix_seconds: instant.timestamp(),
    }
}

fn weekday_name(day: chrono::Weekday) -> &'static str {
    use chrono::Weekday::*;
    match day {
        Mon => "Monday",
        Tue => "Tuesday",
        Wed => "Wednesday",
        Thu => "Thursday",
        Fri => "Friday",
        Sat => "Saturday",
        Sun => "Sunday",
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    /// Tuesday 2026-05-05, 23:30:15 UTC.
    fn instant() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 5, 5, 23, 30, 15).unwrap()
    }

    fn at(timezone: &str) -> Now {
        describe(instant(), parse_timezone(timezone).unwrap())
    }

    #[test]
    fn utc_is_written_with_z() {
        let now = at("UTC");
        assert_eq!(now.rfc3339, "2026-05-05T23:30:15Z");
        assert_eq!(now.weekday, "Tuesday");
        assert_eq!(now.utc_offset, "+00:00");
        assert_eq!(now.unix_seconds, 1_778_023_815);
        assert_eq!(now.text(), "Tuesday, 2026-05-05T23:30:15Z (UTC+00:00)");
        assert_eq!(at("utc"), now);
        assert_eq!(at("+00:00").rfc3339, now.rfc3339);
    }

    #[test]
    fn offsets_move_the_clock_and_the_weekday() {
        let east = at("+02:00");
        assert_eq!(east.rfc3339, "2026-05-06T01:30:15+02:00");
        assert_eq!(east.weekday, "Wednesday");
        assert_eq!(east.unix_seconds, at("UTC").unix_seconds);
        let west = at("-05:30");
        assert_eq!(west.rfc3339, "2026-05-05T18:00:15-05:30");
        assert_eq!(west.utc_offset, "-05:30");
        assert_eq!(west.weekday, "Tuesday");
        assert_eq!(at("+14:00").rfc3339, "2026-05-06T13:30:15+14:00");
        assert_eq!(at("+2:00").rfc3339, east.rfc3339, "a one-digit hour");
    }

    #[test]
    fn anything_else_is_refused_with_a_hint() {
        for bad in [
            "Europe/Paris",
            "CET",
            "+2",
            "+0200",
            "02:00",
            "+02:0x",
            "+002:00",
            "+2:0",
            "",
            "+١٢:٠٠",
        ] {
            let message = parse_timezone(bad).unwrap_err();
            assert!(message.contains("\"+02:00\""), "{bad}: {message}");
        }
        for unreal in ["+15:00", "-14:30", "+02:60"] {
            let message = parse_timezone(unreal).unwrap_err();
            assert!(message.contains("-14:00 to +14:00"), "{unreal}: {message}");
        }
    }
}
