//! Dates for people: RFC 3339 in UTC for `show`, asctime for mbox `From ` lines.
//! Store times are seconds since the epoch (spec §8.6).

/// Latest second that has a four-digit year (9999-12-31T23:59:59Z).
const MAX_SECS: u64 = 253_402_300_799;

struct Civil {
    year: i64,
    month: u32,
    day: u32,
    hour: u64,
    minute: u64,
    second: u64,
    /// 0 = Sunday.
    weekday: u64,
}

fn civil(secs: u64) -> Option<Civil> {
    if secs > MAX_SECS {
        return None;
    }
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil algorithm (proleptic Gregorian calendar).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    Some(Civil {
        year,
        month,
        day,
        hour: rem / 3600,
        minute: rem / 60 % 60,
        second: rem % 60,
        // 1970-01-01 was a Thursday.
        weekday: (days + 4) % 7,
    })
}

/// `2023-11-14T22:15:00Z`, or `None` past year 9999.
pub fn rfc3339(secs: u64) -> Option<String> {
    let c = civil(secs)?;
    Some(format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    ))
}

/// `2023-11-14T22:15:00Z (1700000100)`: both forms, for `show`.
pub fn both(secs: u64) -> String {
    match rfc3339(secs) {
        Some(t) => format!("{t} ({secs})"),
        None => format!("out-of-range ({secs})"),
    }
}

/// `Tue Nov 14 22:15:00 2023` (C's asctime without the newline), as mbox `From `
/// lines carry it; the epoch for times past year 9999.
pub fn asctime(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let c = civil(secs).or_else(|| civil(0)).unwrap_or(Civil {
        year: 1970,
        month: 1,
        day: 1,
        hour: 0,
        minute: 0,
        second: 0,
        weekday: 4,
    });
    format!(
        "{} {} {:>2} {:02}:{:02}:{:02} {}",
        DAYS[c.weekday as usize % 7],
        MONTHS[(c.month as usize + 11) % 12],
        c.day,
        c.hour,
        c.minute,
        c.second,
        c.year
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(rfc3339(0).unwrap(), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_100).unwrap(), "2023-11-14T22:15:00Z");
        assert_eq!(rfc3339(951_782_400).unwrap(), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(4_107_542_399).unwrap(), "2100-02-28T23:59:59Z");
        assert_eq!(rfc3339(MAX_SECS).unwrap(), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339(MAX_SECS + 1), None);
        assert_eq!(both(u64::MAX), format!("out-of-range ({})", u64::MAX));
        assert_eq!(asctime(0), "Thu Jan  1 00:00:00 1970");
        assert_eq!(asctime(1_700_000_100), "Tue Nov 14 22:15:00 2023");
        assert_eq!(asctime(951_782_400), "Tue Feb 29 00:00:00 2000");
        assert_eq!(asctime(u64::MAX), "Thu Jan  1 00:00:00 1970");
    }
}
