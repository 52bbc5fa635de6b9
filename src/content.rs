//! File content: the bytes a parameter's file holds, and the one function that renders an SSM
//! value into them.
//!
//! Promises: content is zeroed in memory when its last holder drops it, and its `Debug` form never
//! shows a byte of it, so a value cannot reach a log line, an error or a panic message by
//! formatting. Cloning shares the bytes; it never copies them.

use std::fmt;
use std::sync::Arc;

use zeroize::Zeroize;

/// The SSM parameter types; the type decides how a value is rendered and the file's mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamType {
    String,
    StringList,
    SecureString,
}

impl ParamType {
    pub fn as_str(self) -> &'static str {
        match self {
            ParamType::String => "String",
            ParamType::StringList => "StringList",
            ParamType::SecureString => "SecureString",
        }
    }
}

/// Bytes that may be secret. Zeroed on drop; `Debug` prints only the length.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Content(Arc<Zeroed>);

/// The one owned copy of some content's bytes.
#[derive(PartialEq, Eq, Default)]
struct Zeroed(Box<[u8]>);

impl Drop for Zeroed {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl Content {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0 .0
    }

    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }

    pub fn is_empty(&self) -> bool {
        self.as_bytes().is_empty()
    }

    /// Renders an SSM value as file content, taking ownership so that no unzeroed copy stays
    /// behind: `String` and `SecureString` are the value's bytes exactly (no newline is added, so
    /// a password file holds the password and nothing else); `StringList` items become lines,
    /// each ending in `\n`.
    pub fn render(kind: ParamType, value: String) -> Content {
        match kind {
            ParamType::String | ParamType::SecureString => Content::from(value.into_bytes()),
            ParamType::StringList => {
                let mut out = Vec::with_capacity(value.len() + 1);
                for item in value.split(',') {
                    out.extend_from_slice(item.as_bytes());
                    out.push(b'\n');
                }
                let mut value = value;
                value.zeroize();
                Content::from(out)
            }
        }
    }
}

impl From<Vec<u8>> for Content {
    fn from(bytes: Vec<u8>) -> Self {
        // `into_boxed_slice` may reallocate when capacity exceeds length; shrink in place first
        // is not guaranteed either, so copy explicitly and zero the original.
        if bytes.len() == bytes.capacity() {
            return Content(Arc::new(Zeroed(bytes.into_boxed_slice())));
        }
        let mut bytes = bytes;
        let boxed: Box<[u8]> = bytes.as_slice().into();
        bytes.zeroize();
        Content(Arc::new(Zeroed(boxed)))
    }
}

impl fmt::Debug for Content {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Content(<{} bytes redacted>)", self.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_is_exact_bytes_without_newline() {
        let c = Content::render(ParamType::SecureString, "hunter2".to_string());
        assert_eq!(c.as_bytes(), b"hunter2");
    }

    #[test]
    fn string_list_is_one_line_per_item() {
        let c = Content::render(ParamType::StringList, "a,b,,c".to_string());
        assert_eq!(c.as_bytes(), b"a\nb\n\nc\n");
    }

    #[test]
    fn debug_never_shows_the_value() {
        let c = Content::render(ParamType::String, "canary-value".to_string());
        let shown = format!("{c:?}");
        assert!(!shown.contains("canary"), "{shown}");
        assert!(shown.contains("12 bytes"));
    }
}
