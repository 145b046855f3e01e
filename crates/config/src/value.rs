//! Typed readings of a value string, with the rules of Cyrus 3.6's `libconfig.c`, so
//! that an imapd.conf shared with Cyrus means the same thing to both.

/// A switch as Cyrus reads it (`config_parse_switch`): only the start of the value
/// counts, and case matters. `0`, `n…`, `f…`, `of…` are off; `1`, `y…`, `t…`,
/// `on…` are on. So `yes`, `no`, `on`, `off`, `true`, `false`, `t`, `f`, `1`, `0`
/// all work, and so do `nope` or `100`, because Cyrus accepts them; `Yes`, `ON` or
/// `2` are rejected (Cyrus refuses to start with them).
pub fn parse_switch(value: &str) -> Option<bool> {
    let b = value.as_bytes();
    match b.first()? {
        b'0' | b'n' | b'f' => Some(false),
        b'1' | b'y' | b't' => Some(true),
        b'o' => match b.get(1)? {
            b'f' => Some(false),
            b'n' => Some(true),
            _ => None,
        },
        _ => None,
    }
}

/// An integer as C's `strtol(value, &end, 0)` reads it and Cyrus accepts it (the
/// whole value consumed): optional sign, then `0x`/`0X` hexadecimal, a leading `0`
/// for octal, or decimal. Out-of-range values are rejected instead of clamped.
pub fn parse_int(value: &str) -> Option<i64> {
    let (negative, rest) = match value.as_bytes().first()? {
        b'-' => (true, &value[1..]),
        b'+' => (false, &value[1..]),
        _ => (false, value),
    };
    let (radix, digits) =
        if let Some(hex) = rest.strip_prefix("0x").or_else(|| rest.strip_prefix("0X")) {
            (16, hex)
        } else if rest.len() > 1 && rest.starts_with('0') {
            (8, &rest[1..])
        } else {
            (10, rest)
        };
    // from_str_radix would accept its own sign; there must be none left here.
    if digits.is_empty() || !digits.bytes().all(|c| char::from(c).is_digit(radix)) {
        return None;
    }
    let magnitude = i128::from_str_radix(digits, radix).ok()?;
    i64::try_from(if negative { -magnitude } else { magnitude }).ok()
}

/// The unit a bare number in a duration is counted in. Each key has its own (most
/// are seconds); the caller knows which, as in Cyrus's `config_getduration`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DurationUnit {
    Days,
    Hours,
    Minutes,
    Seconds,
}

impl DurationUnit {
    fn seconds(self) -> i64 {
        match self {
            DurationUnit::Days => 86_400,
            DurationUnit::Hours => 3_600,
            DurationUnit::Minutes => 60,
            DurationUnit::Seconds => 1,
        }
    }
}

/// A duration in seconds, read like Cyrus's `config_parseduration`: a sequence of
/// `<digits><unit>` with units `d`, `h`, `m`, `s` (lower case), e.g. `1h30m`; a
/// trailing bare number is in `default_unit` (`30` with minutes = 1800, `1h30` with
/// minutes = 5400). A leading `-` negates the total (some keys use ≤ 0 for
/// "unlimited"). No spaces; a unit needs digits before it. `None` if malformed or
/// out of range.
pub fn parse_duration(value: &str, default_unit: DurationUnit) -> Option<i64> {
    let (negative, body) = match value.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, value),
    };
    let mut total: i64 = 0;
    let mut accum: i64 = 0;
    let mut saw_digit = false;
    for c in body.bytes() {
        if c.is_ascii_digit() {
            accum = accum.checked_mul(10)?.checked_add(i64::from(c - b'0'))?;
            saw_digit = true;
            continue;
        }
        if !saw_digit {
            return None;
        }
        let unit = match c {
            b'd' => DurationUnit::Days,
            b'h' => DurationUnit::Hours,
            b'm' => DurationUnit::Minutes,
            b's' => DurationUnit::Seconds,
            _ => return None,
        };
        total = total.checked_add(accum.checked_mul(unit.seconds())?)?;
        accum = 0;
        saw_digit = false;
    }
    if saw_digit {
        total = total.checked_add(accum.checked_mul(default_unit.seconds())?)?;
    }
    Some(if negative { -total } else { total })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switch_spellings_follow_cyrus() {
        for on in ["1", "yes", "y", "on", "true", "t", "100", "yup"] {
            assert_eq!(parse_switch(on), Some(true), "{on}");
        }
        for off in ["0", "no", "n", "off", "false", "f", "nope", "0x1"] {
            assert_eq!(parse_switch(off), Some(false), "{off}");
        }
        for bad in ["", "o", "ox", "Yes", "ON", "True", "2", "enable", " yes"] {
            assert_eq!(parse_switch(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn int_is_strtol_base_zero() {
        assert_eq!(parse_int("0"), Some(0));
        assert_eq!(parse_int("42"), Some(42));
        assert_eq!(parse_int("-42"), Some(-42));
        assert_eq!(parse_int("+7"), Some(7));
        assert_eq!(parse_int("0x1f"), Some(31));
        assert_eq!(parse_int("0X1F"), Some(31));
        assert_eq!(parse_int("-0x10"), Some(-16));
        assert_eq!(parse_int("017"), Some(15));
        assert_eq!(parse_int("9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_int("-9223372036854775808"), Some(i64::MIN));
        for bad in [
            "",
            "-",
            "0x",
            "08",
            "12abc",
            "1 ",
            "1.5",
            "--1",
            "+-1",
            "0x+1",
            "9223372036854775808",
            "99999999999999999999999999999999999999999",
        ] {
            assert_eq!(parse_int(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn durations_follow_cyrus() {
        use DurationUnit::*;
        assert_eq!(parse_duration("20m", Seconds), Some(1200));
        assert_eq!(parse_duration("1s", Minutes), Some(1));
        assert_eq!(parse_duration("30m", Seconds), Some(1800));
        assert_eq!(parse_duration("1h30m", Seconds), Some(5400));
        assert_eq!(parse_duration("1d", Seconds), Some(86_400));
        assert_eq!(parse_duration("2d3h4m5s", Seconds), Some(183_845));
        // a bare number, or a trailing one, is in the key's default unit
        assert_eq!(parse_duration("30", Seconds), Some(30));
        assert_eq!(parse_duration("30", Minutes), Some(1800));
        assert_eq!(parse_duration("1h30", Minutes), Some(5400));
        assert_eq!(parse_duration("2", Days), Some(172_800));
        assert_eq!(parse_duration("0", Hours), Some(0));
        // units may repeat; Cyrus just adds them up
        assert_eq!(parse_duration("1m1m", Seconds), Some(120));
        assert_eq!(parse_duration("-5m", Seconds), Some(-300));
        assert_eq!(parse_duration("-1", Minutes), Some(-60));
        for bad in [
            "m", "5mm", "1h 30m", "1H", "1w", "1.5h", "--1", "h1", "5x", "+5",
        ] {
            assert_eq!(parse_duration(bad, Seconds), None, "{bad:?}");
        }
        assert_eq!(parse_duration("9999999999999999999", Seconds), None);
        assert_eq!(parse_duration("999999999999999999d", Seconds), None);
    }
}
