//! Stall detection for every S3 request, in both directions: [`StallGuard`] wraps the HTTP
//! client handed to the SDK and fails a request when no byte of its body was taken for
//! sending and no response arrived for `stall_timeout`. It is a limit on silence, not on
//! the length of a request, so a 5 GiB PUT on a slow uplink runs as long as bytes flow.
//! Response bodies are covered by the SDK's stalled-stream protection, configured with the
//! same grace period in [`super::client`].

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use aws_sdk_s3::config::http::HttpRequest;
use aws_sdk_s3::config::{HttpClient, RuntimeComponents, SharedHttpClient};
use aws_sdk_s3::primitives::SdkBody;
use aws_smithy_runtime_api::client::http::{
    HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::result::ConnectorError;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

/// S3 requests under way in this process (until their reply's headers or their error).
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// How many S3 requests are under way. Each ends by itself (a reply, an error, or
/// `stall_timeout` of silence), so a loop waiting on one waits by design.
pub fn requests_in_flight() -> usize {
    IN_FLIGHT.load(Ordering::Relaxed)
}

/// Counts one request in [`IN_FLIGHT`] while it lives.
struct InFlight;

impl InFlight {
    fn new() -> InFlight {
        IN_FLIGHT.fetch_add(1, Ordering::Relaxed);
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The error a stalled request ends with ([`super::errors`] maps it to `UploadError::TimedOut`;
/// the SDK does not retry it).
#[derive(Debug, thiserror::Error)]
#[error("S3 stalled: no bytes sent or received for {} (s3.stall_timeout)", humantime::format_duration(*.0))]
pub struct Stalled(pub Duration);

/// An HTTP client whose requests fail when they stall for `stall`.
#[derive(Debug)]
pub(super) struct StallGuard {
    inner: SharedHttpClient,
    stall: Duration,
}

impl StallGuard {
    pub(super) fn new(inner: SharedHttpClient, stall: Duration) -> Self {
        Self { inner, stall }
    }
}

impl HttpClient for StallGuard {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(GuardedConnector {
            inner: self.inner.http_connector(settings, components),
            stall: self.stall,
        })
    }
}

#[derive(Debug)]
struct GuardedConnector {
    inner: SharedHttpConnector,
    stall: Duration,
}

impl HttpConnector for GuardedConnector {
    fn call(&self, mut request: HttpRequest) -> HttpConnectorFuture {
        let progress = Arc::new(Progress::new());
        let touch = progress.clone();
        let body = std::mem::replace(request.body_mut(), SdkBody::taken());
        *request.body_mut() = body.map_preserve_contents(move |inner| {
            SdkBody::from_body_1_x(Touching {
                inner,
                progress: touch.clone(),
            })
        });
        let response = self.inner.call(request);
        let stall = self.stall;
        HttpConnectorFuture::new(async move {
            let _in_flight = InFlight::new();
            tokio::pin!(response);
            loop {
                let quiet = progress.quiet();
                if quiet >= stall {
                    // Not a `timeout` kind: the SDK retries those at once, each costing the
                    // whole stall again; the agent probes the destination instead.
                    return Err(ConnectorError::other(Box::new(Stalled(stall)), None));
                }
                tokio::select! {
                    r = &mut response => return r,
                    () = tokio::time::sleep(stall - quiet) => {}
                }
            }
        })
    }
}

/// When a request last made progress.
#[derive(Debug)]
struct Progress {
    start: Instant,
    last_ms: AtomicU64,
}

impl Progress {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// How long since the last progress (or the start).
    fn quiet(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

/// A request body that records each chunk taken for sending as progress.
struct Touching {
    inner: SdkBody,
    progress: Arc<Progress>,
}

impl Body for Touching {
    type Data = Bytes;
    type Error = aws_smithy_runtime_api::box_error::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(_))) = &polled {
            self.progress.touch();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        Body::size_hint(&self.inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_smithy_runtime_api::http::{Response, StatusCode};

    /// A request body of `chunks` chunks, one every `every`.
    struct Slow {
        chunks: usize,
        every: Duration,
        sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    }

    impl Body for Slow {
        type Data = Bytes;
        type Error = aws_smithy_runtime_api::box_error::BoxError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            if self.chunks == 0 {
                return Poll::Ready(None);
            }
            let every = self.every;
            let sleep = self
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(every)));
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.sleep = None;
            self.chunks -= 1;
            Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"bytes")))))
        }
    }

    /// A store that reads the whole body, then answers 200 or (`answers` false) never.
    #[derive(Debug)]
    struct Store {
        answers: bool,
    }

    impl HttpConnector for Store {
        fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
            let answers = self.answers;
            HttpConnectorFuture::new(async move {
                let mut body = request.into_body();
                while let Some(frame) =
                    std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
                {
                    frame.map_err(|e| ConnectorError::other(e, None))?;
                }
                if !answers {
                    std::future::pending::<()>().await;
                }
                let ok = StatusCode::try_from(200u16)
                    .map_err(|e| ConnectorError::other(e.into(), None))?;
                Ok(Response::new(ok, SdkBody::empty()))
            })
        }
    }

    fn guarded(answers: bool, stall: Duration) -> GuardedConnector {
        GuardedConnector {
            inner: SharedHttpConnector::new(Store { answers }),
            stall,
        }
    }

    fn request(chunks: usize, every: Duration) -> HttpRequest {
        let body = SdkBody::from_body_1_x(Slow {
            chunks,
            every,
            sleep: None,
        });
        HttpRequest::new(body)
    }

    #[tokio::test]
    async fn a_transfer_that_keeps_moving_is_never_cut_off() {
        // 20 chunks 100 ms apart: 2 s in all, far beyond the 300 ms stall limit.
        let started = Instant::now();
        let r = guarded(true, Duration::from_millis(300))
            .call(request(20, Duration::from_millis(100)))
            .await;
        assert!(r.is_ok(), "{r:?}");
        assert!(started.elapsed() >= Duration::from_secs(2));
    }

    #[tokio::test]
    async fn silence_in_either_direction_fails_after_the_stall_limit() {
        // The body goes out (300 ms), then no reply comes: failed 300 ms later.
        let stall = Duration::from_millis(300);
        let started = Instant::now();
        let r = guarded(false, stall)
            .call(request(3, Duration::from_millis(100)))
            .await;
        let e = r.expect_err("a reply that never comes");
        // Not the `timeout` kind, which the SDK would retry at once.
        assert!(!e.is_timeout() && e.as_other().is_none(), "{e:?}");
        let why = std::error::Error::source(&e).map(ToString::to_string);
        assert!(why.is_some_and(|w| w.contains("s3.stall_timeout")), "{e:?}");
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(550), "{took:?}");
        assert!(took < Duration::from_secs(3), "{took:?}");
        // The body itself stalls: a 5 s gap between chunks fails at the limit.
        let started = Instant::now();
        let r = guarded(true, stall)
            .call(request(2, Duration::from_secs(5)))
            .await;
        let e = r.expect_err("a stalled body");
        assert!(
            std::error::Error::source(&e).is_some_and(|w| w.is::<Stalled>()),
            "{e:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(3));
    }
}
