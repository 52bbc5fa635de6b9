//! A fault-injecting HTTP proxy between ssmfs and moto, owned by the tests: it forwards each
//! request (one per connection) and can rewrite the response of an operation, named by its
//! `X-Amz-Target` header.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

type Rewrite = Box<dyn Fn(&str, Vec<u8>) -> Vec<u8> + Send + Sync>;

/// What the proxy does besides forwarding.
#[derive(Default)]
struct Faults {
    rewrite: Option<Rewrite>,
    /// Answer every n-th request with this status and JSON body instead of forwarding it.
    fail_every: Option<(u64, u16, String)>,
    /// Hold every request this long before forwarding it.
    delay: Option<Duration>,
    /// Turn moto's XML error answers into AWS's JSON ones.
    aws_errors: bool,
}

#[derive(Default)]
struct Shared {
    faults: Mutex<Faults>,
    requests: AtomicU64,
    in_flight: AtomicU64,
    /// Signalled whenever a request comes in and whenever one has been answered.
    answered: (Mutex<()>, std::sync::Condvar),
}

pub struct Proxy {
    pub port: u16,
    shared: Arc<Shared>,
}

impl Proxy {
    /// Starts forwarding a free loopback port to `upstream` (a port on 127.0.0.1).
    pub fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared::default());
        let for_thread = shared.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let shared = for_thread.clone();
                std::thread::spawn(move || {
                    {
                        let _lock = shared.answered.0.lock().unwrap();
                        shared.in_flight.fetch_add(1, Ordering::SeqCst);
                        shared.answered.1.notify_all();
                    }
                    let _ = serve(client, upstream, &shared);
                    let _lock = shared.answered.0.lock().unwrap();
                    shared.in_flight.fetch_sub(1, Ordering::SeqCst);
                    shared.answered.1.notify_all();
                });
            }
        });
        Proxy { port, shared }
    }

    /// Answers every n-th request with `status` and a JSON error of type `error_type`.
    pub fn fail_every(&self, n: u64, status: u16, error_type: &str) {
        let body = format!(r#"{{"__type":"{error_type}","message":"injected by the test proxy"}}"#);
        self.shared.faults.lock().unwrap().fail_every = Some((n, status, body));
    }

    /// Holds every request for `delay` before forwarding it (`None`: no delay).
    pub fn delay(&self, delay: Option<Duration>) {
        self.shared.faults.lock().unwrap().delay = delay;
    }

    /// Answers errors as AWS does on the JSON protocols (`__type` in a JSON body), where moto
    /// sends some (IAM's, for a bad key or a missing permission) as XML that the SDK cannot read.
    pub fn aws_errors(&self) {
        self.shared.faults.lock().unwrap().aws_errors = true;
    }

    /// Returns once no request is in flight: every request received has been answered.
    pub fn wait_idle(&self) {
        let (lock, answered) = &self.shared.answered;
        let guard = lock.lock().unwrap();
        let (_guard, timeout) = answered
            .wait_timeout_while(guard, Duration::from_secs(30), |_| self.in_flight() > 0)
            .unwrap();
        assert!(!timeout.timed_out(), "requests still in flight after 30 s");
    }

    /// Returns once at least `n` requests are in flight (received, not yet answered).
    pub fn wait_in_flight(&self, n: u64) {
        let (lock, changed) = &self.shared.answered;
        let guard = lock.lock().unwrap();
        let (_guard, timeout) = changed
            .wait_timeout_while(guard, Duration::from_secs(30), |_| self.in_flight() < n)
            .unwrap();
        assert!(
            !timeout.timed_out(),
            "fewer than {n} requests in flight after 30 s"
        );
    }

    /// Requests received so far.
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Requests received and not yet answered.
    pub fn in_flight(&self) -> u64 {
        self.shared.in_flight.load(Ordering::SeqCst)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Rewrites every response body: `f(target, body)` returns the body to send.
    pub fn rewrite(&self, f: impl Fn(&str, Vec<u8>) -> Vec<u8> + Send + Sync + 'static) {
        self.shared.faults.lock().unwrap().rewrite = Some(Box::new(f));
    }
}

/// Reads one HTTP message head (up to the blank line) and the body its Content-Length gives.
fn read_message(reader: &mut impl BufRead) -> std::io::Result<Option<(Vec<String>, Vec<u8>)>> {
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        let line = line.trim_end().to_string();
        if line.is_empty() {
            break;
        }
        head.push(line);
    }
    let len = head
        .iter()
        .find_map(|h| {
            let (k, v) = h.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;
    Ok(Some((head, body)))
}

fn header<'a>(head: &'a [String], name: &str) -> Option<&'a str> {
    head.iter().find_map(|h| {
        let (k, v) = h.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn write_message(out: &mut impl Write, head: &[String], body: &[u8]) -> std::io::Result<()> {
    let mut text = String::new();
    for (i, h) in head.iter().enumerate() {
        let skip = i > 0
            && ["content-length", "connection", "transfer-encoding"]
                .iter()
                .any(|n| h.to_ascii_lowercase().starts_with(&format!("{n}:")));
        if !skip {
            text.push_str(h);
            text.push_str("\r\n");
        }
    }
    text.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    out.write_all(text.as_bytes())?;
    out.write_all(body)?;
    out.flush()
}

fn serve(client: TcpStream, upstream: u16, shared: &Shared) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let Some((head, body)) = read_message(&mut reader)? else {
        return Ok(());
    };
    let n = shared.requests.fetch_add(1, Ordering::SeqCst) + 1;
    let target = header(&head, "x-amz-target").unwrap_or("").to_string();
    let (delay, failure) = {
        let faults = shared.faults.lock().unwrap();
        let failure = faults
            .fail_every
            .as_ref()
            .filter(|(every, _, _)| n % every == 0)
            .map(|(_, status, body)| (*status, body.clone()));
        (faults.delay, failure)
    };
    if let Some(delay) = delay {
        std::thread::sleep(delay);
    }
    let mut client = client;
    if let Some((status, body)) = failure {
        let head = vec![
            format!("HTTP/1.1 {status} Injected"),
            "Content-Type: application/x-amz-json-1.1".to_string(),
        ];
        return write_message(&mut client, &head, body.as_bytes());
    }
    let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
    write_message(&mut up, &head, &body)?;
    let mut up_reader = BufReader::new(up);
    let Some((resp_head, resp_body)) = read_message(&mut up_reader)? else {
        return Ok(());
    };
    let faults = shared.faults.lock().unwrap();
    let resp_body = match faults.rewrite.as_ref() {
        Some(f) => f(&target, resp_body),
        None => resp_body,
    };
    if faults.aws_errors {
        if let Some((head, body)) = as_aws_error(&resp_head, &resp_body) {
            return write_message(&mut client, &head, &body);
        }
    }
    drop(faults);
    write_message(&mut client, &resp_head, &resp_body)
}

/// An XML error answer (`<Code>`, `<Message>`) as AWS's JSON protocols send it.
fn as_aws_error(head: &[String], body: &[u8]) -> Option<(Vec<String>, Vec<u8>)> {
    let status: u16 = head.first()?.split_whitespace().nth(1)?.parse().ok()?;
    let text = std::str::from_utf8(body).ok()?;
    let field = |name: &str| {
        let open = format!("<{name}>");
        let start = text.find(&open)? + open.len();
        let end = text[start..].find(&format!("</{name}>"))? + start;
        Some(text[start..end].to_string())
    };
    if status < 400 {
        return None;
    }
    let code = field("Code")?;
    let message = field("Message").unwrap_or_default();
    let mut head: Vec<String> = head
        .iter()
        .filter(|h| !h.to_ascii_lowercase().starts_with("content-type:"))
        .cloned()
        .collect();
    head.push("Content-Type: application/x-amz-json-1.1".to_string());
    head.push(format!("X-Amzn-ErrorType: {code}"));
    let body = serde_json::json!({"__type": code, "message": message});
    Some((head, body.to_string().into_bytes()))
}
