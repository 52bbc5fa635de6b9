use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use tokio::sync::Notify;

use super::*;

/// Mounts that exist in a map, with the calls counted.
#[derive(Clone, Default)]
struct Fake {
    state: Arc<StdMutex<FakeState>>,
    /// A mount of the volume named "slow" waits for this.
    release: Arc<Notify>,
    /// Told when a mount of "slow" has begun.
    begun: Arc<Notify>,
}

#[derive(Default)]
struct FakeState {
    found: HashMap<PathBuf, Found>,
    mounts: usize,
    unmounts: usize,
    /// The arguments of the last mount.
    args: Vec<String>,
    /// The next mount fails with this.
    fail: Option<String>,
}

impl Fake {
    fn counts(&self) -> (usize, usize) {
        let state = self.state.lock().unwrap();
        (state.mounts, state.unmounts)
    }

    fn set(&self, at: &Path, found: Found) {
        self.state
            .lock()
            .unwrap()
            .found
            .insert(at.to_path_buf(), found);
    }
}

impl Mounter for Fake {
    async fn mount(
        &self,
        name: &str,
        _source: &str,
        args: &[String],
        at: &Path,
        _limit: Duration,
    ) -> Result<(), String> {
        if name == "slow" {
            self.begun.notify_one();
            self.release.notified().await;
        }
        let mut state = self.state.lock().unwrap();
        state.mounts += 1;
        state.args = args.to_vec();
        if let Some(err) = state.fail.take() {
            return Err(err);
        }
        state.found.insert(at.to_path_buf(), Found::Live);
        Ok(())
    }

    fn mounted(&self, at: &Path) -> bool {
        let state = self.state.lock().unwrap();
        state.found.get(at).is_some_and(|f| *f != Found::Nothing)
    }

    async fn found(&self, at: &Path) -> Found {
        let state = self.state.lock().unwrap();
        state.found.get(at).copied().unwrap_or(Found::Nothing)
    }

    fn unmount(&self, at: &Path) -> Result<(), String> {
        let mut state = self.state.lock().unwrap();
        state.unmounts += 1;
        state.found.insert(at.to_path_buf(), Found::Nothing);
        Ok(())
    }
}

fn options(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn app() -> BTreeMap<String, String> {
    options(&[("source", "ssm:/app"), ("max_age", "60")])
}

fn open(dir: &Path, boot: &str, fake: &Fake) -> Arc<Volumes<Fake>> {
    Arc::new(Volumes::open(dir, boot, BTreeSet::new(), fake.clone()).unwrap())
}

/// Volumes in a state directory of their own, over a fake mounter.
fn fresh() -> (tempfile::TempDir, Fake, Arc<Volumes<Fake>>) {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::default();
    let volumes = open(dir.path(), "b1", &fake);
    (dir, fake, volumes)
}

#[tokio::test]
async fn the_first_container_mounts_and_the_last_one_out_unmounts() {
    let (dir, fake, volumes) = fresh();
    volumes.create("appcfg", app()).await.unwrap();
    assert_eq!(volumes.path("appcfg").await.unwrap(), None);

    let at = volumes.mount("appcfg", "c1").await.unwrap();
    assert_eq!(at, dir.path().join("mounts/appcfg"));
    assert_eq!(
        fake.state.lock().unwrap().args,
        ["--allow-other", "--max-age=60"]
    );
    assert_eq!(volumes.mount("appcfg", "c2").await.unwrap(), at);
    assert_eq!(
        fake.counts(),
        (1, 0),
        "the second container shares the mount"
    );
    assert_eq!(volumes.get("appcfg").await.unwrap().containers, 2);

    volumes.unmount("appcfg", "c1").await.unwrap();
    assert_eq!(fake.counts(), (1, 0));
    assert_eq!(volumes.path("appcfg").await.unwrap(), Some(at.clone()));
    volumes.unmount("appcfg", "c2").await.unwrap();
    assert_eq!(fake.counts(), (1, 1), "the last one out unmounts");
    assert_eq!(volumes.path("appcfg").await.unwrap(), None);

    // And the next one mounts again.
    volumes.mount("appcfg", "c3").await.unwrap();
    assert_eq!(fake.counts(), (2, 1));
}

#[tokio::test]
async fn create_checks_the_name_the_source_and_every_option() {
    let (_dir, _, volumes) = fresh();
    let err = |r: Result<(), String>| r.unwrap_err();
    let no_source = err(volumes.create("v1", options(&[("max_age", "5")])).await);
    assert!(no_source.contains("-o source=ssm:/app"), "{no_source}");
    let misspelt = err(volumes
        .create("v1", options(&[("Source", "ssm:/app")]))
        .await);
    assert!(
        misspelt.starts_with("unknown mount option 'Source=ssm:/app'"),
        "{misspelt}"
    );
    let bad_source = err(volumes.create("v1", options(&[("source", "app")])).await);
    assert!(bad_source.contains("must start with '/'"), "{bad_source}");
    let unknown = options(&[("source", "/app"), ("max_agee", "5")]);
    let unknown = err(volumes.create("v1", unknown).await);
    assert!(
        unknown.starts_with("unknown mount option 'max_agee=5'"),
        "{unknown}"
    );
    for name in ["../x", "a/b", "x", ".hidden", ""] {
        let bad = err(volumes.create(name, app()).await);
        assert!(bad.contains("not a volume name"), "{name}: {bad}");
    }
    assert!(volumes.list().await.is_empty(), "nothing was created");

    volumes.create("v1", app()).await.unwrap();
    volumes.create("v1", app()).await.unwrap();
    let other = err(volumes.create("v1", options(&[("source", "/other")])).await);
    assert!(other.contains("exists with other options"), "{other}");
    assert_eq!(volumes.list().await.len(), 1);
}

#[tokio::test]
async fn a_failed_mount_counts_no_container_and_says_why() {
    let (_dir, fake, volumes) = fresh();
    volumes.create("v1", app()).await.unwrap();
    fake.state.lock().unwrap().fail = Some("no AWS credentials found".to_string());
    let err = volumes.mount("v1", "c1").await.unwrap_err();
    assert_eq!(err, "no AWS credentials found");
    assert_eq!(volumes.get("v1").await.unwrap().containers, 0);
    volumes.mount("v1", "c1").await.unwrap();
    assert_eq!(volumes.get("v1").await.unwrap().containers, 1);
}

#[tokio::test]
async fn remove_unmounts_and_forgets_even_a_mount_whose_release_never_came() {
    // Docker removes no volume a container uses: a count left here is a lost Unmount.
    let (dir, fake, volumes) = fresh();
    volumes.create("v1", app()).await.unwrap();
    volumes.mount("v1", "c1").await.unwrap();
    volumes.remove("v1").await.unwrap();
    assert_eq!(fake.counts(), (1, 1));
    assert!(volumes.list().await.is_empty());
    assert!(!dir.path().join("mounts/v1").exists());
    assert!(volumes
        .remove("v1")
        .await
        .unwrap_err()
        .contains("no such volume"));
    // And it may be made again, with other options.
    volumes
        .create("v1", options(&[("source", "/other")]))
        .await
        .unwrap();
}

#[tokio::test]
async fn an_id_mounted_twice_is_released_twice() {
    // `docker cp` mounts a running container's volumes again, under the container's ID.
    let (_dir, fake, volumes) = fresh();
    volumes.create("v1", app()).await.unwrap();
    volumes.mount("v1", "c1").await.unwrap();
    volumes.mount("v1", "c1").await.unwrap();
    volumes.unmount("v1", "c1").await.unwrap();
    assert!(
        volumes.path("v1").await.unwrap().is_some(),
        "the container still runs"
    );
    volumes.unmount("v1", "c1").await.unwrap();
    assert_eq!(volumes.path("v1").await.unwrap(), None);
    assert_eq!(fake.counts(), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_start_holds_up_its_own_volume_only() {
    let (_dir, fake, volumes) = fresh();
    volumes.create("slow", app()).await.unwrap();
    volumes.create("other", app()).await.unwrap();
    let first = tokio::spawn({
        let volumes = volumes.clone();
        async move { volumes.mount("slow", "c1").await }
    });
    fake.begun.notified().await;
    let second = tokio::spawn({
        let volumes = volumes.clone();
        async move { volumes.mount("slow", "c2").await }
    });
    // While "slow" starts, the other volume's calls are answered (a hang here fails the test).
    let other = async {
        volumes.get("other").await.unwrap();
        volumes.list().await;
        volumes.mount("other", "c3").await.unwrap();
    };
    tokio::time::timeout(Duration::from_secs(30), other)
        .await
        .expect("held up by another volume's start");
    assert_eq!(volumes.get("slow").await.unwrap().containers, 0);
    fake.release.notify_one();
    first.await.unwrap().unwrap();
    // The second start found the first's mount live.
    second.await.unwrap().unwrap();
    assert_eq!(
        fake.counts(),
        (2, 0),
        "one mount each: the second waited its turn"
    );
    assert_eq!(volumes.get("slow").await.unwrap().containers, 2);
}

#[tokio::test]
async fn options_that_act_on_the_host_need_allowing() {
    let (dir, fake, volumes) = fresh();
    for (key, value) in [
        ("on_change", "touch /tmp/x"),
        ("on-change", "touch /tmp/x"),
        ("template", "t=/etc/shadow"),
        ("log_file", "/etc/x"),
        ("metrics_addr", "9100"),
    ] {
        let opts = options(&[("source", "/app"), (key, value)]);
        let err = volumes.create("v1", opts).await.unwrap_err();
        assert!(err.contains("--allow-option"), "{key}: {err}");
        assert!(!err.contains(value), "the value is not repeated: {err}");
    }
    // The API takes any key: one holding its value is refused, not read as another option.
    for key in [
        "on_change=touch /tmp/x",
        "max_age=5,on_change=x",
        " on_change",
        "",
    ] {
        let opts = options(&[("source", "/app"), (key, "")]);
        let err = volumes.create("v1", opts).await.unwrap_err();
        assert!(err.contains("is not an option name"), "{key}: {err}");
    }
    drop(volumes);

    let allowed = BTreeSet::from(["on_change".to_string()]);
    let volumes = Volumes::open(dir.path(), "b1", allowed, fake.clone()).unwrap();
    let opts = options(&[("source", "/app"), ("on_change", "touch /tmp/x")]);
    volumes.create("v1", opts).await.unwrap();
    drop(volumes);
    // Started again without the allowance: the volume no longer mounts.
    let volumes = open(dir.path(), "b1", &fake);
    let err = volumes.mount("v1", "c1").await.unwrap_err();
    assert!(err.contains("--allow-option on_change"), "{err}");
    assert_eq!(fake.counts(), (0, 0));
    drop(volumes);

    // Template files are read at create: a missing or broken one fails it.
    let allowed = BTreeSet::from(["template".to_string()]);
    let volumes = Volumes::open(dir.path(), "b1", allowed, fake.clone()).unwrap();
    let good = dir.path().join("good.j2");
    let broken = dir.path().join("broken.j2");
    std::fs::write(&good, "host={{ param('db/host') }}\n").unwrap();
    std::fs::write(&broken, "{% if %}").unwrap();
    let missing = dir.path().join("missing.j2");
    for (file, want) in [(&missing, "cannot read"), (&broken, "syntax error")] {
        let value = format!("app.conf={}", file.display());
        let opts = options(&[("source", "/app"), ("template", &value)]);
        let err = volumes.create("t1", opts).await.unwrap_err();
        assert!(err.contains(want), "{err}");
    }
    let value = format!("app.conf={}", good.display());
    let opts = options(&[("source", "/app"), ("template", &value)]);
    volumes.create("t1", opts).await.unwrap();
    drop(volumes);

    let bogus = BTreeSet::from(["max_age".to_string()]);
    let err = Volumes::open(dir.path(), "b1", bogus, fake).err().unwrap();
    assert!(err.contains("only options that act on the host"), "{err}");
}

#[tokio::test]
async fn one_plugin_a_state_directory() {
    let dir = tempfile::tempdir().unwrap();
    let first = open(dir.path(), "b1", &Fake::default());
    let err = Volumes::open(dir.path(), "b1", BTreeSet::new(), Fake::default())
        .err()
        .unwrap();
    assert!(err.contains("another plugin uses"), "{err}");
    drop(first);
    open(dir.path(), "b1", &Fake::default());
}

#[tokio::test(start_paused = true)]
async fn a_mount_that_waited_past_dockers_patience_is_not_counted() {
    let (_dir, fake, volumes) = fresh();
    volumes.create("slow", app()).await.unwrap();
    let first = tokio::spawn({
        let volumes = volumes.clone();
        async move { volumes.mount("slow", "c1").await }
    });
    fake.begun.notified().await;
    let second = tokio::spawn({
        let volumes = volumes.clone();
        async move { volumes.mount("slow", "c2").await }
    });
    tokio::time::sleep(MOUNT_DEADLINE).await;
    fake.release.notify_one();
    first.await.unwrap().unwrap();
    let err = second.await.unwrap().unwrap_err();
    assert!(err.contains("busy starting"), "{err}");
    assert_eq!(volumes.get("slow").await.unwrap().containers, 1);
}

#[tokio::test]
async fn allow_root_is_refused_at_create_since_the_mounts_allow_others() {
    let (_dir, _, volumes) = fresh();
    let opts = options(&[("source", "/app"), ("allow_root", "")]);
    let err = volumes.create("v1", opts).await.unwrap_err();
    assert!(
        err.contains("allow-root") || err.contains("allow_root"),
        "{err}"
    );
}

#[tokio::test]
async fn a_restarted_plugin_keeps_live_mounts_and_mounts_dead_ones_again() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::default();
    {
        let volumes = open(dir.path(), "b1", &fake);
        for name in ["live", "dead", "gone", "idle"] {
            volumes.create(name, app()).await.unwrap();
        }
        for name in ["live", "dead", "gone"] {
            volumes.mount(name, "c1").await.unwrap();
        }
    }
    assert_eq!(fake.counts(), (3, 0));
    // While the plugin was down: one mount's process died, another was unmounted by hand.
    fake.set(&dir.path().join("mounts/dead"), Found::Dead);
    fake.set(&dir.path().join("mounts/gone"), Found::Nothing);

    // And a start that outlived the plugin left a live mount that no one holds.
    fake.set(&dir.path().join("mounts/idle"), Found::Live);
    let volumes = open(dir.path(), "b1", &fake);
    volumes.restore().await;
    assert_eq!(
        fake.counts(),
        (5, 2),
        "dead: unmounted and mounted; gone: mounted; idle: unmounted"
    );
    for name in ["live", "dead", "gone"] {
        assert_eq!(volumes.get(name).await.unwrap().containers, 1, "{name}");
        assert!(volumes.path(name).await.unwrap().is_some(), "{name}");
    }
    assert_eq!(volumes.path("idle").await.unwrap(), None);
    // The containers counted before the restart still unmount when they leave.
    volumes.unmount("live", "c1").await.unwrap();
    assert_eq!(volumes.path("live").await.unwrap(), None);
}

#[tokio::test]
async fn after_a_reboot_no_container_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::default();
    {
        let volumes = open(dir.path(), "b1", &fake);
        volumes.create("v1", app()).await.unwrap();
        volumes.mount("v1", "c1").await.unwrap();
    }
    fake.set(&dir.path().join("mounts/v1"), Found::Nothing);
    let volumes = open(dir.path(), "b2", &fake);
    volumes.restore().await;
    assert_eq!(fake.counts(), (1, 0), "nothing mounted again");
    let shown = volumes.get("v1").await.unwrap();
    assert_eq!((shown.containers, shown.source.as_str()), (0, "ssm:/app"));
}

#[tokio::test]
async fn a_state_file_that_is_not_ours_stops_the_plugin_rather_than_losing_volumes() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("volumes.json"), "{not json").unwrap();
    let err = Volumes::open(dir.path(), "b1", BTreeSet::new(), Fake::default())
        .err()
        .unwrap();
    assert!(err.contains("move it away"), "{err}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("volumes.json")).unwrap(),
        "{not json"
    );
}

#[tokio::test]
async fn docker_sees_the_plugin_api_shapes() {
    use crate::docker::api::answer;
    use serde_json::json;
    let (dir, _, volumes) = fresh();
    let call = |path: &'static str, body: serde_json::Value| {
        let volumes = &volumes;
        async move { answer(volumes, path, body.to_string().as_bytes()).await }
    };
    assert_eq!(
        call("/Plugin.Activate", json!({})).await,
        json!({"Implements": ["VolumeDriver"]})
    );
    assert_eq!(
        call("/VolumeDriver.Capabilities", json!({})).await,
        json!({"Capabilities": {"Scope": "local"}})
    );
    let created = call(
        "/VolumeDriver.Create",
        json!({"Name": "v1", "Opts": {"source": "/app", "allow_other": ""}}),
    )
    .await;
    assert_eq!(created, json!({"Err": ""}));
    let mounted = call("/VolumeDriver.Mount", json!({"Name": "v1", "ID": "abc"})).await;
    let at = dir.path().join("mounts/v1").display().to_string();
    assert_eq!(mounted, json!({"Mountpoint": at, "Err": ""}));
    let got = call("/VolumeDriver.Get", json!({"Name": "v1"})).await;
    assert_eq!(got["Volume"]["Mountpoint"], json!(at));
    assert_eq!(
        got["Volume"]["Status"],
        json!({"source": "/app", "containers": 1})
    );
    assert!(got["Volume"]["CreatedAt"].as_str().unwrap().ends_with('Z'));
    let listed = call("/VolumeDriver.List", json!({})).await;
    assert_eq!(listed["Volumes"][0]["Name"], json!("v1"));
    assert_eq!(
        call("/VolumeDriver.Unmount", json!({"Name": "v1", "ID": "abc"})).await,
        json!({"Err": ""})
    );
    assert_eq!(
        call("/VolumeDriver.Path", json!({"Name": "v1"})).await,
        json!({"Mountpoint": "", "Err": ""})
    );
    let missing = call("/VolumeDriver.Get", json!({"Name": "nope"})).await;
    assert_eq!(missing, json!({"Err": "no such volume: nope"}));
    let malformed = answer(&volumes, "/VolumeDriver.Create", b"[1]").await;
    assert!(malformed["Err"]
        .as_str()
        .unwrap()
        .starts_with("malformed request"));
    let unknown = call("/VolumeDriver.Snapshot", json!({})).await;
    assert!(unknown["Err"].as_str().unwrap().contains("does not answer"));
}
