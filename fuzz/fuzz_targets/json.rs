//! JSON secret expansion: never a panic, and every key gets one valid path below the secret.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../src/json.rs"]
mod json;

fuzz_target!(|data: &[u8]| {
    let mut names = std::collections::HashSet::new();
    for (name, _) in json::expand_json("prod/db", data) {
        let rest = name.strip_prefix("prod/db/").expect("below the secret");
        for part in rest.split('/') {
            assert!(!part.is_empty() && part != "." && part != "..", "{name}");
        }
        assert!(names.insert(name.clone()), "two keys at {name}");
    }
});
