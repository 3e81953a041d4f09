//! How option structs are written in a settings file or a request body.
//!
//! The library's option structs ([`CollectOptions`](crate::CollectOptions),
//! and the transports' and AWS options in their crates) implement
//! `Deserialize` with `#[serde(default)]`: a `[collect]` table of
//! `diffy.toml`, or a JSON body, fills in what it names and leaves every
//! other field at its one default. Unknown keys are refused, so a typo is an
//! error rather than a setting silently ignored.
//!
//! Durations are written as `"90s"`, `"5m"` or `"1h 30m"` (or a number of
//! seconds), sizes as `"256M"`, `"1G"`, `"512KiB"` or a number of bytes;
//! [`parse_duration`] and [`parse_bytes`] are the same rules for flags.
//!
//! The helper modules are for `#[serde(with = "...")]` in option structs of
//! other crates.

use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::ser::Serializer;

/// Hint for a duration that [`parse_duration`] refused.
pub const DURATION_HELP: &str = "write a duration like 90s, 5m or 1h";

/// Hint for a size that [`parse_bytes`] refused.
pub const BYTES_HELP: &str = "write a size like 256M, 1G or 1048576";

/// Parses a duration longer than zero: `90s`, `5m`, `1h 30m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim()).map_err(|e| format!("{s:?} is not a duration: {e}"))?;
    if d.is_zero() {
        return Err(format!("{s:?} is zero; a duration must be longer than zero"));
    }
    Ok(d)
}

/// Parses a size above zero: `256M`, `1G`, `512KiB`, `1048576` (binary units).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let bad = || format!("{s:?} is not a size");
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n.parse().map_err(|_| bad())?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(bad()),
    };
    n.checked_mul(mult).filter(|b| *b > 0).ok_or_else(|| format!("{s:?} is not a usable size: it must be above zero"))
}

/// A [`Duration`] as `"90s"` or a whole number of seconds (above zero).
pub mod duration {
    use super::*;

    /// Writes the duration as humantime text (`"2m"`).
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    /// Reads `"90s"` or `90`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Duration;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a duration like \"90s\" or \"5m\", or a number of seconds")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
                parse_duration(v).map_err(|e| E::custom(format!("{e} (write a duration like 90s, 5m or 1h)")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
                if v == 0 {
                    return Err(E::custom("a duration must be longer than zero"));
                }
                Ok(Duration::from_secs(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
                u64::try_from(v).map_err(|_| E::custom("a duration cannot be negative")).and_then(|v| self.visit_u64(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// A size in bytes as `"256M"` or a number of bytes (above zero).
pub mod bytes {
    use super::*;

    /// Writes the size as a number of bytes.
    pub fn serialize<S: Serializer>(n: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(*n)
    }

    /// Reads `"256M"` or `268435456`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = u64;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a size like \"256M\" or \"1G\", or a number of bytes")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
                parse_bytes(v).map_err(|e| E::custom(format!("{e} (write a size like 256M, 1G or 1048576)")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
                if v == 0 {
                    return Err(E::custom("a size must be above zero"));
                }
                Ok(v)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
                u64::try_from(v).map_err(|_| E::custom("a size cannot be negative")).and_then(|v| self.visit_u64(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// A count that must be at least one (`concurrency`, attempts).
pub mod at_least_one {
    use super::*;

    /// Reads a whole number of at least 1.
    pub fn deserialize<'de, D, T>(d: D) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: TryFrom<u64>,
    {
        let n = <u64 as serde::Deserialize>::deserialize(d)?;
        if n == 0 {
            return Err(de::Error::custom("must be at least 1"));
        }
        T::try_from(n).map_err(|_| de::Error::custom(format!("{n} is too large")))
    }
}

/// Like [`at_least_one`], for an optional count.
pub mod opt_at_least_one {
    use super::*;

    /// Reads a whole number of at least 1, or null for none.
    pub fn deserialize<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: TryFrom<u64>,
    {
        let Some(n) = <Option<u64> as serde::Deserialize>::deserialize(d)? else {
            return Ok(None);
        };
        if n == 0 {
            return Err(de::Error::custom("must be at least 1"));
        }
        T::try_from(n).map(Some).map_err(|_| de::Error::custom(format!("{n} is too large")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("256M").unwrap(), 256 << 20);
        assert_eq!(parse_bytes("1048576").unwrap(), 1 << 20);
        assert_eq!(parse_bytes("2GiB").unwrap(), 2 << 30);
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("0").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5400));
        assert!(parse_duration("0s").unwrap_err().contains("longer than zero"));
        assert!(parse_duration("soon").unwrap_err().contains("not a duration"));
    }
}
