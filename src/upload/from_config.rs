//! The destination a config names: `[s3]` (settings and credentials) or `[local]`.

use anyhow::{Context, Result};

use super::{
    ChecksumMode, Destination, LocalDestination, MultipartThreshold, S3Destination, S3Settings,
    StaticCredentials,
};
use crate::config::{self, Config};

/// S3 settings from the `[s3]` section.
pub fn s3_settings(s3: &config::S3Config) -> S3Settings {
    S3Settings {
        bucket: s3.bucket.clone(),
        prefix: s3.prefix.clone(),
        region: s3.region.clone().unwrap_or_default(),
        endpoint: s3.endpoint.clone(),
        force_path_style: s3.force_path_style,
        multipart_threshold: s3
            .multipart_threshold
            .map_or(MultipartThreshold::Auto, MultipartThreshold::Fixed),
        part_size: s3.part_size,
        part_concurrency: s3.part_concurrency,
        checksum: match s3.checksum {
            config::ChecksumMode::Sha256 => ChecksumMode::Sha256,
            config::ChecksumMode::WhenRequired => ChecksumMode::WhenRequired,
        },
        credentials: match (&s3.access_key_id, &s3.secret_access_key) {
            (Some(id), Some(secret)) => Some(StaticCredentials {
                access_key_id: id.clone(),
                secret_access_key: secret.expose().to_string(),
            }),
            _ => None,
        },
        connect_timeout: s3.connect_timeout,
        stall_timeout: s3.stall_timeout,
    }
}

/// The destination the config names.
pub async fn destination(cfg: &Config) -> Result<Destination> {
    if let Some(s3) = &cfg.s3 {
        return Ok(Destination::S3(S3Destination::new(&s3_settings(s3)).await?));
    }
    match &cfg.local {
        Some(l) => {
            std::fs::create_dir_all(&l.dir)
                .with_context(|| format!("cannot create local destination {}", l.dir.display()))?;
            Ok(Destination::Local(LocalDestination::new(l.dir.clone())))
        }
        None => Err(crate::exit::usage(
            "no destination configured: add [s3] or [local]",
        )),
    }
}
