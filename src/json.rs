//! JSON secrets as directories: the one function that turns a JSON object into the entries of
//! its keys. Pure (it knows no AWS and no filesystem), so it is fuzzed on its own.
//!
//! Promises: never panics on any input; every name it returns is the secret's name followed by
//! levels that a secret name could hold, so each key has exactly one path.

/// The keys of a JSON object secret as (full name, content): strings raw, numbers, booleans,
/// null and arrays as JSON text, objects as directories. Keys that cannot be one level of a path
/// (empty, `.`, `..`, or holding characters a secret name cannot have) are left out, so that
/// every key shown has exactly one name. Not an object: nothing.
pub fn expand_json(name: &str, text: &[u8]) -> Vec<(String, Vec<u8>)> {
    let Ok(serde_json::Value::Object(map)) = serde_json::from_slice(text) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut stack = vec![(name.to_string(), map)];
    while let Some((prefix, map)) = stack.pop() {
        for (key, value) in map {
            let valid = !key.is_empty()
                && key != "."
                && key != ".."
                && key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-+=@".contains(&b));
            if !valid {
                continue;
            }
            let full = format!("{prefix}/{key}");
            match value {
                serde_json::Value::String(s) => out.push((full, s.into_bytes())),
                serde_json::Value::Object(inner) => stack.push((full, inner)),
                other => out.push((full, other.to_string().into_bytes())),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_objects_become_keys() {
        let text = br#"{"username":"app","password":"pw","port":5432,"on":true,"none":null,
            "list":[1,2],"nested":{"a":{"b":"deep"}},"bad/key":"x","..":"y","":"z","a b":"w"}"#;
        let mut got = expand_json("prod/db", text);
        got.sort();
        let got: Vec<(&str, &str)> = got
            .iter()
            .map(|(n, v)| (n.as_str(), std::str::from_utf8(v).unwrap()))
            .collect();
        assert_eq!(
            got,
            [
                ("prod/db/list", "[1,2]"),
                ("prod/db/nested/a/b", "deep"),
                ("prod/db/none", "null"),
                ("prod/db/on", "true"),
                ("prod/db/password", "pw"),
                ("prod/db/port", "5432"),
                ("prod/db/username", "app"),
            ]
        );
    }

    #[test]
    fn other_values_are_not_expanded() {
        assert!(expand_json("s", b"plain text").is_empty());
        assert!(expand_json("s", b"[1,2]").is_empty());
        assert!(expand_json("s", b"\"a string\"").is_empty());
        assert!(expand_json("s", b"{}").is_empty());
    }
}
