//! Filters that quote a value for the format a template writes: `|json`, `|yaml`, `|shell`,
//! `|xml` and `|toml`. Each returns text that the format's reader takes back as the value
//! exactly: a string as a string, a list as a list, a mapping as a mapping.
//!
//! - `json`: JSON text;
//! - `yaml`: JSON text too, which YAML (1.1 and 1.2) reads as the same value: a double-quoted
//!   scalar, a flow sequence, a flow mapping;
//! - `toml`: a basic string, an array or an inline table (JSON's string escapes are TOML's);
//! - `shell`: one POSIX shell word in single quotes (a list: one word per item);
//! - `xml`: text with `&`, `<`, `>`, `"` and `'` as entities, fit for content and attributes.

use minijinja::value::{Value, ValueKind};
use minijinja::{Error, ErrorKind};

/// A template value as JSON. Undefined and none are `null`.
pub fn to_json(value: &Value) -> Result<serde_json::Value, Error> {
    Ok(match value.kind() {
        ValueKind::Undefined | ValueKind::None => serde_json::Value::Null,
        ValueKind::Bool => serde_json::Value::Bool(value.is_true()),
        ValueKind::Number => {
            if let Ok(i) = i64::try_from(value.clone()) {
                i.into()
            } else if let Ok(f) = f64::try_from(value.clone()) {
                serde_json::Number::from_f64(f)
                    .map(serde_json::Value::Number)
                    .unwrap_or(serde_json::Value::Null)
            } else {
                value.to_string().into()
            }
        }
        ValueKind::Seq | ValueKind::Iterable => value
            .try_iter()?
            .map(|v| to_json(&v))
            .collect::<Result<Vec<_>, _>>()?
            .into(),
        ValueKind::Map => {
            let mut map = serde_json::Map::new();
            for key in value.try_iter()? {
                let item = value.get_item(&key)?;
                let key = key.as_str().map_or_else(|| key.to_string(), str::to_string);
                map.insert(key, to_json(&item)?);
            }
            map.into()
        }
        _ => value.to_string().into(),
    })
}

/// JSON text, with the characters JSON leaves raw but YAML or TOML readers refuse or change
/// (DEL, the C1 controls, the line and paragraph separators, the noncharacters U+FFFE and
/// U+FFFF) written as `\uXXXX`: they can only be inside strings, so the text stays JSON.
fn json_text(value: &serde_json::Value) -> Result<String, Error> {
    let text = serde_json::to_string(value)
        .map_err(|_| Error::new(ErrorKind::InvalidOperation, "cannot write as JSON"))?;
    let awkward = |c: char| {
        matches!(
            c,
            '\u{7f}'..='\u{9f}' | '\u{2028}' | '\u{2029}' | '\u{fffe}' | '\u{ffff}'
        )
    };
    if !text.contains(awkward) {
        return Ok(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if awkward(c) {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

pub fn json(value: &Value) -> Result<String, Error> {
    json_text(&to_json(value)?)
}

pub fn yaml(value: &Value) -> Result<String, Error> {
    json(value)
}

pub fn toml(value: &Value) -> Result<String, Error> {
    fn write(v: &serde_json::Value, out: &mut String) -> Result<(), Error> {
        match v {
            serde_json::Value::Null => {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    "TOML has no null value",
                ))
            }
            serde_json::Value::Object(map) => {
                out.push('{');
                for (i, (k, v)) in map.iter().enumerate() {
                    out.push_str(if i == 0 { " " } else { ", " });
                    out.push_str(&json_text(&k.as_str().into())?);
                    out.push_str(" = ");
                    write(v, out)?;
                }
                out.push_str(if map.is_empty() { "}" } else { " }" });
            }
            serde_json::Value::Array(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    write(v, out)?;
                }
                out.push(']');
            }
            other => out.push_str(&json_text(other)?),
        }
        Ok(())
    }
    let mut out = String::new();
    write(&to_json(value)?, &mut out)?;
    Ok(out)
}

/// One shell word: `'...'`, with each `'` written `'\''`.
pub fn shell_word(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

pub fn shell(value: &Value) -> Result<String, Error> {
    match value.kind() {
        ValueKind::Seq | ValueKind::Iterable => Ok(value
            .try_iter()?
            .map(|v| shell_word(v.as_str().unwrap_or(&v.to_string())))
            .collect::<Vec<_>>()
            .join(" ")),
        _ => Ok(shell_word(value.as_str().unwrap_or(&value.to_string()))),
    }
}

pub fn xml(value: &Value) -> Result<String, Error> {
    let text = value
        .as_str()
        .map_or_else(|| value.to_string(), str::to_string);
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    Ok(out)
}
