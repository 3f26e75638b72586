//! [`client_id`]: the `clientId` header value a client sends, kept in a file so that a
//! camera sees the same client across restarts.

use std::path::Path;

/// The client id: `configured` if given, else a UUID kept in `state_dir/client-id`
/// (made on first use, written atomically).
///
/// ```no_run
/// use std::path::Path;
///
/// let id = qucam::client_id(Path::new("/var/lib/my-app"), None)?;
/// let opts = qucam::ClientOptions::new(id);
/// # let _ = opts;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn client_id(state_dir: &Path, configured: Option<&str>) -> std::io::Result<String> {
    if let Some(id) = configured {
        return Ok(id.to_string());
    }
    let file = state_dir.join("client-id");
    match std::fs::read_to_string(&file) {
        Ok(s) if uuid::Uuid::parse_str(s.trim()).is_ok() => return Ok(s.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::create_dir_all(state_dir)?;
    let id = uuid::Uuid::new_v4().to_string();
    let tmp = state_dir.join("client-id.tmp");
    std::fs::write(&tmp, format!("{id}\n"))?;
    std::fs::rename(&tmp, &file)?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_id_is_kept() {
        let d = tempfile::tempdir().unwrap();
        let a = client_id(d.path(), None).unwrap();
        let b = client_id(d.path(), None).unwrap();
        assert_eq!(a, b);
        assert_eq!(client_id(d.path(), Some("mine")).unwrap(), "mine");
    }
}
