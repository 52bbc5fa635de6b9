//! The command line. clap stays here: [`Cli`] is parsed and validated, then turned into the
//! core's configuration by the caller.
//!
//! Every long option is also a mount option, so that mount(8), fstab and `mount.fuse3` can pass
//! them: `-o max_age=300,allow_other` is `--max-age=300 --allow-other`. The generic mount options
//! (`ro`, `noexec`, `_netdev`, `nofail`, `defaults`, …) are accepted too; an unknown option is
//! an error, never ignored.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{CommandFactory, Parser};

use crate::filter::Filter;
use crate::names::Source;

const EXAMPLES: &str = "\
Examples:
  ssmfs /app /mnt/ssm                      mount SSM parameters under /app, in the background
  ssmfs secretsmanager:prod/ /mnt/secrets  mount the secrets named prod/...; a JSON secret
                                           prod/db is the file db% and the directory db/
  ssmfs -f ssm:/ /mnt/ssm --max-age 60     every parameter, in the foreground, refreshed after 60 s
  ssmfs /app /mnt/ssm --endpoint-url http://127.0.0.1:5000 --region us-east-1
                                           against a local emulator
  ssmfs /app /mnt/ssm --on-change 'db=systemctl reload app'
                                           reload app when something under db/ changes
  ssmfs docker-plugin                      serve Docker volumes: docker volume create -d ssmfs
                                           -o source=ssm:/app NAME (see ssmfs docker-plugin -h)

Then: cat /mnt/ssm/db/password; echo 1 > /mnt/ssm/.refresh forces a refresh; umount /mnt/ssm.

Every option is also a mount option: -o max_age=300,allow_other. An /etc/fstab line:
  ssm:/app  /mnt/ssm  fuse.ssmfs  _netdev,allow_other,max_age=300  0 0";

/// Mount AWS SSM Parameter Store or Secrets Manager as a read-only filesystem, with a max-age
/// cache in front of the API.
#[derive(Parser, Debug)]
#[command(
    name = "ssmfs",
    version,
    after_help = EXAMPLES,
    args_override_self = true,
    override_usage = "ssmfs [OPTIONS] <SOURCE> <MOUNTPOINT>\n       ssmfs docker-plugin [OPTIONS]"
)]
pub struct Cli {
    /// What to mount: an SSM path such as /app or ssm:/app (`/` for every parameter), or a
    /// Secrets Manager name prefix such as secretsmanager:prod/ or sm:prod/ (`sm:` for all).
    pub source: Source,

    /// Where to mount it: an existing directory.
    pub mountpoint: PathBuf,

    /// How old, in seconds, a served value may be (as ssm-cache's max_age).
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 300,
        value_parser = parse_seconds,
        help_heading = "Caching"
    )]
    pub max_age: u64,

    /// At most this many API calls a second over time (0: no limit); a burst of five seconds'
    /// worth goes at once. The default is half of SSM's account-wide default quota of 40, so
    /// that a sweep never throttles the account's other programs. The limit holds for all of
    /// the host's mounts of one service, account and region together (a schedule in /run/ssmfs).
    #[arg(long, value_name = "N", default_value_t = 20, help_heading = "Caching")]
    pub max_tps: u32,

    /// When AWS cannot be reached, serve held values at most this many seconds old; older, reads
    /// fail with EIO (default: any age).
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds, help_heading = "Caching")]
    pub max_stale: Option<u64>,

    /// A different max age for a subtree, e.g. /app/static=86400 (repeatable; the deepest
    /// matching path wins).
    #[arg(long, value_name = "PATH=SECONDS", help_heading = "Caching")]
    pub max_age_for: Vec<MaxAgeFor>,

    /// Show only parameters that match: Type=String|StringList|SecureString, KeyId=KEY or
    /// Label=LABEL (repeatable; values of one key are alternatives, different keys must all match).
    #[arg(long, value_name = "KEY=VALUE", help_heading = "Parameters")]
    pub filter: Vec<Filter>,

    /// Show only the parameters directly under SOURCE, with no subdirectories.
    #[arg(long, help_heading = "Parameters")]
    pub no_recursive: bool,

    /// Show SecureString values as SSM returns them without decryption (the ciphertext).
    #[arg(long, help_heading = "Parameters")]
    pub no_decrypt: bool,

    /// Secrets Manager: show a secret whose value is a JSON object as a file only, not also as
    /// a directory of its keys.
    #[arg(long, help_heading = "Parameters")]
    pub no_json_dirs: bool,

    /// Send every API call (SSM, Secrets Manager, SQS, SNS) to this URL instead of the
    /// region's endpoints (AWS_ENDPOINT_URL works too; AWS_ENDPOINT_URL_SSM for SSM alone).
    #[arg(long, value_name = "URL", help_heading = "AWS")]
    pub endpoint_url: Option<String>,

    /// AWS region (default: from AWS_REGION or the profile).
    #[arg(long, help_heading = "AWS")]
    pub region: Option<String>,

    /// Named profile from the AWS config and credentials files (default: AWS_PROFILE, or default).
    #[arg(long, help_heading = "AWS")]
    pub profile: Option<String>,

    /// Stay in the foreground. Without it, ssmfs returns once the mount is live and runs in the
    /// background.
    #[arg(short, long, help_heading = "Mount")]
    pub foreground: bool,

    /// Owner of every file and directory (default: the user running ssmfs).
    #[arg(long, help_heading = "Mount")]
    pub uid: Option<u32>,

    /// Group of every file and directory (default: the group running ssmfs).
    #[arg(long, help_heading = "Mount")]
    pub gid: Option<u32>,

    /// Let other users read the mount, as file modes allow (SecureString files stay 0400).
    #[arg(long, conflicts_with = "allow_root", help_heading = "Mount")]
    pub allow_other: bool,

    /// Let root read the mount too.
    #[arg(long, help_heading = "Mount")]
    pub allow_root: bool,

    /// Mode of SecureString and secret files, in octal, read bits only (e.g. 0440 to let the
    /// group read them with --allow-other).
    #[arg(
        long,
        value_name = "MODE",
        default_value = "0400",
        help_heading = "Mount"
    )]
    pub file_mode: FileMode,

    /// Lock the daemon's memory so that values never reach swap (needs CAP_IPC_LOCK or a large
    /// enough RLIMIT_MEMLOCK).
    #[arg(long, help_heading = "Mount")]
    pub mlock: bool,

    /// Log level: error, warn, info, debug or trace. Values are never logged at any level.
    #[arg(long, env = "SSMFS_LOG", default_value = "info", value_parser = ["error", "warn", "info", "debug", "trace"], help_heading = "Logging")]
    pub log_level: String,

    /// Write logs to this file instead of standard error (in the background, standard error is
    /// closed once the mount is live).
    #[arg(long, value_name = "PATH", help_heading = "Logging")]
    pub log_file: Option<PathBuf>,

    /// Begin each log line with [NAME], to tell mounts apart in a shared log (the Docker plugin
    /// names each volume's mount after the volume).
    #[arg(long, value_name = "NAME", value_parser = parse_log_name, help_heading = "Logging")]
    pub log_name: Option<String>,

    /// Refresh every group when its max age runs out, even while nothing reads it, so that
    /// programs watching the mount (inotify, --on-change) hear of changes within a max age.
    /// Costs a listing of the tree per max age. On with --on-change.
    #[arg(long, help_heading = "Changes")]
    pub poll: bool,

    /// Run COMMAND with /bin/sh -c after a refresh changed anything under PATH (mount-relative;
    /// the whole mount without PATH=), e.g. db='systemctl reload app'. Repeatable. One run per
    /// refresh, never two at once; SSMFS_CHANGED holds the changed paths, one per line.
    /// SSMFS_ON_CHANGE in the environment, if not empty, is one more, commas and all (for
    /// systemd's EnvironmentFile).
    #[arg(long, value_name = "[PATH=]COMMAND", help_heading = "Changes")]
    pub on_change: Vec<OnChange>,

    /// Seconds an --on-change command may run before its whole process group is killed.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 60,
        value_parser = parse_limit,
        help_heading = "Changes"
    )]
    pub on_change_timeout: u64,

    /// Apply change events from this SQS queue (an EventBridge rule's target, or a queue
    /// subscribed to an SNS topic the rule feeds): each changed parameter or secret is fetched
    /// anew, and while receives succeed what is held stays fresh for --events-max-age, so
    /// calls follow changes instead of the max age. When receiving fails, --max-age applies.
    #[arg(long, value_name = "URL", help_heading = "Change events")]
    pub events_queue: Option<String>,

    /// Make this host's own queue, subscribed to this SNS topic (which an EventBridge rule
    /// feeds), and apply change events from it as --events-queue does. The queue is named
    /// after the host and the mount, so a restart reuses it; a clean stop removes it.
    #[arg(
        long,
        value_name = "SNS_TOPIC_ARN",
        conflicts_with = "events_queue",
        help_heading = "Change events"
    )]
    pub events_topic: Option<String>,

    /// Seconds between safety sweeps while events flow (EventBridge delivers on a best-effort
    /// basis). Choose it by fleet size: each host sweeps its tree once per this.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 3600,
        value_parser = parse_limit,
        help_heading = "Change events"
    )]
    pub events_max_age: u64,

    /// After an event, wait a random delay of up to SECONDS, then fetch every name changed
    /// meanwhile together (ten a call): a large fleet trades latency for API quota.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 0,
        value_parser = parse_delay,
        help_heading = "Change events"
    )]
    pub events_delay: u64,

    /// Show the Jinja template FILE, rendered from the mount's values, as .templates/NAME
    /// (looked up, never listed), rendered again when what it reads changes. Repeatable.
    /// Template files are read again on SIGHUP; a syntax error fails the mount.
    #[arg(long, value_name = "NAME=FILE", value_parser = parse_template, help_heading = "Rendered files")]
    pub template: Vec<(String, PathBuf)>,

    /// Serve the figures of .stats in Prometheus text format at http://ADDR/metrics. A port
    /// alone listens on 127.0.0.1.
    #[arg(long, value_name = "[HOST:]PORT", value_parser = parse_metrics_addr, help_heading = "Monitoring")]
    pub metrics_addr: Option<SocketAddr>,

    /// Mount options as mount(8) passes them: any long option without its dashes
    /// (max_age=300,allow_other), and the generic ones (ro, noexec, _netdev, nofail, defaults…).
    // Read by `Cli::parse_args` before clap sees the command line; declared here for --help.
    #[arg(short = 'o', value_name = "OPTIONS", help_heading = "Mount")]
    pub options: Vec<String>,

    /// The generic mount options given with -o.
    #[arg(skip)]
    pub mount_flags: MountFlags,
}

/// What the generic mount options given with `-o` change about the mount.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MountFlags {
    /// `ro`: the kernel refuses every write, `.refresh` included.
    pub read_only: bool,
    /// `noexec`: nothing on the mount can be run (nothing can anyway: no file has x bits).
    pub no_exec: bool,
}

/// Generic mount options that are for mount(8), systemd or other filesystems and change nothing
/// here; `nosuid`, `nodev`, `noatime` and `default_permissions` always hold on ssmfs.
const IGNORED_OPTIONS: &[&str] = &[
    "defaults",
    "auto",
    "noauto",
    "nofail",
    "_netdev",
    "user",
    "nouser",
    "users",
    "owner",
    "group",
    "suid",
    "nosuid",
    "dev",
    "nodev",
    "atime",
    "noatime",
    "relatime",
    "norelatime",
    "strictatime",
    "nostrictatime",
    "diratime",
    "nodiratime",
    "lazytime",
    "nolazytime",
    "sync",
    "async",
    "dirsync",
    "silent",
    "loud",
    "default_permissions",
];

impl Cli {
    /// Parses a command line (program name first), `-o` options included: each is turned into
    /// its long option where it stands, so that the usual rules hold (the last one given wins).
    pub fn parse_args<I, T>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let invalid = |msg: String| Cli::command().error(clap::error::ErrorKind::InvalidValue, msg);
        let mut flags = MountFlags::default();
        let mut expanded = Vec::new();
        let mut args = args.into_iter().map(Into::into);
        while let Some(arg) = args.next() {
            let opts = match arg.to_str() {
                Some("--") => {
                    expanded.push(arg);
                    expanded.extend(args.by_ref());
                    break;
                }
                Some("-o") => args.next().ok_or_else(|| {
                    invalid("-o needs options, e.g. -o max_age=300,allow_other".to_string())
                })?,
                Some(s) if s.starts_with("-o") => OsString::from(&s[2..]),
                _ => {
                    expanded.push(arg);
                    continue;
                }
            };
            let opts = opts
                .into_string()
                .map_err(|_| invalid("mount options must be UTF-8".to_string()))?;
            for opt in opts.split(',').filter(|o| !o.is_empty()) {
                if let Some(long) = mount_option(opt, &mut flags).map_err(invalid)? {
                    expanded.push(long.into());
                }
            }
        }
        let mut cli = Cli::try_parse_from(expanded)?;
        cli.mount_flags = flags;
        cli.add_on_change(std::env::var_os(ON_CHANGE_VAR))
            .map_err(invalid)?;
        Ok(cli)
    }

    /// The options of a mount given one `key=value` at a time, as a Docker volume's are
    /// (`-o max_age=60 -o allow_other`, a key alone for a flag): each becomes its long option,
    /// commas and all. The whole, with `source`, is checked as the command line would be.
    /// Returns the arguments to give before SOURCE and MOUNTPOINT, or what is wrong, in one line.
    pub fn options_args<'a>(
        source: &str,
        options: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Vec<String>, String> {
        let mut args = Vec::new();
        for (key, value) in options {
            let opt = match value {
                "" => key.to_string(),
                value => format!("{key}={value}"),
            };
            let mut flags = MountFlags::default();
            match mount_option(&opt, &mut flags)? {
                Some(long) => args.push(long),
                None if flags.read_only => args.push("-oro".to_string()),
                None if flags.no_exec => args.push("-onoexec".to_string()),
                None => {}
            }
        }
        let check = ["ssmfs", source, "/"]
            .into_iter()
            .map(String::from)
            .chain(args.iter().cloned());
        Cli::parse_args(check).map_err(|err| one_line(&err))?;
        Ok(args)
    }

    /// Adds the command given in `SSMFS_ON_CHANGE` (`value`) to those of the command line; an
    /// empty one is none.
    pub fn add_on_change(&mut self, value: Option<OsString>) -> Result<(), String> {
        let Some(value) = value.filter(|v| !v.is_empty()) else {
            return Ok(());
        };
        let value = value
            .into_string()
            .map_err(|_| format!("{ON_CHANGE_VAR} must be UTF-8"))?;
        let command = value
            .parse()
            .map_err(|err| format!("{ON_CHANGE_VAR}: {err}"))?;
        self.on_change.push(command);
        Ok(())
    }

    pub fn max_age(&self) -> Duration {
        Duration::from_secs(self.max_age)
    }

    /// The subtree overrides as mount-relative paths; each must be at or below SOURCE.
    pub fn max_age_for(&self, source: &Source) -> Result<Vec<(String, Duration)>, String> {
        self.max_age_for
            .iter()
            .map(|m| {
                let full = m.path.trim_end_matches('/').to_string();
                let rel = if full == source.full_name("").trim_end_matches('/') {
                    Some("")
                } else {
                    source.relative(&full)
                };
                match rel {
                    Some(rel) => Ok((rel.to_string(), m.age)),
                    None => Err(format!(
                        "--max-age-for {full}: that path is not at or below the source {source}"
                    )),
                }
            })
            .collect()
    }
}

/// The longest duration any option takes: a year. Ages beyond it mean "never refresh", which
/// `.refresh` and SIGHUP already give, and bounding them keeps every instant computed from them
/// representable.
pub const MAX_SECONDS: u64 = 365 * 24 * 3600;

/// A duration option: whole seconds, at most [`MAX_SECONDS`].
fn parse_seconds(s: &str) -> Result<u64, String> {
    let secs: u64 = s
        .parse()
        .map_err(|_| format!("'{s}' is not a whole number of seconds"))?;
    if secs > MAX_SECONDS {
        return Err(format!(
            "{secs} seconds is more than the limit of {MAX_SECONDS} (365 days)"
        ));
    }
    Ok(secs)
}

/// The environment variable that holds one more `--on-change` command.
pub const ON_CHANGE_VAR: &str = "SSMFS_ON_CHANGE";

/// A time limit: a whole number of seconds, at least one.
/// `--events-delay`: SQS hides a received message for 12 hours at most.
fn parse_delay(s: &str) -> Result<u64, String> {
    match parse_seconds(s)? {
        secs if secs > 43_140 => {
            Err("--events-delay is at most 43140 seconds (12 hours, less a minute)".to_string())
        }
        secs => Ok(secs),
    }
}

fn parse_limit(s: &str) -> Result<u64, String> {
    match parse_seconds(s)? {
        0 => Err("a time limit must be at least 1 second".to_string()),
        secs => Ok(secs),
    }
}

/// One `-o` option: `Some(--long-option)` for an ssmfs option, `None` for a generic one.
fn mount_option(opt: &str, flags: &mut MountFlags) -> Result<Option<String>, String> {
    let (key, value) = match opt.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (opt, None),
    };
    match (key, value) {
        ("ro", None) => flags.read_only = true,
        ("rw", None) => flags.read_only = false,
        ("noexec", None) => flags.no_exec = true,
        ("exec", None) => flags.no_exec = false,
        ("comment", _) => {}
        (k, _) if k.starts_with("x-") => {}
        (k, None) if IGNORED_OPTIONS.contains(&k) => {}
        _ => return ssmfs_option(opt, key, value).map(Some),
    }
    Ok(None)
}

fn ssmfs_option(opt: &str, key: &str, value: Option<&str>) -> Result<String, String> {
    let long = key.replace('_', "-");
    let cmd = Cli::command();
    let arg = cmd
        .get_arguments()
        .find(|a| {
            a.get_long() == Some(long.as_str()) && !matches!(long.as_str(), "help" | "version")
        })
        .ok_or_else(|| {
            format!(
                "unknown mount option '{opt}': use the long options of ssmfs --help without their \
                 dashes (max_age=300, allow_other), or generic ones such as ro, _netdev, nofail"
            )
        })?;
    match (arg.get_action().takes_values(), value) {
        (true, Some(v)) => Ok(format!("--{long}={v}")),
        (true, None) => Err(format!(
            "mount option '{key}' needs a value: {key}={}",
            arg.get_value_names()
                .and_then(|n| n.first())
                .map_or("VALUE".to_string(), |n| n.to_string())
        )),
        (false, None) => Ok(format!("--{long}")),
        (false, Some(_)) => Err(format!(
            "mount option '{key}' takes no value: write {key} alone"
        )),
    }
}

/// `--metrics-addr`: HOST:PORT, or a port on loopback.
fn parse_metrics_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    s.parse().map_err(|_| {
        format!("'{s}' is not PORT or HOST:PORT with an IP address, e.g. 9464 or 127.0.0.1:9464")
    })
}

/// `--file-mode`: an octal mode with read bits only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileMode(pub u16);

impl std::str::FromStr for FileMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mode = u16::from_str_radix(s, 8)
            .map_err(|_| format!("'{s}' is not an octal mode such as 0400 or 0440"))?;
        if mode & !0o444 != 0 {
            return Err(format!(
                "mode {s} has bits other than read bits: files on ssmfs cannot be written or run"
            ));
        }
        Ok(FileMode(mode))
    }
}

/// `--max-age-for PATH=SECONDS`: PATH is an SSM path or a secret name prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaxAgeFor {
    pub path: String,
    pub age: Duration,
}

impl std::str::FromStr for MaxAgeFor {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (path, secs) = s
            .rsplit_once('=')
            .ok_or_else(|| format!("'{s}' must be PATH=SECONDS, e.g. /app/static=86400"))?;
        let secs = parse_seconds(secs).map_err(|err| format!("'{s}': {err}"))?;
        Ok(MaxAgeFor {
            path: path.to_string(),
            age: Duration::from_secs(secs),
        })
    }
}

/// What a clap error says, in one line: its first, without "error: " and the usage after it.
pub fn one_line(err: &clap::Error) -> String {
    let text = err.to_string();
    let line = text.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line).to_string()
}

/// A name for log lines: printable, so that it cannot forge or break a line.
fn parse_log_name(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > 255 || s.chars().any(char::is_control) {
        return Err("a log name is 1 to 255 printable characters".to_string());
    }
    Ok(s.to_string())
}

/// One `--template NAME=FILE` option.
fn parse_template(s: &str) -> Result<(String, PathBuf), String> {
    let (name, file) = s.split_once('=').ok_or_else(|| {
        format!("'{s}' is not NAME=FILE, e.g. nginx.conf=/etc/ssmfs/nginx.conf.j2")
    })?;
    if !crate::names::is_template_name(name) {
        return Err(format!(
            "template name '{name}' is not valid: use letters, digits, '_', '.' and '-'"
        ));
    }
    if file.is_empty() {
        return Err(format!("template {name} has no file"));
    }
    Ok((name.to_string(), PathBuf::from(file)))
}

/// One `--on-change` option.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OnChange {
    /// Mount-relative, without slashes at either end ("" for the whole mount).
    pub path: String,
    pub command: String,
}

impl std::str::FromStr for OnChange {
    type Err = String;

    /// `[PATH=]COMMAND`: text before the first `=` is a PATH when it has no blank and only the
    /// characters of parameter names (so `nginx -s reload` and `curl 'http://x/?a=b'` are
    /// commands); `=COMMAND` names the whole mount, for a command that starts with `VAR=value`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let is_path = |p: &str| {
            p.chars()
                .all(|c| c.is_ascii_alphanumeric() || "/_.-%:".contains(c))
        };
        let (path, command) = match s.split_once('=') {
            Some((path, command)) if is_path(path) => (path, command),
            _ => ("", s),
        };
        if command.trim().is_empty() {
            return Err(format!(
                "'{s}' has no command: give [PATH=]COMMAND, e.g. db='systemctl reload app'"
            ));
        }
        Ok(OnChange {
            path: path.trim_matches('/').to_string(),
            command: command.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, String> {
        Cli::parse_args(["ssmfs"].iter().chain(args)).map_err(|e| e.to_string())
    }

    #[test]
    fn on_change_commands_come_from_options_and_from_the_environment() {
        let cli = parse(&["/app", "/mnt", "--on-change", "db=a", "-o", "on_change=b c"]).unwrap();
        let commands: Vec<_> = cli.on_change.iter().map(|c| c.command.as_str()).collect();
        assert_eq!(commands, ["a", "b c"]);
        assert_eq!(cli.on_change[0].path, "db");
        assert!(parse(&["/app", "/mnt", "--on-change-timeout", "0"]).is_err());
        // SSMFS_ON_CHANGE adds one to those of the command line; empty, it adds none.
        let mut cli = cli;
        cli.add_on_change(Some("curl -d a,b http://x".into()))
            .unwrap();
        let commands: Vec<_> = cli.on_change.iter().map(|c| c.command.as_str()).collect();
        assert_eq!(commands, ["a", "b c", "curl -d a,b http://x"]);
        cli.add_on_change(Some("".into())).unwrap();
        cli.add_on_change(None).unwrap();
        assert_eq!(cli.on_change.len(), 3);
        assert!(cli.add_on_change(Some("db=".into())).is_err());
    }

    #[test]
    fn mount_options_are_the_long_options() {
        let cli = parse(&[
            "ssm:/app",
            "/mnt",
            "-o",
            "rw,nosuid,nodev,allow_other,max_age=60,max_age_for=/app/x=5,x-systemd.automount",
            "-o",
            "filter=Type=String,no_recursive,foreground,_netdev,nofail,defaults,comment=x",
        ])
        .unwrap();
        assert!(cli.allow_other && cli.no_recursive && cli.foreground);
        assert_eq!(cli.max_age, 60);
        assert_eq!(cli.max_age_for[0].path, "/app/x");
        assert_eq!(cli.filter.len(), 1);
        assert_eq!(cli.mount_flags, MountFlags::default());
        assert_eq!(cli.source.to_string(), "/app");
        assert_eq!(cli.mountpoint, PathBuf::from("/mnt"));
    }

    #[test]
    fn mount_options_and_flags_combine() {
        let cli = parse(&["/app", "/mnt", "--max-tps", "5", "-oro,noexec", "-o", ""]).unwrap();
        assert_eq!(cli.max_tps, 5);
        assert_eq!(
            cli.mount_flags,
            MountFlags {
                read_only: true,
                no_exec: true
            }
        );
        let cli = parse(&["/app", "-o", "max_tps=7", "/mnt", "--max-tps", "5"]).unwrap();
        assert_eq!(cli.max_tps, 5, "the last one given wins");
        let cli = parse(&[
            "/app",
            "/mnt",
            "--filter",
            "Type=String",
            "-o",
            "filter=KeyId=k",
        ])
        .unwrap();
        assert_eq!(cli.filter.len(), 2);
        // The later option wins, as mount(8) does with ro and rw.
        let cli = parse(&["/app", "/mnt", "-o", "ro,rw"]).unwrap();
        assert!(!cli.mount_flags.read_only);
    }

    #[test]
    fn a_log_name_is_printable() {
        let cli = parse(&["/app", "/mnt", "-o", "log_name=appcfg"]).unwrap();
        assert_eq!(cli.log_name.as_deref(), Some("appcfg"));
        for bad in ["a\nb", "\u{1b}[31m", ""] {
            let err = parse(&["/app", "/mnt", "--log-name", bad]).unwrap_err();
            assert!(err.contains("printable"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn bad_mount_options_say_what_to_write() {
        let err = parse(&["/app", "/mnt", "-o", "max_agee=5"]).unwrap_err();
        assert!(err.contains("unknown mount option 'max_agee=5'"), "{err}");
        let err = parse(&["/app", "/mnt", "-o", "max_age"]).unwrap_err();
        assert!(err.contains("max_age=SECONDS"), "{err}");
        let err = parse(&["/app", "/mnt", "-o", "allow_other=1"]).unwrap_err();
        assert!(err.contains("takes no value"), "{err}");
        let err = parse(&["/app", "/mnt", "-o", "max_age=soon"]).unwrap_err();
        assert!(err.contains("soon"), "{err}");
        assert!(parse(&["/app", "/mnt", "-o", "help"]).is_err());
    }

    #[test]
    fn options_given_one_by_one_keep_their_commas_and_are_checked() {
        let args = Cli::options_args(
            "ssm:/app",
            [
                ("max_age", "60"),
                ("allow_other", ""),
                ("on_change", "db=a,b"),
                ("ro", ""),
                ("_netdev", ""),
            ],
        )
        .unwrap();
        assert_eq!(
            args,
            [
                "--max-age=60",
                "--allow-other",
                "--on-change=db=a,b",
                "-oro"
            ]
        );
        let mut line = vec!["ssmfs".to_string(), "/app".into(), "/mnt".into()];
        line.extend(args);
        let cli = Cli::parse_args(line).unwrap();
        assert_eq!(cli.on_change[0].path, "db");
        assert_eq!(cli.on_change[0].command, "a,b");
        assert!(cli.mount_flags.read_only);

        let err = Cli::options_args("/app", [("max_agee", "5")]).unwrap_err();
        assert!(
            err.starts_with("unknown mount option 'max_agee=5'"),
            "{err}"
        );
        let err = Cli::options_args("/app", [("max_age", "soon")]).unwrap_err();
        assert!(
            err.contains("'soon' is not a whole number of seconds"),
            "{err}"
        );
        assert!(!err.contains('\n') && !err.starts_with("error"), "{err}");
        let err = Cli::options_args("app", []).unwrap_err();
        assert!(err.contains("must start with '/'"), "{err}");
    }

    #[test]
    fn metrics_addresses_default_to_loopback() {
        let cli = parse(&["/app", "/mnt", "--metrics-addr", "9464"]).unwrap();
        assert_eq!(cli.metrics_addr, Some("127.0.0.1:9464".parse().unwrap()));
        let cli = parse(&["/app", "/mnt", "-o", "metrics_addr=0.0.0.0:9100"]).unwrap();
        assert_eq!(cli.metrics_addr, Some("0.0.0.0:9100".parse().unwrap()));
        assert!(parse(&["/app", "/mnt", "--metrics-addr", "localhost"])
            .unwrap_err()
            .contains("HOST:PORT"));
    }

    #[test]
    fn max_age_for_must_be_inside_the_source() {
        let cli = parse(&[
            "/app",
            "/mnt",
            "--max-age-for",
            "/app/static=86400",
            "--max-age-for",
            "/app=60",
        ])
        .unwrap();
        assert_eq!(
            cli.max_age_for(&cli.source).unwrap(),
            vec![
                ("static".to_string(), Duration::from_secs(86400)),
                (String::new(), Duration::from_secs(60))
            ]
        );
        let cli = parse(&["/app", "/mnt", "--max-age-for", "/other=5"]).unwrap();
        assert!(cli
            .max_age_for(&cli.source)
            .unwrap_err()
            .contains("not at or below"));
        assert!(parse(&["/app", "/mnt", "--max-age-for", "/app/x=soon"])
            .unwrap_err()
            .contains("seconds"));
        assert!(parse(&["/app", "/mnt", "--max-age-for", "/app/x"])
            .unwrap_err()
            .contains("PATH=SECONDS"));
    }

    #[test]
    fn max_age_for_takes_secret_prefixes_too() {
        let cli = parse(&["sm:prod/", "/mnt", "--max-age-for", "prod/static=60"]).unwrap();
        assert_eq!(
            cli.max_age_for(&cli.source).unwrap(),
            vec![("static".to_string(), Duration::from_secs(60))]
        );
    }

    #[test]
    fn durations_are_bounded_when_parsed() {
        for args in [
            &["/app", "/mnt", "--max-age", "18446744073709551615"][..],
            &["/app", "/mnt", "--max-stale", "31536001"],
            &["/app", "/mnt", "--max-age-for", "/app/x=99999999999"],
            &["/app", "/mnt", "-o", "max_age=18446744073709551615"],
        ] {
            let err = parse(args).unwrap_err();
            assert!(err.contains("31536000"), "{args:?}: {err}");
        }
        assert!(parse(&["/app", "/mnt", "--max-age", "31536000"]).is_ok());
        let err = parse(&["/app", "/mnt", "--max-age", "99999999999999999999"]).unwrap_err();
        assert!(err.contains("whole number of seconds"), "{err}");
    }

    #[test]
    fn file_modes_are_read_bits_in_octal() {
        assert_eq!("0440".parse::<FileMode>(), Ok(FileMode(0o440)));
        assert_eq!("444".parse::<FileMode>(), Ok(FileMode(0o444)));
        assert!("0644"
            .parse::<FileMode>()
            .unwrap_err()
            .contains("read bits"));
        assert!("rw".parse::<FileMode>().unwrap_err().contains("octal"));
    }

    #[test]
    fn filters_are_checked_by_the_parser() {
        assert!(parse(&[
            "/app",
            "/mnt",
            "--filter",
            "Type=String",
            "--filter",
            "Label=prod"
        ])
        .is_ok());
        assert!(parse(&["/app", "/mnt", "--filter", "Tier=Advanced"])
            .unwrap_err()
            .contains("Type, KeyId or Label"));
    }
}
