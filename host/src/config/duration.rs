//! Durations as they appear in the config file: seconds (`2`, `0.5`) or a string
//! with a unit (`"500ms"`, `"2s"`, `"1m"`, `"1h"`).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration read from the config, remembering how it was written so that an
/// exported config looks like the one that was imported.
#[derive(Clone, PartialEq)]
pub struct RawDuration {
    /// The parsed value.
    pub value: Duration,
    /// The text it was written as (`None` when it was a plain number of seconds).
    text: Option<String>,
}

impl RawDuration {
    /// A duration that serializes as a number of seconds.
    pub fn from_secs_f64(secs: f64) -> Self {
        Self {
            value: Duration::from_secs_f64(secs),
            text: None,
        }
    }
}

impl fmt::Debug for RawDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.value)
    }
}

/// Parses `"500ms"`, `"2s"`, `"1.5s"`, `"3m"`, `"1h"`, `"250us"` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {text:?}; expected seconds or e.g. \"500ms\", \"2s\""))?;
    let scale = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        other => {
            return Err(format!(
                "invalid duration unit {other:?} in {text:?}; expected one of us, ms, s, m, h, d"
            ));
        }
    };
    secs_to_duration(n * scale).ok_or_else(|| format!("duration {text:?} is out of range"))
}

fn secs_to_duration(secs: f64) -> Option<Duration> {
    if (0.0..1e12).contains(&secs) {
        Some(Duration::from_secs_f64(secs))
    } else {
        None
    }
}

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Num(f64),
            Text(String),
        }
        match Repr::deserialize(d).map_err(|_| {
            serde::de::Error::custom("invalid duration; expected seconds (2, 0.5) or a string like \"500ms\"")
        })? {
            Repr::Num(n) => secs_to_duration(n)
                .map(|value| RawDuration { value, text: None })
                .ok_or_else(|| serde::de::Error::custom(format!("duration {n} is negative or out of range"))),
            Repr::Text(s) => parse_duration(&s)
                .map(|value| RawDuration { value, text: Some(s) })
                .map_err(serde::de::Error::custom),
        }
    }
}

impl Serialize for RawDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.text {
            Some(t) => s.serialize_str(t),
            None => s.serialize_f64(self.value.as_secs_f64()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("3m").unwrap(), Duration::from_secs(180));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn numbers_and_strings_round_trip() {
        let d: RawDuration = serde_yaml_ng::from_str("0.5").unwrap();
        assert_eq!(d.value, Duration::from_millis(500));
        let d: RawDuration = serde_yaml_ng::from_str("\"250ms\"").unwrap();
        assert_eq!(serde_yaml_ng::to_string(&d).unwrap().trim(), "250ms");
        assert!(serde_yaml_ng::from_str::<RawDuration>("-1").is_err());
    }
}
