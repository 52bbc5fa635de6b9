//! The plugin's volumes: the options each was created with, the containers that hold its mount,
//! and the file that keeps both across restarts of the plugin (`volumes.json` in the state
//! directory, written whole and renamed into place, so a crash leaves the old or the new one).
//!
//! The rules: the first container to use a volume mounts it, later ones share that mount, and
//! the last one to leave unmounts it, counted by Docker's mount IDs (an ID may be mounted more
//! than once: `docker cp` mounts a running container's volumes again under its ID). A mount
//! found dead (its process gone) is mounted again at the next use; a live mount that no one
//! holds is unmounted when the plugin starts.
//!
//! Each volume has a gate that orders its mounts, unmounts and removal; the table itself is
//! locked only for moments, never across a mount's start, so one slow volume does not hold up
//! Docker's calls about the others. Mounting itself is behind [`Mounter`], so that the rules are
//! tested without FUSE.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};
use tokio::time::Instant;

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::mount::cli::{one_line, Cli};
use crate::render::template::Templates;

/// What is at a volume's mountpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    /// An ssmfs mount that answers.
    Live,
    /// An ssmfs mount whose process is gone ("Transport endpoint is not connected").
    Dead,
    /// No mount.
    Nothing,
}

/// Makes and removes the mounts.
pub trait Mounter: Send + Sync + 'static {
    /// Mounts `source` at `at` with `args` (ssmfs options) and returns once the mount is live,
    /// or with what went wrong, in words fit for `docker` to show. A mount not live within
    /// `limit` is given up, and nothing is left mounted.
    fn mount(
        &self,
        name: &str,
        source: &str,
        args: &[String],
        at: &Path,
        limit: Duration,
    ) -> impl Future<Output = Result<(), String>> + Send;
    /// Whether an ssmfs mount is at `at`, from the mount table: never waits on a daemon.
    fn mounted(&self, at: &Path) -> bool;
    /// Whether the mount at `at` answers; asks its daemon, for a bounded time.
    fn found(&self, at: &Path) -> impl Future<Output = Found> + Send;
    /// Unmounts `at`, detaching it if something on the host still holds it open.
    fn unmount(&self, at: &Path) -> Result<(), String>;
}

/// Options that act on the host beyond the mount, refused unless the plugin is started with
/// `--allow-option NAME`: a volume's options come from whoever may create Docker volumes.
pub const HOST_OPTIONS: &[(&str, &str)] = &[
    ("on_change", "runs commands on the host, as root"),
    ("template", "reads files of the host"),
    ("log_file", "writes a file of the host"),
    ("metrics_addr", "listens on the host's network"),
];

/// A volume as `volumes.json` keeps it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    /// The `-o` options of `docker volume create`, `source` among them.
    pub options: BTreeMap<String, String>,
    /// Docker's IDs of the mounts of this volume, each with how many times it is mounted.
    #[serde(default)]
    pub users: BTreeMap<String, u32>,
    /// When it was created, in RFC 3339.
    #[serde(default)]
    pub created_at: String,
}

impl Volume {
    fn source(&self) -> &str {
        self.options.get("source").map_or("", String::as_str)
    }

    /// Refuses the options that act on the host unless `allowed`, and keys that are not one
    /// option's name.
    fn check_host_options(&self, allowed: &BTreeSet<String>) -> Result<(), String> {
        for key in self.options.keys() {
            if key.is_empty() || key.contains(['=', ',']) || key.trim() != key {
                return Err(format!("'{key}' is not an option name"));
            }
            let key = key.replace('-', "_");
            if let Some((_, what)) = HOST_OPTIONS.iter().find(|(o, _)| *o == key) {
                if !allowed.contains(&key) {
                    return Err(format!(
                        "option {key} {what}: this plugin refuses it (start it with \
                         --allow-option {key} to accept it)"
                    ));
                }
            }
        }
        Ok(())
    }

    /// The ssmfs options other than `source`, as arguments. `allow_other` is always among them:
    /// containers read as any user (the mountpoints' parent keeps the host's users out).
    fn args(&self) -> Result<Vec<String>, String> {
        self.args_for(self.source())
    }

    /// [`Volume::args`], checked as if for `source`.
    fn args_for(&self, source: &str) -> Result<Vec<String>, String> {
        let options = self
            .options
            .iter()
            .filter(|(key, _)| key.as_str() != "source")
            .map(|(key, value)| (key.as_str(), value.as_str()));
        Cli::options_args(source, [("allow_other", "")].into_iter().chain(options))
    }
}

/// What [`Volumes::ensure_mounted`] did.
enum Made {
    /// The mount was live already.
    Kept,
    Mounted,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Saved {
    /// The boot the users were counted in: after a reboot no mount and no container is left.
    boot: String,
    volumes: BTreeMap<String, Volume>,
}

/// A volume as Docker's `Get` and `List` show it.
#[derive(Debug, PartialEq, Eq)]
pub struct Shown {
    pub name: String,
    /// Where it is mounted, while it is.
    pub mountpoint: Option<PathBuf>,
    pub source: String,
    pub containers: usize,
    pub created_at: String,
}

pub struct Volumes<M> {
    dir: PathBuf,
    saved: Mutex<Saved>,
    gates: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// The [`HOST_OPTIONS`] this plugin accepts.
    allowed: BTreeSet<String>,
    mounter: M,
    /// Held while the plugin runs: one plugin a state directory.
    _lock: Flock<std::fs::File>,
}

const FILE: &str = "volumes.json";

/// How long a Mount may take, from its arrival to its answer, waiting for the volume's turn
/// included: Docker gives up on it after two minutes, and then never releases it.
const MOUNT_DEADLINE: Duration = Duration::from_secs(110);

/// The least time worth starting a mount with.
const MOUNT_LEAST: Duration = Duration::from_secs(10);

/// How long a mount may take to go live. ssmfs's own start-up checks are bounded well below
/// this.
pub const START_LIMIT: Duration = Duration::from_secs(100);

impl<M: Mounter> Volumes<M> {
    /// Opens the state in `dir` (made 0700 if missing). `boot` names this boot of the host: the
    /// containers counted in another boot are forgotten.
    pub fn open(
        dir: &Path,
        boot: &str,
        allowed: BTreeSet<String>,
        mounter: M,
    ) -> Result<Self, String> {
        if let Some(bad) = allowed
            .iter()
            .find(|a| !HOST_OPTIONS.iter().any(|(o, _)| o == a))
        {
            let names: Vec<_> = HOST_OPTIONS.iter().map(|(o, _)| *o).collect();
            return Err(format!(
                "--allow-option {bad}: only options that act on the host need allowing: {}",
                names.join(", ")
            ));
        }
        let mounts = dir.join("mounts");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&mounts)
            .and_then(|()| {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&mounts, std::fs::Permissions::from_mode(0o700))
            })
            .map_err(|e| format!("cannot make {}: {e}", mounts.display()))?;
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(dir.join("lock"))
            .map_err(|e| format!("cannot open {}: {e}", dir.join("lock").display()))?;
        let lock = Flock::lock(lock, FlockArg::LockExclusiveNonblock).map_err(|_| {
            format!(
                "another plugin uses {}: give each its own --state-dir",
                dir.display()
            )
        })?;
        let path = dir.join(FILE);
        let mut saved: Saved = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                format!(
                    "{} is not the plugin's state ({e}); move it away to start with no volumes",
                    path.display()
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Saved::default(),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        if saved.boot != boot {
            for volume in saved.volumes.values_mut() {
                volume.users.clear();
            }
            saved.boot = boot.to_string();
        }
        save(dir, &saved)?;
        Ok(Volumes {
            dir: dir.to_path_buf(),
            saved: Mutex::new(saved),
            gates: Mutex::new(HashMap::new()),
            allowed,
            mounter,
            _lock: lock,
        })
    }

    /// After a restart of the plugin: each volume that containers hold keeps its mount if it is
    /// live (its process outlived the plugin), or is mounted again; a live mount that no one
    /// holds (its start outlived a plugin that stopped meanwhile) is unmounted.
    pub async fn restore(&self) {
        let names: Vec<String> = self.lock().volumes.keys().cloned().collect();
        for name in names {
            let gate = self.gate(&name);
            let _turn = gate.lock().await;
            let Some(volume) = self.lock().volumes.get(&name).cloned() else {
                continue;
            };
            let at = self.mountpoint(&name);
            if volume.users.is_empty() {
                if self.mounter.mounted(&at) {
                    match self.mounter.unmount(&at) {
                        Ok(()) => info!(volume = %name, "unmounted: no container uses it"),
                        Err(err) => warn!(volume = %name, "{err}"),
                    }
                }
                continue;
            }
            match self.ensure_mounted(&name, &volume, &at, START_LIMIT).await {
                Ok(Made::Kept) => info!(volume = %name, "took up the live mount of its containers"),
                Ok(Made::Mounted) => info!(volume = %name, "mounted again for its containers"),
                Err(err) => warn!(volume = %name, "cannot mount the volume again: {err}"),
            }
        }
    }

    pub async fn create(
        &self,
        name: &str,
        options: BTreeMap<String, String>,
    ) -> Result<(), String> {
        check_name(name)?;
        let volume = Volume {
            options,
            users: BTreeMap::new(),
            created_at: aws_smithy_types::DateTime::from(std::time::SystemTime::now())
                .fmt(aws_smithy_types::date_time::Format::DateTime)
                .unwrap_or_default(),
        };
        volume.check_host_options(&self.allowed)?;
        if volume.source().is_empty() {
            // A misspelt source (-o Source=…) is named as the unknown option it is.
            volume.args_for("/")?;
            return Err(
                "no source: give -o source=ssm:/PATH or -o source=secretsmanager:PREFIX, \
                        e.g. -o source=ssm:/app"
                    .to_string(),
            );
        }
        let args = volume.args()?;
        // Template files are the host's: one missing or broken fails the create, not each run.
        if volume
            .options
            .keys()
            .any(|k| k.replace('-', "_") == "template")
        {
            let fixed = ["ssmfs", volume.source(), "/"].map(String::from);
            let cli = Cli::parse_args(fixed.into_iter().chain(args)).map_err(|e| one_line(&e))?;
            tokio::task::spawn_blocking(move || Templates::load(&cli.template).map(drop))
                .await
                .map_err(|e| format!("reading the templates failed: {e}"))??;
        }
        let gate = self.gate(name);
        let _turn = gate.lock().await;
        let mut saved = self.lock();
        match saved.volumes.get(name) {
            Some(known) if known.options == volume.options => return Ok(()),
            Some(_) => {
                return Err(format!(
                    "volume {name} exists with other options: remove it first"
                ))
            }
            None => {}
        }
        saved.volumes.insert(name.to_string(), volume);
        save(&self.dir, &saved)
    }

    /// Forgets a volume and unmounts it. Docker removes no volume that a container uses, so a
    /// mount still counted here is one whose release never came.
    pub async fn remove(&self, name: &str) -> Result<(), String> {
        let gate = self.gate(name);
        let _turn = gate.lock().await;
        let users = self.volume(name)?.users.len();
        if users > 0 {
            warn!(volume = %name, users, "removed with mounts whose release never came");
        }
        let at = self.mountpoint(name);
        if self.mounter.mounted(&at) {
            self.mounter.unmount(&at)?;
        }
        let _ = std::fs::remove_dir(&at);
        let mut saved = self.lock();
        saved.volumes.remove(name);
        save(&self.dir, &saved)
    }

    /// A container starts with the volume: mounts it if it is not, and counts `id`. Within
    /// [`MOUNT_DEADLINE`] of its arrival or not at all: Docker never releases a Mount it gave
    /// up on.
    pub async fn mount(&self, name: &str, id: &str) -> Result<PathBuf, String> {
        let deadline = Instant::now() + MOUNT_DEADLINE;
        let gate = self.gate(name);
        let _turn = gate.lock().await;
        let left = deadline.saturating_duration_since(Instant::now());
        if left < MOUNT_LEAST {
            return Err(format!(
                "volume {name} was busy starting for another container: try again"
            ));
        }
        let volume = self.volume(name)?;
        let at = self.mountpoint(name);
        self.ensure_mounted(name, &volume, &at, left.min(START_LIMIT))
            .await?;
        let mut saved = self.lock();
        let volume = saved.volumes.get_mut(name).ok_or_else(|| no_such(name))?;
        *volume.users.entry(id.to_string()).or_insert(0) += 1;
        save(&self.dir, &saved)?;
        Ok(at)
    }

    /// A container that used the volume is gone: the last one out unmounts it.
    pub async fn unmount(&self, name: &str, id: &str) -> Result<(), String> {
        let gate = self.gate(name);
        let _turn = gate.lock().await;
        let last = {
            let mut saved = self.lock();
            let volume = saved.volumes.get_mut(name).ok_or_else(|| no_such(name))?;
            if let Some(count) = volume.users.get_mut(id) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    volume.users.remove(id);
                }
            }
            let last = volume.users.is_empty();
            save(&self.dir, &saved)?;
            last
        };
        let at = self.mountpoint(name);
        if last && self.mounter.mounted(&at) {
            self.mounter.unmount(&at)?;
            info!(volume = %name, "unmounted: no container uses it");
        }
        Ok(())
    }

    /// Where the volume is mounted, if it is.
    pub async fn path(&self, name: &str) -> Result<Option<PathBuf>, String> {
        self.volume(name)?;
        Ok(self.mounted_at(name))
    }

    pub async fn get(&self, name: &str) -> Result<Shown, String> {
        let volume = self.volume(name)?;
        Ok(self.show(name, &volume))
    }

    pub async fn list(&self) -> Vec<Shown> {
        let volumes = self.lock().volumes.clone();
        volumes
            .iter()
            .map(|(name, volume)| self.show(name, volume))
            .collect()
    }

    fn show(&self, name: &str, volume: &Volume) -> Shown {
        Shown {
            name: name.to_string(),
            mountpoint: self.mounted_at(name),
            source: volume.source().to_string(),
            containers: volume.users.len(),
            created_at: volume.created_at.clone(),
        }
    }

    fn mounted_at(&self, name: &str) -> Option<PathBuf> {
        let at = self.mountpoint(name);
        self.mounter.mounted(&at).then_some(at)
    }

    async fn ensure_mounted(
        &self,
        name: &str,
        volume: &Volume,
        at: &Path,
        limit: Duration,
    ) -> Result<Made, String> {
        // Options allowed when the volume was made may be allowed no longer.
        volume.check_host_options(&self.allowed)?;
        match self.mounter.found(at).await {
            Found::Live => return Ok(Made::Kept),
            Found::Dead => {
                warn!(volume = %name, "the volume's mount process is gone: mounting it again");
                self.mounter.unmount(at)?;
            }
            Found::Nothing => {}
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(at)
            .map_err(|e| format!("cannot make the mountpoint {}: {e}", at.display()))?;
        let args = volume.args()?;
        self.mounter
            .mount(name, volume.source(), &args, at, limit)
            .await?;
        Ok(Made::Mounted)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Saved> {
        self.saved.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn volume(&self, name: &str) -> Result<Volume, String> {
        self.lock()
            .volumes
            .get(name)
            .cloned()
            .ok_or_else(|| no_such(name))
    }

    fn gate(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut gates = self.gates.lock().unwrap_or_else(|e| e.into_inner());
        gates.entry(name.to_string()).or_default().clone()
    }

    fn mountpoint(&self, name: &str) -> PathBuf {
        self.dir.join("mounts").join(name)
    }
}

fn save(dir: &Path, saved: &Saved) -> Result<(), String> {
    let path = dir.join(FILE);
    let tmp = dir.join(format!("{FILE}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(&serde_json::to_vec_pretty(saved).expect("plain data"))?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)
    };
    write().map_err(|e| format!("cannot save {}: {e}", path.display()))
}

fn no_such(name: &str) -> String {
    format!("no such volume: {name}")
}

/// Docker's own rule for volume names, which also keeps a name one path component.
fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    if !first_ok
        || name.len() < 2
        || name.len() > 255
        || !chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
    {
        return Err(format!(
            "'{name}' is not a volume name: use letters, digits and _.- , starting with a letter \
             or digit"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
