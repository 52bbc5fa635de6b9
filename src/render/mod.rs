//! Rendered files: `.env`, `.json` and templates, made from values the core resolved.
//!
//! Pure: it knows values, not the tree, inodes or AWS. The core ([`crate::fs::rendered`])
//! resolves what a file needs (fetching only what is not fresh), hands the values here as
//! [`Leaf`]s and serves what comes back as a file's content.
//!
//! - [`env`]: `KEY='value'` lines that bash, systemd, python-dotenv and compose read alike;
//! - [`tree_value`]: a subtree as one JSON value (`.json`, and `dir()` in templates);
//! - [`template`]: Jinja templates (minijinja) with `param()`, `secret()` and `dir()`;
//! - [`quote`]: the filters that quote a value for a target format.
//!
//! Promises: nothing here logs, and no error or comment it makes holds a value: they name
//! paths and keys only.

use std::borrow::Cow;

use crate::backend::Param;
use crate::content::Content;
use crate::names::Dialect;

pub mod env;
pub mod quote;
pub mod template;

/// The SSM type attribute of a parameter, as the backend records it.
const TYPE_XATTR: &str = "user.ssm.type";

/// One value as rendering sees it. Its `Debug` form never shows the value.
#[derive(Clone)]
pub struct Leaf {
    /// Relative to the top of what is rendered (a directory), or the path asked for.
    pub path: String,
    pub content: Content,
    /// A StringList: its content is one item a line.
    pub list: bool,
    /// A secret of a Secrets Manager mount: its value may be a JSON object.
    pub secret_value: bool,
    /// A key of a JSON secret, shown as a file of its own.
    pub derived: bool,
    /// A SecureString or a secret: what is rendered from it gets the secret file mode.
    pub secret: bool,
    /// Why AWS refused to return the value (an error code), if it did.
    pub unreadable: Option<String>,
}

impl std::fmt::Debug for Leaf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leaf")
            .field("path", &self.path)
            .field("content", &self.content)
            .finish_non_exhaustive()
    }
}

impl Leaf {
    pub fn new(path: String, param: &Param, dialect: Dialect) -> Leaf {
        Leaf {
            path,
            content: param.content.clone(),
            list: param
                .xattrs
                .iter()
                .any(|(k, v)| *k == TYPE_XATTR && v == "StringList"),
            secret_value: dialect == Dialect::SecretsManager,
            derived: param.derived,
            secret: param.secret,
            unreadable: param.unreadable.clone(),
        }
    }

    /// Whether the value is not UTF-8 text (a binary secret).
    pub fn is_binary(&self) -> bool {
        std::str::from_utf8(self.content.as_bytes()).is_err()
    }

    /// Why the value cannot be rendered, if it cannot: refused by AWS, or not text.
    pub fn unusable(&self) -> Option<String> {
        match &self.unreadable {
            Some(code) => Some(format!("{}: AWS refused to return it ({code})", self.path)),
            None if self.is_binary() => Some(format!("{}: its value is not UTF-8 text", self.path)),
            None => None,
        }
    }

    /// The value as text (AWS values are UTF-8).
    pub fn text(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(self.content.as_bytes())
    }

    /// A StringList's items.
    pub fn items(&self) -> Vec<String> {
        let text = self.text();
        let body = text.strip_suffix('\n').unwrap_or(&text);
        body.split('\n').map(str::to_string).collect()
    }

    /// The value as AWS holds it: a StringList comma-joined, as it was put.
    pub fn original(&self) -> Cow<'_, str> {
        if self.list {
            Cow::Owned(self.items().join(","))
        } else {
            self.text()
        }
    }

    /// The value as JSON: a StringList is an array of strings; a secret whose value is a JSON
    /// object is that object (parsed); anything else is a string.
    pub fn json(&self, objects: bool) -> serde_json::Value {
        if self.list {
            return self.items().into();
        }
        if objects && self.secret_value && !self.derived {
            if let Ok(v @ serde_json::Value::Object(_)) =
                serde_json::from_slice::<serde_json::Value>(self.content.as_bytes())
            {
                return v;
            }
        }
        self.text().into_owned().into()
    }
}

/// The subtree of a directory as one JSON object: directories are objects, values are as
/// [`Leaf::json`] makes them. A parameter that is also a directory (`b%` beside `b/`) is under
/// the key `""` of that directory's object. Keys of JSON secrets (derived files) are left out:
/// the secret itself is their parsed object. A value that cannot be rendered (refused by AWS,
/// not text) fails the whole: a key silently missing would be worse.
pub fn tree_value(leaves: &[Leaf]) -> Result<serde_json::Value, String> {
    if let Some(why) = leaves
        .iter()
        .filter(|l| !l.derived)
        .find_map(Leaf::unusable)
    {
        return Err(why);
    }
    #[derive(Default)]
    struct Dir {
        own: Option<serde_json::Value>,
        entries: std::collections::BTreeMap<String, Dir>,
    }
    fn into_value(dir: Dir) -> serde_json::Value {
        match (dir.own, dir.entries.is_empty()) {
            (Some(own), true) => own,
            (own, _) => {
                let mut map: serde_json::Map<String, serde_json::Value> = dir
                    .entries
                    .into_iter()
                    .map(|(k, d)| (k, into_value(d)))
                    .collect();
                if let Some(own) = own {
                    map.insert(String::new(), own);
                }
                map.into()
            }
        }
    }
    let mut top = Dir::default();
    for leaf in leaves.iter().filter(|l| !l.derived) {
        let mut dir = &mut top;
        for part in leaf.path.split('/') {
            dir = dir.entries.entry(part.to_string()).or_default();
        }
        dir.own = Some(leaf.json(true));
    }
    // The top is always an object, even when empty.
    Ok(match into_value(top) {
        v @ serde_json::Value::Object(_) => v,
        _ => serde_json::Value::Object(Default::default()),
    })
}

#[cfg(test)]
mod tests;
