//! A bucket that encrypts with SSE-KMS by default, written with `checksum = "when_required"`:
//! the store keeps no SHA-256 and the ETag of an SSE-KMS object is not an MD5 of its bytes,
//! so nothing the store reports ties an object to the clip. The agent accepts its own upload
//! on size and metadata (the documented fallback) and says so: in `status` and in the log.
//!
//! moto only: s3s-fs has no server-side encryption. moto applies the bucket's default
//! encryption and reports `ServerSideEncryption: aws:kms` on HeadObject, as S3 does.

mod common;

use aws_sdk_s3::types::{
    ServerSideEncryption, ServerSideEncryptionByDefault, ServerSideEncryptionConfiguration,
    ServerSideEncryptionRule,
};
use common::fleet::{Fleet, IMEI, Knobs};
use common::moto::Store;
use qucam_offload::agent::PassOutcome;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sse_kms_bucket_without_checksums_is_verified_by_size_and_metadata_and_status_says_so() {
    let f = Fleet::start_on(Store::Moto, 3, 40_000).await;
    let rule = ServerSideEncryptionRule::builder()
        .apply_server_side_encryption_by_default(
            ServerSideEncryptionByDefault::builder()
                .sse_algorithm(ServerSideEncryption::AwsKms)
                .build()
                .unwrap(),
        )
        .build();
    f.s3.client()
        .put_bucket_encryption()
        .bucket(&f.s3.bucket)
        .server_side_encryption_configuration(
            ServerSideEncryptionConfiguration::builder()
                .rules(rule)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .expect("default SSE-KMS on the bucket");
    let knobs = Knobs {
        s3: "checksum = \"when_required\"\n".into(),
        ..Knobs::default()
    };
    let agent = f.agent(&knobs);
    let mut out = agent.run_once().await;
    assert_eq!(
        out.remove(0).1,
        PassOutcome::Done {
            imei: IMEI.into(),
            remaining: 0
        }
    );
    let events = f.event_clips();
    assert!(!events.is_empty());
    for n in &events {
        f.assert_in_bucket(n);
    }
    let st = qucam_offload::commands::collect_status(agent.store())
        .await
        .unwrap();
    assert_eq!(st[0].weakly_verified, events.len() as i64, "{st:?}");
    let why = st[0].weakly_verified_why.as_deref().unwrap_or_default();
    assert!(why.contains("SSE-KMS"), "{why}");
    let text = qucam_offload::commands::format_status(&st);
    assert!(
        text.contains("verified by size and metadata only"),
        "status does not say how the clips were verified:\n{text}"
    );
}
