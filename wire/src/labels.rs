use std::collections::BTreeMap;

/// Labels describing where and under what conditions a probe measured:
/// `phase`, `country` (ISO 3166 alpha-2), `region`, `network`, `asn`,
/// `device`, and any other `key=value` the user adds. Reports select and
/// group on them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Labels(BTreeMap<String, String>);

/// A label that cannot be used, with what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    /// Keys are lower-case ASCII letters, digits and `_`, starting with a letter, at most 32 bytes.
    #[error("label key `{0}` is invalid: use lower-case letters, digits and `_`, starting with a letter, at most 32 characters")]
    BadKey(String),
    /// Values are printable, without `,` `=` `;` or control characters, at most 128 bytes.
    #[error("label value `{value}` for `{key}` is invalid: use at most 128 printable characters without `,`, `=` or `;`")]
    BadValue {
        /// The key.
        key: String,
        /// The rejected value.
        value: String,
    },
    /// `country` must be an ISO 3166-1 alpha-2 code such as `IN` or `MY`.
    #[error("country `{0}` is not an ISO 3166-1 alpha-2 code (two letters, such as IN or MY)")]
    BadCountry(String),
    /// A `key=value` pair without `=`.
    #[error("label `{0}` is not of the form key=value")]
    NotAPair(String),
    /// More labels than a batch may carry.
    #[error("too many labels (at most {max})")]
    TooMany {
        /// The limit.
        max: usize,
    },
}

/// Most labels a batch may carry.
pub const MAX_LABELS: usize = 32;

impl Labels {
    /// Well-known key: free-text phase such as `before` or `after`.
    pub const PHASE: &'static str = "phase";
    /// Well-known key: ISO 3166-1 alpha-2 country code, upper case.
    pub const COUNTRY: &'static str = "country";
    /// Well-known key: region or city.
    pub const REGION: &'static str = "region";
    /// Well-known key: network type (wifi, lte, 5g, wired…).
    pub const NETWORK: &'static str = "network";
    /// Well-known key: ISP or autonomous system number.
    pub const ASN: &'static str = "asn";
    /// Well-known key: device model or VM type.
    pub const DEVICE: &'static str = "device";
    /// The well-known keys, in the order CSV columns use.
    pub const WELL_KNOWN: [&'static str; 6] = [
        Self::PHASE,
        Self::COUNTRY,
        Self::REGION,
        Self::NETWORK,
        Self::ASN,
        Self::DEVICE,
    ];

    /// No labels.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets one label after validating it; `country` is upper-cased.
    pub fn insert(&mut self, key: &str, value: &str) -> Result<(), LabelError> {
        if !valid_key(key) {
            return Err(LabelError::BadKey(key.to_string()));
        }
        let value = if key == Self::COUNTRY {
            let upper = value.to_ascii_uppercase();
            if upper.len() != 2 || !upper.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err(LabelError::BadCountry(value.to_string()));
            }
            upper
        } else {
            if !valid_value(value) {
                return Err(LabelError::BadValue {
                    key: key.to_string(),
                    value: value.to_string(),
                });
            }
            value.to_string()
        };
        if !self.0.contains_key(key) && self.0.len() >= MAX_LABELS {
            return Err(LabelError::TooMany { max: MAX_LABELS });
        }
        self.0.insert(key.to_string(), value);
        Ok(())
    }

    /// Parses and sets a `key=value` pair.
    pub fn insert_pair(&mut self, pair: &str) -> Result<(), LabelError> {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| LabelError::NotAPair(pair.to_string()))?;
        self.insert(k.trim(), v.trim())
    }

    /// The value of a label, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// All labels in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Labels that are not well-known, as `k=v;k=v` (for one CSV column).
    pub fn extra_joined(&self) -> String {
        self.iter()
            .filter(|(k, _)| !Self::WELL_KNOWN.contains(k))
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(";")
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when no label is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn valid_key(k: &str) -> bool {
    let mut bytes = k.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_lowercase())
        && k.len() <= 32
        && k.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn valid_value(v: &str) -> bool {
    v.len() <= 128
        && v.chars()
            .all(|c| !c.is_control() && !matches!(c, ',' | '=' | ';'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn country_is_upper_cased_and_checked() {
        let mut l = Labels::new();
        l.insert("country", "in").unwrap();
        assert_eq!(l.get("country"), Some("IN"));
        assert!(matches!(
            l.insert("country", "IND"),
            Err(LabelError::BadCountry(_))
        ));
    }

    #[test]
    fn keys_and_values_are_validated() {
        let mut l = Labels::new();
        assert!(l.insert("Phase", "x").is_err());
        assert!(l.insert("phase", "a,b").is_err());
        assert!(l.insert_pair("phase").is_err());
        l.insert_pair("phase=before").unwrap();
        l.insert_pair("rack=r1").unwrap();
        assert_eq!(l.get("phase"), Some("before"));
        assert_eq!(l.extra_joined(), "rack=r1");
    }
}
