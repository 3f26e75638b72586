//! The doctor's S3 checks: [`S3Destination::check`] and its [`CheckStep`]s; and
//! [`S3Destination::probe`], the HeadBucket that tells a paused destination is back.

use aws_sdk_s3::primitives::ByteStream;

use super::S3Destination;
use super::errors::{error_chain, map_sdk_err};

/// One step of [`S3Destination::check`] (`qucam-offload doctor`): what was checked and what
/// it found (`Ok`) or why it failed (`Err`).
#[derive(Debug, Clone)]
pub struct CheckStep {
    pub what: &'static str,
    pub outcome: Result<String, String>,
}

impl S3Destination {
    /// HeadBucket: whether the bucket answers this agent (used to probe a paused
    /// destination; the caller bounds the time).
    pub async fn probe(&self) -> Result<(), super::super::UploadError> {
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| map_sdk_err("HeadBucket", e))
    }

    /// Checks that the bucket answers HeadBucket; with `write_test`,
    /// also PUTs, GETs and DELETEs a probe object `{prefix}/.qucam-offload-doctor-<uuid>`.
    /// Stops at the first failing step.
    pub async fn check(&self, write_test: bool) -> Vec<CheckStep> {
        let mut steps = Vec::new();
        let head = self.client.head_bucket().bucket(&self.bucket).send();
        let bucket = match tokio::time::timeout(LIMIT, head).await {
            Err(_) => Err(timed_out("HeadBucket")),
            Ok(Err(e)) => Err(map_sdk_err("HeadBucket", e).to_string()),
            Ok(Ok(_)) => Ok(format!("{} reachable", self.describe())),
        };
        let failed = bucket.is_err();
        steps.push(CheckStep {
            what: "s3 bucket",
            outcome: bucket,
        });
        if failed || !write_test {
            return steps;
        }
        let prefix = self.prefix.trim_matches('/');
        let name = format!(".qucam-offload-doctor-{}", uuid::Uuid::new_v4());
        let key = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let outcome = self.write_test(&key).await;
        steps.push(CheckStep {
            what: "s3 write test",
            outcome,
        });
        steps
    }

    /// PUTs, GETs and DELETEs the probe object `key`; the DELETE is tried even when the
    /// GET failed.
    async fn write_test(&self, key: &str) -> Result<String, String> {
        let body = format!("qucam-offload doctor probe {key}\n");
        let put = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(body.clone().into_bytes()))
            .send();
        match tokio::time::timeout(LIMIT, put).await {
            Err(_) => return Err(timed_out("PutObject")),
            Ok(r) => r.map_err(|e| map_sdk_err("PutObject", e).to_string())?,
        };
        let get = async {
            let out = self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await;
            let out = out.map_err(|e| map_sdk_err("GetObject", e).to_string())?;
            let got = out
                .body
                .collect()
                .await
                .map_err(|e| format!("GetObject: {}", error_chain(&e)))?;
            if got.into_bytes() != body.as_bytes() {
                return Err("GetObject: the probe came back different".to_owned());
            }
            Ok(())
        };
        let got = tokio::time::timeout(LIMIT, get)
            .await
            .unwrap_or_else(|_| Err(timed_out("GetObject")));
        let delete = self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send();
        let deleted = match tokio::time::timeout(LIMIT, delete).await {
            Err(_) => Err(timed_out("DeleteObject")),
            Ok(r) => r
                .map(|_| ())
                .map_err(|e| map_sdk_err("DeleteObject", e).to_string()),
        };
        got?;
        deleted.map_err(|e| format!("{e} (remove {key} by hand)"))?;
        Ok(format!("PUT, GET and DELETE of {key}"))
    }
}

/// How long each request of the checks may take.
const LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

fn timed_out(op: &str) -> String {
    format!("{op}: no answer within {LIMIT:?}")
}
