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
        for (k, v) in form_pairs(raw.unwrap_or("")) {
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

/// Splits `a=1&b=x%20y` into decoded pairs (`+` is a space, as in HTML forms).
fn form_pairs(raw: &str) -> Vec<(String, String)> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                // Two hex digits exactly: `from_str_radix` alone would take "+5".
                let pair = &bytes[i + 1..i + 3];
                let hex = pair
                    .iter()
                    .all(u8::is_ascii_hexdigit)
                    .then(|| std::str::from_utf8(pair).ok())
                    .flatten();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
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
        assert_eq!(decode("%zz%4"), "%zz%4");
        assert_eq!(decode("100%25"), "100%");
    }
}
