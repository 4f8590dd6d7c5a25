//! Duration literals such as `"90s"`, `"24h"`, `"1h30m"`, `"250ms"`, checked at compile time.

/// Milliseconds in `text`: one or more `<number><unit>` parts, units `ms`, `s`, `m`, `h`, `d`.
pub(crate) fn parse(text: &str) -> Result<u64, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("it is empty".into());
    }
    let mut total: u64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("expected a number at \"{rest}\""));
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| "the number is too large".to_string())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let scale = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => return Err(format!("{number} has no unit")),
            other => return Err(format!("unknown unit \"{other}\"")),
        };
        total = number
            .checked_mul(scale)
            .and_then(|ms| total.checked_add(ms))
            .ok_or_else(|| "the duration is too long".to_string())?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn units_and_compounds() {
        assert_eq!(parse("90s"), Ok(90_000));
        assert_eq!(parse("24h"), Ok(86_400_000));
        assert_eq!(parse("1h30m"), Ok(5_400_000));
        assert_eq!(parse("250ms"), Ok(250));
        assert_eq!(parse("2d"), Ok(172_800_000));
        assert_eq!(parse("0s"), Ok(0));
    }

    #[test]
    fn malformed_literals_are_refused() {
        assert!(parse("").is_err());
        assert!(parse("24").is_err());
        assert!(parse("24 hours").is_err());
        assert!(parse("h").is_err());
        assert!(parse("1.5h").is_err());
        assert!(parse("99999999999999999999s").is_err());
    }
}
