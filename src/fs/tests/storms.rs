//! Many readers at once: what an expired directory costs, whatever the number of readers.

use super::*;

/// 256 readers of the 40 files of one expired directory cost one refresh of that directory:
/// its pages, once.
#[tokio::test(start_paused = true)]
async fn many_readers_of_an_expired_directory_cost_one_refresh() {
    let b = MemoryBackend::new();
    for i in 0..40 {
        b.put(&format!("/app/d/f{i:02}"), Str, "v");
    }
    for i in 0..200 {
        b.put(&format!("/app/other/o{i:03}"), Str, "v");
    }
    let fs = started(&b, "/app", Duration::from_secs(60)).await;
    for i in 0..40 {
        cat(&fs, &format!("d/f{i:02}")).await.unwrap();
    }
    tokio::time::advance(Duration::from_secs(61)).await;
    let gate = b.hold_calls();
    let before = b.total_calls();
    let readers: Vec<_> = (0..256)
        .map(|r| {
            let fs = fs.clone();
            tokio::spawn(async move {
                for i in 0..40 {
                    let name = format!("d/f{:02}", (r * 7 + i) % 40);
                    cat(&fs, &name).await.unwrap();
                }
            })
        })
        .collect();
    tokio::task::yield_now().await;
    gate.add_permits(10_000);
    for r in readers {
        r.await.unwrap();
    }
    let calls = b.total_calls() - before;
    assert_eq!(calls, 4, "one refresh of d: 4 pages of 10");
}
