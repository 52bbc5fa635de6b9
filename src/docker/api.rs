//! Docker's volume plugin protocol (the legacy plugin API): a JSON body in, a JSON body out, for
//! each of `/Plugin.Activate`, `/VolumeDriver.Create`, `Remove`, `Mount`, `Unmount`, `Path`,
//! `Get`, `List` and `Capabilities`. A failure is an `Err` string in an answer of status 200,
//! which `docker` shows as it is. This module knows the wire shapes and nothing of HTTP.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tracing::{debug, info, warn};

use super::volumes::{Mounter, Shown, Volumes};

/// The media type of the plugin API's bodies.
pub const CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1.2+json";

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Named {
    name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Create {
    name: String,
    #[serde(default)]
    opts: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct MountRequest {
    name: String,
    #[serde(rename = "ID", default)]
    id: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct VolumeOut {
    name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    mountpoint: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    created_at: String,
    status: BTreeMap<&'static str, Value>,
}

impl From<Shown> for VolumeOut {
    fn from(shown: Shown) -> Self {
        VolumeOut {
            name: shown.name,
            mountpoint: mountpoint(shown.mountpoint),
            created_at: shown.created_at,
            status: BTreeMap::from([
                ("source", json!(shown.source)),
                ("containers", json!(shown.containers)),
            ]),
        }
    }
}

fn mountpoint(at: Option<PathBuf>) -> String {
    at.map(|p| p.display().to_string()).unwrap_or_default()
}

/// Answers one call: `path` is the URL path, `body` the request's JSON. Never fails: an error is
/// the answer's `Err`. The call runs to its end even if Docker stops waiting for it, so that a
/// mount it started is counted (or its failure logged) rather than left half done.
pub async fn answer<M: Mounter>(volumes: &Arc<Volumes<M>>, path: &str, body: &[u8]) -> Value {
    let (volumes, owned_path, owned_body) = (volumes.clone(), path.to_string(), body.to_vec());
    let outcome = tokio::spawn(async move { call(&volumes, &owned_path, &owned_body).await })
        .await
        .unwrap_or_else(|e| Err(format!("the call failed: {e}")));
    match outcome {
        Ok(value) => value,
        Err(err) => {
            let err = in_volume_words(&err);
            let volume = serde_json::from_slice::<Named>(body).ok().map(|n| n.name);
            // dockerd asks every driver for a name before it creates a volume: not an event.
            if path == "/VolumeDriver.Get" {
                debug!(volume = volume.as_deref(), call = path, "{err}");
            } else {
                warn!(volume = volume.as_deref(), call = path, "{err}");
            }
            json!({ "Err": err })
        }
    }
}

/// ssmfs's messages name its command-line options (`--max-age`, clap's `'--uid <UID>'`); the
/// user of a volume gives them as `-o max_age`, `-o uid=<UID>`. Other words are left as they
/// are: the plugin's own `--allow-option`, and a `--` within a word, as in a value the user
/// gave (`x=--region`, `/a/--b`).
pub fn in_volume_words(message: &str) -> String {
    use clap::CommandFactory;
    let command = crate::mount::cli::Cli::command();
    let is_option = |name: &str| {
        !matches!(name, "help" | "version")
            && command.get_arguments().any(|a| a.get_long() == Some(name))
    };
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find("--") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .unwrap_or(after.len());
        let name = &after[..len];
        let starts_word = out.is_empty() || out.ends_with([' ', '\'', '(', '`']);
        if !(starts_word && is_option(name)) {
            out.push_str("--");
            rest = after;
            continue;
        }
        out.push_str("-o ");
        out.push_str(&name.replace('-', "_"));
        rest = &after[len..];
        // clap's value name: '--uid <UID>'.
        if let Some((value, after)) = rest.strip_prefix(" <").and_then(|v| v.split_once('>')) {
            if !value.is_empty() && !value.contains(char::is_whitespace) {
                out.push_str(&format!("=<{value}>"));
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

async fn call<M: Mounter>(volumes: &Volumes<M>, path: &str, body: &[u8]) -> Result<Value, String> {
    fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, String> {
        serde_json::from_slice(body).map_err(|e| format!("malformed request: {e}"))
    }
    Ok(match path {
        "/Plugin.Activate" => json!({ "Implements": ["VolumeDriver"] }),
        "/VolumeDriver.Capabilities" => json!({ "Capabilities": { "Scope": "local" } }),
        "/VolumeDriver.Create" => {
            let req: Create = parse(body)?;
            volumes
                .create(&req.name, req.opts.unwrap_or_default())
                .await?;
            info!(volume = %req.name, "created");
            json!({ "Err": "" })
        }
        "/VolumeDriver.Remove" => {
            let req: Named = parse(body)?;
            volumes.remove(&req.name).await?;
            info!(volume = %req.name, "removed");
            json!({ "Err": "" })
        }
        "/VolumeDriver.Mount" => {
            let req: MountRequest = parse(body)?;
            let at = volumes.mount(&req.name, &req.id).await?;
            json!({ "Mountpoint": at.display().to_string(), "Err": "" })
        }
        "/VolumeDriver.Unmount" => {
            let req: MountRequest = parse(body)?;
            volumes.unmount(&req.name, &req.id).await?;
            json!({ "Err": "" })
        }
        "/VolumeDriver.Path" => {
            let req: Named = parse(body)?;
            let at = volumes.path(&req.name).await?;
            json!({ "Mountpoint": mountpoint(at), "Err": "" })
        }
        "/VolumeDriver.Get" => {
            let req: Named = parse(body)?;
            let volume = VolumeOut::from(volumes.get(&req.name).await?);
            json!({ "Volume": volume, "Err": "" })
        }
        "/VolumeDriver.List" => {
            let list: Vec<VolumeOut> = volumes.list().await.into_iter().map(Into::into).collect();
            json!({ "Volumes": list, "Err": "" })
        }
        _ => return Err(format!("ssmfs does not answer {path}")),
    })
}

#[cfg(test)]
mod tests {
    use super::in_volume_words;

    #[test]
    fn messages_name_options_as_a_volume_takes_them() {
        assert_eq!(
            in_volume_words(
                "cannot reach http://x: refused; check --endpoint-url, --region and the network"
            ),
            "cannot reach http://x: refused; check -o endpoint_url, -o region and the network"
        );
        assert_eq!(
            in_volume_words("invalid value 'abc' for '--uid <UID>': invalid digit found in string"),
            "invalid value 'abc' for '-o uid=<UID>': invalid digit found in string"
        );
        assert_eq!(
            in_volume_words("'--max-age-for <PATH=SECONDS>' is wrong, see --max-age"),
            "'-o max_age_for=<PATH=SECONDS>' is wrong, see -o max_age"
        );
        assert_eq!(
            in_volume_words("see --region <a b> here"),
            "see -o region <a b> here"
        );
        // Not ssmfs's mount options: left alone.
        for kept in [
            "start it with --allow-option on_change to accept it",
            "use the long options of ssmfs --help without their dashes",
            "a value such as x--region or --nonsense",
            "unknown mount option 'x=--region': use the long options",
            "no such path /a/--region",
            "ends with --",
        ] {
            assert_eq!(in_volume_words(kept), kept);
        }
    }
}
