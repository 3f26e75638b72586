//! The HTTP client and the SDK client built from [`S3Settings`].

use aws_config::BehaviorVersion;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    Region, RequestChecksumCalculation, ResponseChecksumValidation, SharedHttpClient,
    StalledStreamProtectionConfig,
};

use super::settings::{ChecksumMode, S3Settings};
use super::stall::StallGuard;

/// The HTTPS client for S3 and for the credential chain (IMDS, SSO, STS): hyper 1.x with
/// rustls and its `ring` provider, the crypto reqwest already uses, so the binary carries one
/// TLS stack (see docs/architecture.md, "Dependencies"). Otherwise as the SDK's default client: the
/// system's root certificates, and the proxy from `HTTPS_PROXY`/`NO_PROXY`.
pub fn http_client() -> SharedHttpClient {
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    use aws_smithy_http_client::{Builder, ConnectorBuilder, proxy::ProxyConfig};
    Builder::new().build_with_connector_fn(|settings, components| {
        let mut conn = ConnectorBuilder::default().tls_provider(Provider::Rustls(CryptoMode::Ring));
        conn.set_connector_settings(settings.cloned());
        if let Some(components) = components {
            conn.set_sleep_impl(components.sleep_impl());
        }
        conn.set_proxy_config(Some(ProxyConfig::from_env()));
        conn.build()
    })
}

/// The SDK client for `settings`: the standard AWS credential chain (environment, profile,
/// web identity, IMDS, ...) or the config's static keys, with the settings' region, endpoint,
/// addressing style and checksum mode. Every request has the settings' connect timeout and
/// fails when it stalls (no bytes sent or received) for `stall_timeout`: the request side
/// and the wait for a reply by [`StallGuard`], response bodies by the SDK's stalled-stream
/// protection with the same grace period. No total time limit: a long transfer runs while
/// bytes flow.
pub(super) async fn sdk_client(settings: &S3Settings) -> Client {
    let http = SharedHttpClient::new(StallGuard::new(http_client(), settings.stall_timeout));
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(settings.connect_timeout)
                .build(),
        )
        .stalled_stream_protection(
            StalledStreamProtectionConfig::enabled()
                .grace_period(settings.stall_timeout)
                .build(),
        );
    if !settings.region.is_empty() {
        loader = loader.region(Region::new(settings.region.clone()));
    }
    if settings.checksum == ChecksumMode::WhenRequired {
        loader = loader
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
    }
    if let Some(c) = &settings.credentials {
        loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(
            c.access_key_id.clone(),
            c.secret_access_key.clone(),
            None,
            None,
            "qucam-offload config",
        ));
    }
    let sdk_config = loader.load().await;
    let mut builder =
        aws_sdk_s3::config::Builder::from(&sdk_config).force_path_style(settings.force_path_style);
    if let Some(endpoint) = &settings.endpoint {
        builder = builder.endpoint_url(endpoint);
    }
    Client::from_conf(builder.build())
}
