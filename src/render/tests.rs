use std::collections::HashMap;
use std::sync::Arc;

use super::template::{parse_path, Input, Known, Rendering, Resolved, Templates};
use super::*;
use crate::backend::Param;
use crate::names::Source;

fn leaf(path: &str, value: &str) -> Leaf {
    Leaf {
        path: path.to_string(),
        content: Content::from(value.as_bytes().to_vec()),
        list: false,
        secret_value: false,
        derived: false,
        secret: false,
        unreadable: None,
    }
}

#[test]
fn env_quotes_each_value_the_way_every_reader_agrees_on() {
    let q = |v: &str| env::quote(v);
    assert_eq!(q(""), Some("''".into()));
    assert_eq!(
        q("a b $HOME `x` \"q\" # = é\nz"),
        Some("'a b $HOME `x` \"q\" # = é\nz'".into())
    );
    assert_eq!(
        q(r"C:\dir"),
        Some(r"'C:\dir'".into()),
        "a lone backslash is literal everywhere"
    );
    assert_eq!(q("it's"), Some("\"it's\"".into()));
    assert_eq!(q(r"a\\b"), Some(r#""a\\\\b""#.into()));
    assert_eq!(
        q(r"ends\"),
        None,
        "older parsers take \\' or \\\" at the end as escaped"
    );
    assert_eq!(q(r#"it's "x" \n"#), Some(r#""it's \"x\" \\n""#.into()));
    assert_eq!(
        q("it's $5"),
        None,
        "' with $: no quoting serves every reader"
    );
    assert_eq!(q("it's `x`"), None);
    assert_eq!(q("a\\\\$"), None);
    assert_eq!(q("nul\0"), None);
}

#[test]
fn env_keys_are_paths_uppercased() {
    assert_eq!(env::key_of("db/password"), "DB_PASSWORD");
    assert_eq!(env::key_of("a.b-c/d"), "A_B_C_D");
    assert!(env::is_variable("_A1"));
    assert!(!env::is_variable("1A"));
    assert!(!env::is_variable("A+B"));
    assert!(!env::is_variable(""));
}

#[test]
fn env_lines_string_lists_and_left_outs() {
    let mut list = leaf("hosts", "a\nb\n");
    list.list = true;
    let env = env::render(&[
        leaf("db/user", "app"),
        list,
        leaf("x-y", "1"),
        leaf("x.y", "2"),
    ]);
    assert_eq!(
        String::from_utf8(env.text).unwrap(),
        "DB_USER='app'\nHOSTS='a,b'\n# left out: x-y, x.y all make X_Y\n"
    );
    assert_eq!(env.left_out.len(), 1);
    let mut refused = leaf("pw", "");
    refused.unreadable = Some("AccessDeniedException".into());
    let binary = Leaf {
        content: Content::from(vec![0xff, 0xfe]),
        ..leaf("bin", "")
    };
    let env = env::render(&[refused.clone(), binary.clone(), leaf("ok", "1")]);
    assert_eq!(
        String::from_utf8(env.text).unwrap(),
        "OK='1'\n\
         # left out: bin (BIN): its value is not UTF-8 text\n\
         # left out: pw (PW): AWS refused to return it (AccessDeniedException)\n"
    );
    assert!(
        tree_value(&[refused]).is_err(),
        "never an empty value in its place"
    );
    assert!(tree_value(&[binary]).is_err());
}

#[test]
fn tree_values_nest_directories_and_parse_json_secrets() {
    let mut list = leaf("up/hosts", "a\nb\n");
    list.list = true;
    let mut secret = leaf("db", r#"{"user":"u","port":5432}"#);
    secret.secret_value = true;
    let mut key = leaf("db/user", "u");
    key.derived = true;
    key.secret_value = true;
    let mut not_json = leaf("plain", "{not json");
    not_json.secret_value = true;
    let v = tree_value(&[
        list,
        leaf("up", "own"),
        secret,
        key,
        not_json,
        leaf("up/x/y", "deep"),
    ])
    .unwrap();
    assert_eq!(
        v,
        serde_json::json!({
            "db": {"user": "u", "port": 5432},
            "plain": "{not json",
            "up": {"": "own", "hosts": ["a", "b"], "x": {"y": "deep"}},
        })
    );
    assert_eq!(tree_value(&[]).unwrap(), serde_json::json!({}));
}

#[test]
fn leaves_know_string_lists_from_the_type() {
    let mut p = Param::test("/app/l", "a\nb\n", 1);
    p.xattrs.push(("user.ssm.type", "StringList".into()));
    let l = Leaf::new("l".into(), &p, crate::names::Dialect::Ssm);
    assert!(l.list);
    assert_eq!(l.original(), "a,b");
    assert_eq!(l.json(true), serde_json::json!(["a", "b"]));
}

#[test]
fn template_paths_are_relative_or_inside_the_source() {
    let ssm: Source = "/app".parse().unwrap();
    assert_eq!(parse_path(&ssm, "db/pw", true), Ok(("db/pw".into(), None)));
    assert_eq!(
        parse_path(&ssm, "/app/db/pw:3", true),
        Ok(("db/pw".into(), Some("3".into())))
    );
    assert_eq!(
        parse_path(&ssm, "db/pw:live", true),
        Ok(("db/pw".into(), Some("live".into())))
    );
    assert_eq!(parse_path(&ssm, "/app", false), Ok((String::new(), None)));
    assert_eq!(parse_path(&ssm, "", false), Ok((String::new(), None)));
    assert!(parse_path(&ssm, "/other/x", true).is_err());
    assert!(parse_path(&ssm, "a/../b", true).is_err());
    assert!(parse_path(&ssm, "db/pw:0", true).is_err());
    assert!(parse_path(&ssm, "", true).is_err());
    let sm: Source = "secretsmanager:prod".parse().unwrap();
    assert_eq!(
        parse_path(&sm, "db:AWSPREVIOUS", true),
        Ok(("db".into(), Some("AWSPREVIOUS".into())))
    );
}

fn load(text: &str) -> Result<Templates, String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.j2");
    std::fs::write(&path, text).unwrap();
    Templates::load(&[("t".to_string(), path)])
}

fn render(t: &Templates, known: &Known) -> Rendering {
    t.render("t", &"/app".parse().unwrap(), Arc::new(known.clone()))
}

#[test]
fn a_syntax_error_names_the_file_and_line() {
    let err = load("ok\n{{ param('a') }}\n{% for x in %}\n").unwrap_err();
    assert!(err.contains("template t ("), "{err}");
    assert!(err.contains("t.j2), line 3: syntax error"), "{err}");
    assert!(load("x").is_ok());
    let err = Templates::load(&[("a/b".into(), "/nonexistent".into())]).unwrap_err();
    assert!(err.contains("not valid"), "{err}");
    let err = Templates::load(&[("a".into(), "/x".into()), ("a".into(), "/y".into())]).unwrap_err();
    assert_eq!(err, "template a is given twice");
}

#[test]
fn a_template_is_a_regular_file_of_at_most_a_mebibyte() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    // A FIFO with no writer would block the read for ever: refused before it is opened.
    let err = Templates::load(&[("t".into(), fifo)]).unwrap_err();
    assert!(err.contains("not a regular file"), "{err}");
    let err = Templates::load(&[("t".into(), "/dev/zero".into())]).unwrap_err();
    assert!(err.contains("not a regular file"), "{err}");
    assert!(load(&"x".repeat(1 << 20)).is_ok());
    let err = load(&"x".repeat((1 << 20) + 1)).unwrap_err();
    assert!(err.contains("larger than 1024 KiB"), "{err}");
}

#[test]
fn a_render_asks_for_everything_it_lacks_at_once() {
    let t = load("{{ param('a') }}{{ param('b') }}{% for k in dir('d') %}{{ k }}{% endfor %}\n")
        .unwrap();
    let mut known: Known = HashMap::new();
    let Rendering::Missing(missing) = render(&t, &known) else {
        panic!("nothing is known yet")
    };
    let p = |s: &str| Input::Param {
        path: s.into(),
        selector: None,
    };
    assert_eq!(missing, [p("a"), p("b"), Input::Dir("d".into())]);
    known.insert(p("a"), Ok(Resolved::Param(leaf("a", "1"))));
    known.insert(p("b"), Ok(Resolved::Param(leaf("b", "2"))));
    known.insert(
        Input::Dir("d".into()),
        Ok(Resolved::Dir(vec![leaf("x", "9"), leaf("y", "9")])),
    );
    match render(&t, &known) {
        Rendering::Done { text, used, secret } => {
            assert_eq!(text, "12xy\n", "the last newline is kept");
            assert_eq!(used.len(), 3);
            assert!(!secret);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_failed_render_names_the_path_never_a_value() {
    let t = load("{{ param('gone') }}\n{{ param('pw') + 1 }}\n").unwrap();
    let mut known: Known = HashMap::new();
    known.insert(
        Input::Param {
            path: "gone".into(),
            selector: None,
        },
        Err(crate::error::Error::NotFound),
    );
    let mut secret = leaf("pw", "hunter2");
    secret.secret = true;
    known.insert(
        Input::Param {
            path: "pw".into(),
            selector: None,
        },
        Ok(Resolved::Param(secret)),
    );
    let Rendering::Failed(f) = render(&t, &known) else {
        panic!()
    };
    assert_eq!(f.message, "template t: parameter gone not found");
    known.insert(
        Input::Param {
            path: "gone".into(),
            selector: None,
        },
        Ok(Resolved::Param(leaf("gone", "here"))),
    );
    let Rendering::Failed(f) = render(&t, &known) else {
        panic!()
    };
    assert!(
        f.message.starts_with("template t, line 2: "),
        "{}",
        f.message
    );
    assert!(!f.message.contains("hunter2"), "{}", f.message);
}

#[test]
fn filters_quote_for_their_format() {
    let t = load(
        "{{ v|json }} {{ v|yaml }} {{ v|toml }} {{ v|shell }} {{ v|xml }} {{ l|json }} {{ l|shell }} {{ m|toml }}",
    )
    .unwrap();
    let ctx = minijinja::context! {
        v => "a'b\"c\\d<&>\n",
        l => vec!["x y", "z"],
        m => minijinja::context! { k => "v" },
    };
    let out = t.render_with("t", ctx).unwrap();
    assert_eq!(
        out,
        r#""a'b\"c\\d<&>\n" "a'b\"c\\d<&>\n" "a'b\"c\\d<&>\n" 'a'\''b"c\d<&>
' a&apos;b&quot;c\d&lt;&amp;&gt;
 ["x y","z"] 'x y' 'z' { "k" = "v" }"#
    );
}

#[test]
fn yaml_and_toml_escape_what_their_readers_refuse() {
    let t = load("{{ v|yaml }} {{ v|toml }}").unwrap();
    let out = t
        .render_with("t", minijinja::context! { v => "a\u{7f}b\u{85}c\u{2028}d" })
        .unwrap();
    assert_eq!(out, r#""a\u007fb\u0085c\u2028d" "a\u007fb\u0085c\u2028d""#);
}
