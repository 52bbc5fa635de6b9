//! Memory stays bounded under load that once made it grow: lookups of random missing names,
//! `.stats` reads (each a new snapshot inode) and refreshes that change values (each a new
//! version inode). The daemon's resident memory is read from /proc after a warm-up round and
//! after a round ten times as long; it must stay within 10 MB.

mod common;

use common::{seed, Moto, Mount};

fn rss_kib(pid: i32) -> u64 {
    let status = procfs::process::Process::new(pid)
        .unwrap()
        .status()
        .unwrap();
    status.vmrss.expect("VmRSS")
}

/// One round of the load: `missing` lookups of random missing names, `stats` reads of
/// `.stats`, and `refreshes` refreshes that each change one value (read after it).
fn round(moto: &Moto, mount: &Mount, missing: usize, stats: usize, refreshes: usize) {
    let start = std::time::Instant::now();
    for i in 0..missing {
        let name = format!("missing-{:016x}", fastrand::u64(..));
        let dir = if i % 2 == 0 { "" } else { "d" };
        let err = std::fs::metadata(mount.path(dir).join(name)).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    }
    let looked_up = start.elapsed();
    for _ in 0..stats {
        serde_json::from_slice::<serde_json::Value>(&mount.read(".stats")).unwrap();
    }
    let read = start.elapsed();
    // Each refresh sweeps one directory of five parameters: one call.
    for i in 0..refreshes {
        let name = format!("c/p{}", i % 5);
        let value = format!("value {}", fastrand::u64(..));
        moto.put(&format!("/soak/{name}"), "SecureString", &value);
        mount.refresh("c").unwrap();
        assert_eq!(mount.read_str(&name), value);
    }
    eprintln!(
        "{missing} lookups {looked_up:.1?}, {stats} .stats reads {:.1?}, {refreshes} refreshes {:.1?}",
        read - looked_up,
        start.elapsed() - read
    );
}

#[test]
fn memory_stays_flat_under_lookups_stats_reads_and_changing_refreshes() {
    let moto = Moto::start();
    seed(
        &moto,
        (0..20)
            .map(|i| (format!("/soak/p{i:02}"), "v".to_string()))
            .chain((0..20).map(|i| (format!("/soak/d/q{i:02}"), "v".to_string()))),
    );
    for i in 0..5 {
        moto.put(&format!("/soak/c/p{i}"), "SecureString", "first");
    }
    let mount = Mount::start(&moto, "/soak", &["--max-age", "3600", "--max-tps", "0"]);
    // The warm-up brings the allocator's pools and every capped cache to their steady size.
    round(&moto, &mount, 20_000, 2_000, 200);
    let before = rss_kib(mount.pid());
    round(&moto, &mount, 200_000, 20_000, 2_000);
    let after = rss_kib(mount.pid());
    eprintln!("daemon RSS: {before} KiB after the warm-up, {after} KiB after the soak");
    assert!(
        after <= before + 10 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
}
