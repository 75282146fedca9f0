//! Query-string parsing with errors that name the parameter, the value and what
//! was expected (serde's defaults say neither clearly).

use std::collections::HashMap;
use std::str::FromStr;
use std::time::SystemTime;

use super::error::ApiError;

/// The raw parameters of one request, checked against the names a handler accepts.
pub struct Params(HashMap<String, String>);

impl Params {
    /// Fails on a parameter not in `allowed`: a typo must not be silently ignored.
    pub fn parse(raw: Option<&str>, allowed: &[&str]) -> Result<Self, ApiError> {
        let mut map = HashMap::new();
        // `application/x-www-form-urlencoded`: `+` is a space, `%` takes exactly two
        // hex digits (`%+5` is not a byte), invalid UTF-8 becomes U+FFFD.
        for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
            let (k, v) = (k.into_owned(), v.into_owned());
            if !allowed.contains(&k.as_str()) {
                return Err(ApiError::UnknownParam(k));
            }
            // `status=closed&status=failed` is not "both": refuse it, not last-wins.
            if map.contains_key(&k) {
                return Err(ApiError::RepeatedParam(k));
            }
            map.insert(k, v);
        }
        Ok(Self(map))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// A value parsed with `FromStr`; `expected` describes valid values.
    pub fn parsed<T: FromStr>(
        &self,
        name: &'static str,
        expected: &str,
    ) -> Result<Option<T>, ApiError> {
        let Some(raw) = self.get(name) else {
            return Ok(None);
        };
        raw.parse().map(Some).map_err(|_| ApiError::BadParam {
            name,
            value: raw.to_owned(),
            expected: expected.to_owned(),
        })
    }

    /// An integer within `min..=max`, or `default` when absent.
    pub fn int(
        &self,
        name: &'static str,
        min: u64,
        max: u64,
        default: u64,
    ) -> Result<u64, ApiError> {
        let expected = format!("an integer from {min} to {max}");
        match self.parsed::<u64>(name, &expected)? {
            None => Ok(default),
            Some(v) if (min..=max).contains(&v) => Ok(v),
            Some(v) => Err(ApiError::BadParam {
                name,
                value: v.to_string(),
                expected,
            }),
        }
    }

    /// An RFC 3339 timestamp in UTC such as `2026-11-27T16:00:00Z` (no offsets).
    pub fn time(&self, name: &'static str) -> Result<Option<SystemTime>, ApiError> {
        let Some(raw) = self.get(name) else {
            return Ok(None);
        };
        humantime::parse_rfc3339_weak(raw)
            .map(Some)
            .map_err(|_| ApiError::BadParam {
                name,
                value: raw.to_owned(),
                expected: "an RFC 3339 timestamp in UTC such as 2026-11-27T16:00:00Z".to_owned(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_and_checks_parameters() {
        let p = Params::parse(
            Some("limit=5&since=2026-11-27T16%3A00%3A00Z&category=a+b"),
            &["limit", "since", "category"],
        )
        .unwrap();
        assert_eq!(p.int("limit", 1, 10, 3).unwrap(), 5);
        assert!(p.time("since").unwrap().is_some());
        assert_eq!(p.get("category"), Some("a b"));
        let p = Params::parse(Some("limit=0"), &["limit"]).unwrap();
        let err = p.int("limit", 1, 10, 3).unwrap_err().to_string();
        assert_eq!(
            err,
            "query parameter `limit` = \"0\": expected an integer from 1 to 10"
        );
        assert!(Params::parse(Some("limt=1"), &["limit"]).is_err());
    }

    fn value(raw: &str) -> String {
        let p = Params::parse(Some(raw), &["v"]).unwrap();
        p.get("v").unwrap_or_default().to_owned()
    }

    #[test]
    fn percent_takes_exactly_two_hex_digits() {
        assert_eq!(value("v=%zz%4"), "%zz%4");
        assert_eq!(value("v=100%25"), "100%");
        // Not the byte 5 (`from_str_radix` alone would read "+5" as 5); the `+` is
        // a space as anywhere else.
        assert_eq!(value("v=%+5"), "% 5");
        assert_eq!(value("v=%41%62"), "Ab");
        assert_eq!(value("v=%ff"), "\u{fffd}");
        assert_eq!(value("v"), "");
        assert_eq!(value("&&v=1&"), "1");
    }

    #[test]
    fn a_repeated_or_unknown_parameter_is_named() {
        let err = Params::parse(Some("v=1&v=2"), &["v"]).err().unwrap();
        assert_eq!(err.to_string(), "query parameter `v` given more than once");
        // Decoded before the check: `%76` is `v`.
        let err = Params::parse(Some("v=1&%76=2"), &["v"]).err().unwrap();
        assert_eq!(err.to_string(), "query parameter `v` given more than once");
        let err = Params::parse(Some("w=1"), &["v"]).err().unwrap();
        assert_eq!(err.to_string(), "unknown query parameter `w`");
    }
}
