//! The core over a backend whose calls go through the real retry and pacing path
//! ([`FaultyBackend`]), on tokio's paused clock: throttling is retried and absorbed, an outage
//! serves the held values, and AWS's return is noticed.

use super::*;
use crate::backend::faulty::FaultyBackend;
use crate::backend::ApiCalls;

type Faulty = Fs<FaultyBackend<MemoryBackend>>;

async fn cat_faulty(fs: &Faulty, path: &str) -> Result<Vec<u8>, Error> {
    let mut ino = ROOT;
    for part in path.split('/') {
        ino = fs.lookup(ino, OsStr::new(part)).await?.attr.ino;
    }
    let attr = fs.getattr(ino)?.attr;
    fs.read(ino, 0, attr.size as u32 + 1)
}

#[tokio::test(start_paused = true)]
async fn throttling_is_retried_and_an_outage_serves_the_held_values() {
    let b = sample();
    let calls = Arc::new(ApiCalls::paced(20));
    let fs = Fs::new(
        FaultyBackend::new(b.clone(), calls.clone()),
        config("/app", Duration::from_secs(60)),
    );
    fs.check_source().await.unwrap();
    assert_eq!(cat_faulty(&fs, "name").await.unwrap(), b"demo");

    // Throttled twice, then answered: the reader gets the new value, and both throttled
    // attempts are counted.
    b.put("/app/name", Str, "new");
    fs.backend.throttle(Op::GetParametersByPath, 2);
    tokio::time::advance(Duration::from_secs(61)).await;
    let read = cat_faulty(&fs, "name").await.unwrap();
    assert!(read == b"new" || read == b"demo", "a value, not an error");
    // The refresh, retried after each throttle, lands within the retries' pauses.
    let mut value = read;
    for _ in 0..50 {
        if value == b"new" {
            break;
        }
        tokio::time::advance(Duration::from_millis(100)).await;
        value = cat_faulty(&fs, "name").await.unwrap();
    }
    assert_eq!(value, b"new");
    assert_eq!(calls.throttles(), 2);

    // AWS goes down: expired values are served as they were, with no error.
    fs.backend.outage(Op::GetParametersByPath, true);
    fs.backend.outage(Op::GetParameter, true);
    tokio::time::advance(Duration::from_secs(61)).await;
    assert_eq!(cat_faulty(&fs, "name").await.unwrap(), b"new");
    assert_eq!(cat_faulty(&fs, "db/password").await.unwrap(), b"hunter2");
    assert!(
        fs.stats()
            .stale_served
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );

    // AWS is back: after the back-off, the next read refreshes.
    fs.backend.clear();
    b.put("/app/name", Str, "after");
    tokio::time::advance(Duration::from_secs(61)).await;
    let mut value = cat_faulty(&fs, "name").await.unwrap();
    for _ in 0..10 {
        if value == b"after" {
            break;
        }
        tokio::time::advance(Duration::from_secs(1)).await;
        value = cat_faulty(&fs, "name").await.unwrap();
    }
    assert_eq!(value, b"after");
}
