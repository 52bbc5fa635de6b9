//! Names: what SOURCE means, which file names can be SSM parameters, and the naming rule for
//! names that SSM cannot take.
//!
//! SSM names use only `a-zA-Z0-9_.-` and `/`. ssmfs therefore has two kinds of names of its own
//! that can never clash with a parameter:
//! - control files, `.refresh` (every directory) and `.stats` (the root);
//! - `NAME%`: the parameter `NAME` in this directory, as a file, whatever else `NAME` is. When a
//!   parameter shares its name with a directory (SSM allows `/a/b` and `/a/b/c`) or with a control
//!   file, `NAME` is the directory or control file and listings show the parameter as `NAME%`.
//!
//! A third form selects one version of a parameter, as SSM's own selectors do: `NAME:3` is
//! version 3, `NAME:prod` the version labelled `prod` (a label cannot start with a digit, so
//! `:N` is always a version). These are looked up, never listed.
//!
//! Promises: a name that no SSM parameter can have is rejected here, before any API call.

use std::ffi::OsStr;
use std::fmt;
use std::str::FromStr;

/// Suffix that names a parameter as a file even where a directory or control file has its name.
pub const PARAM_SUFFIX: char = '%';
/// Writing to this file in a directory refreshes the parameters under that directory.
pub const REFRESH: &str = ".refresh";
/// The mount's counters, as JSON, at the root.
pub const STATS: &str = ".stats";

/// SSM's limit on a parameter name, hierarchy included.
const MAX_NAME_LEN: usize = 2048;
/// SSM's limit on hierarchy depth.
const MAX_DEPTH: usize = 15;

/// What is mounted: an SSM path hierarchy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Ssm(SsmPath),
}

impl FromStr for Source {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(rest) = s.strip_prefix("ssm:") {
            return rest.parse().map(Source::Ssm);
        }
        for scheme in ["secretsmanager:", "sm:"] {
            if s.starts_with(scheme) {
                return Err(format!(
                    "'{scheme}' sources are not supported by this build; mount an SSM path such as ssm:/app"
                ));
            }
        }
        if s.contains(':') {
            return Err(format!(
                "unknown source '{s}': use an SSM path such as /app or ssm:/app"
            ));
        }
        s.parse().map(Source::Ssm)
    }
}

/// An SSM hierarchy path such as `/app`, kept without a trailing slash (`/` is kept as "").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SsmPath {
    prefix: String,
}

impl FromStr for SsmPath {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if !s.starts_with('/') {
            return Err(format!(
                "SSM path '{s}' must start with '/', e.g. /app (SSM hierarchies start with a slash)"
            ));
        }
        let trimmed = s.trim_end_matches('/');
        for part in trimmed.split('/').skip(1) {
            if !is_param_component(part) {
                return Err(format!(
                    "SSM path '{s}' is not valid: each level must be non-empty and use only a-z, A-Z, 0-9, '_', '.', '-'"
                ));
            }
        }
        if trimmed.len() > MAX_NAME_LEN || trimmed.split('/').count() > MAX_DEPTH {
            return Err(format!(
                "SSM path '{s}' is longer or deeper than SSM allows"
            ));
        }
        Ok(SsmPath {
            prefix: trimmed.to_string(),
        })
    }
}

impl fmt::Display for SsmPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full_name(""))
    }
}

impl SsmPath {
    /// The full SSM name of a mount-relative path; "" is the root, whose name is the source path.
    pub fn full_name(&self, rel: &str) -> String {
        match (self.prefix.is_empty(), rel.is_empty()) {
            (true, true) => "/".to_string(),
            (false, true) => self.prefix.clone(),
            _ => format!("{}/{}", self.prefix, rel),
        }
    }

    /// The mount-relative path of a full SSM name, if the name is below this path.
    pub fn relative<'a>(&self, full: &'a str) -> Option<&'a str> {
        let rest = full.strip_prefix(self.prefix.as_str())?.strip_prefix('/')?;
        (!rest.is_empty()).then_some(rest)
    }

    /// Whether a mount-relative path is a name SSM could hold (length and depth limits).
    pub fn fits(&self, rel: &str) -> bool {
        self.prefix.len() + 1 + rel.len() <= MAX_NAME_LEN
            && self.prefix.matches('/').count() + 1 + rel.matches('/').count() <= MAX_DEPTH
    }
}

/// Whether `s` can be one level of an SSM name.
pub fn is_param_component(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Separates a parameter's name from a version or label, as in SSM's selectors.
pub const SELECTOR: char = ':';

/// A version or label of a parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Selector<'a> {
    Version(i64),
    Label(&'a str),
}

impl<'a> Selector<'a> {
    /// Parses what follows `:`. Versions are written without leading zeros, so that one version
    /// has one name; labels follow SSM's rules (letters, digits, `.`, `-`, `_`, at most 100
    /// characters, not starting with a digit, `aws` or `ssm`).
    pub fn parse(s: &'a str) -> Option<Selector<'a>> {
        let first = *s.as_bytes().first()?;
        if first.is_ascii_digit() {
            if first == b'0' || !s.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            return s.parse().ok().map(Selector::Version);
        }
        let lower = s.to_ascii_lowercase();
        let valid = s.len() <= 100
            && is_param_component(s)
            && !lower.starts_with("aws")
            && !lower.starts_with("ssm");
        valid.then_some(Selector::Label(s))
    }

    pub fn is_version(&self) -> bool {
        matches!(self, Selector::Version(_))
    }
}

impl fmt::Display for Selector<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::Version(v) => write!(f, "{v}"),
            Selector::Label(l) => f.write_str(l),
        }
    }
}

/// What a name looked up in a directory refers to.
#[derive(Debug, PartialEq, Eq)]
pub enum Name<'a> {
    /// `.refresh` or `.stats`.
    Control(&'a str),
    /// A level of the hierarchy: a directory, a parameter, or nothing.
    Entry(&'a str),
    /// `NAME%`: the parameter NAME only, never a directory.
    Param(&'a str),
    /// `NAME:3` or `NAME:label`: one version of the parameter NAME.
    Pinned(&'a str, Selector<'a>),
    /// Not a name SSM can take: answered ENOENT with no API call.
    Invalid,
}

impl<'a> Name<'a> {
    pub fn parse(name: &'a OsStr, is_root: bool) -> Name<'a> {
        let Some(name) = name.to_str() else {
            return Name::Invalid;
        };
        if name == REFRESH || (is_root && name == STATS) {
            return Name::Control(name);
        }
        if let Some((base, selector)) = name.split_once(SELECTOR) {
            return match (is_param_component(base), Selector::parse(selector)) {
                (true, Some(sel)) => Name::Pinned(base, sel),
                _ => Name::Invalid,
            };
        }
        if let Some(base) = name.strip_suffix(PARAM_SUFFIX) {
            return if is_param_component(base) {
                Name::Param(base)
            } else {
                Name::Invalid
            };
        }
        if is_param_component(name) {
            Name::Entry(name)
        } else {
            Name::Invalid
        }
    }
}

/// Whether a parameter named `name` must be listed as `name%`: it is hidden by a control file.
pub fn is_control(name: &str, is_root: bool) -> bool {
    name == REFRESH || (is_root && name == STATS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ssm(s: &str) -> SsmPath {
        match s.parse::<Source>().unwrap() {
            Source::Ssm(p) => p,
        }
    }

    #[test]
    fn source_forms() {
        assert_eq!(ssm("/app"), ssm("ssm:/app"));
        assert_eq!(ssm("/app/"), ssm("/app"));
        assert_eq!(ssm("/").full_name("a/b"), "/a/b");
        assert_eq!(ssm("/app").full_name("a/b"), "/app/a/b");
        assert_eq!(ssm("/app").full_name(""), "/app");
        assert_eq!(ssm("/").full_name(""), "/");
        assert!("app".parse::<Source>().is_err());
        assert!("/a//b".parse::<Source>().is_err());
        assert!("/a b".parse::<Source>().is_err());
        assert!("sm:prod/".parse::<Source>().is_err());
        assert!("s3:/x".parse::<Source>().is_err());
    }

    #[test]
    fn relative_names_stay_inside_the_source() {
        let p = ssm("/app");
        assert_eq!(p.relative("/app/db/password"), Some("db/password"));
        assert_eq!(p.relative("/application/x"), None);
        assert_eq!(p.relative("/app"), None);
        assert_eq!(ssm("/").relative("/x/y"), Some("x/y"));
    }

    #[test]
    fn lookup_names() {
        fn n(s: &str, root: bool) -> Name<'_> {
            Name::parse(OsStr::new(s), root)
        }
        assert_eq!(n(".refresh", false), Name::Control(".refresh"));
        assert_eq!(n(".stats", true), Name::Control(".stats"));
        assert_eq!(n(".stats", false), Name::Entry(".stats"));
        assert_eq!(n("db", false), Name::Entry("db"));
        assert_eq!(n("db%", false), Name::Param("db"));
        assert_eq!(n(".refresh%", false), Name::Param(".refresh"));
        assert_eq!(n("%", false), Name::Invalid);
        assert_eq!(n("a b", false), Name::Invalid);
        assert_eq!(n("a%b", false), Name::Invalid);
    }

    #[test]
    fn selectors() {
        fn n(s: &str) -> Name<'_> {
            Name::parse(OsStr::new(s), false)
        }
        assert_eq!(n("db:2"), Name::Pinned("db", Selector::Version(2)));
        assert_eq!(n("db:prod"), Name::Pinned("db", Selector::Label("prod")));
        assert_eq!(
            n("db:Prod-1.x_y"),
            Name::Pinned("db", Selector::Label("Prod-1.x_y"))
        );
        for bad in [
            "a:",
            ":1",
            "a:1:2",
            "a:0",
            "a:01",
            "a:99999999999999999999",
            "a:awsx",
            "a:SSMx",
            "a:a b",
            "a%:1",
            &format!("a:{}", "l".repeat(101)),
        ] {
            assert_eq!(n(bad), Name::Invalid, "{bad}");
        }
        // SSM's label rules allow a leading '-': `a:-1` is the label "-1", not a version.
        assert_eq!(n("a:-1"), Name::Pinned("a", Selector::Label("-1")));
        assert_eq!(
            n(&format!("a:{}", "l".repeat(100))),
            Name::Pinned("a", Selector::Label(&"l".repeat(100)))
        );
    }
}
