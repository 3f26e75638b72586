//! The second S3 implementation of the tests: `moto_server` (PyPI `moto[server]`, the version
//! pinned in `scripts/test`), one child process per [`super::s3::TestS3`] on 127.0.0.1, killed
//! when the test server is dropped. `scripts/test` installs it in a virtualenv and names the
//! executable in `QUCAM_TEST_MOTO`; without that variable a test that needs moto fails with a
//! message naming `scripts/test` (never skips).
//!
//! Also: [`Store`] (which implementation a test runs on) and [`crate::on_both_stores`], which
//! declares a test once per store (`NAME::s3s_fs`, `NAME::moto`).
#![allow(dead_code)]

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::Response;
use hyper::header::{CONNECTION, CONTENT_LENGTH, EXPECT, HOST, TRANSFER_ENCODING};

use super::s3::client_for;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The environment variable naming the `moto_server` executable (set by `scripts/test`).
pub const MOTO_ENV: &str = "QUCAM_TEST_MOTO";

/// An S3 implementation the tests run against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    /// `s3s-fs`, in-process (a crate).
    S3sFs,
    /// `moto_server`, a child process.
    Moto,
}

impl Store {
    pub const ALL: [Store; 2] = [Store::S3sFs, Store::Moto];
}

/// Declares the async test `NAME(store: Store)` once per store, as `NAME::s3s_fs` and
/// `NAME::moto`, each under the given test attribute (e.g. `#[tokio::test]`). After
/// `moto:` come the attributes of the moto variant instead (to add an `#[ignore = "why"]`
/// where moto's behaviour differs; say why at the call site too).
#[macro_export]
macro_rules! on_both_stores {
    (#[$test:meta] $name:ident) => {
        $crate::on_both_stores!(#[$test] $name, moto: #[$test]);
    };
    (#[$test:meta] $name:ident, moto: $(#[$moto:meta])*) => {
        mod $name {
            #[$test]
            async fn s3s_fs() {
                super::$name($crate::common::moto::Store::S3sFs).await
            }
            $(#[$moto])*
            async fn moto() {
                super::$name($crate::common::moto::Store::Moto).await
            }
        }
    };
}

/// A running `moto_server`; killed (and reaped) when dropped.
pub struct Moto {
    /// `http://127.0.0.1:PORT` of moto itself (past the fault layer).
    pub endpoint: String,
    child: Child,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    /// Starts `moto_server` on a free loopback port (it binds port 0 and prints the port it
    /// got), waits until it answers, and creates `bucket`.
    pub async fn start(bucket: &str) -> Moto {
        let exe = std::env::var_os(MOTO_ENV).unwrap_or_else(|| {
            panic!(
                "{MOTO_ENV} is not set: this test runs against moto_server too. Run the tests \
                 with `scripts/test` (it installs moto[server] in a virtualenv and sets \
                 {MOTO_ENV}), e.g. `scripts/test --test upload_s3`"
            )
        });
        let moto = tokio::task::spawn_blocking(move || spawn(&exe))
            .await
            .expect("moto start task");
        let client = client_for(&moto.endpoint);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match client.create_bucket().bucket(bucket).send().await {
                Ok(_) => return moto,
                Err(e) if Instant::now() > deadline => {
                    panic!("moto_server at {} does not answer: {e:?}", moto.endpoint)
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Upload ids of multipart uploads created and neither completed nor aborted, sorted.
    pub async fn incomplete_multipart(&self, bucket: &str) -> Vec<String> {
        let out = client_for(&self.endpoint)
            .list_multipart_uploads()
            .bucket(bucket)
            .send()
            .await
            .expect("ListMultipartUploads from moto");
        let mut ids: Vec<String> = out
            .uploads()
            .iter()
            .filter_map(|u| u.upload_id().map(str::to_owned))
            .collect();
        ids.sort();
        ids
    }
}

/// The stored bytes of an object in moto at `endpoint`, if it exists.
pub fn object_bytes(endpoint: &str, bucket: &str, key: &str) -> Option<Vec<u8>> {
    let (endpoint, bucket, key) = (endpoint.to_owned(), bucket.to_owned(), key.to_owned());
    blocking(move || async move {
        let out = client_for(&endpoint)
            .get_object()
            .bucket(&bucket)
            .key(&key)
            .send()
            .await;
        match out {
            Ok(out) => Some(out.body.collect().await.expect("object body").to_vec()),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => None,
            Err(e) => panic!("GetObject {key} from moto: {e:?}"),
        }
    })
}

/// All object keys of `bucket` in moto at `endpoint`, sorted.
pub fn object_keys(endpoint: &str, bucket: &str) -> Vec<String> {
    let (endpoint, bucket) = (endpoint.to_owned(), bucket.to_owned());
    blocking(move || async move {
        let client = client_for(&endpoint);
        let mut pages = client
            .list_objects_v2()
            .bucket(&bucket)
            .into_paginator()
            .send();
        let mut keys = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.expect("ListObjectsV2 from moto");
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_owned)),
            );
        }
        keys.sort();
        keys
    })
}

/// Deletes an object of `bucket` in moto at `endpoint`.
pub fn delete_object(endpoint: &str, bucket: &str, key: &str) {
    let (endpoint, bucket, key) = (endpoint.to_owned(), bucket.to_owned(), key.to_owned());
    blocking(move || async move {
        client_for(&endpoint)
            .delete_object()
            .bucket(&bucket)
            .key(&key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("DeleteObject {key} from moto: {e:?}"));
    })
}

/// moto 5.2.5 names the root element of a ListParts reply `ListPartsResponse`, where S3
/// (and the SDK's parser, which then fails with a "service error" of status 200) has
/// `ListPartsResult`: renamed here, as `s3.rs` maps s3s-fs's quirks to what S3 answers.
fn list_parts_result(body: Bytes) -> Bytes {
    let text = String::from_utf8_lossy(&body);
    if !text.contains("<ListPartsResponse") {
        return body;
    }
    Bytes::from(
        text.replace("<ListPartsResponse", "<ListPartsResult")
            .replace("</ListPartsResponse>", "</ListPartsResult>"),
    )
}

/// How many parts moto at `endpoint` holds for the in-progress upload `upload_id` (0 if
/// there is no such upload).
pub fn stored_parts(endpoint: &str, bucket: &str, upload_id: &str) -> usize {
    let (endpoint, bucket, id) = (endpoint.to_owned(), bucket.to_owned(), upload_id.to_owned());
    blocking(move || async move {
        let uploads = client_for(&endpoint)
            .list_multipart_uploads()
            .bucket(&bucket)
            .send()
            .await
            .expect("ListMultipartUploads from moto");
        let Some(key) = uploads
            .uploads()
            .iter()
            .find(|u| u.upload_id() == Some(id.as_str()))
            .and_then(|u| u.key())
        else {
            return 0;
        };
        // Raw (moto checks no signatures), past the fault layer and its ListParts renaming.
        let body = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("reqwest client")
            .get(format!("{endpoint}/{bucket}/{key}?uploadId={id}"))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .expect("ListParts from moto")
            .text()
            .await
            .expect("ListParts body from moto");
        body.matches("<Part>").count()
    })
}

/// Spawns `exe -H 127.0.0.1 -p 0` and reads the port it reports from its log (stderr, which
/// a thread then keeps draining so that moto never blocks on logging).
fn spawn(exe: &std::ffi::OsStr) -> Moto {
    let mut child = Command::new(exe)
        .args(["-H", "127.0.0.1", "-p", "0"])
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {} ({MOTO_ENV}): {e}", exe.to_string_lossy()));
    let stderr = child.stderr.take().expect("moto stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(port) = line
                .split("http://127.0.0.1:")
                .nth(1)
                .and_then(|rest| rest.trim().parse::<u16>().ok())
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(port);
            }
        }
    });
    let mut moto = Moto {
        endpoint: String::new(),
        child,
    };
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(port) => moto.endpoint = format!("http://127.0.0.1:{port}"),
        Err(_) => panic!("moto_server did not report its port within 60 s"),
    }
    moto
}

/// Runs `f`'s future to completion on a runtime of its own in a thread of its own (usable
/// from sync code inside or outside an async test).
fn blocking<F, Fut, T>(f: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
    T: Send + 'static,
{
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(f())
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// What the fault layer serves requests with.
pub enum Backend {
    /// `s3s-fs`, in-process.
    Fs(s3s::service::S3Service),
    /// `moto_server`, by forwarding.
    Moto(MotoProxy),
}

impl Backend {
    pub fn moto(endpoint: &str) -> Backend {
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("reqwest client");
        Backend::Moto(MotoProxy {
            client,
            base: endpoint.to_owned(),
        })
    }
}

/// Forwards whole requests to moto and its replies back.
#[derive(Clone)]
pub struct MotoProxy {
    client: reqwest::Client,
    base: String,
}

impl MotoProxy {
    /// Sends the request (`parts` with its whole `body`) to moto; its reply, buffered (a
    /// ListParts reply renamed as S3 names it unless `raw_list_parts`).
    pub async fn forward(
        &self,
        parts: hyper::http::request::Parts,
        body: Bytes,
        raw_list_parts: bool,
    ) -> Result<Response<s3s::Body>, BoxError> {
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut req = self
            .client
            .request(parts.method.clone(), format!("{}{path}", self.base));
        for (name, value) in &parts.headers {
            if ![HOST, CONNECTION, TRANSFER_ENCODING, CONTENT_LENGTH, EXPECT].contains(name) {
                req = req.header(name, value);
            }
        }
        let resp = req.body(body).send().await?;
        let mut out = Response::builder().status(resp.status());
        // The length of a body is that of the body sent on (see `list_parts_result`); a
        // HEAD reply keeps moto's (the object's size).
        let head = parts.method == hyper::Method::HEAD;
        for (name, value) in resp.headers() {
            if ![CONNECTION, TRANSFER_ENCODING].contains(name) && (head || name != CONTENT_LENGTH) {
                out = out.header(name, value);
            }
        }
        let mut bytes = resp.bytes().await?;
        if !raw_list_parts && parts.method == hyper::Method::GET && path.contains("uploadId=") {
            bytes = list_parts_result(bytes);
        }
        Ok(out.body(s3s::Body::from(bytes))?)
    }
}
