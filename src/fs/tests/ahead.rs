//! Freshness without waiting: values in steady use are refreshed ahead of their expiry. On
//! tokio's paused clock, with the kernel's entry cache played by the test.

use super::*;
use crate::backend::faulty::FaultyBackend;
use crate::backend::ApiCalls;

type Faulty = Fs<FaultyBackend<MemoryBackend>>;

fn faulty(b: &MemoryBackend, max_age: Duration) -> Arc<Faulty> {
    Fs::new(
        FaultyBackend::new(b.clone(), Arc::new(ApiCalls::paced(0))),
        config("/app", max_age),
    )
}

fn slow(fs: &Faulty, latency: Duration) {
    for op in [Op::GetParametersByPath, Op::GetParameter, Op::GetParameters] {
        fs.backend.latency(op, Some(latency));
    }
}

/// The kernel's cache of one name: the inode and until when it may be used without asking.
struct Kernel {
    entry: Option<(Ino, tokio::time::Instant)>,
    invals: Recorder,
}

impl Kernel {
    /// `cat NAME` at the root: the cached inode while its TTL lasts, else a lookup.
    async fn cat(&mut self, fs: &Faulty, name: &str) -> Vec<u8> {
        if self
            .invals
            .0
            .lock()
            .unwrap()
            .drain(..)
            .any(|Inval(_, n)| n == name)
        {
            self.entry = None;
        }
        let now = tokio::time::Instant::now();
        let ino = match self.entry {
            Some((ino, until)) if now < until => ino,
            _ => {
                let e = fs.lookup(ROOT, OsStr::new(name)).await.unwrap();
                self.entry = Some((e.attr.ino, now + e.ttl));
                e.attr.ino
            }
        };
        fs.read(ino, 0, 64).unwrap()
    }
}

#[tokio::test(start_paused = true)]
async fn a_value_in_steady_use_is_refreshed_before_it_expires() {
    let b = sample();
    let max_age = Duration::from_secs(10);
    let fs = faulty(&b, max_age);
    fs.check_source().await.unwrap();
    slow(&fs, Duration::from_millis(50));
    let invals = Recorder::default();
    fs.set_invalidator(Box::new(invals.clone()));
    let mut kernel = Kernel {
        entry: None,
        invals,
    };
    let start = tokio::time::Instant::now();
    let mut waits = Vec::new();
    // Every 100 ms for three max ages; the value changes every second and names that second.
    for tick in 0..300u64 {
        if tick % 10 == 0 {
            b.put("/app/name", Str, &(tick / 10).to_string());
        }
        let asked = tokio::time::Instant::now();
        let value: u64 = String::from_utf8(kernel.cat(&fs, "name").await)
            .unwrap()
            .parse()
            .unwrap_or(0);
        waits.push(asked.elapsed());
        // The value read was current until second value + 1: no older than max age.
        let now = start.elapsed().as_secs_f64();
        assert!(
            now - (value + 1) as f64 <= max_age.as_secs_f64(),
            "at {now:.1} s read the value of second {value}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    waits.sort();
    assert_eq!(
        waits[waits.len() * 99 / 100],
        Duration::ZERO,
        "p99 read waited"
    );
    assert_eq!(*waits.last().unwrap(), Duration::ZERO, "no read waited");
}
