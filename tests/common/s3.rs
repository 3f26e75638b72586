//! An S3 server for tests on 127.0.0.1: a fault layer served with hyper that can answer every
//! request with an error status, drop connections or delay every request or reply, and that
//! counts requests and request body bytes; behind it the store is either `s3s-fs` (in-process) or `moto_server`
//! ([`Store::Moto`]: a child process on 127.0.0.1, pinned and installed by `scripts/test`,
//! found through `QUCAM_TEST_MOTO`; the fault layer forwards each request to it once the
//! request body has fully arrived). [`Store::ALL`] and [`crate::on_both_stores`] run a test
//! against each; the tests that differ between the stores say so where they are declared.
//!
//! `s3s-fs` quirks the tests rely on or work around:
//! - objects are plain files `root/bucket/key`; in-progress multipart uploads are
//!   `root/.upload-{id}.json` (+ `root/.upload_id-{id}.part-N`), which is how
//!   [`TestS3::list_incomplete_multipart`] finds them (there is no ListMultipartUploads);
//! - ListParts returns sizes only (no ETag, no checksum), and an unknown upload id lists as
//!   empty instead of `NoSuchUpload`; UploadPart to an unknown id answers `AccessDenied`;
//! - AbortMultipartUpload of an unknown upload id answers `AccessDenied` too, where S3
//!   answers 404 `NoSuchUpload`: the fault layer answers that one as S3 does;
//! - a request is not atomic (a PUT renames its file into place, then writes metadata), so
//!   the fault layer runs each request to its end even if the client disconnects;
//! - part checksums are not validated and no composite checksum is kept for multipart
//!   objects (HeadObject then reports none); single PUT checksums are validated and stored.
//!
//! `moto_server` (5.2.5) differences: it does not check signatures (any credentials work);
//! it does not check a client-sent checksum on PutObject or UploadPart (a wrong one is stored
//! as sent; like s3s-fs, it answers UploadPart with the MD5 of the bytes it got), and
//! HeadObject with checksum mode reported no SHA-256 for the agent's single PUTs here; for a
//! multipart object HeadObject reports the SHA-256 of the part checksums without the `-N`
//! suffix (issue 9 item 2); AbortMultipartUpload and ListParts of an unknown upload id
//! answer 404 `NoSuchUpload` as S3 does, but UploadPart to one answers 500; its
//! ListParts reply has the root element `ListPartsResponse`, which the fault layer renames to
//! S3's `ListPartsResult` (the SDK rejects the reply otherwise).
#![allow(dead_code)]

pub use super::moto::Store;
use super::moto::{Backend, Moto};

use std::future::poll_fn;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use qucam_offload::upload::S3Settings;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub const TEST_ACCESS_KEY: &str = "AKIATESTQUCAMOFFLOAD";
pub const TEST_SECRET_KEY: &str = "test-secret-key-for-qucam-offload-only";
pub const TEST_REGION: &str = "us-east-1";
pub const TEST_BUCKET: &str = "fleet-video";

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Switches and counters shared between the test and the server.
#[derive(Default)]
struct Faults {
    /// 0 = serve normally; otherwise answer every request with this status.
    failing: AtomicU16,
    /// As `failing`, for HEAD requests only (after `heads_without_metadata`).
    failing_heads: AtomicU16,
    /// The next this many HEAD replies lose their user metadata (`x-amz-meta-*`).
    heads_without_metadata: AtomicU64,
    refusing: AtomicBool,
    /// Woken when refusing turns on: requests being served are cut off at once.
    cut: tokio::sync::Notify,
    /// 0 = no delay; otherwise every request waits this many milliseconds before it is served.
    delay_ms: AtomicU64,
    /// 0 = no delay; otherwise every response waits this many milliseconds after the
    /// request was served (the store acted, the client does not know yet).
    reply_delay_ms: AtomicU64,
    /// The next this many PUT requests wait [`Faults::stall_ms`] before they are served.
    stall_puts: AtomicU64,
    stall_ms: AtomicU64,
    /// The next this many UploadPart requests reach the store with one byte of their body
    /// flipped (corruption in transit that no checksum the store checks catches).
    corrupt_parts: AtomicU64,
    /// moto's ListParts replies go to the client as moto sends them (root element
    /// `ListPartsResponse`), not renamed to what S3 sends.
    raw_list_parts: AtomicBool,
    requests: AtomicU64,
    bytes: AtomicU64,
    /// Connections open plus requests still being carried out (see [`TestS3::busy`]).
    busy: AtomicU64,
    /// The `s3s-fs` root, to tell known upload ids from unknown ones (`None` for moto).
    root: Option<PathBuf>,
}

/// Counts one connection or request in [`Faults::busy`] while alive.
struct Busy(Arc<Faults>);

impl Busy {
    fn new(faults: &Arc<Faults>) -> Busy {
        faults.busy.fetch_add(1, Ordering::SeqCst);
        Busy(faults.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A running test server; stops when dropped.
/// Turns the S3 server's reachability off and on (see [`TestS3::fault_handle`]).
#[derive(Clone)]
pub struct Reach(Arc<Faults>);

impl Reach {
    /// As [`TestS3::set_refusing`]; turning it on also cuts the requests being served.
    pub fn set_refusing(&self, on: bool) {
        self.0.refusing.store(on, Ordering::SeqCst);
        if on {
            self.0.cut.notify_waiters();
        }
    }
}

pub struct TestS3 {
    /// `http://127.0.0.1:PORT` (the fault layer, in front of either store).
    pub endpoint: String,
    /// The `s3s-fs` root: objects are files `root/bucket/key`. For moto an empty temp dir:
    /// read objects with [`TestS3::object_bytes`] / [`TestS3::object_keys`] instead.
    pub root: PathBuf,
    pub bucket: String,
    /// Which store is behind the fault layer.
    pub store: Store,
    faults: Arc<Faults>,
    accept_task: JoinHandle<()>,
    /// The moto_server child (killed when dropped), for [`Store::Moto`].
    moto: Option<Moto>,
    _dir: tempfile::TempDir,
}

impl Drop for TestS3 {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

impl TestS3 {
    /// Starts `s3s-fs` on an ephemeral loopback port with bucket `fleet-video`.
    pub async fn start() -> TestS3 {
        TestS3::start_on(Store::S3sFs).await
    }

    /// Starts `store` behind the fault layer on an ephemeral loopback port, with bucket
    /// `fleet-video`. For [`Store::Moto`], panics naming `scripts/test` when
    /// `QUCAM_TEST_MOTO` is not set.
    pub async fn start_on(store: Store) -> TestS3 {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().canonicalize().expect("canonical temp dir");
        let (backend, moto, fs_root) = match store {
            Store::S3sFs => {
                std::fs::create_dir(root.join(TEST_BUCKET)).expect("bucket dir");
                let fs = s3s_fs::FileSystem::new(&root).expect("s3s-fs");
                let mut builder = S3ServiceBuilder::new(fs);
                builder.set_auth(SimpleAuth::from_single(TEST_ACCESS_KEY, TEST_SECRET_KEY));
                (Backend::Fs(builder.build()), None, Some(root.clone()))
            }
            Store::Moto => {
                let moto = Moto::start(TEST_BUCKET).await;
                (Backend::moto(&moto.endpoint), Some(moto), None)
            }
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let faults = Arc::new(Faults {
            root: fs_root,
            ..Faults::default()
        });
        let accept_task = tokio::spawn(accept_loop(listener, Arc::new(backend), faults.clone()));
        TestS3 {
            endpoint: format!("http://{addr}"),
            root,
            bucket: TEST_BUCKET.to_owned(),
            store,
            faults,
            accept_task,
            moto,
            _dir: dir,
        }
    }

    /// A client for this server: path-style, us-east-1, the static test credentials, and
    /// quick retries (3 attempts) so fault tests stay fast.
    pub fn client(&self) -> aws_sdk_s3::Client {
        client_for(&self.endpoint)
    }

    /// Settings pointing at this server (defaults for sizes and checksums, empty prefix).
    pub fn settings(&self) -> S3Settings {
        S3Settings {
            bucket: self.bucket.clone(),
            prefix: String::new(),
            region: TEST_REGION.to_owned(),
            endpoint: Some(self.endpoint.clone()),
            force_path_style: true,
            ..S3Settings::default()
        }
    }

    /// Environment for a child process using the standard AWS chain against this server
    /// (the endpoint itself comes from the agent's configuration: [`TestS3::settings`]).
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ACCESS_KEY_ID", TEST_ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", TEST_SECRET_KEY),
            ("AWS_REGION", TEST_REGION),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// While `Some(status)` (e.g. 503, 500) every request is answered with that status and an
    /// S3 error body; `None` serves normally again.
    pub fn set_failing(&self, status: Option<u16>) {
        self.faults
            .failing
            .store(status.unwrap_or(0), Ordering::SeqCst);
    }

    /// As [`TestS3::set_failing`], for HEAD requests only (objects cannot be read, writes
    /// go through).
    pub fn set_failing_heads(&self, status: Option<u16>) {
        self.faults
            .failing_heads
            .store(status.unwrap_or(0), Ordering::SeqCst);
    }

    /// The next `n` HEAD replies lose their user metadata: an object seen before its
    /// metadata (as `s3s-fs` can show one being written), so it looks like another object.
    pub fn strip_metadata_of_next_heads(&self, n: u64) {
        self.faults
            .heads_without_metadata
            .store(n, Ordering::SeqCst);
    }

    /// While on, new connections are dropped at accept and requests on kept-alive
    /// connections are cut off (S3 down).
    pub fn set_refusing(&self, on: bool) {
        Reach(self.faults.clone()).set_refusing(on);
    }

    /// A handle for [`TestS3::set_refusing`] that another task can keep.
    pub fn fault_handle(&self) -> Reach {
        Reach(self.faults.clone())
    }

    /// While `Some(d)`, every request (including its body) waits `d` before it is served,
    /// like a slow link; `None` serves at once again. Requests already waiting keep their delay.
    pub fn set_delay(&self, delay: Option<std::time::Duration>) {
        let ms = delay.map_or(0, |d| {
            u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
        });
        self.faults.delay_ms.store(ms, Ordering::SeqCst);
    }

    /// While `Some(d)`, every response is held back `d` after its request was served: the
    /// store has acted (object written, upload created) but the client has not heard yet.
    pub fn set_reply_delay(&self, delay: Option<std::time::Duration>) {
        let ms = delay.map_or(0, |d| {
            u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
        });
        self.faults.reply_delay_ms.store(ms, Ordering::SeqCst);
    }

    /// The next `n` PUT requests (objects and parts) each wait `d` before they are served,
    /// reading nothing meanwhile: a one-off stall of uploads while the store answers
    /// everything else.
    pub fn stall_next_puts(&self, n: u64, d: std::time::Duration) {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        self.faults.stall_ms.store(ms, Ordering::SeqCst);
        self.faults.stall_puts.store(n, Ordering::SeqCst);
    }

    /// While on, moto's ListParts replies reach the client as moto writes them, with the
    /// root element `ListPartsResponse` the SDK cannot read (off: renamed as S3 names it).
    pub fn set_raw_list_parts(&self, on: bool) {
        self.faults.raw_list_parts.store(on, Ordering::SeqCst);
    }

    /// The next `n` UploadPart requests reach the store with one byte of their body flipped:
    /// the store keeps other bytes than were sent, and its ETag for the part is their MD5.
    /// (Neither store checks a part's `x-amz-checksum-sha256`, so the corruption is kept in
    /// either checksum mode.)
    pub fn corrupt_next_parts(&self, n: u64) {
        self.faults.corrupt_parts.store(n, Ordering::SeqCst);
    }

    /// How many of the corruptions [`TestS3::corrupt_next_parts`] asked for are still to come.
    pub fn corruptions_left(&self) -> u64 {
        self.faults.corrupt_parts.load(Ordering::SeqCst)
    }

    /// How many of the stalls [`TestS3::stall_next_puts`] asked for are still to come.
    pub fn stalls_left(&self) -> u64 {
        self.faults.stall_puts.load(Ordering::SeqCst)
    }

    /// Requests that reached the fault layer (including failed ones).
    pub fn request_count(&self) -> u64 {
        self.faults.requests.load(Ordering::SeqCst)
    }

    /// [`TestS3::request_count`] as a function another task can keep.
    pub fn request_counter(&self) -> impl Fn() -> u64 + Send + 'static {
        let f = self.faults.clone();
        move || f.requests.load(Ordering::SeqCst)
    }

    /// Sum of request body bytes received (including bodies of failed requests).
    pub fn bytes_received(&self) -> u64 {
        self.faults.bytes.load(Ordering::SeqCst)
    }

    /// Connections open plus requests still being carried out. Once a client is gone (its
    /// sockets closed), 0 means the server has read everything that client sent:
    /// [`TestS3::bytes_received`] no longer grows on its account.
    pub fn busy(&self) -> u64 {
        self.faults.busy.load(Ordering::SeqCst)
    }

    /// Upload ids of multipart uploads created and neither completed nor aborted.
    pub async fn list_incomplete_multipart(&self) -> Vec<String> {
        if let Some(moto) = &self.moto {
            return moto.incomplete_multipart(&self.bucket).await;
        }
        let mut ids = Vec::new();
        let mut dir = tokio::fs::read_dir(&self.root).await.expect("read root");
        while let Some(entry) = dir.next_entry().await.expect("read root entry") {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(id) = name
                .strip_prefix(".upload-")
                .and_then(|rest| rest.strip_suffix(".json"))
            {
                ids.push(id.to_owned());
            }
        }
        ids.sort();
        ids
    }

    /// How many parts the store holds for the in-progress upload `upload_id`.
    pub fn stored_parts(&self, upload_id: &str) -> usize {
        if let Some(moto) = &self.moto {
            return super::moto::stored_parts(&moto.endpoint, &self.bucket, upload_id);
        }
        // s3s-fs: `root/.upload_id-{id}.part-N`.
        let prefix = format!(".upload_id-{upload_id}.part-");
        std::fs::read_dir(&self.root)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                    .count()
            })
            .unwrap_or(0)
    }

    /// The stored bytes of an object, if it exists (read past the fault layer).
    pub fn object_bytes(&self, key: &str) -> Option<Vec<u8>> {
        self.objects().bytes(key)
    }

    /// All object keys in the bucket, sorted (read past the fault layer).
    pub fn object_keys(&self) -> Vec<String> {
        self.objects().keys()
    }

    /// A handle on the bucket's objects, past the fault layer, for callbacks that outlive a
    /// borrow of this server (e.g. the simulator's delete hook).
    pub fn objects(&self) -> Objects {
        Objects {
            moto: self.moto.as_ref().map(|m| m.endpoint.clone()),
            dir: self.root.join(&self.bucket),
            bucket: self.bucket.clone(),
        }
    }
}

/// The objects of a [`TestS3`] bucket, read or removed past the fault layer, from sync code
/// (inside or outside an async test).
#[derive(Clone)]
pub struct Objects {
    /// moto's own endpoint, for [`Store::Moto`].
    moto: Option<String>,
    /// The bucket's directory, for [`Store::S3sFs`].
    dir: PathBuf,
    bucket: String,
}

impl Objects {
    /// The stored bytes of an object, if it exists.
    pub fn bytes(&self, key: &str) -> Option<Vec<u8>> {
        match &self.moto {
            Some(endpoint) => super::moto::object_bytes(endpoint, &self.bucket, key),
            None => std::fs::read(self.dir.join(key)).ok(),
        }
    }

    /// Whether the object exists.
    pub fn exists(&self, key: &str) -> bool {
        match &self.moto {
            Some(_) => self.bytes(key).is_some(),
            None => self.dir.join(key).exists(),
        }
    }

    /// All object keys, sorted.
    pub fn keys(&self) -> Vec<String> {
        match &self.moto {
            Some(endpoint) => super::moto::object_keys(endpoint, &self.bucket),
            None => {
                let mut out = Vec::new();
                walk(&self.dir, &self.dir, &mut out);
                out.sort();
                out
            }
        }
    }

    /// Removes an object (as an operator or a lifecycle rule would); panics if it is absent.
    pub fn remove(&self, key: &str) {
        match &self.moto {
            Some(endpoint) => {
                assert!(self.exists(key), "{key} is not in the bucket");
                super::moto::delete_object(endpoint, &self.bucket, key);
            }
            None => std::fs::remove_file(self.dir.join(key)).expect("remove object file"),
        }
    }
}

/// A client for the S3 endpoint `endpoint` (see [`TestS3::client`]).
pub fn client_for(endpoint: &str) -> aws_sdk_s3::Client {
    use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region, retry::RetryConfig};
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(TEST_REGION))
        .endpoint_url(endpoint)
        .http_client(qucam_offload::upload::s3_http_client())
        .force_path_style(true)
        .credentials_provider(Credentials::new(
            TEST_ACCESS_KEY,
            TEST_SECRET_KEY,
            None,
            None,
            "qucam-test",
        ))
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(3)
                .with_initial_backoff(std::time::Duration::from_millis(20))
                .with_max_backoff(std::time::Duration::from_millis(200)),
        )
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// The files under `dir`, as paths relative to `root`, leaving out hidden ones (`s3s-fs`
/// keeps its metadata and uploads in dot files).
fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(root, &p, out);
        } else if let Ok(rel) = p.strip_prefix(root) {
            let s = rel.to_string_lossy().into_owned();
            if !s.starts_with('.') && !s.contains("/.") {
                out.push(s);
            }
        }
    }
}

async fn accept_loop(listener: TcpListener, backend: Arc<Backend>, faults: Arc<Faults>) {
    loop {
        let Ok((socket, _)) = listener.accept().await else {
            continue;
        };
        if faults.refusing.load(Ordering::SeqCst) {
            drop(socket);
            continue;
        }
        let backend = backend.clone();
        let faults = faults.clone();
        let conn = Busy::new(&faults);
        tokio::spawn(async move {
            let _conn = conn;
            let handler =
                hyper::service::service_fn(move |req| handle(req, backend.clone(), faults.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(socket), handler)
                .await;
        });
    }
}

/// The fault layer in front of the store; a request being served when the server starts
/// refusing is cut off.
async fn handle(
    req: Request<Incoming>,
    backend: Arc<Backend>,
    faults: Arc<Faults>,
) -> Result<Response<s3s::Body>, BoxError> {
    let cut = faults.cut.notified();
    tokio::pin!(cut);
    cut.as_mut().enable();
    if faults.refusing.load(Ordering::SeqCst) {
        return Err("refusing".into());
    }
    tokio::select! {
        r = serve(req, backend, faults.clone()) => r,
        _ = cut => Err("cut off: the server went away".into()),
    }
}

async fn serve(
    req: Request<Incoming>,
    backend: Arc<Backend>,
    faults: Arc<Faults>,
) -> Result<Response<s3s::Body>, BoxError> {
    faults.requests.fetch_add(1, Ordering::SeqCst);
    let busy = Busy::new(&faults);
    let delay = faults.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
    }
    if req.method() == hyper::Method::PUT
        && faults
            .stall_puts
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    {
        let ms = faults.stall_ms.load(Ordering::SeqCst);
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
    if faults.refusing.load(Ordering::SeqCst) {
        return Err("refusing".into());
    }
    let (parts, body) = req.into_parts();
    let corrupt = is_upload_part(&parts)
        && faults
            .corrupt_parts
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
    let body = CountingBody {
        inner: body,
        faults: faults.clone(),
        corrupt,
    };
    let strip = parts.method == hyper::Method::HEAD
        && faults
            .heads_without_metadata
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
    let mut status = faults.failing.load(Ordering::SeqCst);
    if status == 0 && parts.method == hyper::Method::HEAD && !strip {
        status = faults.failing_heads.load(Ordering::SeqCst);
    }
    if status != 0 {
        drain(body).await;
        return Ok(error_response(status));
    }
    if let Some(id) = faults
        .root
        .as_deref()
        .and_then(|root| unknown_upload_aborted(&parts, root))
    {
        drain(body).await;
        return Ok(error_response_with(
            404,
            "NoSuchUpload",
            &format!("no upload {id}"),
        ));
    }
    let service = match &*backend {
        Backend::Fs(service) => service.clone(),
        Backend::Moto(proxy) => {
            // The whole body first: a body cut off mid-way reaches moto not at all, as it
            // leaves nothing in s3s-fs; then forwarded to the end even if the client goes.
            let Some(bytes) = collect(body).await else {
                return Err("request body cut off".into());
            };
            let proxy = proxy.clone();
            let raw = faults.raw_list_parts.load(Ordering::SeqCst);
            let resp = tokio::spawn(async move {
                let _busy = busy;
                proxy.forward(parts, bytes, raw).await
            })
            .await??;
            let delay = faults.reply_delay_ms.load(Ordering::SeqCst);
            if delay > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
            }
            return Ok(without_metadata_if(strip, resp));
        }
    };
    let req = Request::from_parts(parts, s3s::Body::http_body_unsync(body));
    // Carried out in a task of its own, to the end, even when the client goes away (kill -9)
    // and hyper drops this future: `s3s-fs` is not atomic (a PUT's file is renamed into place
    // before its metadata is written), so a request cancelled in between would leave an
    // object without its metadata, which no real store ever shows. A body cut off mid-way
    // still fails the request and leaves nothing.
    let resp = tokio::spawn(async move {
        let _busy = busy;
        service.call(req).await
    })
    .await??;
    let delay = faults.reply_delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
    }
    Ok(without_metadata_if(strip, resp))
}

/// Whether `parts` is an UploadPart request (`PUT ...?partNumber=N&uploadId=ID`).
fn is_upload_part(parts: &hyper::http::request::Parts) -> bool {
    parts.method == hyper::Method::PUT
        && parts
            .uri
            .query()
            .is_some_and(|q| q.split('&').any(|kv| kv.starts_with("partNumber=")))
}

/// `resp` without its user metadata headers (`x-amz-meta-*`) when `strip`.
fn without_metadata_if<B>(strip: bool, mut resp: Response<B>) -> Response<B> {
    if strip {
        let meta: Vec<_> = resp
            .headers()
            .keys()
            .filter(|k| k.as_str().starts_with("x-amz-meta-"))
            .cloned()
            .collect();
        for k in meta {
            resp.headers_mut().remove(&k);
        }
    }
    resp
}

/// The upload id of an AbortMultipartUpload (`DELETE ...?uploadId=ID`) whose upload `s3s-fs`
/// does not hold (no `root/.upload-{id}.json`), if `parts` is one.
fn unknown_upload_aborted(parts: &hyper::http::request::Parts, root: &Path) -> Option<String> {
    if parts.method != hyper::Method::DELETE {
        return None;
    }
    let id = parts
        .uri
        .query()?
        .split('&')
        .find_map(|kv| kv.strip_prefix("uploadId="))?;
    let known = id
        .chars()
        .all(|c| c.is_ascii_hexdigit() || c == '-')
        .then(|| root.join(format!(".upload-{id}.json")))
        .is_some_and(|p| p.exists());
    (!known).then(|| id.to_owned())
}

fn error_response(status: u16) -> Response<s3s::Body> {
    let code = match status {
        503 => "ServiceUnavailable",
        500 => "InternalError",
        429 => "SlowDown",
        403 => "AccessDenied",
        _ => "InjectedFault",
    };
    error_response_with(status, code, "injected by the test fault layer")
}

fn error_response_with(status: u16, code: &str, message: &str) -> Response<s3s::Body> {
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
         <Message>{message}</Message></Error>"
    );
    Response::builder()
        .status(status)
        .header("content-type", "application/xml")
        .body(s3s::Body::from(xml))
        .expect("error response")
}

async fn drain(mut body: CountingBody) {
    while let Some(Ok(_)) = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {}
}

/// The whole request body, or `None` if it was cut off.
async fn collect(mut body: CountingBody) -> Option<Bytes> {
    let mut out = bytes::BytesMut::new();
    while let Some(frame) = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        if let Some(data) = frame.ok()?.data_ref() {
            out.extend_from_slice(data);
        }
    }
    Some(out.freeze())
}

/// Counts request body bytes as they arrive; when `corrupt`, flips one byte in the middle of
/// the first data frame (then turns itself off).
struct CountingBody {
    inner: Incoming,
    faults: Arc<Faults>,
    corrupt: bool,
}

impl HttpBody for CountingBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            this.faults
                .bytes
                .fetch_add(data.len() as u64, Ordering::SeqCst);
            if this.corrupt && !data.is_empty() {
                this.corrupt = false;
                let mut flipped = data.to_vec();
                let middle = flipped.len() / 2;
                flipped[middle] ^= 0x01;
                return Poll::Ready(Some(Ok(Frame::data(Bytes::from(flipped)))));
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
