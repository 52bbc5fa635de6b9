//! Templates: Jinja files (rendered by minijinja) that read parameters through `param()`,
//! `secret()` and `dir()`, shown as `.templates/NAME` on the mount.
//!
//! Rendering never waits on AWS: it reads only what the caller resolved beforehand (a
//! [`Known`] map). A value it lacks makes the render report it [`Rendering::Missing`]; the
//! caller resolves all of them together (so one render's misses share fetches) and renders
//! again. Functions:
//! - `param(PATH, DEFAULT?)`: a parameter, by a path relative to the source (an absolute SSM
//!   path must be inside it), with an optional selector (`db/password:3`,
//!   `db/password:AWSPREVIOUS`). A StringList is a list of its items; other values are
//!   strings. Without a DEFAULT, a missing parameter fails the render;
//! - `secret(PATH, DEFAULT?)`: the same, but a Secrets Manager secret whose value is a JSON
//!   object is that object;
//! - `dir(PATH?)`: a directory's subtree as a mapping (see [`super::tree_value`]), the root
//!   without a PATH.
//!
//! Filters that quote for a format are in [`super::quote`]. Undefined variables are errors,
//! nothing is escaped unless a filter says so, and a template's last newline is kept.
//!
//! Promises: a syntax error is reported at load with the file and line; a failed render says
//! which template, which line and which path, never a value.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use minijinja::value::{Object, Value};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, State, UndefinedBehavior};

use super::{quote, tree_value, Leaf};
use crate::names::{is_template_name, Dialect, Source, SELECTOR};

/// The name under which the render's scope reaches the functions.
const SCOPE: &str = "__ssmfs_scope";
/// A bound on one render's work (about 64 bytes a unit), against a runaway loop.
const FUEL: u64 = 50_000_000;

/// Something a template reads.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Input {
    /// A parameter (its path relative to the source) or one version of it.
    Param {
        path: String,
        selector: Option<String>,
    },
    /// A directory's subtree.
    Dir(String),
}

/// What an input resolved to.
#[derive(Clone, Debug)]
pub enum Resolved {
    Param(Leaf),
    /// The files of the subtree, with paths relative to the directory.
    Dir(Vec<Leaf>),
}

/// What the caller resolved: a value, or why there is none (`NotFound`: it does not exist).
pub type Known = HashMap<Input, Result<Resolved, crate::error::Error>>;

/// The outcome of one render. Its `Debug` form never shows the text.
pub enum Rendering {
    Done {
        text: String,
        /// What the render read, in the order it first read it.
        used: Vec<Input>,
        /// Whether it read a SecureString or a secret.
        secret: bool,
    },
    /// Inputs not in the known map: resolve them all, then render again.
    Missing(Vec<Input>),
    Failed(Failed),
}

impl fmt::Debug for Rendering {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rendering::Done { text, used, secret } => f
                .debug_struct("Done")
                .field("bytes", &text.len())
                .field("used", used)
                .field("secret", secret)
                .finish(),
            Rendering::Missing(inputs) => f.debug_tuple("Missing").field(inputs).finish(),
            Rendering::Failed(failed) => f.debug_tuple("Failed").field(failed).finish(),
        }
    }
}

/// Why a render failed: a message naming the template, line and path, and the error whose
/// errno the file reads.
#[derive(Clone, Debug)]
pub struct Failed {
    pub message: String,
    pub error: crate::error::Error,
}

/// The templates of a mount, compiled.
pub struct Templates {
    env: Environment<'static>,
    files: Vec<(String, PathBuf)>,
}

impl fmt::Debug for Templates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.files.iter().map(|(n, _)| n))
            .finish()
    }
}

impl Default for Templates {
    fn default() -> Self {
        Templates {
            env: environment(),
            files: Vec::new(),
        }
    }
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
    env.set_fuel(Some(FUEL));
    let syntax = minijinja::syntax::SyntaxConfig::builder()
        .keep_trailing_newline(true)
        .build()
        .expect("the default delimiters are valid");
    env.set_syntax(syntax);
    env.add_function(
        "param",
        |state: &State, path: String, default: Option<Value>| read(state, &path, default, false),
    );
    env.add_function(
        "secret",
        |state: &State, path: String, default: Option<Value>| read(state, &path, default, true),
    );
    env.add_function("dir", |state: &State, path: Option<String>| {
        read_dir(state, path.as_deref().unwrap_or(""))
    });
    env.add_filter("json", |v: &Value| quote::json(v));
    env.add_filter("yaml", |v: &Value| quote::yaml(v));
    env.add_filter("toml", |v: &Value| quote::toml(v));
    env.add_filter("shell", |v: &Value| quote::shell(v));
    env.add_filter("xml", |v: &Value| quote::xml(v));
    env
}

/// The largest template file read.
const TEMPLATE_MAX: u64 = 1 << 20;

/// A template file's text: a regular file (never a FIFO or a device that could block or run on
/// forever) of at most [`TEMPLATE_MAX`] bytes.
fn read_template(file: &std::path::Path) -> std::io::Result<String> {
    use std::io::{Error, Read};
    if !std::fs::metadata(file)?.is_file() {
        return Err(Error::other("not a regular file"));
    }
    let mut text = String::new();
    std::fs::File::open(file)?
        .take(TEMPLATE_MAX + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > TEMPLATE_MAX {
        return Err(Error::other(format!(
            "larger than {} KiB",
            TEMPLATE_MAX / 1024
        )));
    }
    Ok(text)
}

impl Templates {
    /// Reads and compiles templates given as (NAME, FILE). An unreadable file or a syntax error
    /// is an error naming the template, the file and the line.
    pub fn load(files: &[(String, PathBuf)]) -> Result<Templates, String> {
        for (i, (name, _)) in files.iter().enumerate() {
            if !is_template_name(name) {
                return Err(format!(
                    "template name '{name}' is not valid: use letters, digits, '_', '.' and '-'"
                ));
            }
            if files[..i].iter().any(|(n, _)| n == name) {
                return Err(format!("template {name} is given twice"));
            }
        }
        let mut env = environment();
        for (name, file) in files {
            let source = read_template(file)
                .map_err(|e| format!("template {name}: cannot read {}: {e}", file.display()))?;
            env.add_template_owned(name.clone(), source)
                .map_err(|e| describe(name, Some(file), &e))?;
        }
        Ok(Templates {
            env,
            files: files.to_vec(),
        })
    }

    /// Reads the template files again (SIGHUP).
    pub fn reload(&self) -> Result<Templates, String> {
        Templates::load(&self.files)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.files.iter().map(|(n, _)| n.as_str())
    }

    pub fn has(&self, name: &str) -> bool {
        self.files.iter().any(|(n, _)| n == name)
    }

    /// Renders a template with a context of its own (the filters, without the functions).
    #[cfg(test)]
    pub fn render_with(&self, name: &str, ctx: Value) -> Result<String, Error> {
        self.env.get_template(name)?.render(ctx)
    }

    /// Renders a template from what is known.
    pub fn render(&self, name: &str, source: &Source, known: Arc<Known>) -> Rendering {
        let template = match self.env.get_template(name) {
            Ok(t) => t,
            Err(_) => {
                return Rendering::Failed(Failed {
                    message: format!("template {name}: not loaded"),
                    error: crate::error::Error::NotFound,
                })
            }
        };
        let scope = Arc::new(Scope {
            source: source.clone(),
            known,
            state: Mutex::default(),
        });
        let ctx = minijinja::context! { __ssmfs_scope => Value::from_dyn_object(scope.clone()) };
        let result = template.render(ctx);
        let state = std::mem::take(&mut *scope.state.lock().unwrap());
        if !state.missing.is_empty() {
            return Rendering::Missing(state.missing);
        }
        match result {
            Ok(text) => Rendering::Done {
                text,
                used: state.used,
                secret: state.secret,
            },
            Err(e) => Rendering::Failed(state.failed.unwrap_or_else(|| Failed {
                message: describe(name, None, &e),
                error: crate::error::Error::Render,
            })),
        }
    }
}

/// An engine error as a message: template, file, line and kind. The detail is shown only for
/// syntax errors, which are about the template's text; the detail of an error while rendering
/// could quote a value.
fn describe(name: &str, file: Option<&Path>, e: &Error) -> String {
    let mut out = format!("template {name}");
    if let Some(file) = file {
        out.push_str(&format!(" ({})", file.display()));
    }
    if let Some(line) = e.line() {
        out.push_str(&format!(", line {line}"));
    }
    out.push_str(&format!(": {}", e.kind()));
    if e.kind() == ErrorKind::SyntaxError {
        if let Some(detail) = e.detail() {
            out.push_str(&format!(": {detail}"));
        }
    }
    out
}

/// What one render can read, and what it read.
struct Scope {
    source: Source,
    known: Arc<Known>,
    state: Mutex<ScopeState>,
}

#[derive(Default)]
struct ScopeState {
    used: Vec<Input>,
    missing: Vec<Input>,
    secret: bool,
    /// The first failure of a function, with the path it concerned.
    failed: Option<Failed>,
}

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Scope")
    }
}

impl Object for Scope {}

fn scope(state: &State) -> Result<Arc<Scope>, Error> {
    state
        .lookup(SCOPE)
        .and_then(|v| v.downcast_object::<Scope>())
        .ok_or_else(|| Error::new(ErrorKind::InvalidOperation, "called outside a render"))
}

impl Scope {
    /// Looks an input up: its value, or a placeholder while it is missing.
    fn get(&self, input: Input) -> Result<Option<Resolved>, crate::error::Error> {
        let mut state = self.state.lock().unwrap();
        if !state.used.contains(&input) {
            state.used.push(input.clone());
        }
        match self.known.get(&input) {
            None => {
                if !state.missing.contains(&input) {
                    state.missing.push(input);
                }
                Ok(None)
            }
            Some(Ok(resolved)) => {
                let secret = match resolved {
                    Resolved::Param(leaf) => leaf.secret,
                    Resolved::Dir(leaves) => leaves.iter().any(|l| l.secret),
                };
                state.secret |= secret;
                Ok(Some(resolved.clone()))
            }
            Some(Err(e)) => Err(e.clone()),
        }
    }

    /// Records a function's failure and makes the engine's error for it.
    fn fail(&self, message: String, error: crate::error::Error) -> Error {
        let mut state = self.state.lock().unwrap();
        state.failed.get_or_insert(Failed {
            message: message.clone(),
            error,
        });
        Error::new(ErrorKind::InvalidOperation, message)
    }
}

/// `param()` and `secret()`.
fn read(state: &State, path: &str, default: Option<Value>, objects: bool) -> Result<Value, Error> {
    let scope = scope(state)?;
    let what = if objects { "secret" } else { "parameter" };
    let fail = |message: String, error| {
        let message = format!("template {}: {message}", state.name());
        scope.fail(message, error)
    };
    let (rel, selector) = parse_path(&scope.source, path, true).map_err(|why| {
        fail(
            // The argument is not echoed: a template could compute it from a value.
            format!("{what}(): the path given is {why}"),
            crate::error::Error::Render,
        )
    })?;
    let input = Input::Param {
        path: rel,
        selector,
    };
    match scope.get(input) {
        Ok(Some(Resolved::Param(leaf))) => match leaf.unusable() {
            None => Ok(leaf_value(&leaf, objects)),
            Some(why) => Err(fail(format!("{what} {why}"), unusable_error(&leaf))),
        },
        Ok(Some(Resolved::Dir(_))) => unreachable!("a parameter input resolves to a parameter"),
        // Missing: the render is done again once it is resolved.
        Ok(None) => Ok(Value::from("")),
        Err(crate::error::Error::NotFound) => match default {
            Some(d) => Ok(d),
            None => Err(fail(
                format!("{what} {path} not found"),
                crate::error::Error::Render,
            )),
        },
        Err(e) => Err(fail(format!("{what} {path}: {e}"), e)),
    }
}

/// `dir()`.
fn read_dir(state: &State, path: &str) -> Result<Value, Error> {
    let scope = scope(state)?;
    let fail = |message: String, error| {
        let message = format!("template {}: {message}", state.name());
        scope.fail(message, error)
    };
    let (rel, _) = parse_path(&scope.source, path, false).map_err(|why| {
        fail(
            format!("dir(): the path given is {why}"),
            crate::error::Error::Render,
        )
    })?;
    match scope.get(Input::Dir(rel)) {
        Ok(Some(Resolved::Dir(leaves))) => match tree_value(&leaves) {
            Ok(v) => Ok(from_json(v)),
            Err(why) => {
                let error = leaves
                    .iter()
                    .find(|l| l.unusable().is_some())
                    .map_or(crate::error::Error::Render, unusable_error);
                Err(fail(format!("directory {path}: {why}"), error))
            }
        },
        Ok(Some(Resolved::Param(_))) => unreachable!("a directory input resolves to a directory"),
        Ok(None) => Ok(Value::from_iter(Vec::<Value>::new())),
        Err(crate::error::Error::NotFound) => Err(fail(
            format!("directory {path} not found"),
            crate::error::Error::Render,
        )),
        Err(e) => Err(fail(format!("directory {path}: {e}"), e)),
    }
}

/// The error a file reads when a value it needs cannot be rendered.
pub fn unusable_error(leaf: &Leaf) -> crate::error::Error {
    match &leaf.unreadable {
        Some(code) => {
            crate::error::Error::Backend(crate::backend::BackendError::AccessDenied(code.clone()))
        }
        None => crate::error::Error::Render,
    }
}

/// A value as a template sees it.
fn leaf_value(leaf: &Leaf, objects: bool) -> Value {
    if leaf.list {
        return leaf.items().into_iter().map(Value::from).collect();
    }
    match leaf.json(objects) {
        serde_json::Value::String(s) => Value::from(s),
        other => from_json(other),
    }
}

pub(crate) fn from_json(v: serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::from(()),
        serde_json::Value::Bool(b) => Value::from(b),
        serde_json::Value::Number(n) => n
            .as_i64()
            .map(Value::from)
            .or_else(|| n.as_u64().map(Value::from))
            .or_else(|| n.as_f64().map(Value::from))
            .unwrap_or_else(|| Value::from(n.to_string())),
        serde_json::Value::String(s) => Value::from(s),
        serde_json::Value::Array(items) => items.into_iter().map(from_json).collect(),
        serde_json::Value::Object(map) => Value::from(
            map.into_iter()
                .map(|(k, v)| (Value::from(k), from_json(v)))
                .collect::<BTreeMap<Value, Value>>(),
        ),
    }
}

/// A path a template names, as (path relative to the source, selector). SSM paths may be
/// absolute if they are inside the source; `""` is the source itself (for `dir()`).
pub fn parse_path(
    source: &Source,
    path: &str,
    selectors: bool,
) -> Result<(String, Option<String>), &'static str> {
    let (base, selector) = match path.rsplit_once(SELECTOR) {
        Some((base, sel)) if selectors && !sel.contains('/') => {
            if source.selector(sel).is_none() {
                return Err("not a version or label");
            }
            (base, Some(sel.to_string()))
        }
        Some(_) => return Err("a ':' is allowed only before a version or label"),
        None => (path, None),
    };
    let rel = if source.dialect == Dialect::Ssm && base.starts_with('/') {
        if base.trim_end_matches('/') == source.full_name("").trim_end_matches('/') {
            ""
        } else {
            source.relative(base).ok_or("outside the mounted path")?
        }
    } else {
        base
    };
    if rel.is_empty() {
        return if selector.is_none() && !selectors {
            Ok((String::new(), None))
        } else {
            Err("names no parameter")
        };
    }
    if !rel.split('/').all(|c| source.is_component(c)) || !source.fits(rel) {
        return Err("not a name the service can hold");
    }
    Ok((rel.to_string(), selector))
}
