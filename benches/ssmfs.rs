//! The benchmark: ssmfs against the limits it should approach and the tools it replaces, in one
//! run against moto on loopback. It seeds moto, mounts, measures, unmounts, and prints one table
//! (also written as JSON to target/bench-results.json). Run it with `scripts/bench`.
//!
//! Times are reported as ratios against a reference measured in the same run (tmpfs, or the
//! same API calls made directly), so that the figures mean the same on a faster machine.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::proxy::Proxy;
use common::shapes;
use common::{rt, seed, Moto, Mount};
use serde_json::json;

const HOT_FILES: usize = 1000;
const VALUE: &str = "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789";

struct Row {
    name: &'static str,
    target: &'static str,
    measured: String,
    ok: bool,
    json: serde_json::Value,
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let reader = build_reader(root);
    let mut rows = Vec::new();

    let moto = Moto::start();
    eprintln!(
        "bench: seeding 1,000 hot parameters, a 3-entry directory, and a 10,000-parameter tree"
    );
    seed(
        &moto,
        (0..HOT_FILES).map(|i| (format!("/hot/f{i:04}"), VALUE.to_string())),
    );
    seed(
        &moto,
        ["a", "b", "c"]
            .iter()
            .map(|n| (format!("/small/{n}"), VALUE.to_string())),
    );
    seed(
        &moto,
        (0..10).flat_map(|l| {
            (0..50).flat_map(move |m| {
                (0..20).map(move |p| (format!("/big/l{l}/m{m:02}/p{p:02}"), VALUE.to_string()))
            })
        }),
    );

    // 1 and 2: hot reads against tmpfs.
    let tmpfs = tmpfs_copy();
    let hot = Mount::start(&moto, "/hot", &["--max-age", "3600"]);
    run_reader(&reader, &hot.path(""), HOT_FILES, HOT_FILES as u64, 1); // warm the caches
    let single_tmpfs = median(5, || per_read(&reader, tmpfs.path(), 20_000, 1));
    let single_ssmfs = median(5, || per_read(&reader, &hot.path(""), 20_000, 1));
    let ratio = single_ssmfs / single_tmpfs;
    rows.push(Row {
        name: "1. hot read (open+read+close, 100 B)",
        target: "<= 2x tmpfs",
        measured: format!(
            "{ratio:.2}x tmpfs ({:.1} us vs {:.1} us)",
            single_ssmfs * 1e6,
            single_tmpfs * 1e6
        ),
        ok: ratio <= 2.0,
        json: json!({"ssmfs_s": single_ssmfs, "tmpfs_s": single_tmpfs, "ratio": ratio}),
    });
    let par_tmpfs = median(5, || 1.0 / per_read(&reader, tmpfs.path(), 5_000, 16));
    let par_ssmfs = median(5, || 1.0 / per_read(&reader, &hot.path(""), 5_000, 16));
    let ratio = par_ssmfs / par_tmpfs;
    rows.push(Row {
        name: "2. parallel hot reads (16 readers, 1,000 files)",
        target: ">= 0.5x tmpfs throughput",
        measured: format!(
            "{ratio:.2}x tmpfs ({:.0} vs {:.0} reads/s)",
            par_ssmfs, par_tmpfs
        ),
        ok: ratio >= 0.5,
        json: json!({"ssmfs_reads_per_s": par_ssmfs, "tmpfs_reads_per_s": par_tmpfs, "ratio": ratio}),
    });

    // 3: API calls per refresh.
    let before = hot.calls();
    hot.refresh("").unwrap();
    let tree_calls = hot.calls() - before;
    drop(hot);
    let small = Mount::start(&moto, "/small", &[]);
    let before = small.calls();
    small.refresh("").unwrap();
    let small_calls = small.calls() - before;
    drop(small);
    rows.push(Row {
        name: "3. API calls per refresh (1,000-parameter tree; 3-entry directory)",
        target: "<= 100 (+1 empty page from moto); 1",
        measured: format!("{tree_calls}; {small_calls}"),
        ok: tree_calls <= 101 && small_calls == 1,
        json: json!({"tree": tree_calls, "small_dir": small_calls}),
    });

    // 4: cold first byte in the big tree, and in a tree laid out another way.
    let (big, first) = first_byte(&moto, "/big", "l3/m27/p11");
    rows.push(
        first.row("4. cold first byte, 3 levels down a 10,000-parameter tree (10 x 50 x 20)"),
    );
    let wide_moto = Moto::start();
    eprintln!("bench: seeding a second 10,000-parameter tree (100 directories of 100)");
    seed(
        &wide_moto,
        (0..100).flat_map(|d| {
            (0..100).map(move |p| (format!("/wide/a{d:03}/p{p:02}"), VALUE.to_string()))
        }),
    );
    let (_, first) = first_byte(&wide_moto, "/wide", "a057/p42");
    rows.push(first.row("4b. cold first byte, 2 levels down a 10,000-parameter tree (100 x 100)"));
    drop(wide_moto);

    // 5: listing a 20-entry directory of the big tree.
    let before = big.calls();
    let listed = big.ls("l7/m33");
    let list_calls = big.calls() - before;
    assert_eq!(listed.len(), 21);
    rows.push(Row {
        name: "5. ls of a 20-entry directory in the 10,000-parameter tree",
        target: "in proportion to the directory (20 entries: 2 pages), not the tree (1,000 pages)",
        measured: format!("{list_calls} calls"),
        ok: list_calls <= 6,
        json: json!({"calls": list_calls}),
    });

    // 7 and 6: a full sweep of the big tree at the default --max-tps, then memory.
    eprintln!(
        "bench: sweeping the 10,000-parameter tree at the default --max-tps 20 (about a minute)"
    );
    let before = big.calls();
    let start = Instant::now();
    let files = walk(&big.path(""));
    let sweep_time = start.elapsed();
    let sweep_calls = big.calls() - before;
    assert_eq!(files, 10_000);
    let tps = sweep_calls as f64 / sweep_time.as_secs_f64();
    let rss_mb = rss_kb(big.pid()) as f64 / 1024.0;
    rows.push(Row {
        name: "6. resident memory, 10,000 cached 100-byte parameters",
        target: "<= 40 MB",
        measured: format!("{rss_mb:.1} MB"),
        ok: rss_mb <= 40.0,
        json: json!({"rss_mb": rss_mb}),
    });
    rows.push(Row {
        name: "7. API rate during a full sweep of the big tree",
        target: "<= --max-tps (20)",
        measured: format!(
            "{tps:.1} calls/s ({sweep_calls} calls in {:.0} s)",
            sweep_time.as_secs_f64()
        ),
        ok: tps <= 20.5,
        json: json!({"calls": sweep_calls, "seconds": sweep_time.as_secs_f64(), "tps": tps}),
    });
    drop(big);

    // 8: peers, reading the 1,000 hot parameters.
    let peers = peers(root, &moto);
    let cache_s = peers["ssm_cache_seconds"].as_f64().unwrap();
    let cache_calls = peers["ssm_cache_calls"].as_u64().unwrap();
    let cli_per = peers["cli_seconds"].as_f64().unwrap() / peers["cli_reads"].as_f64().unwrap();
    let start = Instant::now();
    let cold = Mount::start(&moto, "/hot", &["--max-tps", "0"]);
    run_reader(&reader, &cold.path(""), HOT_FILES, HOT_FILES as u64, 1);
    let cold_s = start.elapsed().as_secs_f64();
    let cold_calls = cold.calls();
    let start = Instant::now();
    run_reader(&reader, &cold.path(""), HOT_FILES, HOT_FILES as u64, 1);
    let warm_s = start.elapsed().as_secs_f64();
    let warm_calls = cold.calls() - cold_calls;
    drop(cold);
    rows.push(Row {
        name: "8. peers: read 1,000 parameters",
        target: "report the ratios",
        measured: format!(
            "ssm-cache {:.2} s, {cache_calls} calls; aws ssm get-parameter {:.0} ms each ({:.0} s for 1,000); \
             ssmfs cold (mount + read) {:.2} s, {cold_calls} calls = {:.2}x ssm-cache; warm {:.1} ms, {warm_calls} calls = {:.4}x ssm-cache",
            cache_s,
            cli_per * 1e3,
            cli_per * 1000.0,
            cold_s,
            cold_s / cache_s,
            warm_s * 1e3,
            warm_s / cache_s
        ),
        ok: true,
        json: json!({"peers": peers, "ssmfs_cold_s": cold_s, "ssmfs_cold_calls": cold_calls,
                     "ssmfs_warm_s": warm_s, "ssmfs_warm_calls": warm_calls}),
    });

    // 10 to 12: a slow AWS, an expiry storm, selectors read together.
    rows.push(slow_aws(&moto));
    rows.push(expiry_storm(&moto));
    rows.push(selectors(&moto));
    rows.push(secrets_at_scale());
    rows.push(announcements(&moto));

    // 9: cold reads of a whole tree, file by file, on several shapes, against ssm-cache.
    // The first four shapes; the fifth (many small directories) is in the unit tests only.
    for &shape in &shapes::SHAPES[..4] {
        rows.push(cold_tree(root, shape));
    }

    print_table(&rows);
    let doc = json!({
        "machine": machine(),
        "rows": rows.iter().map(|r| json!({"row": r.name, "target": r.target, "measured": r.measured, "met": r.ok, "data": r.json})).collect::<Vec<_>>(),
    });
    let out = root.join("target/bench-results.json");
    std::fs::write(&out, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    eprintln!("bench: results written to {}", out.display());
}

fn build_reader(root: &Path) -> PathBuf {
    let out = root.join("target/bench-reader");
    let status = Command::new("cc")
        .args(["-O2", "-pthread", "-o"])
        .arg(&out)
        .arg(root.join("bench/reader.c"))
        .status()
        .expect("a C compiler (cc)");
    assert!(status.success());
    out
}

/// The same 1,000 files on tmpfs (/dev/shm).
fn tmpfs_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir_in("/dev/shm").expect("/dev/shm (tmpfs)");
    for i in 0..HOT_FILES {
        std::fs::write(dir.path().join(format!("f{i:04}")), VALUE).unwrap();
    }
    dir
}

fn run_reader(reader: &Path, dir: &Path, files: usize, reads: u64, threads: u32) -> (u64, f64) {
    let out = Command::new(reader)
        .arg(dir)
        .arg(files.to_string())
        .arg(reads.to_string())
        .arg(threads.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut parts = text.split_whitespace();
    (
        parts.next().unwrap().parse().unwrap(),
        parts.next().unwrap().parse().unwrap(),
    )
}

/// Seconds per read.
fn per_read(reader: &Path, dir: &Path, reads: u64, threads: u32) -> f64 {
    let (n, secs) = run_reader(reader, dir, HOT_FILES, reads, threads);
    secs / n as f64
}

fn median(runs: usize, mut f: impl FnMut() -> f64) -> f64 {
    let mut v: Vec<f64> = (0..runs).map(|_| f()).collect();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[runs / 2]
}

/// The fetches ssmfs logged after start-up, as (kind, path).
fn fetches_in(log: &str) -> Vec<(String, String)> {
    log.lines()
        .filter_map(|l| l.split_once("fetching fetch=").map(|(_, f)| f))
        .filter_map(|f| {
            let (kind, rest) = f.split_once('(')?;
            let path = rest.trim_end_matches(')').trim_matches('"');
            Some((kind.to_string(), path.to_string()))
        })
        .collect()
}

/// Makes the API calls of the logged fetches directly, with the SDK, and times them.
fn replay(moto: &Moto, source: &str, fetches: &[(String, String)]) -> Duration {
    let c = &moto.client;
    let start = Instant::now();
    // Where each listing left off, for the pages that go on with it.
    let mut tokens = std::collections::HashMap::new();
    rt().block_on(async {
        for (kind, path) in fetches {
            let full = format!("{source}/{path}");
            match kind.as_str() {
                "Page" => {
                    let out = c
                        .get_parameters_by_path()
                        .path(&full)
                        .recursive(true)
                        .with_decryption(true)
                        .max_results(10)
                        .set_next_token(tokens.remove(path))
                        .send()
                        .await
                        .unwrap();
                    if let Some(t) = out.next_token {
                        tokens.insert(path.clone(), t);
                    }
                }
                "Get" => {
                    let _ = c
                        .get_parameter()
                        .name(&full)
                        .with_decryption(true)
                        .send()
                        .await;
                }
                "Probe" | "Sweep" | "Files" | "Renew" => {
                    let mut token = None;
                    loop {
                        let out = c
                            .get_parameters_by_path()
                            .path(&full)
                            .recursive(kind != "Files")
                            .with_decryption(true)
                            .max_results(10)
                            .set_next_token(token)
                            .send()
                            .await
                            .unwrap();
                        token = out.next_token;
                        let stop =
                            kind == "Probe" && !out.parameters.unwrap_or_default().is_empty();
                        if token.is_none() || stop {
                            if let Some(t) = token.filter(|_| stop) {
                                tokens.insert(path.clone(), t);
                            }
                            break;
                        }
                    }
                }
                other => panic!("unknown fetch {other}"),
            }
        }
    });
    start.elapsed()
}

/// What row 4 measures: a cold read of one file on a fresh mount.
struct FirstByte {
    mount_s: f64,
    calls: u64,
    read_s: f64,
    direct_s: f64,
    fetches: Vec<(String, String)>,
}

impl FirstByte {
    fn row(self, name: &'static str) -> Row {
        let ratio = self.read_s / self.direct_s;
        Row {
            name,
            target: "live < 1 s; <= 4 calls; <= 1.2x the same calls made directly",
            measured: format!(
                "live in {:.2} s; {} calls; {ratio:.2}x ({:.0} ms vs {:.0} ms)",
                self.mount_s,
                self.calls,
                self.read_s * 1e3,
                self.direct_s * 1e3
            ),
            ok: self.mount_s < 1.0 && self.calls <= 4 && ratio <= 1.2,
            json: json!({"mount_s": self.mount_s, "calls": self.calls, "read_s": self.read_s,
                         "direct_s": self.direct_s, "fetches": self.fetches}),
        }
    }
}

/// Mounts `source` with a debug log, reads `path` once, and replays the logged fetches directly.
fn first_byte(moto: &Moto, source: &str, path: &str) -> (Mount, FirstByte) {
    let log_dir = tempfile::tempdir().unwrap();
    let log = log_dir.path().join("first.log");
    let log_arg = log.to_str().unwrap().to_string();
    let start = Instant::now();
    let m = Mount::start(
        moto,
        source,
        &["--log-level", "debug", "--log-file", &log_arg],
    );
    let mount_s = start.elapsed().as_secs_f64();
    let before = m.calls();
    let start = Instant::now();
    let value = std::fs::read(m.path(path)).unwrap();
    let read_s = start.elapsed().as_secs_f64();
    assert_eq!(value, VALUE.as_bytes());
    let calls = m.calls() - before;
    let fetches = fetches_in(&std::fs::read_to_string(&log).unwrap());
    let direct_s = replay(moto, source, &fetches).as_secs_f64();
    (
        m,
        FirstByte {
            mount_s,
            calls,
            read_s,
            direct_s,
            fetches,
        },
    )
}

/// Row 10: every call takes 5 s; reads of held, expired values 3 levels and 1 level down, in
/// that order.
fn slow_aws(moto: &Moto) -> Row {
    seed(
        moto,
        ["/slow/a/b/c/name", "/slow/x/name"]
            .iter()
            .map(|n| (n.to_string(), VALUE.to_string())),
    );
    let proxy = Proxy::start(moto.port);
    let m = Mount::start_at(&proxy.url(), "/slow", &["--max-age", "1"]);
    for path in ["a/b/c/name", "x/name"] {
        assert_eq!(std::fs::read(m.path(path)).unwrap(), VALUE.as_bytes());
    }
    // Past the max age: what the kernel and ssmfs hold is stale.
    std::thread::sleep(Duration::from_millis(1100));
    proxy.delay(Some(Duration::from_secs(5)));
    let timed = |path: &str| {
        let start = Instant::now();
        assert_eq!(std::fs::read(m.path(path)).unwrap(), VALUE.as_bytes());
        start.elapsed().as_secs_f64()
    };
    let deep = timed("a/b/c/name");
    let shallow = timed("x/name");
    proxy.delay(None);
    proxy.wait_idle();
    Row {
        name: "10. slow AWS (5 s a call): read a held, expired value 3 levels down, then another 1 level down",
        target: "<= 100 ms each (one wait per open at most)",
        measured: format!("{:.0} ms; {:.0} ms", deep * 1e3, shallow * 1e3),
        ok: deep <= 0.1 && shallow <= 0.1,
        json: json!({"deep_s": deep, "shallow_s": shallow}),
    }
}

/// Row 11: 256 readers at once of the 40 files of a directory that has expired, on a mount.
fn expiry_storm(moto: &Moto) -> Row {
    seed(
        moto,
        (0..40).map(|i| (format!("/storm/f{i:02}"), VALUE.to_string())),
    );
    let m = Mount::start(moto, "/storm", &["--max-age", "1"]);
    for i in 0..40 {
        std::fs::read(m.path(&format!("f{i:02}"))).unwrap();
    }
    std::thread::sleep(Duration::from_millis(1100));
    let before = m.calls();
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(256));
    let readers: Vec<_> = (0..256)
        .map(|i| {
            let (path, barrier) = (m.path(&format!("f{:02}", i % 40)), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                std::fs::read(path).unwrap()
            })
        })
        .collect();
    for r in readers {
        assert_eq!(r.join().unwrap(), VALUE.as_bytes());
    }
    let calls = m.calls() - before;
    Row {
        name: "11. expiry storm: 256 readers at once of the 40 files of an expired directory",
        target: "one refresh of the directory: 4 pages (+1 empty page from moto)",
        measured: format!("{calls} calls"),
        ok: calls <= 5,
        json: json!({"calls": calls}),
    }
}

/// Row 12: 40 readers at once of `NAME:1` for 40 parameters of one directory.
fn selectors(moto: &Moto) -> Row {
    for value in ["first", "second"] {
        seed(
            moto,
            (0..40).map(move |i| (format!("/sel/s{i:02}"), value.to_string())),
        );
    }
    let m = Mount::start(moto, "/sel", &[]);
    assert_eq!(m.ls("").iter().filter(|n| n.starts_with('s')).count(), 40);
    let before = m.calls();
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(40));
    let readers: Vec<_> = (0..40)
        .map(|i| {
            let (path, barrier) = (m.path(&format!("s{i:02}:1")), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                std::fs::read(path).unwrap()
            })
        })
        .collect();
    for r in readers {
        assert_eq!(r.join().unwrap(), b"first");
    }
    let calls = m.calls() - before;
    let batched = m.stats()["api_calls"]["GetParameters"]
        .as_u64()
        .unwrap_or(0);
    Row {
        name: "12. selectors: 40 readers at once of NAME:1, one per parameter",
        target: "batched GetParameters of up to 10 names: <= 6 calls (not 40)",
        measured: format!("{calls} calls ({batched} GetParameters)"),
        ok: calls <= 6,
        json: json!({"calls": calls, "get_parameters": batched}),
    }
}

/// Row 13: a Secrets Manager prefix of 100 secrets (ten directories of ten), read whole cold,
/// then refreshed with nothing changed.
fn secrets_at_scale() -> Row {
    let moto = Moto::start();
    let client = moto.secrets_client();
    rt().block_on(async {
        for d in 0..10 {
            for s in 0..10 {
                client
                    .create_secret()
                    .name(format!("scale/d{d}/s{s}"))
                    .secret_string(VALUE)
                    .send()
                    .await
                    .unwrap();
            }
        }
    });
    // Counted from the start: the start-up check's listing is part of the cold read.
    let m = Mount::start(&moto, "secretsmanager:scale/", &[]);
    assert_eq!(walk(&m.path("")), 100);
    let cold = m.calls();
    let before = m.calls();
    m.refresh("").unwrap();
    let refresh = m.calls() - before;
    let ops = m.stats()["api_calls"].clone();
    Row {
        name: "13. Secrets Manager: 100 secrets (10 x 10), read whole cold, then refreshed",
        target: "cold <= 1 ListSecrets + 5 BatchGetSecretValue (+1); refresh 1 ListSecrets",
        measured: format!(
            "cold (mount + read) {cold} calls; refresh {refresh} calls; in all {ops}"
        ),
        ok: cold <= 7 && refresh <= 1,
        json: json!({"cold": cold, "refresh": refresh, "ops": ops}),
    }
}

/// Row 9 for one shape: a fresh moto holding only that tree; ssm-cache's recursive group fetch
/// of it (the floor: the pages of one sweep); then ssmfs with its default options, mounted
/// fresh and every file read once by path, in the order created and shuffled.
fn cold_tree(root: &Path, shape: &'static str) -> Row {
    eprintln!("bench: cold reads of {shape}");
    let moto = Moto::start();
    let mut names = shapes::names(shape);
    seed(
        &moto,
        names
            .iter()
            .map(|n| (format!("/cold/{n}"), VALUE.to_string())),
    );
    let peer = peers_at(root, &moto, "/cold", 0);
    let cache_s = peer["ssm_cache_seconds"].as_f64().unwrap();
    let floor = peer["ssm_cache_calls"].as_u64().unwrap();
    let read_all = |names: &[String]| {
        let start = Instant::now();
        let m = Mount::start(&moto, "/cold", &[]);
        for n in names {
            assert_eq!(std::fs::read(m.path(n)).unwrap(), VALUE.as_bytes(), "{n}");
        }
        (m.calls(), start.elapsed().as_secs_f64())
    };
    let (calls, secs) = read_all(&names);
    fastrand::seed(7);
    fastrand::shuffle(&mut names);
    let (shuffled_calls, shuffled_secs) = read_all(&names);
    let ratio = calls as f64 / floor as f64;
    let time = secs / cache_s;
    Row {
        name: shape,
        target: "9. cold read of every file (1,000): calls <= 1.5x the floor, time <= ssm-cache",
        measured: format!(
            "in order: {calls} calls = {ratio:.2}x, {secs:.2} s = {time:.2}x ssm-cache ({cache_s:.2} s, {floor} calls); \
             shuffled: {shuffled_calls} calls = {:.2}x, {:.2}x ssm-cache",
            shuffled_calls as f64 / floor as f64,
            shuffled_secs / cache_s
        ),
        ok: ratio <= 1.5 && time <= 1.0,
        json: json!({"floor_calls": floor, "ssm_cache_s": cache_s, "calls": calls, "seconds": secs,
                     "shuffled_calls": shuffled_calls, "shuffled_seconds": shuffled_secs}),
    }
}

/// Row 14: a refresh that changes 100 of 1,000 parameters (ten in each of ten directories)
/// while `inotifywait -m -r` watches the mount: what the announcements cost in calls, and how
/// soon after the refresh the last event arrives.
fn announcements(moto: &Moto) -> Row {
    use std::io::BufRead;
    let names = |per_dir: usize| {
        (0..10).flat_map(move |d| (0..per_dir).map(move |p| format!("/watch/d{d}/p{p:03}")))
    };
    seed(moto, names(100).map(|n| (n, VALUE.to_string())));
    let m = Mount::start(moto, "/watch", &["--max-age", "3600"]);
    assert_eq!(walk(&m.path("")), 1000);
    let mut watch = Command::new("inotifywait")
        .args(["-m", "-r", "-e", "close_write", "--format", "%w%f"])
        .arg(m.path(""))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("inotifywait (scripts/setup installs inotify-tools)");
    let stderr = std::io::BufReader::new(watch.stderr.take().unwrap());
    let established = stderr
        .lines()
        .any(|l| l.is_ok_and(|l| l.contains("Watches established")));
    assert!(established, "inotifywait did not start watching");
    let (tx, events) = std::sync::mpsc::channel();
    let stdout = std::io::BufReader::new(watch.stdout.take().unwrap());
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    seed(moto, names(10).map(|n| (n, "changed".to_string())));
    let before = m.calls();
    let start = Instant::now();
    m.refresh("").unwrap();
    let refreshed = start.elapsed();
    let mut heard = 0;
    while heard < 100 {
        match events.recv_timeout(Duration::from_secs(30)) {
            Ok(_) => heard += 1,
            Err(_) => break,
        }
    }
    let last = start.elapsed();
    let calls = m.calls() - before;
    let _ = watch.kill();
    let _ = watch.wait();
    let after_refresh = last.saturating_sub(refreshed);
    Row {
        name: "14. changes announced: a refresh that changes 100 of 1,000 parameters, watched by inotifywait -m -r",
        target: "the refresh's own calls (100 pages +1 from moto); 100 of 100 changes heard; the last within 1 s of the refresh",
        measured: format!(
            "{calls} calls; {heard} of 100 heard; .refresh took {:.0} ms, the last event came {:.0} ms after it",
            refreshed.as_secs_f64() * 1e3,
            after_refresh.as_secs_f64() * 1e3
        ),
        ok: calls <= 101 && heard == 100 && after_refresh <= Duration::from_secs(1),
        json: json!({"calls": calls, "heard": heard, "refresh_s": refreshed.as_secs_f64(),
                     "last_event_after_refresh_s": after_refresh.as_secs_f64()}),
    }
}

/// Lists every directory and reads every file below `dir`; returns the number of files.
fn walk(dir: &Path) -> usize {
    let mut files = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name.to_str().is_some_and(|n| n.starts_with('.')) {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            files += walk(&path);
        } else {
            std::fs::read(&path).unwrap();
            files += 1;
        }
    }
    files
}

fn rss_kb(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

fn peers(root: &Path, moto: &Moto) -> serde_json::Value {
    peers_at(root, moto, "/hot", 20)
}

/// ssm-cache's group fetch of `base`, and `cli_reads` reads with the AWS CLI (bench/peers.py).
fn peers_at(root: &Path, moto: &Moto, base: &str, cli_reads: usize) -> serde_json::Value {
    let python = root.join(".venv/bin/python");
    let out = Command::new(python)
        .arg(root.join("bench/peers.py"))
        .args([&moto.url(), base, &cli_reads.to_string()])
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().next().map(str::to_string))
        .unwrap_or_default();
    format!(
        "{cpus} CPUs, {}, Linux {}",
        mem.replace("MemTotal:", "memory")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" "),
        kernel.trim()
    )
}

fn print_table(rows: &[Row]) {
    println!("\nssmfs benchmark, {}\n", machine());
    println!("| row | target | measured | met |");
    println!("|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} |",
            r.name,
            r.target,
            r.measured,
            if r.ok { "yes" } else { "no" }
        );
    }
}
