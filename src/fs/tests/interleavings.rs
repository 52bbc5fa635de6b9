//! The lookup/refresh race and concurrent `.stats` lookups under shuttle's scheduler, which
//! explores interleavings of the core's lock (`cargo test --features shuttle --lib shuttle`).

use ::shuttle::thread;

use super::*;
use crate::backend::Param;

fn version(v: u32) -> Param {
    Param::test("/app/name", &format!("value {v}"), v.into())
}

/// A mount whose tree holds /app/name at version 1, without AWS or a runtime.
fn mounted() -> Arc<Fs<MemoryBackend>> {
    let fs = Fs::new(MemoryBackend::new(), config("/app", LONG));
    let source = fs.config.source.clone();
    fs.core
        .lock()
        .unwrap()
        .tree
        .apply_sweep("", vec![version(1)], &source, Instant::now());
    fs
}

#[test]
fn shuttle_a_lookup_racing_a_refresh_hands_out_an_inode_that_answers() {
    ::shuttle::check_random(
        || {
            let fs = mounted();
            let reader = {
                let fs = fs.clone();
                thread::spawn(move || {
                    for _ in 0..2 {
                        let entry = fs.lookup_now(ROOT, OsStr::new("name")).unwrap().unwrap();
                        let attr = fs.getattr(entry.attr.ino).expect("a handed-out inode");
                        fs.read(attr.attr.ino, 0, 64).expect("reads");
                        fs.forget(entry.attr.ino, 1);
                    }
                })
            };
            let refresher = thread::spawn(move || {
                let source = fs.config.source.clone();
                for v in 2..4 {
                    let at = Instant::now();
                    let mut core = fs.core.lock().unwrap();
                    core.tree.apply_sweep("", vec![version(v)], &source, at);
                }
            });
            reader.join().unwrap();
            refresher.join().unwrap();
        },
        2000,
    );
}

#[test]
fn shuttle_concurrent_stats_lookups_each_read_their_snapshot() {
    ::shuttle::check_random(
        || {
            let fs = mounted();
            let readers: Vec<_> = (0..2)
                .map(|_| {
                    let fs = fs.clone();
                    thread::spawn(move || {
                        let entry = fs.lookup_now(ROOT, OsStr::new(".stats")).unwrap().unwrap();
                        let attr = fs.getattr(entry.attr.ino).expect("its snapshot");
                        fs.read(attr.attr.ino, 0, 1 << 16).expect("reads");
                        fs.forget(entry.attr.ino, 1);
                    })
                })
                .collect();
            for r in readers {
                r.join().unwrap();
            }
            assert_eq!(
                fs.held_inodes(),
                1,
                "both snapshots are gone once forgotten"
            );
        },
        2000,
    );
}
