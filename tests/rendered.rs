//! Rendered files on a real mount: `.env` read back by bash and python-dotenv, `.json` by a
//! JSON parser, templates checked by `nginx -t` and a YAML parser, and a rendered file that
//! changes when a parameter changes.

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::watch::Watch;
use common::{Moto, Mount};

fn python() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python")
}

/// The values a reader printed, each ended by a NUL.
fn nul_separated(out: std::process::Output) -> Vec<Vec<u8>> {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut values: Vec<Vec<u8>> = out.stdout.split(|b| *b == 0).map(<[u8]>::to_vec).collect();
    values.pop();
    values
}

/// Each of `keys` as bash sees it after `set -a; . FILE`.
fn bash_reads(file: &Path, keys: &[String]) -> Vec<Vec<u8>> {
    let script = format!(
        "set -a; . \"$1\"; for k in {}; do printf '%s\\0' \"${{!k}}\"; done",
        keys.join(" ")
    );
    let out = Command::new("bash")
        .args(["-c", &script, "bash"])
        .arg(file)
        .env_clear()
        .output()
        .unwrap();
    nul_separated(out)
}

/// Each of `keys` as python-dotenv reads it (`interpolate`: its default, which expands
/// `${NAME}`).
fn dotenv_reads(file: &Path, keys: &[String], interpolate: bool) -> Vec<Vec<u8>> {
    let script = [
        "import sys, dotenv",
        "v = dotenv.dotenv_values(sys.argv[1], interpolate=sys.argv[2] == '1')",
        "for k in sys.argv[3:]:",
        "    sys.stdout.buffer.write((v.get(k) or '').encode() + b'\\0')",
    ]
    .join("\n");
    let out = Command::new(python())
        .args(["-c", &script])
        .arg(file)
        .arg(if interpolate { "1" } else { "0" })
        .args(keys)
        .output()
        .expect("python-dotenv: run scripts/setup");
    nul_separated(out)
}

/// Values that are hard to quote, each alone and together.
const HARD: &[&str] = &[
    "two  spaces ",
    "single ' quote",
    "double \" quote",
    "dollar $HOME $ and ${HOME}",
    "back `date` tick",
    r"back\slash",
    r"two \\ backslashes \n",
    "hash # not a comment",
    "#starts",
    "multi\nline\n",
    "a=b=c",
    "UTF-8 é ü 日本",
    "tab\there",
    r#"both "quotes" and 'more'"#,
];

#[test]
fn the_env_quoting_reads_back_exactly_in_bash_and_python_dotenv() {
    // Every hard value, and random mixes of the characters that matter.
    let mut values: Vec<String> = HARD.iter().map(|s| s.to_string()).collect();
    values.push(String::new());
    let alphabet = [
        "a", " ", "'", "\"", "$", "`", "\\", "#", "\n", "=", "é", "{", "}", "n", "\t", "HOME",
    ];
    let mut rng = fastrand::Rng::with_seed(7);
    for _ in 0..300 {
        let len = rng.usize(1..12);
        values.push(
            (0..len)
                .map(|_| alphabet[rng.usize(..alphabet.len())])
                .collect(),
        );
    }
    let quoted: Vec<(String, String)> = values
        .iter()
        .filter_map(|v| ssmfs::render::env::quote(v).map(|q| (v.clone(), q)))
        .collect();
    assert!(quoted.len() > 200, "most values can be quoted");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("values.env");
    let mut f = std::fs::File::create(&file).unwrap();
    let keys: Vec<String> = (0..quoted.len()).map(|i| format!("K{i}")).collect();
    for (k, (_, q)) in keys.iter().zip(&quoted) {
        writeln!(f, "{k}={q}").unwrap();
    }
    drop(f);
    let want: Vec<Vec<u8>> = quoted.iter().map(|(v, _)| v.clone().into_bytes()).collect();
    let shown = |i: usize| format!("{:?} as {}", quoted[i].0, quoted[i].1);
    for (i, got) in bash_reads(&file, &keys).iter().enumerate() {
        assert_eq!(got, &want[i], "bash: {}", shown(i));
    }
    for (i, got) in dotenv_reads(&file, &keys, false).iter().enumerate() {
        assert_eq!(got, &want[i], "python-dotenv: {}", shown(i));
    }
    // python-dotenv's default expands ${NAME}: every other value reads back with it too.
    for (i, got) in dotenv_reads(&file, &keys, true).iter().enumerate() {
        if !quoted[i].0.contains("${") {
            assert_eq!(got, &want[i], "python-dotenv, interpolating: {}", shown(i));
        }
    }
}

#[test]
fn env_and_json_on_a_mount_read_back_every_value() {
    let moto = Moto::start();
    for (i, v) in HARD.iter().enumerate() {
        moto.put(&format!("/app/hard/v{i:02}"), "String", v);
    }
    moto.put("/app/db/password", "SecureString", "it's a secret");
    moto.put("/app/web/hosts", "StringList", "a.example,b.example");
    moto.put("/app/web", "String", "also a directory");
    moto.put("/app/9lives", "String", "x");
    moto.put("/app/tail", "String", r"ends\");
    let m = Mount::start(&moto, "/app", &[]);

    // Looked up, never listed: listings and copies see what they always saw.
    assert!(!m
        .ls("")
        .iter()
        .any(|n| n.starts_with(".env") || n.starts_with(".json")));
    let tar = Command::new("tar")
        .arg("-C")
        .arg(m.path(""))
        .args(["-cf", "-", "."])
        .output()
        .unwrap();
    let listed = Command::new("tar")
        .args(["-tf", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(&tar.stdout)?;
            c.wait_with_output()
        })
        .unwrap();
    let listed = String::from_utf8(listed.stdout).unwrap();
    assert!(listed.contains("./hard/v00"), "{listed}");
    assert!(
        !listed.contains(".env") && !listed.contains(".json"),
        "{listed}"
    );

    let env = m.path("hard/.env");
    let keys: Vec<String> = (0..HARD.len()).map(|i| format!("V{i:02}")).collect();
    let want: Vec<Vec<u8>> = HARD.iter().map(|v| v.as_bytes().to_vec()).collect();
    assert_eq!(bash_reads(&env, &keys), want, "bash");
    assert_eq!(dotenv_reads(&env, &keys, false), want, "python-dotenv");
    assert_eq!(
        std::fs::metadata(&env).unwrap().permissions().mode() & 0o777,
        0o444
    );

    // The whole mount: a SecureString makes it the secret mode; a StringList is its original.
    let root_env = m.path(".env");
    assert_eq!(
        std::fs::metadata(&root_env).unwrap().permissions().mode() & 0o777,
        0o400
    );
    let got = bash_reads(
        &root_env,
        &["DB_PASSWORD".into(), "WEB".into(), "WEB_HOSTS".into()],
    );
    assert_eq!(
        got,
        [
            &b"it's a secret"[..],
            b"also a directory",
            b"a.example,b.example"
        ]
    );
    let text = m.read_str(".env");
    assert!(
        text.contains("# left out: 9lives: 9LIVES is not a variable name")
            && text.contains("# left out: tail (TAIL): no quoting"),
        "{text}"
    );
    assert!(m
        .log_with("9LIVES")
        .contains("9LIVES is not a variable name"));

    // .json, through Python's parser.
    let out = Command::new(python())
        .args(["-c", "import json,sys; d=json.load(open(sys.argv[1])); print(json.dumps([d['web'], d['db'], d['hard']['v09']]))"])
        .arg(m.path(".json"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        parsed,
        serde_json::json!([
            {"": "also a directory", "hosts": ["a.example", "b.example"]},
            {"password": "it's a secret"},
            "multi\nline\n",
        ])
    );
}

/// A mount of `source` with the template `t` made of `text` (its file's folder is returned too).
fn with_template(moto: &Moto, source: &str, text: &str) -> (tempfile::TempDir, Mount) {
    let files = tempfile::tempdir().unwrap();
    let t = write(files.path(), "t.j2", text);
    let m = Mount::start(moto, source, &["--template", &format!("t={}", t.display())]);
    (files, m)
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

const NGINX_TEMPLATE: &str = r#"# Rendered by ssmfs from parameters under {{ "/app" }}.
worker_processes 1;
pid {{ tmp }}/nginx.pid;
error_log stderr;
events {}
http {
    access_log off;
    client_body_temp_path {{ tmp }};
    proxy_temp_path {{ tmp }};
    fastcgi_temp_path {{ tmp }};
    uwsgi_temp_path {{ tmp }};
    scgi_temp_path {{ tmp }};
    upstream app {
{%- for server in param("web/upstreams") %}
        server {{ server }};
{%- endfor %}
    }
    server {
        listen 127.0.0.1:{{ param("web/port") }};
        server_name {{ param("web/server_name") }};
        location / {
            proxy_pass http://app;
            proxy_set_header X-Api-Key {{ param("web/api_key")|json }};
        }
    }
}
"#;

const YAML_TEMPLATE: &str = r#"database:
  user: {{ param("db/user")|yaml }}
  password: {{ param("db/password")|yaml }}
  replicas: {{ param("db/replicas")|yaml }}
features:
{%- for name, on in dir("features")|items %}
  {{ name }}: {{ on|yaml }}
{%- endfor %}
"#;

#[test]
fn templates_render_an_nginx_config_and_a_yaml_config_that_follow_changes() {
    let moto = Moto::start();
    moto.put(
        "/app/web/upstreams",
        "StringList",
        "127.0.0.1:8081,127.0.0.1:8082",
    );
    moto.put("/app/web/port", "String", &common::free_port().to_string());
    moto.put("/app/web/server_name", "String", "app.example");
    moto.put("/app/web/api_key", "SecureString", r#"k"e\y$1"#);
    moto.put("/app/db/user", "String", "app: admin # not a comment");
    moto.put(
        "/app/db/password",
        "SecureString",
        "it's \"quoted\"\nand: 'multi-line'",
    );
    moto.put("/app/db/replicas", "StringList", "r1,r-2,yes");
    moto.put("/app/features/new_ui", "String", "on");
    moto.put("/app/features/beta", "String", "false");
    let files = tempfile::tempdir().unwrap();
    let tmp = files.path().display().to_string();
    let nginx = write(
        files.path(),
        "nginx.j2",
        &NGINX_TEMPLATE.replace("{{ tmp }}", &tmp),
    );
    let yaml = write(files.path(), "app.j2", YAML_TEMPLATE);
    let m = Mount::start(
        &moto,
        "/app",
        &[
            "--template",
            &format!("nginx.conf={}", nginx.display()),
            "-o",
            &format!("template=app.yaml={}", yaml.display()),
        ],
    );
    assert!(!m.ls("").contains(&".templates".to_string()));
    assert_eq!(m.ls(".templates"), ["app.yaml", "nginx.conf"]);

    // nginx checks the rendered config.
    let conf = m.path(".templates/nginx.conf");
    let out = Command::new("/usr/sbin/nginx")
        .arg("-t")
        .arg("-c")
        .arg(&conf)
        .output()
        .expect("nginx: run scripts/setup");
    assert!(
        out.status.success(),
        "nginx -t: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        m.read_str(".templates/nginx.conf")
    );
    let text = m.read_str(".templates/nginx.conf");
    assert!(
        text.contains("server 127.0.0.1:8081;\n        server 127.0.0.1:8082;"),
        "{text}"
    );
    assert_eq!(
        std::fs::metadata(&conf).unwrap().permissions().mode() & 0o777,
        0o400,
        "it reads a SecureString"
    );

    // A YAML parser reads every value back.
    let parse_yaml = || {
        let out = Command::new(python())
            .args([
                "-c",
                "import yaml,json,sys; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
            ])
            .arg(m.path(".templates/app.yaml"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    assert_eq!(
        parse_yaml(),
        serde_json::json!({
            "database": {
                "user": "app: admin # not a comment",
                "password": "it's \"quoted\"\nand: 'multi-line'",
                "replicas": ["r1", "r-2", "yes"],
            },
            "features": {"beta": "false", "new_ui": "on"},
        })
    );

    // A change of a value read reaches the rendered file, as a change of that file.
    use std::os::unix::fs::MetadataExt;
    let before = std::fs::metadata(&conf).unwrap();
    let mut watch = Watch::start(&["-e", "modify,delete_self"], &[&m.path(".templates")]);
    moto.put("/app/db/password", "SecureString", "rotated");
    m.refresh("").unwrap();
    let shown = |name: &str| m.path(&format!(".templates/{name}")).display().to_string();
    let events = watch.expect(&["MODIFY", &shown("app.yaml")]);
    assert_eq!(parse_yaml()["database"]["password"], "rotated");
    // nginx.conf read nothing that changed: it is the same file, and no news.
    assert!(
        !events.iter().any(|e| e.contains("nginx.conf")),
        "{events:?}"
    );
    assert_eq!(std::fs::metadata(&conf).unwrap().ino(), before.ino());
    moto.put("/app/web/upstreams", "StringList", "127.0.0.1:9000");
    m.refresh("").unwrap();
    watch.expect(&["MODIFY", &shown("nginx.conf")]);
    assert!(m
        .read_str(".templates/nginx.conf")
        .contains("server 127.0.0.1:9000;"));
    assert_ne!(
        std::fs::metadata(&conf).unwrap().ino(),
        before.ino(),
        "a new version"
    );
}

#[test]
fn a_template_with_a_syntax_error_fails_the_mount_with_its_file_and_line() {
    let moto = Moto::start();
    moto.put("/app/a", "String", "1");
    let files = tempfile::tempdir().unwrap();
    let bad = write(files.path(), "bad.j2", "line one\n{% if %}\n");
    let err = Mount::try_start(
        &moto.url(),
        "/app",
        &["--template", &format!("bad={}", bad.display())],
    )
    .err()
    .expect("the mount fails");
    assert!(
        err.contains(&format!(
            "template bad ({}), line 2: syntax error",
            bad.display()
        )),
        "{err}"
    );
}

#[test]
fn a_missing_parameter_fails_its_template_alone_and_the_log_names_it() {
    let moto = Moto::start();
    moto.put("/app/db/password", "SecureString", "s3cret-canary");
    let (_files, m) = with_template(
        &moto,
        "/app",
        "{{ param('db/password') }} {{ param('db/missing') }}\n",
    );
    let err = std::fs::read(m.path(".templates/t")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert_eq!(m.read_str("db/password"), "s3cret-canary");
    assert!(m.read_str(".env").contains("DB_PASSWORD='s3cret-canary'"));
    let log = m.log_with("db/missing");
    assert!(
        log.contains("template t: parameter db/missing not found"),
        "{log}"
    );
    assert!(!log.contains("s3cret-canary"), "{log}");
    moto.put("/app/db/missing", "String", "here");
    m.refresh("").unwrap();
    assert_eq!(m.read_str(".templates/t"), "s3cret-canary here\n");
}

#[test]
fn secrets_render_as_their_parsed_objects() {
    let moto = Moto::start();
    let c = moto.secrets_client();
    let create = |name: &str, value: &str| {
        common::rt()
            .block_on(c.create_secret().name(name).secret_string(value).send())
            .unwrap();
    };
    create("prod/db", r#"{"user":"app","password":"p'w$1"}"#);
    create("prod/api", "plain token");
    let (_files, m) = with_template(&moto, "secretsmanager:prod/", "{% set db = secret('db') %}{{ db.user }}:{{ db.password|shell }} {{ secret('api') }} {{ param('db/user') }}\n");
    assert_eq!(
        m.read_str(".templates/t"),
        "app:'p'\\''w$1' plain token app\n"
    );
    let json: serde_json::Value = serde_json::from_str(&m.read_str(".json")).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"api": "plain token", "db": {"user": "app", "password": "p'w$1"}})
    );
    let env = m.read_str(".env");
    // The secret and its password hold both ' and $: left out, named by path.
    assert_eq!(
        env,
        "API='plain token'\nDB_USER='app'\n\
         # left out: db (DB): no quoting reads its value back in every .env reader\n\
         # left out: db/password (DB_PASSWORD): no quoting reads its value back in every .env reader\n"
    );
    assert_eq!(
        std::fs::metadata(m.path(".env"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o400
    );
}

#[test]
fn sighup_reads_template_files_again() {
    let moto = Moto::start();
    moto.put("/app/name", "String", "demo");
    let files = tempfile::tempdir().unwrap();
    let t = write(files.path(), "t.j2", "one {{ param('name') }}\n");
    let m = Mount::start(
        &moto,
        "/app",
        &["--template", &format!("t={}", t.display())],
    );
    assert_eq!(m.read_str(".templates/t"), "one demo\n");
    let mut watch = Watch::start(&["-e", "modify"], &[&m.path(".templates")]);
    std::fs::write(&t, "two {{ param('name') }}\n").unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(m.pid()),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    let shown = m.path(".templates/t").display().to_string();
    watch.expect(&["MODIFY", &shown]);
    assert_eq!(m.read_str(".templates/t"), "two demo\n");
    // A template that no longer compiles keeps the loaded one, with a warning.
    std::fs::write(&t, "{% if %}").unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(m.pid()),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    let log = m.log_with("templates not reloaded");
    assert!(log.contains("line 1: syntax error"), "{log}");
    assert_eq!(m.read_str(".templates/t"), "two demo\n");
}
