//! `ssmfs docker-plugin`: a Docker volume driver. It serves Docker's volume plugin protocol
//! ([`api`]) over HTTP on a Unix socket, `/run/docker/plugins/ssmfs.sock` by default, where
//! dockerd finds it as the driver `ssmfs`:
//!
//! ```text
//! docker volume create -d ssmfs -o source=ssm:/app -o max_age=60 appcfg
//! docker run --rm -v appcfg:/config:ro app cat /config/db/password
//! ```
//!
//! [`volumes`] keeps the volumes and who uses them, in `/var/lib/ssmfs/docker`; [`process`]
//! makes each mount an ssmfs process of its own. The plugin holds no values: stopping or
//! restarting it leaves every mount serving, and it takes them up again when it starts.

pub mod api;
pub mod process;
pub mod volumes;

use std::convert::Infallible;
use std::io::IsTerminal;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::UnixListener;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{debug, info, warn};

use process::Processes;
use volumes::Volumes;

/// Serve Docker's volume plugin API: `docker volume create -d ssmfs -o source=ssm:/app NAME`
/// makes a volume of parameters or secrets; every ssmfs mount option works as `-o key=value`.
#[derive(Parser, Debug)]
#[command(
    name = "ssmfs docker-plugin",
    bin_name = "ssmfs docker-plugin",
    version
)]
pub struct PluginCli {
    /// The socket dockerd finds the driver by; the driver's name is the file's name without
    /// `.sock`.
    #[arg(
        long,
        value_name = "PATH",
        default_value = "/run/docker/plugins/ssmfs.sock"
    )]
    pub socket: PathBuf,

    /// Where the volumes are kept (volumes.json) and mounted (mounts/NAME).
    #[arg(long, value_name = "DIR", default_value = "/var/lib/ssmfs/docker")]
    pub state_dir: PathBuf,

    /// Accept this volume option, which acts on the host beyond the mount and is refused
    /// otherwise: on_change (runs commands as root), template (reads host files), log_file
    /// (writes a host file), metrics_addr (listens). Repeatable.
    #[arg(long, value_name = "OPTION")]
    pub allow_option: Vec<String>,

    /// The plugin's log level: error, warn, info, debug or trace. Each mount logs to the same
    /// place, at its volume's log_level option, else at SSMFS_LOG, else at info.
    #[arg(long, env = "SSMFS_LOG", default_value = "info", value_parser = ["error", "warn", "info", "debug", "trace"])]
    pub log_level: String,
}

/// Where dockerd finds plugins' sockets.
const PLUGINS_DIR: &str = "/run/docker/plugins";

/// Whether dockerd finds the driver by its socket alone: `PLUGINS_DIR/NAME.sock` or
/// `PLUGINS_DIR/NAME/NAME.sock`, through any symbolic link (/var/run is one to /run).
fn found_by_dockerd(socket: &Path) -> bool {
    let (Some(parent), Some(stem)) = (socket.parent(), socket.file_stem()) else {
        return false;
    };
    let Ok(plugins) = std::fs::canonicalize(PLUGINS_DIR) else {
        return false;
    };
    let parent = std::fs::canonicalize(parent).unwrap_or(parent.to_path_buf());
    socket.extension().is_some_and(|e| e == "sock")
        && (parent == plugins || parent == plugins.join(stem))
}

/// Requests are small JSON documents; anything larger is refused.
const MAX_BODY: usize = 1 << 20;

/// Runs the plugin until SIGTERM or SIGINT. `args` starts with the program's name.
pub fn main(args: Vec<std::ffi::OsString>) -> ExitCode {
    let cli = match PluginCli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    tracing_subscriber::fmt()
        .with_env_filter(crate::mount::log_filter(&cli.log_level))
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start: {e}")),
    };
    let served = runtime.block_on(serve(&cli));
    // Without waiting for a `statfs` stuck on a hung mount, or a start in progress (its
    // process lives on; the next plugin takes the mount up or unmounts it).
    runtime.shutdown_background();
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => fail(&msg),
    }
}

fn fail(msg: &str) -> ExitCode {
    crate::mount::daemon::notify_failed(msg);
    eprintln!("ssmfs docker-plugin: {msg}");
    ExitCode::FAILURE
}

async fn serve(cli: &PluginCli) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the ssmfs binary: {e}"))?;
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map_err(|e| format!("cannot read the boot ID: {e}"))?;
    // Absolute and without symbolic links, as the mount table names the mountpoints, where a
    // blank or a backslash would be escaped.
    if cli
        .state_dir
        .to_str()
        .is_none_or(|dir| dir.contains(|c: char| c.is_whitespace() || c == '\\'))
    {
        return Err("--state-dir must be a path without blanks or backslashes".to_string());
    }
    let state = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&cli.state_dir)
        .and_then(|()| std::fs::canonicalize(&cli.state_dir))
        .map_err(|e| format!("state directory {}: {e}", cli.state_dir.display()))?;
    let mounter = Processes::new(exe, state.join("mounts"))?;
    let allowed = cli
        .allow_option
        .iter()
        .map(|o| o.replace('-', "_"))
        .collect();
    let volumes = Arc::new(Volumes::open(&state, boot.trim(), allowed, mounter)?);
    let listener = listen(&cli.socket)?;
    // Taking up the mounts may wait on AWS: Docker's calls are answered meanwhile, each
    // volume's in its turn.
    tokio::spawn({
        let volumes = volumes.clone();
        async move { volumes.restore().await }
    });
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    info!(socket = %cli.socket.display(), state = %cli.state_dir.display(), "serving Docker's volume plugin API");
    if !found_by_dockerd(&cli.socket) {
        let at = std::path::absolute(&cli.socket).unwrap_or(cli.socket.clone());
        let stem = at.file_stem().unwrap_or_default().to_string_lossy();
        warn!(
            "dockerd looks for plugins' sockets in {PLUGINS_DIR} (or {PLUGINS_DIR}/NAME/): for \
             a socket elsewhere, write /etc/docker/plugins/{stem}.spec holding unix://{}",
            at.display()
        );
    }
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    debug!(error = %err, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = term.recv() => break,
            _ = int.recv() => break,
        };
        let volumes = volumes.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| respond(volumes.clone(), req));
            if let Err(err) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                debug!(error = %err, "plugin connection ended");
            }
        });
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    let _ = std::fs::remove_file(&cli.socket);
    info!("stopped; the volumes' mounts go on serving");
    Ok(())
}

/// Binds the socket, replacing one a previous run left, readable and writable by root alone:
/// whoever can call the plugin can mount.
fn listen(path: &Path) -> Result<UnixListener, String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot make {}: {e}", dir.display()))?;
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)
        .map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("cannot restrict {}: {e}", path.display()))?;
    Ok(listener)
}

async fn respond(
    volumes: Arc<Volumes<Processes>>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status: StatusCode, body: Vec<u8>| {
        Ok(Response::builder()
            .status(status)
            .header(hyper::header::CONTENT_TYPE, api::CONTENT_TYPE)
            .body(Full::new(Bytes::from(body)))
            .expect("a valid response"))
    };
    if req.method() != Method::POST {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            b"{\"Err\":\"POST only\"}".to_vec(),
        );
    }
    let path = req.uri().path().to_string();
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => {
            return reply(
                StatusCode::PAYLOAD_TOO_LARGE,
                b"{\"Err\":\"too large\"}".to_vec(),
            )
        }
    };
    // Activate, List and Capabilities may come with no body at all.
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        &body
    };
    let answer = api::answer(&volumes, &path, body).await;
    reply(
        StatusCode::OK,
        serde_json::to_vec(&answer).expect("plain JSON"),
    )
}
