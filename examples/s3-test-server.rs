//! A standalone S3 server for benchmarks and manual runs: `s3s-fs` on a directory, served
//! with hyper on a loopback address, with fixed credentials and the bucket created.
//!
//! ```text
//! cargo run --release --example s3-test-server -- --listen 127.0.0.1:9000 --dir /tmp/s3 \
//!     [--bucket fleet-video] [--access-key KEY] [--secret-key SECRET]
//! ```
//!
//! Prints `s3-test-server serving on http://ADDR` once it accepts connections and runs
//! until killed. Objects are plain files `DIR/BUCKET/KEY`.

use std::net::SocketAddr;
use std::path::PathBuf;

use hyper_util::rt::TokioIo;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use tokio::net::TcpListener;

/// Same credentials as the integration tests (`tests/common/s3.rs`).
const ACCESS_KEY: &str = "AKIATESTQUCAMOFFLOAD";
const SECRET_KEY: &str = "test-secret-key-for-qucam-offload-only";

struct Args {
    listen: SocketAddr,
    dir: PathBuf,
    bucket: String,
    access_key: String,
    secret_key: String,
}

fn parse_args() -> Result<Args, String> {
    let mut listen: SocketAddr = "127.0.0.1:9000".parse().expect("default address");
    let mut dir = None;
    let mut bucket = "fleet-video".to_owned();
    let mut access_key = ACCESS_KEY.to_owned();
    let mut secret_key = SECRET_KEY.to_owned();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => listen = value()?.parse().map_err(|e| format!("--listen: {e}"))?,
            "--dir" => dir = Some(PathBuf::from(value()?)),
            "--bucket" => bucket = value()?,
            "--access-key" => access_key = value()?,
            "--secret-key" => secret_key = value()?,
            "-h" | "--help" => {
                return Err("usage: s3-test-server --dir DIR [--listen 127.0.0.1:9000] \
                            [--bucket NAME] [--access-key KEY] [--secret-key SECRET]"
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
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("s3-test-server: {e}");
            std::process::exit(2);
        }
    };
    std::fs::create_dir_all(args.dir.join(&args.bucket))?;
    let root = args.dir.canonicalize()?;
    let fs = s3s_fs::FileSystem::new(&root)?;
    let mut builder = S3ServiceBuilder::new(fs);
    builder.set_auth(SimpleAuth::from_single(args.access_key, args.secret_key));
    let service = builder.build();

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
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(socket), service)
                .await;
        });
    }
}
