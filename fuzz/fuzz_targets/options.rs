//! Options: filters, subtree max ages, file modes and whole command lines parse or refuse,
//! never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../src/names.rs"]
mod names;

#[allow(dead_code)]
#[path = "../../src/filter.rs"]
mod filter;

#[allow(dead_code)]
#[path = "../../src/mount/cli.rs"]
mod cli;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(f) = s.parse::<filter::Filter>() {
        // What is accepted prints back as it was given.
        assert_eq!(f.to_string(), s);
    }
    let _ = s.parse::<cli::MaxAgeFor>();
    if let Ok(on) = s.parse::<cli::OnChange>() {
        assert!(!on.command.trim().is_empty(), "a command is never empty");
        assert!(!on.path.starts_with('/') && !on.path.ends_with('/'));
    }
    if let Ok(mode) = s.parse::<cli::FileMode>() {
        assert_eq!(mode.0 & !0o444, 0, "only read bits");
    }
    let args = std::iter::once("ssmfs").chain(s.split('\0'));
    if let Ok(c) = cli::Cli::parse_args(args) {
        let _ = c.max_age_for(&c.source);
    }
});
