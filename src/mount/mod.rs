//! Start-up and shutdown of the daemon: check the mountpoint and AWS, mount, report readiness,
//! then wait for a signal or an external unmount.
//!
//! Promises: a start-up failure exits non-zero with one line saying what to fix and leaves
//! nothing mounted; SIGTERM and SIGINT unmount and exit 0; SIGHUP refreshes every group, as a
//! write to the root `.refresh` does; an external `umount` exits 0. Under systemd the daemon
//! sends READY=1 once the mount is live, STATUS= after each refresh, and STOPPING=1.
//!
//! The parts of start-up: [`cli`] (options, `-o` mount options), [`daemon`] (background mode
//! and systemd's notify protocol), [`devfuse`] (mount(2) of /dev/fuse as `fuse.ssmfs`).

pub mod announce;
pub mod cli;
pub mod daemon;
pub mod devfuse;
pub mod events;
pub mod on_change;
pub mod queue;

use std::io::IsTerminal;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::provider::ProvideCredentials;
use fuser::SessionACL;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{info, warn};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::backend::secrets::SecretsBackend;
use crate::backend::ssm::SsmBackend;
use crate::backend::BackendError;
use crate::backend::{ApiCalls, Backend};
use crate::fs::{Config, Fs};
use crate::fuse::FuseFs;
use crate::kernel::{KernelInvalidator, Listener};
use crate::metrics;
use crate::names::{Dialect, Source};
use crate::render::template::Templates;
use cli::Cli;
use daemon::{notify_status, notify_stopping, Readiness};
use devfuse::MountRequest;

/// A connection that does not open in this time fails the call (and start-up) instead of
/// hanging a reader.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// One attempt of one API call; the SDK retries up to three attempts with backoff.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

pub fn main(cli: Cli) -> ExitCode {
    // No core dumps, and no ptrace or /proc/PID/mem by other users: the memory holds secrets.
    // Inherited across the fork below.
    // SAFETY: prctl with these arguments only changes this process's dumpable flag.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    daemon::set_label(cli.log_name.as_deref());
    if let Err(msg) = check_mountpoint(&cli.mountpoint).and_then(|()| init_logging(&cli)) {
        daemon::notify_failed(&msg);
        daemon::say(&msg);
        return ExitCode::from(2);
    }
    let mut readiness = if cli.foreground {
        Readiness::foreground()
    } else {
        match Readiness::daemonize() {
            Ok(r) => r,
            Err(msg) => {
                daemon::say(&format!("cannot start in the background: {msg}"));
                return ExitCode::FAILURE;
            }
        }
    };
    match run(&cli, &mut readiness) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            // In the foreground, a named mount's failure logged to standard error is a line of
            // its log, stamped like the others, rather than a bare line beside them.
            let in_log = cli.foreground && cli.log_name.is_some() && cli.log_file.is_none();
            if cli.log_file.is_some() || in_log {
                tracing::error!("{msg}");
            }
            readiness.failed(&msg, !in_log);
            ExitCode::FAILURE
        }
    }
}

/// The SDK's HTTPS client panics when the system has no CA certificates (a minimal image without
/// ca-certificates), even for an http:// endpoint; this says what to install instead.
fn check_trust_roots() -> Result<(), String> {
    if rustls_native_certs::load_native_certs().certs.is_empty() {
        return Err(
            "no CA certificates found to check AWS's TLS certificates with: install \
                    ca-certificates, or point SSL_CERT_FILE at a PEM bundle"
                .to_string(),
        );
    }
    Ok(())
}

fn check_mountpoint(path: &Path) -> Result<(), String> {
    // A dead FUSE mount may still answer `stat` of its root from the kernel's cache; `statfs`
    // always asks its daemon.
    if let Err(nix::errno::Errno::ENOTCONN) = nix::sys::statfs::statfs(path) {
        return check_dead_mount(path);
    }
    match std::fs::metadata(path) {
        // A second mount on a live one would hide it, and the daemon behind it would go on
        // serving no one.
        Ok(m) if m.is_dir() && ssmfs_mount_at(path) => Err(already_mounted(path)),
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(format!("mountpoint {} is not a directory", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(format!(
            "mountpoint {} does not exist: create it with mkdir -p {}",
            path.display(),
            path.display()
        )),
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => check_dead_mount(path),
        Err(e) => Err(format!("mountpoint {}: {e}", path.display())),
    }
}

/// A dead mount: its daemon was killed or crashed. One of ours is useless to anyone and is
/// detached, so that a restart (systemd, a container) simply works.
fn check_dead_mount(path: &Path) -> Result<(), String> {
    if !ssmfs_mount_at(path) {
        return Err(format!(
            "mountpoint {} is left over from a FUSE daemon that died: unmount it with umount -l \
             {} and start ssmfs again",
            path.display(),
            path.display()
        ));
    }
    nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH).map_err(|e| {
        format!(
            "cannot detach the dead ssmfs mount at {}: {e}",
            path.display()
        )
    })?;
    daemon::say(&format!(
        "detached the dead ssmfs mount left at {} by a daemon that died",
        path.display()
    ));
    check_mountpoint(path)
}

fn already_mounted(path: &Path) -> String {
    format!(
        "{} is already an ssmfs mount: unmount it first (umount {}) or mount elsewhere",
        path.display(),
        path.display()
    )
}

/// Whether the topmost mount at `path` is of type fuse.ssmfs, live or dead.
fn ssmfs_mount_at(path: &Path) -> bool {
    // A live mount's path is made canonical (as the mount table has it); a dead one's cannot
    // be, as it does not answer.
    let want = match std::fs::canonicalize(path) {
        Ok(canonical) => canonical,
        Err(_) => match std::env::current_dir() {
            Ok(cwd) => cwd.join(path),
            Err(_) => return false,
        },
    };
    devfuse::ssmfs_mounted(&want)
}

/// What is logged at `level`: ssmfs's own lines. Dependencies log errors only: the SDK's debug
/// output may hold response bodies, and its warnings repeat what ssmfs reports itself, in its
/// own words.
pub fn log_filter(level: &str) -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::new(format!("error,ssmfs={level}"))
}

fn init_logging(cli: &Cli) -> Result<(), String> {
    let filter = log_filter(&cli.log_level);
    let file = match &cli.log_file {
        Some(path) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| {
                    format!(
                        "cannot open log file {}: {e}; give a path in a directory that exists \
                         and that this user can write",
                        path.display()
                    )
                })?,
        ),
        None => None,
    };
    let ansi = file.is_none() && std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_ansi(ansi)
        .with_env_filter(filter)
        .event_format(Named {
            name: cli.log_name.clone(),
            format: tracing_subscriber::fmt::format()
                .with_target(false)
                .with_ansi(ansi),
        });
    match file {
        Some(file) => builder.with_writer(Arc::new(file)).init(),
        None => builder.with_writer(std::io::stderr).init(),
    }
    Ok(())
}

/// The log's lines, each begun with `[NAME] ` when the mount has a `--log-name`.
struct Named<F> {
    name: Option<String>,
    format: F,
}

impl<S, N, F> FormatEvent<S, N> for Named<F>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        if let Some(name) = &self.name {
            write!(writer, "[{name}] ")?;
        }
        self.format.format_event(ctx, writer, event)
    }
}

fn run(cli: &Cli, readiness: &mut Readiness) -> Result<(), String> {
    if cli.mlock {
        // In the daemon itself: locks are not inherited across fork.
        // SAFETY: mlockall only changes how this process's memory is paged.
        if unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) } != 0 {
            return Err(format!(
                "--mlock: cannot lock memory ({}): run with CAP_IPC_LOCK or raise RLIMIT_MEMLOCK \
                 (LimitMEMLOCK=infinity under systemd)",
                std::io::Error::last_os_error()
            ));
        }
    }
    let source = &cli.source;
    let config = Config {
        source: source.clone(),
        max_age: cli.max_age(),
        max_age_for: cli.max_age_for(source)?,
        recursive: !cli.no_recursive,
        max_stale: cli.max_stale.map(Duration::from_secs),
        secret_mode: cli.file_mode.0,
        uid: cli.uid.unwrap_or_else(|| nix::unistd::getuid().as_raw()),
        gid: cli.gid.unwrap_or_else(|| nix::unistd::getgid().as_raw()),
        events: if cli.events_queue.is_some() || cli.events_topic.is_some() {
            crate::fs::EventsAge::new(Duration::from_secs(cli.events_max_age))
        } else {
            Default::default()
        },
    };
    if source.dialect == Dialect::SecretsManager && (!cli.filter.is_empty() || cli.no_decrypt) {
        return Err(
            "--filter and --no-decrypt apply to SSM sources only: remove them, or mount an ssm: source"
                .to_string(),
        );
    }
    // A template that cannot be read or has a syntax error fails the mount, before anything else.
    let templates = Templates::load(&cli.template)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("ssmfs-rt")
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let sdk = rt.block_on(aws_config(cli))?;
    // The host's mounts of one account and region share one pace (see `backend::pace`).
    // Mounts of one service, account and region, at one rate, share; the boot id keeps a
    // schedule on the monotonic clock from outliving a reboot.
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let account = format!(
        "{:?} {:?} {:?} {:?} {} {}",
        source.dialect,
        sdk.region().map(|r| r.as_ref().to_string()),
        sdk.endpoint_url(),
        cli.profile,
        cli.max_tps,
        boot.trim()
    );
    let calls = Arc::new(ApiCalls::paced_on_host(
        cli.max_tps,
        &crate::backend::pace::path_for(&account),
    ));
    match source.dialect {
        Dialect::Ssm => {
            let backend = SsmBackend::new(&sdk, calls, !cli.no_decrypt, &cli.filter);
            serve(cli, backend, config, templates, &sdk, rt, readiness)
        }
        Dialect::SecretsManager => {
            let backend = SecretsBackend::new(&sdk, calls, !cli.no_json_dirs);
            serve(cli, backend, config, templates, &sdk, rt, readiness)
        }
    }
}

/// Checks the source, mounts, reports readiness and runs until unmounted.
fn serve<B: Backend>(
    cli: &Cli,
    backend: B,
    config: Config,
    templates: Templates,
    sdk: &SdkConfig,
    rt: tokio::runtime::Runtime,
    readiness: &mut Readiness,
) -> Result<(), String> {
    let source = config.source.clone();
    let fs = Fs::new(backend, config);
    fs.set_runtime(rt.handle().clone());
    fs.set_templates(templates);
    rt.block_on(fs.check_source())
        .map_err(|e| startup_error(&e, &source, sdk))?;

    let fsname = match source.dialect {
        Dialect::Ssm => format!("ssm:{source}"),
        Dialect::SecretsManager => source.to_string(),
    };
    let acl = if cli.allow_other {
        SessionACL::All
    } else if cli.allow_root {
        SessionACL::RootAndOwner
    } else {
        SessionACL::Owner
    };
    let mut config = fuser::Config::default();
    config.acl = acl;
    config.n_threads = Some(2);
    config.clone_fd = true;
    let adapter = FuseFs::new(fs.clone(), rt.handle().clone());
    let cannot_mount = |e: std::io::Error| {
        // fusermount3's own words may end in a newline.
        let why = e.to_string();
        format!(
            "cannot mount on {}: {}; run as root, or install fusermount3 (package fuse3) and \
             check that /dev/fuse exists",
            cli.mountpoint.display(),
            why.trim_end()
        )
    };
    let request = MountRequest {
        fsname: &fsname,
        mountpoint: &cli.mountpoint,
        read_only: cli.mount_flags.read_only,
        no_exec: cli.mount_flags.no_exec,
        allow_other: acl != SessionACL::Owner,
    };
    // Taken before mounting, so that a port in use fails the start with nothing mounted.
    let metrics_listener = match cli.metrics_addr {
        Some(addr) => Some((addr, rt.block_on(metrics::bind(addr))?)),
        None => None,
    };
    // Checked at start-up, and again now that the source was checked (that can take a while):
    // a second start on the same mountpoint meanwhile must not be mounted over.
    if ssmfs_mount_at(&cli.mountpoint) {
        return Err(already_mounted(&cli.mountpoint));
    }
    // mount(2) as fuse.ssmfs; without the right to (not root), fuser's fusermount3 path.
    let (session, mut unmounter) = match devfuse::mount(&request).map_err(cannot_mount)? {
        Some(fd) => match fuser::Session::from_fd(adapter, fd, acl, config) {
            Ok(session) => (session, None),
            Err(e) => {
                let _ = nix::mount::umount2(&cli.mountpoint, nix::mount::MntFlags::MNT_DETACH);
                return Err(cannot_mount(e));
            }
        },
        None => {
            config.mount_options = request.fuser_options();
            let mut session =
                fuser::Session::new(adapter, &cli.mountpoint, &config).map_err(cannot_mount)?;
            let unmounter = session.unmount_callable();
            (session, Some(unmounter))
        }
    };
    let notifier = session.notifier();
    let (ended_tx, mut ended) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("fuser".to_string())
        .spawn(move || {
            let _ = ended_tx.send(session.run());
        })
        .map_err(|e| format!("cannot start the FUSE thread: {e}"))?;
    let listeners = listeners(cli, &fs, &fsname, rt.handle());
    fs.set_invalidator(Box::new(KernelInvalidator::spawn(notifier, listeners)));
    // Events need the safety sweep: EventBridge delivers on a best-effort basis.
    let events_on = fs.events().max_age.is_some();
    if cli.poll || !cli.on_change.is_empty() || events_on {
        rt.spawn(fs.clone().poll());
    }
    let events = events::start(cli, sdk, &fs, rt.handle());
    // On a clean stop, receiving ends before the queue is removed.
    let teardown = move || async move {
        if let Some(events) = events {
            events.stop().await;
        }
    };
    // Handlers are in place before readiness is reported, so that a signal sent as soon as the
    // mount is live unmounts (or refreshes) instead of killing the process.
    let (mut term, mut int, mut hup) = {
        let _entered = rt.enter();
        let term = signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM handler: {e}"))?;
        let int = signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT handler: {e}"))?;
        let hup = signal(SignalKind::hangup()).map_err(|e| format!("SIGHUP handler: {e}"))?;
        (term, int, hup)
    };
    if let Some((addr, listener)) = metrics_listener {
        let fs = fs.clone();
        rt.spawn(metrics::serve(listener, Arc::new(move || fs.metrics())));
        info!(%addr, "serving metrics at /metrics");
    }
    let mut status = fs.status();
    let first = status.borrow_and_update().clone();
    rt.spawn(async move {
        while status.changed().await.is_ok() {
            let line = status.borrow_and_update().clone();
            notify_status(&line);
        }
    });
    let at = std::path::absolute(&cli.mountpoint).unwrap_or(cli.mountpoint.clone());
    info!(source = %source, mountpoint = %at.display(), "mounted");
    readiness.ready();
    notify_status(&first);

    let mountpoint = cli.mountpoint.clone();
    rt.block_on(async move {
        let why = loop {
            tokio::select! {
                _ = hup.recv() => {
                    let fs = fs.clone();
                    tokio::spawn(async move {
                        info!("SIGHUP: refreshing every group");
                        if let Err(err) = fs.refresh("").await {
                            warn!(error = %err, "refresh on SIGHUP failed; the held values stay");
                        }
                        if let Err(err) = fs.reload_templates().await {
                            warn!("SIGHUP: templates not reloaded, the loaded ones stay: {err}");
                        }
                    });
                }
                _ = term.recv() => break "SIGTERM",
                _ = int.recv() => break "SIGINT",
                _ = &mut ended => {
                    info!("unmounted from outside; exiting");
                    teardown().await;
                    return;
                }
            }
        };
        teardown().await;
        info!(signal = why, "unmounting");
        notify_stopping();
        let unmounted = match unmounter.as_mut() {
            Some(unmounter) => unmounter.unmount(),
            None => nix::mount::umount2(&mountpoint, nix::mount::MntFlags::empty())
                .map_err(std::io::Error::from),
        };
        if let Err(err) = unmounted {
            // Busy (a reader holds a file open): detach now, so nothing stays mounted.
            warn!(error = %err, "unmount failed; detaching the mount lazily");
            let _ = nix::mount::umount2(&mountpoint, nix::mount::MntFlags::MNT_DETACH);
        }
        let _ = ended.await;
    });
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

/// Who hears of changes from AWS once the kernel shows them: the announcer, which raises
/// inotify events, and the `--on-change` commands.
fn listeners<B: Backend>(
    cli: &Cli,
    fs: &Arc<Fs<B>>,
    fsname: &str,
    rt: &tokio::runtime::Handle,
) -> Vec<Listener> {
    let mountpoint = std::path::absolute(&cli.mountpoint).unwrap_or(cli.mountpoint.clone());
    let mut listeners = Vec::new();
    // The kernel refuses every change on a mount made `ro`, the announcer's too.
    if cli.mount_flags.read_only {
        info!("mounted ro: programs watching the mount with inotify will not hear of changes");
    } else {
        // The mount's device tells it apart later, if the mountpoint is detached or mounted over.
        match std::fs::metadata(&mountpoint) {
            Ok(root) => listeners.push(announce::spawn(fs.clone(), mountpoint.clone(), root.dev())),
            Err(err) => warn!(
                error = %err,
                "cannot examine the new mount; inotify watchers will not hear of changes"
            ),
        }
    }
    if !cli.on_change.is_empty() {
        let context = on_change::Context {
            mountpoint,
            source: fsname.to_string(),
            timeout: Duration::from_secs(cli.on_change_timeout),
        };
        let commands = cli.on_change.clone();
        listeners.push(on_change::spawn(rt, commands, context, fs.stats().clone()));
    }
    listeners
}

async fn aws_config(cli: &Cli) -> Result<SdkConfig, String> {
    check_trust_roots()?;
    // Retries are ssmfs's own (see `ApiCalls::call`), so that every throttled attempt is
    // counted and the whole of a call stays within its deadline.
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                .build(),
        );
    if let Some(region) = &cli.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(profile) = &cli.profile {
        loader = loader.profile_name(profile);
    }
    if let Some(url) = &cli.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    let sdk = loader.load().await;
    if sdk.region().is_none() {
        return Err(
            "no AWS region: pass --region, set AWS_REGION, or set region in the profile"
                .to_string(),
        );
    }
    let Some(provider) = sdk.credentials_provider() else {
        return Err("no AWS credentials provider is configured".to_string());
    };
    if let Err(err) = provider.provide_credentials().await {
        return Err(format!(
            "no AWS credentials found ({err}): set AWS_PROFILE or --profile, AWS_ACCESS_KEY_ID and \
             AWS_SECRET_ACCESS_KEY, or run where an instance or task role is available"
        ));
    }
    Ok(sdk)
}

/// One line saying what to fix, for each way the start-up check can fail.
fn startup_error(err: &BackendError, source: &Source, sdk: &SdkConfig) -> String {
    let region = sdk.region().map(|r| r.to_string()).unwrap_or_default();
    match err {
        BackendError::AccessDenied(msg) => match source.dialect {
            Dialect::Ssm => format!(
                "access denied reading {source}: allow ssm:GetParametersByPath, ssm:GetParameter and \
                 ssm:GetParameters on arn:aws:ssm:{region}:ACCOUNT:parameter{source}/* (and kms:Decrypt on the keys \
                 of SecureString parameters); AWS said: {msg}"
            ),
            Dialect::SecretsManager => format!(
                "access denied reading {source}: allow secretsmanager:ListSecrets, and \
                 secretsmanager:BatchGetSecretValue and secretsmanager:GetSecretValue on \
                 arn:aws:secretsmanager:{region}:ACCOUNT:secret:{}* (and kms:Decrypt on their \
                 keys); AWS said: {msg}",
                source.full_name("")
            ),
        },
        BackendError::Credentials(msg) => format!(
            "AWS rejected the credentials: {msg}; check the profile, the access keys or the role"
        ),
        BackendError::Unavailable(msg) | BackendError::Throttled(msg) => {
            let endpoint = sdk
                .endpoint_url()
                .map_or_else(|| format!("the SSM endpoint of {region}"), str::to_string);
            format!("cannot reach {endpoint}: {msg}; check --endpoint-url, --region and the network")
        }
        BackendError::Other(msg) => format!(
            "reading {source} failed: {msg}; check SOURCE and the options, and run with \
             --log-level debug --foreground for details"
        ),
    }
}
