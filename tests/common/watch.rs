//! `inotifywait -m` on paths of a mount, its events read as they come, with bounded waits.
//! Needs inotify-tools (scripts/setup installs it).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long a test waits for an event before it fails (a bound on a hang, not a wait).
pub const EVENT_LIMIT: Duration = Duration::from_secs(30);

/// `inotifywait -m` on some paths, its events as lines `EVENTS PATH`, killed on drop.
pub struct Watch {
    child: Child,
    events: mpsc::Receiver<String>,
    /// Every line seen so far, for failure messages.
    seen: Vec<String>,
}

impl Watch {
    pub fn start(args: &[&str], paths: &[&Path]) -> Watch {
        let mut child = Command::new("inotifywait")
            .args(["-m", "--format", "%e %w%f"])
            .args(args)
            .args(paths)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("inotifywait not found: run scripts/setup (package inotify-tools)");
        // It says so on standard error once every watch is in place.
        let stderr = child.stderr.take().unwrap();
        let (ready_tx, ready) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stderr).lines();
            let established = lines.any(|l| l.is_ok_and(|l| l.contains("Watches established")));
            let _ = ready_tx.send(established);
            for _ in lines {}
        });
        let established = ready.recv_timeout(EVENT_LIMIT).unwrap_or(false);
        assert!(established, "inotifywait did not start watching");
        let (tx, events) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Watch {
            child,
            events,
            seen: Vec::new(),
        }
    }

    /// Waits for an event line containing every one of `parts`; returns the lines up to it.
    pub fn expect(&mut self, parts: &[&str]) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let line = self.events.recv_timeout(EVENT_LIMIT).unwrap_or_else(|_| {
                panic!("no event with {parts:?}; seen: {:#?}", self.seen);
            });
            self.seen.push(line.clone());
            lines.push(line.clone());
            if parts.iter().all(|p| {
                line.split(' ')
                    .any(|w| w == *p || w.split(',').any(|e| e == *p))
            }) {
                return lines;
            }
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
