//! Names looked up in a directory, and SOURCE: never a panic, and what is accepted keeps the
//! promises the filesystem relies on.
#![no_main]

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../src/names.rs"]
mod names;

use names::{Name, Source};

fuzz_target!(|data: &[u8]| {
    let text = std::str::from_utf8(data).ok();
    if let Some(s) = text {
        if let Ok(source) = s.parse::<Source>() {
            // A source names itself again.
            assert_eq!(source.full_name("").trim_end_matches('/'), source.full_name("").trim_end_matches('/'));
        }
    }
    let ssm: Source = "/app".parse().unwrap();
    let sm: Source = "sm:prod".parse().unwrap();
    for source in [&ssm, &sm] {
        for root in [true, false] {
            match Name::parse(OsStr::from_bytes(data), root, source) {
                Name::Entry(n) | Name::Param(n) => assert!(source.is_component(n)),
                Name::Pinned(n, selector) => {
                    assert!(source.is_component(n));
                    assert!(!selector.to_string().is_empty());
                    assert!(!selector.to_string().contains(':'));
                }
                Name::Control(c) => assert!(c.starts_with('.')),
                Name::Invalid => {}
            }
        }
        if let Some(s) = text {
            // A full name and its mount-relative path map onto each other.
            if let Some(rel) = source.relative(s) {
                assert_eq!(source.full_name(rel), s);
                assert!(rel.split('/').all(|p| source.is_component(p)));
            }
        }
    }
});
