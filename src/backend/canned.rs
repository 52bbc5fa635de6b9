//! For unit tests: a loopback HTTP server that answers every request with one canned response,
//! and an SDK configuration pointed at it, so that the real SDK turns that response into the
//! error it would really produce (the variant, the parsed code) without AWS or moto.

use aws_credential_types::provider::SharedCredentialsProvider;
use aws_credential_types::Credentials;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A running canned server; it stops with the test's runtime.
pub struct Canned {
    pub config: aws_config::SdkConfig,
}

impl Canned {
    /// Answers every request with `status`, `headers` and `body`, on a fresh loopback port.
    pub async fn start(status: u16, headers: &[(&str, &str)], body: &str) -> Canned {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let mut response = format!("HTTP/1.1 {status} Canned\r\n");
        for (k, v) in headers {
            response.push_str(&format!("{k}: {v}\r\n"));
        }
        response.push_str(&format!(
            "Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ));
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let response = response.clone();
                tokio::spawn(async move {
                    read_request(&mut conn).await;
                    let _ = conn.write_all(response.as_bytes()).await;
                    let _ = conn.shutdown().await;
                });
            }
        });
        let config = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(url)
            .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
                "test", "test", None, None, "canned",
            )))
            // As in the daemon: retries are ssmfs's own.
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .build();
        Canned { config }
    }
}

/// Reads one request: the head, then as many body bytes as its Content-Length says.
async fn read_request(conn: &mut tokio::net::TcpStream) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let Ok(n) = conn.read(&mut buf).await else {
            return;
        };
        if n == 0 {
            return;
        }
        got.extend_from_slice(&buf[..n]);
        let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if got.len() >= end + 4 + len {
            return;
        }
    }
}
