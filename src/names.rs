//! Names: what SOURCE means, which file names can be parameters or secrets, and the naming rule
//! for names that neither service can take.
//!
//! SSM names use only `a-zA-Z0-9_.-` and `/`; Secrets Manager names add `+=@`. Neither allows
//! `%` or `:`, so ssmfs has names of its own that never clash with a parameter or secret:
//! - control files, `.refresh` (every directory) and `.stats` (the root);
//! - rendered files, `.env` and `.json` (every directory) and the directory `.templates` (the
//!   root), which are looked up and never listed;
//! - `NAME%`: the entry `NAME` in this directory, as a file, whatever else `NAME` is. When a
//!   parameter shares its name with a directory (SSM allows `/a/b` and `/a/b/c`; a JSON secret is
//!   also the directory of its keys) or with a control file, `NAME` is the directory or control
//!   file and listings show the parameter as `NAME%`;
//! - `NAME:SELECTOR`: one version. SSM: `NAME:3` is version 3, `NAME:prod` the version labelled
//!   `prod` (a label cannot start with a digit, so `:N` is always a version). Secrets Manager:
//!   `NAME:AWSPREVIOUS` (a staging label) or `NAME:<VersionId>`. These are looked up, never listed.
//!
//! Promises: a name that the service cannot hold is rejected here, before any API call.

use std::ffi::OsStr;
use std::fmt;
use std::str::FromStr;

/// Suffix that names a parameter as a file even where a directory or control file has its name.
pub const PARAM_SUFFIX: char = '%';
/// Separates a name from a version or label, as in SSM's selectors.
pub const SELECTOR: char = ':';
/// Writing to this file in a directory refreshes the parameters under that directory.
pub const REFRESH: &str = ".refresh";
/// The mount's counters, as JSON, at the root.
pub const STATS: &str = ".stats";
/// The subtree of a directory as `KEY='value'` lines, in every directory (looked up, never
/// listed).
pub const ENV: &str = ".env";
/// The subtree of a directory as one JSON object, in every directory (looked up, never listed).
pub const JSON: &str = ".json";
/// The directory of rendered templates, at the root (looked up, never listed).
pub const TEMPLATES: &str = ".templates";

/// SSM's limits on a parameter name: length with the hierarchy, and depth.
const SSM_MAX_NAME: usize = 2048;
const SSM_MAX_DEPTH: usize = 15;
/// Secrets Manager's limit on a secret name.
const SM_MAX_NAME: usize = 512;

/// Which service a source is in: it decides the name rules and the backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Ssm,
    SecretsManager,
}

/// What is mounted: an SSM path (`/app`) or a Secrets Manager name prefix (`prod`), kept without
/// a trailing slash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    pub dialect: Dialect,
    prefix: String,
}

impl FromStr for Source {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        for scheme in ["secretsmanager:", "sm:"] {
            if let Some(rest) = s.strip_prefix(scheme) {
                return Source::secrets(rest);
            }
        }
        if let Some(rest) = s.strip_prefix("ssm:") {
            return Source::ssm(rest);
        }
        if s.contains(':') {
            return Err(format!(
                "unknown source '{s}': use an SSM path such as /app (or ssm:/app), or secretsmanager:PREFIX"
            ));
        }
        Source::ssm(s)
    }
}

impl Source {
    fn ssm(s: &str) -> Result<Source, String> {
        if !s.starts_with('/') {
            return Err(format!(
                "SSM path '{s}' must start with '/', e.g. /app (SSM hierarchies start with a slash)"
            ));
        }
        let prefix = s.trim_end_matches('/');
        let source = Source {
            dialect: Dialect::Ssm,
            prefix: prefix.to_string(),
        };
        if !prefix.split('/').skip(1).all(|p| source.is_component(p)) {
            return Err(format!(
                "SSM path '{s}' is not valid: each level must be non-empty and use only a-z, A-Z, 0-9, '_', '.', '-'"
            ));
        }
        if prefix.len() > SSM_MAX_NAME || prefix.split('/').count() > SSM_MAX_DEPTH {
            return Err(format!(
                "SSM path '{s}' is longer or deeper than SSM allows"
            ));
        }
        Ok(source)
    }

    fn secrets(s: &str) -> Result<Source, String> {
        let prefix = s.trim_end_matches('/');
        let source = Source {
            dialect: Dialect::SecretsManager,
            prefix: prefix.to_string(),
        };
        if !prefix.is_empty() && !prefix.split('/').all(|p| source.is_component(p)) {
            return Err(format!(
                "secret prefix '{s}' is not valid: each level must be non-empty and use only a-z, A-Z, 0-9 and _+=.@-"
            ));
        }
        if prefix.len() > SM_MAX_NAME {
            return Err(format!(
                "secret prefix '{s}' is longer than Secrets Manager allows"
            ));
        }
        Ok(source)
    }

    /// The full name of a mount-relative path; "" is the root, whose name is the prefix.
    pub fn full_name(&self, rel: &str) -> String {
        match (self.prefix.is_empty(), rel.is_empty(), self.dialect) {
            (true, true, Dialect::Ssm) => "/".to_string(),
            (true, _, Dialect::SecretsManager) => rel.to_string(),
            (false, true, _) => self.prefix.clone(),
            _ => format!("{}/{}", self.prefix, rel),
        }
    }

    /// The mount-relative path of a full name, if the name is below this source and every level
    /// of it is a name this dialect allows (so that it can be a path).
    pub fn relative<'a>(&self, full: &'a str) -> Option<&'a str> {
        let rest = match (self.prefix.is_empty(), self.dialect) {
            (true, Dialect::SecretsManager) => full,
            _ => full.strip_prefix(self.prefix.as_str())?.strip_prefix('/')?,
        };
        (!rest.is_empty() && rest.split('/').all(|p| self.is_component(p))).then_some(rest)
    }

    /// Whether a mount-relative path is a name the service could hold (length and depth).
    pub fn fits(&self, rel: &str) -> bool {
        let len = self.prefix.len() + 1 + rel.len();
        match self.dialect {
            Dialect::Ssm => {
                len <= SSM_MAX_NAME
                    && self.prefix.matches('/').count() + 1 + rel.matches('/').count()
                        <= SSM_MAX_DEPTH
            }
            Dialect::SecretsManager => len <= SM_MAX_NAME,
        }
    }

    /// Whether `s` can be one level of a name. `.` and `..` never are: AWS may accept them in
    /// a name, but on a filesystem they mean this directory and the one above, so such a name
    /// is never shown (and nothing ssmfs does with a path can leave the mount).
    pub fn is_component(&self, s: &str) -> bool {
        let extra: &[u8] = match self.dialect {
            Dialect::Ssm => b"_.-",
            Dialect::SecretsManager => b"_.-+=@",
        };
        !matches!(s, "" | "." | "..")
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || extra.contains(&b))
    }

    /// Parses what follows `:` in a name.
    pub fn selector<'a>(&self, s: &'a str) -> Option<Selector<'a>> {
        match self.dialect {
            Dialect::Ssm => Selector::parse_ssm(s),
            Dialect::SecretsManager => Selector::parse_secrets(s),
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.dialect {
            Dialect::Ssm => f.write_str(&self.full_name("")),
            Dialect::SecretsManager => write!(f, "secretsmanager:{}", self.prefix),
        }
    }
}

/// A version of a parameter or secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Selector<'a> {
    /// A version that never changes: an SSM version number or a secret's VersionId.
    Version(&'a str),
    /// A label that can move between versions: an SSM label or a secret's staging label.
    Label(&'a str),
}

impl<'a> Selector<'a> {
    /// SSM: versions are written without leading zeros, so that one version has one name;
    /// labels follow SSM's rules (letters, digits, `.`, `-`, `_`, at most 100 characters, not
    /// starting with a digit, `aws` or `ssm`).
    pub fn parse_ssm(s: &'a str) -> Option<Selector<'a>> {
        let first = *s.as_bytes().first()?;
        if first.is_ascii_digit() {
            let canonical = first != b'0' && s.bytes().all(|b| b.is_ascii_digit());
            return (canonical && s.parse::<i64>().is_ok()).then_some(Selector::Version(s));
        }
        let lower = s.to_ascii_lowercase();
        let valid = s.len() <= 100
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
            && !lower.starts_with("aws")
            && !lower.starts_with("ssm");
        valid.then_some(Selector::Label(s))
    }

    /// Secrets Manager: a VersionId (32 to 64 characters of hex digits and dashes, as the UUIDs
    /// it makes) or a staging label (at most 256 characters).
    pub fn parse_secrets(s: &'a str) -> Option<Selector<'a>> {
        let version_id =
            (32..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
        if version_id {
            return Some(Selector::Version(s));
        }
        let label = !s.is_empty()
            && s.len() <= 256
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-+=@".contains(&b));
        label.then_some(Selector::Label(s))
    }

    pub fn is_version(&self) -> bool {
        matches!(self, Selector::Version(_))
    }
}

impl fmt::Display for Selector<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::Version(v) | Selector::Label(v) => f.write_str(v),
        }
    }
}

/// What a name looked up in a directory refers to.
#[derive(Debug, PartialEq, Eq)]
pub enum Name<'a> {
    /// `.refresh`, `.stats`, `.env`, `.json` or `.templates`.
    Control(&'a str),
    /// A level of the hierarchy: a directory, a parameter, or nothing.
    Entry(&'a str),
    /// `NAME%`: the parameter NAME only, never a directory.
    Param(&'a str),
    /// `NAME:3` or `NAME:label`: one version of the parameter NAME.
    Pinned(&'a str, Selector<'a>),
    /// Not a name the service can hold: answered ENOENT with no API call.
    Invalid,
}

impl<'a> Name<'a> {
    pub fn parse(name: &'a OsStr, is_root: bool, source: &Source) -> Name<'a> {
        let Some(name) = name.to_str() else {
            return Name::Invalid;
        };
        if is_control(name, is_root) {
            return Name::Control(name);
        }
        if let Some((base, selector)) = name.split_once(SELECTOR) {
            return match (source.is_component(base), source.selector(selector)) {
                (true, Some(sel)) => Name::Pinned(base, sel),
                _ => Name::Invalid,
            };
        }
        if let Some(base) = name.strip_suffix(PARAM_SUFFIX) {
            return if source.is_component(base) {
                Name::Param(base)
            } else {
                Name::Invalid
            };
        }
        if source.is_component(name) {
            Name::Entry(name)
        } else {
            Name::Invalid
        }
    }
}

/// Whether `name` can name a template (`.templates/NAME`): one level of a path, of the
/// characters SSM names use.
pub fn is_template_name(name: &str) -> bool {
    !matches!(name, "" | "." | "..")
        && name.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// Whether `name` is taken by a name of ssmfs's own in a directory: `.refresh`, `.env` and
/// `.json` everywhere, `.stats` and `.templates` at the root.
pub fn is_control(name: &str, is_root: bool) -> bool {
    matches!(name, REFRESH | ENV | JSON) || (is_root && matches!(name, STATS | TEMPLATES))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(s: &str) -> Source {
        s.parse().unwrap()
    }

    #[test]
    fn ssm_source_forms() {
        assert_eq!(src("/app"), src("ssm:/app"));
        assert_eq!(src("/app/"), src("/app"));
        assert_eq!(src("/").full_name("a/b"), "/a/b");
        assert_eq!(src("/app").full_name("a/b"), "/app/a/b");
        assert_eq!(src("/app").full_name(""), "/app");
        assert_eq!(src("/").full_name(""), "/");
        assert!("app".parse::<Source>().is_err());
        assert!("/a//b".parse::<Source>().is_err());
        assert!("/a b".parse::<Source>().is_err());
        assert!("s3:/x".parse::<Source>().is_err());
    }

    #[test]
    fn secrets_source_forms() {
        let prod = src("secretsmanager:prod/");
        assert_eq!(prod, src("sm:prod"));
        assert_eq!(prod.dialect, Dialect::SecretsManager);
        assert_eq!(prod.full_name("db"), "prod/db");
        assert_eq!(prod.relative("prod/db/password"), Some("db/password"));
        assert_eq!(prod.relative("production/x"), None);
        let all = src("sm:");
        assert_eq!(all.full_name("prod/db"), "prod/db");
        assert_eq!(all.relative("prod/db"), Some("prod/db"));
        assert_eq!(
            all.relative("/rooted"),
            None,
            "an empty level cannot be a path"
        );
        assert_eq!(all.relative("a@b+c=d"), Some("a@b+c=d"));
        assert!("sm:bad name".parse::<Source>().is_err());
    }

    #[test]
    fn relative_names_stay_inside_the_source() {
        let p = src("/app");
        assert_eq!(p.relative("/app/db/password"), Some("db/password"));
        assert_eq!(p.relative("/application/x"), None);
        assert_eq!(p.relative("/app"), None);
        assert_eq!(src("/").relative("/x/y"), Some("x/y"));
        // A name with a `.` or `..` level is never shown: its path would leave its directory.
        assert_eq!(p.relative("/app/../etc/shadow"), None);
        assert_eq!(p.relative("/app/a/./b"), None);
        assert_eq!(p.relative("/app/a/.."), None);
        assert_eq!(p.relative("/app/a/..b/.c"), Some("a/..b/.c"));
        let secrets: Source = "secretsmanager:prod/".parse().unwrap();
        assert_eq!(secrets.relative("prod/../../etc/nologin"), None);
    }

    #[test]
    fn lookup_names() {
        let ssm = src("/app");
        let n = |s: &'static str, root| Name::parse(OsStr::new(s), root, &ssm);
        assert_eq!(n(".refresh", false), Name::Control(".refresh"));
        assert_eq!(n(".stats", true), Name::Control(".stats"));
        assert_eq!(n(".stats", false), Name::Entry(".stats"));
        assert_eq!(n("db", false), Name::Entry("db"));
        assert_eq!(n("db%", false), Name::Param("db"));
        assert_eq!(n(".refresh%", false), Name::Param(".refresh"));
        assert_eq!(n("%", false), Name::Invalid);
        assert_eq!(n("a b", false), Name::Invalid);
        assert_eq!(n("a%b", false), Name::Invalid);
        assert_eq!(n("a@b", false), Name::Invalid, "not an SSM name");
        let sm = src("sm:prod");
        assert_eq!(
            Name::parse(OsStr::new("a@b"), false, &sm),
            Name::Entry("a@b")
        );
    }

    #[test]
    fn ssm_selectors() {
        let ssm = src("/app");
        let n = |s: &str| match Name::parse(OsStr::new(s), false, &ssm) {
            Name::Pinned(base, sel) => Some((base.to_string(), sel.is_version(), sel.to_string())),
            _ => None,
        };
        assert_eq!(n("db:2"), Some(("db".into(), true, "2".into())));
        assert_eq!(n("db:prod"), Some(("db".into(), false, "prod".into())));
        assert_eq!(
            n("db:Prod-1.x_y"),
            Some(("db".into(), false, "Prod-1.x_y".into()))
        );
        // SSM's label rules allow a leading '-': `a:-1` is the label "-1", not a version.
        assert_eq!(n("a:-1"), Some(("a".into(), false, "-1".into())));
        let long = format!("a:{}", "l".repeat(100));
        assert!(n(&long).is_some());
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
            assert_eq!(n(bad), None, "{bad}");
        }
    }

    #[test]
    fn secrets_selectors() {
        let sm = src("sm:prod");
        let n = |s: &str| match Name::parse(OsStr::new(s), false, &sm) {
            Name::Pinned(_, sel) => Some((sel.is_version(), sel.to_string())),
            _ => None,
        };
        assert_eq!(n("db:AWSPREVIOUS"), Some((false, "AWSPREVIOUS".into())));
        let id = "5da8a986-1aa3-4497-97aa-58a3e89756f3";
        assert_eq!(n(&format!("db:{id}")), Some((true, id.into())));
        assert_eq!(n("db:"), None);
        assert_eq!(n(&format!("db:{}", "x".repeat(257))), None);
    }
}
