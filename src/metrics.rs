//! `--metrics-addr`: the figures of `.stats` over HTTP at `/metrics`, in the OpenMetrics text
//! format that Prometheus scrapes.
//!
//! Promises: the listener is bound before the mount is reported ready, so that a taken port is a
//! start-up error; every request is answered from memory and never calls AWS; nothing but
//! `GET /metrics` (and `/`) is served.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tracing::debug;

/// How long to wait after a failed accept before the next.
const ACCEPT_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Renders the current figures.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// Binds `addr`. Call within the runtime.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr).await.map_err(|e| {
        format!("--metrics-addr {addr}: cannot listen ({e}); choose a free port or another address")
    })
}

/// Serves scrapes until the runtime shuts down.
pub async fn serve(listener: TcpListener, render: Render) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of descriptors, most likely: pause instead of spinning on the error.
                debug!(error = %err, "metrics: accept failed");
                tokio::time::sleep(ACCEPT_PAUSE).await;
                continue;
            }
        };
        let render = render.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| answer(req, render.clone()));
            if let Err(err) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                debug!(%peer, error = %err, "metrics connection ended");
            }
        });
    }
}

async fn answer(
    req: Request<hyper::body::Incoming>,
    render: Render,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let response = match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/metrics" | "/") => Response::builder()
            .header(hyper::header::CONTENT_TYPE, CONTENT_TYPE)
            .body(Full::new(Bytes::from(render()))),
        (&Method::GET | &Method::HEAD, _) => Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Full::new(Bytes::from_static(b"see /metrics\n"))),
        _ => Response::builder()
            .status(StatusCode::METHOD_NOT_ALLOWED)
            .header(hyper::header::ALLOW, "GET, HEAD")
            .body(Full::new(Bytes::new())),
    };
    Ok(response.expect("a valid response"))
}
