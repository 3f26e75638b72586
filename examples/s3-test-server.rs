//! A standalone S3 server for benchmarks and manual runs: `s3s-fs` on a directory, served
//! with hyper on a loopback address, with fixed credentials and the bucket created.
//!
//! ```text
//! cargo run --release --example s3-test-server -- --listen 127.0.0.1:9000 --dir /tmp/s3 \
//!     [--bucket fleet-video] [--access-key KEY] [--secret-key SECRET] [--bandwidth BYTES]
//! ```
//!
//! `--bandwidth` caps the request body bytes the server takes in, per second, over all
//! connections together (an emulated uplink, as `qucam-sim --bandwidth` is a camera link).
//! Prints `s3-test-server serving on http://ADDR` once it accepts connections and runs
//! until killed. Objects are plain files `DIR/BUCKET/KEY`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use s3s::auth::SimpleAuth;
use s3s::service::{S3Service, S3ServiceBuilder};
use tokio::net::TcpListener;
use tokio::time::{Instant, Sleep};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Same credentials as the integration tests (`tests/common/s3.rs`).
const ACCESS_KEY: &str = "AKIATESTQUCAMOFFLOAD";
const SECRET_KEY: &str = "test-secret-key-for-qucam-offload-only";

struct Args {
    listen: SocketAddr,
    dir: PathBuf,
    bucket: String,
    access_key: String,
    secret_key: String,
    /// Request body bytes per second over all connections; `None`: unlimited.
    bandwidth: Option<u64>,
}

fn parse_args() -> Result<Args, String> {
    let mut listen: SocketAddr = "127.0.0.1:9000".parse().expect("default address");
    let mut dir = None;
    let mut bucket = "fleet-video".to_owned();
    let mut access_key = ACCESS_KEY.to_owned();
    let mut secret_key = SECRET_KEY.to_owned();
    let mut bandwidth = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => listen = value()?.parse().map_err(|e| format!("--listen: {e}"))?,
            "--dir" => dir = Some(PathBuf::from(value()?)),
            "--bucket" => bucket = value()?,
            "--access-key" => access_key = value()?,
            "--secret-key" => secret_key = value()?,
            "--bandwidth" => {
                let b: u64 = value()?.parse().map_err(|e| format!("--bandwidth: {e}"))?;
                bandwidth = (b > 0).then_some(b);
            }
            "-h" | "--help" => {
                return Err("usage: s3-test-server --dir DIR [--listen 127.0.0.1:9000] \
                            [--bucket NAME] [--access-key KEY] [--secret-key SECRET] \
                            [--bandwidth BYTES_PER_SEC]"
                    .into());
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    let dir = dir.ok_or("--dir is required")?;
    Ok(Args {
        listen,
        dir,
        bucket,
        access_key,
        secret_key,
        bandwidth,
    })
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("s3-test-server: {e}");
            std::process::exit(2);
        }
    };
    std::fs::create_dir_all(args.dir.join(&args.bucket))?;
    let root = args.dir.canonicalize()?;
    let fs = s3s_fs::FileSystem::new(&root).map_err(|e| format!("s3s-fs: {e:?}"))?;
    let mut builder = S3ServiceBuilder::new(fs);
    builder.set_auth(SimpleAuth::from_single(args.access_key, args.secret_key));
    let service = builder.build();

    let link: Link = Arc::new(Mutex::new(Instant::now()));
    let bandwidth = args.bandwidth;
    let listener = TcpListener::bind(args.listen).await?;
    println!(
        "s3-test-server serving on http://{}",
        listener.local_addr()?
    );
    loop {
        let (socket, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("s3-test-server: accept: {e}");
                continue;
            }
        };
        let service = service.clone();
        let link = link.clone();
        tokio::spawn(async move {
            let handler = hyper::service::service_fn(move |req| {
                handle(req, service.clone(), link.clone(), bandwidth)
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(socket), handler)
                .await;
        });
    }
}

async fn handle(
    req: Request<Incoming>,
    service: S3Service,
    link: Link,
    bandwidth: Option<u64>,
) -> Result<Response<s3s::Body>, BoxError> {
    let req = match bandwidth {
        None => req.map(s3s::Body::from),
        Some(bps) => req.map(|inner| {
            s3s::Body::http_body_unsync(Throttled {
                inner,
                link,
                bps,
                wait: None,
            })
        }),
    };
    Ok(service.call(req).await?)
}

/// When the shared link is next free: every body chunk books its transfer time on it.
type Link = Arc<Mutex<Instant>>;

/// How far behind schedule the link may fall and still catch up (timer lateness), without
/// letting an idle link save up a long burst.
const SLACK: Duration = Duration::from_millis(50);

/// A request body that takes at most `bps` bytes per second, together with every other
/// body booked on the same link: after each chunk, the next read waits for the link.
struct Throttled {
    inner: Incoming,
    link: Link,
    bps: u64,
    wait: Option<Pin<Box<Sleep>>>,
}

impl HttpBody for Throttled {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        if let Some(wait) = &mut this.wait {
            if wait.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            this.wait = None;
        }
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            let now = Instant::now();
            let mut next = this.link.lock().expect("link lock");
            let start = (*next).max(now.checked_sub(SLACK).unwrap_or(now));
            *next = start + Duration::from_secs_f64(data.len() as f64 / this.bps as f64);
            this.wait = Some(Box::pin(tokio::time::sleep_until(*next)));
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.wait.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
