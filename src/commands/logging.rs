//! Logging setup for the long-running commands: the systemd journal when stderr is the
//! journal's stream (or `[log] target = "journald"`), text or JSON lines on stderr
//! otherwise, through the progress bars' writer so bars and lines do not tear.

use tracing::warn;

use crate::config::{Config, LogFormat, LogTarget};

/// Sets up `tracing`, the one place that does: `RUST_LOG` wins over `[log] level`.
///
/// Lines go to the systemd journal, with levels as priorities and fields as journal
/// fields, when `[log] target = "journald"`, or under `"auto"` (the default) when stderr
/// is the journal's stream (systemd sets `JOURNAL_STREAM` to its device and inode).
/// Otherwise, or when the journal's socket is absent, text or JSON lines (`[log] format`)
/// go to stderr.
pub fn init_logging(cfg: &Config) {
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&cfg.log.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
        // The in-process simulator (demo) logs every request: keep it quiet.
        .add_directive("qucam_sim=warn".parse().expect("static directive"));
    let want_journal = match cfg.log.target {
        LogTarget::Stderr => false,
        LogTarget::Journald => true,
        LogTarget::Auto => stderr_is_journal(),
    };
    let (journal, journal_error) = if want_journal {
        match tracing_journald::layer() {
            Ok(l) => (Some(l.with_syslog_identifier("qucam-offload".into())), None),
            Err(e) => (None, Some(e)),
        }
    } else {
        (None, None)
    };
    let registry = tracing_subscriber::registry().with(filter);
    let installed = match (journal, cfg.log.format) {
        (Some(j), _) => registry.with(j).try_init(),
        (None, LogFormat::Json) => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(crate::progress::log_writer()),
            )
            .try_init(),
        (None, LogFormat::Text) => registry
            .with(
                tracing_subscriber::fmt::layer()
                    // Colours only on a terminal; NO_COLOR turns them off there too.
                    .with_ansi(
                        std::io::IsTerminal::is_terminal(&std::io::stderr())
                            && std::env::var_os("NO_COLOR").is_none(),
                    )
                    .with_writer(crate::progress::log_writer()),
            )
            .try_init(),
    };
    if let (Ok(()), Some(e)) = (installed, journal_error) {
        warn!("the systemd journal is not reachable ({e}); logging to stderr");
    }
}

/// Whether stderr is connected to the journal: `JOURNAL_STREAM` (`DEV:INODE`, set by
/// systemd) names the file stderr is. A variable inherited by a process whose stderr
/// was redirected elsewhere does not count.
fn stderr_is_journal() -> bool {
    let Some(v) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    #[cfg(unix)]
    {
        use std::os::fd::AsFd;
        use std::os::unix::fs::MetadataExt;
        let Some((dev, ino)) = v.to_str().and_then(|s| s.split_once(':')) else {
            return false;
        };
        let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
            return false;
        };
        let Ok(meta) = std::fs::File::from(fd).metadata() else {
            return false;
        };
        dev.parse::<u64>().ok() == Some(meta.dev()) && ino.parse::<u64>().ok() == Some(meta.ino())
    }
    #[cfg(not(unix))]
    {
        let _ = v;
        false
    }
}
