//! `--filter KEY=VALUE`: the filters SSM applies to `GetParametersByPath` (ssm-cache's filter
//! classes), parsed and checked before mounting.
//!
//! Promises: only `Type`, `KeyId` and `Label` are accepted, each with a value SSM can take; a
//! mistake is reported with what is allowed. Filters with the same key are alternatives (any
//! value matches); filters with different keys must all match, as in SSM.

use std::fmt;
use std::str::FromStr;

use crate::names::Selector;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FilterKey {
    Type,
    KeyId,
    Label,
}

impl FilterKey {
    pub fn as_str(self) -> &'static str {
        match self {
            FilterKey::Type => "Type",
            FilterKey::KeyId => "KeyId",
            FilterKey::Label => "Label",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    pub key: FilterKey,
    pub value: String,
}

impl FromStr for Filter {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (key, value) = s
            .split_once('=')
            .ok_or_else(|| format!("filter '{s}' must be KEY=VALUE, e.g. Type=SecureString"))?;
        let key = match key {
            "Type" => FilterKey::Type,
            "KeyId" => FilterKey::KeyId,
            "Label" => FilterKey::Label,
            other => {
                return Err(format!(
                    "unknown filter key '{other}': use Type, KeyId or Label"
                ))
            }
        };
        let ok = match key {
            FilterKey::Type => ["String", "StringList", "SecureString"].contains(&value),
            // A key id, alias or ARN: letters, digits and the punctuation they use.
            FilterKey::KeyId => {
                !value.is_empty()
                    && value.len() <= 2048
                    && value
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"/:_-.".contains(&b))
            }
            FilterKey::Label => matches!(Selector::parse_ssm(value), Some(Selector::Label(_))),
        };
        if !ok {
            let allowed = match key {
                FilterKey::Type => "String, StringList or SecureString",
                FilterKey::KeyId => "a KMS key id, alias/NAME or key ARN",
                FilterKey::Label => {
                    "a label: letters, digits, '.', '-', '_', not starting with a digit, aws or ssm"
                }
            };
            return Err(format!(
                "bad value '{value}' for filter {}: use {allowed}",
                key.as_str()
            ));
        }
        Ok(Filter {
            key,
            value: value.to_string(),
        })
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.key.as_str(), self.value)
    }
}

/// Filters grouped by key, values in the order given: the shape of SSM's `ParameterFilters`.
pub fn grouped(filters: &[Filter]) -> Vec<(FilterKey, Vec<String>)> {
    let mut groups: Vec<(FilterKey, Vec<String>)> = Vec::new();
    for f in filters {
        match groups.iter_mut().find(|(k, _)| *k == f.key) {
            Some((_, values)) => values.push(f.value.clone()),
            None => groups.push((f.key, vec![f.value.clone()])),
        }
    }
    groups.sort_by_key(|(k, _)| *k);
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_takes_its_own_values() {
        assert!("Type=SecureString".parse::<Filter>().is_ok());
        assert!("Type=Secure"
            .parse::<Filter>()
            .unwrap_err()
            .contains("String, StringList or SecureString"));
        assert!("KeyId=alias/aws/ssm".parse::<Filter>().is_ok());
        assert!("KeyId=arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab"
            .parse::<Filter>()
            .is_ok());
        assert!("KeyId=".parse::<Filter>().is_err());
        assert!("Label=prod".parse::<Filter>().is_ok());
        assert!("Label=1prod".parse::<Filter>().is_err());
        assert!("Label=awsx".parse::<Filter>().is_err());
    }

    #[test]
    fn unknown_keys_and_shapes_say_what_is_allowed() {
        assert!("Name=x"
            .parse::<Filter>()
            .unwrap_err()
            .contains("Type, KeyId or Label"));
        assert!("Type".parse::<Filter>().unwrap_err().contains("KEY=VALUE"));
    }

    #[test]
    fn same_keys_group_together() {
        let f: Vec<Filter> = ["Type=String", "Label=prod", "Type=StringList"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(
            grouped(&f),
            vec![
                (FilterKey::Type, vec!["String".into(), "StringList".into()]),
                (FilterKey::Label, vec!["prod".into()]),
            ]
        );
    }
}
