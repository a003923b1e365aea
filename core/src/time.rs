//! UTC timestamps for command lines and reports: `2026-11-01T00:00Z` ⇄ ms since the epoch;
//! durations like `24h` ([`parse_duration_ms`]).
//!
//! Accepted: `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM`, `…:SS`, `…:SS.fff`, each optionally followed by
//! `Z` or an offset `±HH:MM` (no suffix means UTC); a space may replace the `T`; a bare integer
//! is taken as milliseconds since the epoch. Pure arithmetic (proleptic Gregorian calendar), no
//! time-zone database and no I/O.

/// Days since 1970-01-01 of a civil date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

fn num(s: &str, what: &str, range: std::ops::RangeInclusive<i64>) -> Result<i64, String> {
    let n: i64 = s
        .parse()
        .ok()
        .filter(|_| s.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| format!("{what} {s:?} is not a number"))?;
    if !range.contains(&n) {
        return Err(format!("{what} {n} is out of range {range:?}"));
    }
    Ok(n)
}

/// Parses a UTC time (see the module doc) into ms since the epoch.
pub fn parse_ms(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let expected = "expected a time like 2026-11-01T00:00Z, 2026-11-01T13:45:10.250+01:00, \
                    2026-11-01, or milliseconds since the epoch";
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().map_err(|_| format!("{s:?}: {expected}"));
    }
    let bad = |why: String| format!("{s:?}: {why}; {expected}");
    let (date, rest) = match s.find(['T', 't', ' ']) {
        Some(i) => (&s[..i], &s[i + 1..]),
        None => (s, ""),
    };
    let mut parts = date.split('-');
    let (Some(y), Some(m), Some(d), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("the date is not YYYY-MM-DD".into()));
    };
    let y = num(y, "year", 1..=9999).map_err(bad)?;
    let m = num(m, "month", 1..=12).map_err(bad)?;
    let d = num(d, "day", 1..=31).map_err(bad)?;
    // The time of day, then the zone suffix.
    let (clock, offset_min) = if let Some(c) = rest.strip_suffix(['Z', 'z']) {
        (c, 0)
    } else if let Some(i) = rest.rfind(['+', '-']) {
        let (c, z) = (&rest[..i], &rest[i..]);
        let sign = if z.starts_with('-') { -1 } else { 1 };
        let (hh, mm) = z[1..]
            .split_once(':')
            .ok_or_else(|| bad(format!("the offset {z:?} is not ±HH:MM")))?;
        let hh = num(hh, "offset hours", 0..=23).map_err(bad)?;
        let mm = num(mm, "offset minutes", 0..=59).map_err(bad)?;
        (c, sign * (hh * 60 + mm))
    } else {
        (rest, 0)
    };
    let mut ms_of_day = 0;
    if !clock.is_empty() {
        let mut f = clock.split(':');
        let h = num(f.next().unwrap_or(""), "hour", 0..=23).map_err(bad)?;
        let mi = num(
            f.next()
                .ok_or_else(|| bad("the time is not HH:MM".into()))?,
            "minute",
            0..=59,
        )
        .map_err(bad)?;
        let (sec, frac) = match f.next() {
            None => (0, 0),
            Some(sf) => {
                let (sec, frac) = sf.split_once('.').unwrap_or((sf, ""));
                let sec = num(sec, "second", 0..=60).map_err(bad)?;
                let frac = if frac.is_empty() {
                    0
                } else {
                    let digits: String = frac.chars().chain("000".chars()).take(3).collect();
                    num(&digits, "fraction", 0..=999).map_err(bad)?
                };
                (sec, frac)
            }
        };
        if f.next().is_some() {
            return Err(bad("too many `:` in the time".into()));
        }
        ms_of_day = ((h * 60 + mi) * 60 + sec) * 1000 + frac;
    } else if !rest.is_empty() && offset_min == 0 && !rest.eq_ignore_ascii_case("z") {
        return Err(bad("no time of day before the zone".into()));
    }
    Ok(days_from_civil(y, m, d) * 86_400_000 + ms_of_day - offset_min * 60_000)
}

/// `2026-11-01T13:45:10.250Z`.
pub fn format_ms(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let rem = ms.rem_euclid(86_400_000);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000
    )
}

/// The hour bucket of a time, `2026-11-01T13`, for per-hour counts.
pub fn hour_of(ms: i64) -> String {
    format_ms(ms)[..13].to_string()
}

/// Parses a duration like `90s`, `15m`, `1h`, `7d` or `500ms` into milliseconds.
pub fn parse_duration_ms(s: &str) -> Result<i64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let expected = "expected a number and a unit: ms, s, m, h or d (e.g. 90s, 15m, 24h, 7d)";
    let n: i64 = n.parse().map_err(|_| format!("{s:?}: {expected}"))?;
    let scale = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("{s:?}: {expected}")),
    };
    n.checked_mul(scale)
        .filter(|ms| *ms > 0)
        .ok_or_else(|| format!("{s:?}: must be positive and below 10^18 ms"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration_ms("500ms"), Ok(500));
        assert_eq!(parse_duration_ms("90s"), Ok(90_000));
        assert_eq!(parse_duration_ms("15m"), Ok(900_000));
        assert_eq!(parse_duration_ms(" 24h"), Ok(86_400_000));
        assert_eq!(parse_duration_ms("7d"), Ok(604_800_000));
        for bad in [
            "",
            "h",
            "10",
            "1w",
            "-1h",
            "0s",
            "1.5h",
            "99999999999999999d",
        ] {
            let e = parse_duration_ms(bad).unwrap_err();
            assert!(e.contains(&format!("{bad:?}")), "{bad:?}: {e}");
        }
    }

    #[test]
    fn parses_the_forms_operators_type() {
        assert_eq!(parse_ms("1970-01-01"), Ok(0));
        assert_eq!(parse_ms("1970-01-01T00:00Z"), Ok(0));
        assert_eq!(parse_ms("2026-11-01T00:00Z"), Ok(1_793_491_200_000));
        assert_eq!(parse_ms("2026-11-01T00:00:01.5Z"), Ok(1_793_491_201_500));
        assert_eq!(parse_ms("2026-11-01T01:00+01:00"), Ok(1_793_491_200_000));
        assert_eq!(parse_ms("2026-10-31 23:00-01:00"), Ok(1_793_491_200_000));
        assert_eq!(parse_ms("1793491200000"), Ok(1_793_491_200_000));
        for bad in [
            "",
            "2026-13-01",
            "2026-11-01T25:00Z",
            "yesterday",
            "2026-11-01T10",
        ] {
            assert!(parse_ms(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn formats_round_trip() {
        for ms in [0, 1_793_491_201_500, 951_782_400_000, -1] {
            assert_eq!(parse_ms(&format_ms(ms)), Ok(ms), "{}", format_ms(ms));
        }
        assert_eq!(format_ms(1_793_491_201_500), "2026-11-01T00:00:01.500Z");
        assert_eq!(hour_of(1_793_491_201_500), "2026-11-01T00");
    }
}
