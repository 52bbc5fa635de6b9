//! `.env`: one `KEY='value'` line per file of a subtree, quoted so that bash (`set -a; . FILE`),
//! systemd (`EnvironmentFile=`), python-dotenv and docker compose (`env_file`) read back the
//! exact value.
//!
//! The KEY is the path relative to the directory, uppercased, with `/`, `.` and `-` made `_`
//! (`db/password` gives `DB_PASSWORD`). A StringList is its comma-joined original.
//!
//! Quoting: these readers agree on no one quoting for every byte, so each value gets the first
//! that all of them read back exactly:
//! - single quotes, for a value with no `'` and no `\\`: every reader takes what is inside
//!   literally (python-dotenv alone unescapes `\\` and `\'` there);
//! - otherwise double quotes with `\` and `"` escaped, for a value with no `$` and no backquote
//!   (bash would expand those; the others would not unescape a `\$`).
//!
//! Left out, each named by a comment line (by path and KEY, never by value) and in the log:
//! - a value neither quoting fits (it holds `'` or `\\` together with `$` or a backquote);
//! - a value ending in `\` (older python-dotenv and compose read `\'` and `\\"` at the end as
//!   an escaped quote, and lose that line and the lines after it);
//! - a value holding a NUL byte, a carriage return (python-dotenv reads it as a newline), or
//!   bytes that are not UTF-8 (a binary secret);
//! - a value AWS refused to return (an unreadable secret);
//! - two paths that make one KEY, and a KEY that is not a variable name.
//!
//! python-dotenv expands `${NAME}` in every value, quoted or not, unless it is loaded with
//! `interpolate=False`: that is its one reading that differs.

use std::collections::BTreeMap;

use super::Leaf;

/// A rendered `.env`, and what was left out of it.
#[derive(Default)]
pub struct Env {
    pub text: Vec<u8>,
    /// Why each left-out path was left out (paths and keys, never values).
    pub left_out: Vec<String>,
}

/// The KEY of a relative path.
pub fn key_of(path: &str) -> String {
    path.chars()
        .map(|c| match c {
            '/' | '.' | '-' => '_',
            c => c.to_ascii_uppercase(),
        })
        .collect()
}

/// Whether `key` is a variable name every reader takes: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_variable(key: &str) -> bool {
    let mut bytes = key.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The value quoted for every reader, or `None` when no quoting serves them all.
pub fn quote(value: &str) -> Option<String> {
    // No reader keeps a NUL; python-dotenv reads a carriage return as a newline; a trailing
    // backslash reads as an escaped closing quote in older parsers.
    if value.contains(['\0', '\r']) || value.ends_with('\\') {
        return None;
    }
    if !value.contains('\'') && !value.contains("\\\\") {
        return Some(format!("'{value}'"));
    }
    if !value.contains('$') && !value.contains('`') {
        let mut out = String::with_capacity(value.len() + 8);
        out.push('"');
        for c in value.chars() {
            if c == '\\' || c == '"' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
        return Some(out);
    }
    None
}

/// The `.env` of a subtree: lines sorted by KEY, then a comment for each path left out.
pub fn render(leaves: &[Leaf]) -> Env {
    let mut by_key: BTreeMap<String, Vec<&Leaf>> = BTreeMap::new();
    for leaf in leaves {
        by_key.entry(key_of(&leaf.path)).or_default().push(leaf);
    }
    let mut env = Env::default();
    let mut lines = String::new();
    for (key, leaves) in by_key {
        if let [one, ..] = leaves[..] {
            if leaves.len() > 1 {
                let paths: Vec<&str> = leaves.iter().map(|l| l.path.as_str()).collect();
                env.left_out
                    .push(format!("{} all make {key}", paths.join(", ")));
                continue;
            }
            if !is_variable(&key) {
                env.left_out
                    .push(format!("{}: {key} is not a variable name", one.path));
                continue;
            }
            if let Some(code) = &one.unreadable {
                env.left_out.push(format!(
                    "{} ({key}): AWS refused to return it ({code})",
                    one.path
                ));
                continue;
            }
            if one.is_binary() {
                env.left_out
                    .push(format!("{} ({key}): its value is not UTF-8 text", one.path));
                continue;
            }
            match quote(&one.original()) {
                Some(quoted) => {
                    lines.push_str(&key);
                    lines.push('=');
                    lines.push_str(&quoted);
                    lines.push('\n');
                }
                None => env.left_out.push(format!(
                    "{} ({key}): no quoting reads its value back in every .env reader",
                    one.path
                )),
            }
        }
    }
    for why in &env.left_out {
        lines.push_str("# left out: ");
        lines.push_str(why);
        lines.push('\n');
    }
    env.text = lines.into_bytes();
    env
}
