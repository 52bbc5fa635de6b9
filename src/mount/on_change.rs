//! `--on-change [PATH=]COMMAND`: a command run after a refresh changed something under PATH,
//! to reload what reads the files (`nginx -s reload`, `systemctl reload app`).
//!
//! Promises:
//! - a run follows a fetch that changed something in AWS under PATH, once the kernel shows the
//!   change; never start-up, never a refresh that changed nothing; one run per fetch, not one per
//!   file;
//! - a command never runs beside itself: changes that arrive while it runs make exactly one more
//!   run after it, with all their paths;
//! - it runs as `/bin/sh -c COMMAND` in a process group of its own, with `SSMFS_CHANGED` (the
//!   changed paths under PATH, mount-relative, one per line, up to 64 KiB), `SSMFS_MOUNTPOINT`
//!   and `SSMFS_SOURCE` added to the daemon's environment, less its AWS credentials: paths,
//!   never values;
//! - past its time limit its whole process group is killed; a failure is logged at warn with its
//!   exit status and the last lines of its standard error; neither touches the mount or later
//!   runs. Runs, failures and time-outs are counted in `.stats` and `/metrics`.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::cli::OnChange;
use crate::fs::tree::in_subtree;
use crate::fs::News;
use crate::kernel::Listener;
use crate::stats::Stats;

/// Lines of a failed command's standard error that are logged.
const STDERR_LINES: usize = 10;
/// The most `SSMFS_CHANGED` holds, in bytes: Linux refuses to start a program with an
/// environment string over 128 KiB. The paths beyond it are counted in
/// `SSMFS_CHANGED_TRUNCATED`.
const CHANGED_BYTES: usize = 64 * 1024;
/// The daemon's AWS credentials stay with the daemon: a command never needs them to reload a
/// program, and it may log its environment.
const CREDENTIALS: [&str; 6] = [
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
];
/// Bytes of each such line that are logged.
const LINE_BYTES: usize = 400;

/// What every run is told, beside the paths.
pub struct Context {
    pub mountpoint: PathBuf,
    /// The source as the mount shows it (`ssm:/app`).
    pub source: String,
    pub timeout: Duration,
}

/// Starts a runner per command on `rt`; the listener hands each runner the paths of a fetch's
/// news under its PATH.
pub fn spawn(
    rt: &tokio::runtime::Handle,
    commands: Vec<OnChange>,
    context: Context,
    stats: Arc<Stats>,
) -> Listener {
    let context = Arc::new(context);
    let runners: Vec<(String, mpsc::UnboundedSender<Vec<String>>)> = commands
        .into_iter()
        .map(|c| {
            let (tx, rx) = mpsc::unbounded_channel();
            rt.spawn(runner(c.command, rx, context.clone(), stats.clone()));
            (c.path, tx)
        })
        .collect();
    Box::new(move |news| {
        for (path, tx) in &runners {
            let changed = changed_under(path, news);
            if !changed.is_empty() {
                let _ = tx.send(changed);
            }
        }
    })
}

/// The paths of the parameters (and labels) a fetch changed under `path`, as the mount shows
/// them. Directories are left out: the parameters in them are listed.
pub fn changed_under(path: &str, news: &[News]) -> Vec<String> {
    news.iter()
        .filter(|n| !n.is_dir() && in_subtree(path, &n.path))
        .map(|n| n.shown.clone())
        .collect()
}

/// Runs one command for each batch of changes it is handed, one run at a time; the batches that
/// arrived during a run make one run after it.
async fn runner(
    command: String,
    mut rx: mpsc::UnboundedReceiver<Vec<String>>,
    context: Arc<Context>,
    stats: Arc<Stats>,
) {
    while let Some(mut changed) = rx.recv().await {
        while let Ok(more) = rx.try_recv() {
            changed.extend(more);
        }
        changed.sort();
        changed.dedup();
        Stats::bump(&stats.on_change_runs);
        match run(&command, &changed, &context).await {
            Ended::Done => {}
            Ended::Failed => Stats::bump(&stats.on_change_failures),
            Ended::TimedOut => Stats::bump(&stats.on_change_timeouts),
        }
    }
}

/// How a run ended.
enum Ended {
    Done,
    Failed,
    TimedOut,
}

/// The value of `SSMFS_CHANGED`: the paths, one per line, as many as fit in
/// [`CHANGED_BYTES`]; and how many were left out.
fn changed_env(changed: &[String]) -> (String, usize) {
    let mut value = String::new();
    for (i, path) in changed.iter().enumerate() {
        if value.len() + path.len() + 1 > CHANGED_BYTES {
            return (value, changed.len() - i);
        }
        if !value.is_empty() {
            value.push('\n');
        }
        value.push_str(path);
    }
    (value, 0)
}

async fn run(command: &str, changed: &[String], context: &Context) -> Ended {
    debug!(
        command,
        changed = changed.len(),
        "running --on-change command"
    );
    let (paths, left_out) = changed_env(changed);
    let mut cmd = tokio::process::Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(command)
        .env("SSMFS_CHANGED", paths)
        .env("SSMFS_MOUNTPOINT", &context.mountpoint)
        .env("SSMFS_SOURCE", &context.source)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    for name in CREDENTIALS {
        cmd.env_remove(name);
    }
    // A command that starts ssmfs itself must not inherit this mount's command.
    cmd.env_remove(super::cli::ON_CHANGE_VAR);
    if left_out > 0 {
        cmd.env("SSMFS_CHANGED_TRUNCATED", left_out.to_string());
    }
    let spawned = cmd.spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(err) => {
            warn!(command, error = %err, "--on-change command could not start");
            return Ended::Failed;
        }
    };
    let stderr = child.stderr.take().map(|err| tokio::spawn(tail(err)));
    let status = match tokio::time::timeout(context.timeout, child.wait()).await {
        Ok(status) => status,
        Err(_) => {
            if let Some(pid) = child.id() {
                let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
            let _ = child.wait().await;
            warn!(
                command,
                timeout = ?context.timeout,
                "--on-change command timed out; its process group was killed"
            );
            return Ended::TimedOut;
        }
    };
    // A child that left the group may hold standard error open: its tail is not waited for long.
    let lines = match stderr {
        Some(mut task) => match tokio::time::timeout(Duration::from_secs(1), &mut task).await {
            Ok(lines) => lines.unwrap_or_default(),
            Err(_) => {
                task.abort();
                VecDeque::new()
            }
        },
        None => VecDeque::new(),
    };
    match status {
        Ok(status) if status.success() => {
            info!(command, changed = changed.len(), "--on-change command ran");
            Ended::Done
        }
        Ok(status) => {
            let stderr = Vec::from(lines).join("\n");
            warn!(command, %status, stderr, "--on-change command failed");
            Ended::Failed
        }
        Err(err) => {
            warn!(command, error = %err, "--on-change command could not be waited for");
            Ended::Failed
        }
    }
}

/// The last lines of a stream, each cut to a bounded length.
async fn tail(stream: tokio::process::ChildStderr) -> VecDeque<String> {
    let mut lines = BufReader::new(stream).lines();
    let mut last = VecDeque::with_capacity(STDERR_LINES);
    while let Ok(Some(mut line)) = lines.next_line().await {
        if line.len() > LINE_BYTES {
            let mut end = LINE_BYTES;
            while !line.is_char_boundary(end) {
                end -= 1;
            }
            line.truncate(end);
        }
        if last.len() == STDERR_LINES {
            last.pop_front();
        }
        last.push_back(line);
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, Write};
    use std::sync::atomic::Ordering::Relaxed;

    use crate::fs::What;

    #[test]
    fn the_option_is_path_then_command() {
        let parse = |s: &str| s.parse::<OnChange>().unwrap();
        let whole = |c: &str| OnChange {
            path: String::new(),
            command: c.to_string(),
        };
        assert_eq!(parse("nginx -s reload"), whole("nginx -s reload"));
        assert_eq!(
            parse("/db/=systemctl reload app"),
            OnChange {
                path: "db".into(),
                command: "systemctl reload app".into()
            }
        );
        assert_eq!(parse("curl 'http://x/?a=b'"), whole("curl 'http://x/?a=b'"));
        assert_eq!(parse("=FOO=bar cmd"), whole("FOO=bar cmd"));
        assert!("db=".parse::<OnChange>().is_err());
        assert!("  ".parse::<OnChange>().is_err());
    }

    fn news(paths: &[&str]) -> Arc<[News]> {
        paths
            .iter()
            .map(|p| News {
                what: What::Added,
                path: p.to_string(),
                shown: p.to_string(),
            })
            .collect()
    }

    #[test]
    fn only_paths_under_path_are_told() {
        let mut all = news(&["db/password", "dbx", "name"]).to_vec();
        all.push(News {
            what: What::DirAdded,
            path: "db".into(),
            shown: "db".into(),
        });
        assert_eq!(changed_under("db", &all), ["db/password"]);
        assert_eq!(changed_under("", &all).len(), 3, "directories are left out");
    }

    /// A runner of `command` whose runs each announce themselves on the FIFO `started` and,
    /// if `gate` is given, wait for a line on it; returns the listener and the FIFOs' paths.
    struct Harness {
        dir: tempfile::TempDir,
        rt: tokio::runtime::Runtime,
        stats: Arc<Stats>,
    }

    impl Harness {
        fn new() -> Harness {
            let dir = tempfile::tempdir().unwrap();
            for fifo in ["started", "gate"] {
                nix::unistd::mkfifo(&dir.path().join(fifo), nix::sys::stat::Mode::S_IRWXU).unwrap();
            }
            Harness {
                dir,
                rt: tokio::runtime::Runtime::new().unwrap(),
                stats: Arc::new(Stats::default()),
            }
        }

        fn path(&self, name: &str) -> String {
            self.dir.path().join(name).display().to_string()
        }

        fn spawn(&self, command: &str, timeout: Duration) -> Listener {
            let context = Context {
                mountpoint: PathBuf::from("/mnt/ssm"),
                source: "ssm:/app".to_string(),
                timeout,
            };
            let command = command
                .replace("LOG", &self.path("log"))
                .replace("STARTED", &self.path("started"))
                .replace("GATE", &self.path("gate"))
                .replace("PIDFILE", &self.path("pid"));
            let on = vec![OnChange {
                path: String::new(),
                command,
            }];
            spawn(self.rt.handle(), on, context, self.stats.clone())
        }

        /// Waits for a run to start: it writes a line to the FIFO `started`. (An open that
        /// meets the previous writer still closing reads nothing, and opens again.)
        fn started(&self) -> String {
            let fifo = self.path("started");
            bounded(move || loop {
                let file = std::fs::File::open(&fifo).unwrap();
                let mut line = String::new();
                std::io::BufReader::new(file).read_line(&mut line).unwrap();
                if !line.is_empty() {
                    return line;
                }
            })
        }

        /// Lets the run waiting on the FIFO `gate` end.
        fn open_gate(&self) {
            let fifo = self.path("gate");
            bounded(move || {
                let mut file = std::fs::OpenOptions::new().write(true).open(fifo).unwrap();
                writeln!(file, "go").unwrap();
            })
        }

        fn log(&self) -> String {
            std::fs::read_to_string(self.path("log")).unwrap()
        }
    }

    /// Runs a blocking step on a thread of its own; a step that does not end in 30 s fails the
    /// test instead of hanging it.
    fn bounded<T: Send + 'static>(step: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(step());
        });
        rx.recv_timeout(Duration::from_secs(30))
            .expect("no run came in 30 s")
    }

    #[test]
    fn changed_paths_are_cut_to_what_an_environment_string_can_hold() {
        let few = vec!["a".to_string(), "b/c".to_string()];
        assert_eq!(changed_env(&few), ("a\nb/c".to_string(), 0));
        let many: Vec<String> = (0..10_000).map(|i| format!("dir/param-{i:05}")).collect();
        let (value, left_out) = changed_env(&many);
        assert!(value.len() <= CHANGED_BYTES);
        assert_eq!(value.lines().count() + left_out, many.len());
        assert!(
            value.lines().all(|l| l.starts_with("dir/param-")),
            "whole paths only"
        );
    }

    #[test]
    fn one_run_at_a_time_and_changes_during_a_run_make_one_more() {
        let h = Harness::new();
        let listener = h.spawn(
            r#"printf '%s|%s|%s\n' "$SSMFS_CHANGED" "$SSMFS_MOUNTPOINT" "$SSMFS_SOURCE" >> LOG; echo run > STARTED; read x < GATE"#,
            Duration::from_secs(60),
        );
        listener(&news(&["a", "b"]));
        h.started();
        // While the first run waits, two more fetches change things.
        listener(&news(&["c"]));
        listener(&news(&["b", "d"]));
        h.open_gate();
        h.started();
        h.open_gate();
        // A later change is a run of its own: nothing else was queued.
        listener(&news(&["e"]));
        h.started();
        h.open_gate();
        assert_eq!(
            h.log(),
            "a\nb|/mnt/ssm|ssm:/app\nb\nc\nd|/mnt/ssm|ssm:/app\ne|/mnt/ssm|ssm:/app\n"
        );
        assert_eq!(h.stats.on_change_runs.load(Relaxed), 3);
        assert_eq!(h.stats.on_change_failures.load(Relaxed), 0);
    }

    #[test]
    fn a_failure_is_counted_and_later_runs_go_on() {
        let h = Harness::new();
        let listener = h.spawn(
            r#"echo "$SSMFS_CHANGED" > STARTED; if [ "$SSMFS_CHANGED" = bad ]; then echo broken >&2; exit 3; fi"#,
            Duration::from_secs(60),
        );
        listener(&news(&["bad"]));
        assert_eq!(h.started(), "bad\n");
        listener(&news(&["good"]));
        assert_eq!(h.started(), "good\n");
        assert_eq!(h.stats.on_change_runs.load(Relaxed), 2);
        assert_eq!(h.stats.on_change_failures.load(Relaxed), 1);
    }

    #[test]
    fn a_command_past_its_time_limit_is_killed_with_its_children() {
        let h = Harness::new();
        let listener = h.spawn(
            r#"if [ "$SSMFS_CHANGED" = hang ]; then sleep 1000 & echo $! > PIDFILE; echo "$SSMFS_CHANGED" > STARTED; wait; fi; echo "$SSMFS_CHANGED" > STARTED"#,
            Duration::from_millis(500),
        );
        listener(&news(&["hang"]));
        assert_eq!(h.started(), "hang\n");
        listener(&news(&["after"]));
        // The second run starts only once the first has been killed.
        assert_eq!(h.started(), "after\n");
        assert_eq!(h.stats.on_change_timeouts.load(Relaxed), 1);
        let pid: i32 = std::fs::read_to_string(h.path("pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit(')').next().unwrap_or("").trim_start();
        assert!(
            stat.is_empty() || state.starts_with('Z'),
            "the background child was killed with the group: {stat}"
        );
    }
}
