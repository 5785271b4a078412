//! X.509 validity times (RFC 5280 section 4.1.2.5) as seconds since the Unix epoch.

use super::der::{self, GENERALIZED_TIME, UTC_TIME};
use crate::wire::Reader;
use crate::ParseError;

/// Reads a UTCTime (`YYMMDDHHMMSSZ`, years 1950-2049) or GeneralizedTime
/// (`YYYYMMDDHHMMSSZ`) and returns seconds since 1970-01-01T00:00:00Z (negative before).
pub(crate) fn read(r: &mut Reader<'_>, field: &'static str) -> Result<i64, ParseError> {
    let tlv = der::any(r, field)?;
    let mut c = tlv.content;
    let text = c.rest();
    let (year, rest) = match (tlv.tag, text.len()) {
        (UTC_TIME, 13) => {
            let (yy, rest) = text.split_at(2);
            let yy = digits(yy).ok_or_else(|| r.invalid(field, 0))?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, rest)
        }
        (GENERALIZED_TIME, 15) => {
            let (yyyy, rest) = text.split_at(4);
            (digits(yyyy).ok_or_else(|| r.invalid(field, 0))?, rest)
        }
        (tag, _) => return Err(r.invalid(field, u64::from(tag))),
    };
    let bad = || r.invalid(field, u64::from(year));
    let [mo1, mo2, d1, d2, h1, h2, mi1, mi2, s1, s2, b'Z'] = *rest else {
        return Err(bad());
    };
    let month = digits(&[mo1, mo2]).ok_or_else(bad)?;
    let day = digits(&[d1, d2]).ok_or_else(bad)?;
    let hour = digits(&[h1, h2]).ok_or_else(bad)?;
    let min = digits(&[mi1, mi2]).ok_or_else(bad)?;
    let sec = digits(&[s1, s2]).ok_or_else(bad)?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 59 {
        return Err(bad());
    }
    let days = days_from_civil(i64::from(year), i64::from(month), i64::from(day));
    Ok(days * 86_400 + i64::from(hour) * 3600 + i64::from(min) * 60 + i64::from(sec))
}

fn digits(b: &[u8]) -> Option<u32> {
    b.iter().try_fold(0u32, |acc, c| {
        c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
    })
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(tag: u8, s: &str) -> Result<i64, ParseError> {
        let mut bytes = vec![tag, u8::try_from(s.len()).unwrap()];
        bytes.extend_from_slice(s.as_bytes());
        read(&mut Reader::new("t", &bytes), "time")
    }

    #[test]
    fn known_instants() {
        assert_eq!(parse(UTC_TIME, "700101000000Z").unwrap(), 0);
        assert_eq!(parse(UTC_TIME, "491231235959Z").unwrap(), 2_524_607_999);
        assert_eq!(parse(UTC_TIME, "500101000000Z").unwrap(), -631_152_000);
        assert_eq!(
            parse(GENERALIZED_TIME, "20240229120000Z").unwrap(),
            1_709_208_000
        );
        assert_eq!(
            parse(GENERALIZED_TIME, "99991231235959Z").unwrap(),
            253_402_300_799
        );
    }

    #[test]
    fn malformed_times_are_refused() {
        for (tag, s) in [
            (UTC_TIME, "7001010000Z"),
            (UTC_TIME, "700101000000+0100"),
            (UTC_TIME, "701301000000Z"),
            (GENERALIZED_TIME, "2024022912000Z"),
            (GENERALIZED_TIME, "2024a229120000Z"),
            (0x04, "700101000000Z"),
        ] {
            assert!(parse(tag, s).is_err(), "{s}");
        }
    }
}
