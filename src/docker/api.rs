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
    let (volumes, owned_path, body) = (volumes.clone(), path.to_string(), body.to_vec());
    let outcome = tokio::spawn(async move { call(&volumes, &owned_path, &body).await })
        .await
        .unwrap_or_else(|e| Err(format!("the call failed: {e}")));
    match outcome {
        Ok(value) => value,
        Err(err) => {
            // dockerd asks every driver for a name before it creates a volume: not an event.
            if path == "/VolumeDriver.Get" {
                debug!(call = path, "{err}");
            } else {
                warn!(call = path, "{err}");
            }
            json!({ "Err": err })
        }
    }
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
