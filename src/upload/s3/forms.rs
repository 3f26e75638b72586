//! The forms in which a store reports an object's content, compared exactly with what the
//! agent computed ([`judge`]). Nothing is accepted by its shape: a checksum or ETag counts
//! only when it equals a digest the agent computed from the bytes.
//!
//! In order, the first that applies decides:
//! 1. **A SHA-256 checksum** (HeadObject with checksum mode). Unsuffixed: it must equal the
//!    file's digest (full-object form), or, for an object the agent uploaded as multipart,
//!    the composite digest (moto's HeadObject leaves out the `-N`). `…-N`: the composite
//!    digest and the part count of our upload. A checksum that differs is a mismatch; one
//!    the agent cannot recompute (a composite of someone else's parts) goes to 4. A match
//!    may be the client's own claim coming back (moto stores a sent checksum unchecked): on
//!    an unencrypted object whose ETag has an MD5's shape, the ETag must also be the MD5 the
//!    agent computed, else 4 (also when the agent has no MD5 of it: found at its key).
//! 2. **The ETag**, when the store keeps no checksum and the object is not SSE-KMS/SSE-C
//!    encrypted (then the ETag is an MD5 of the bytes): it must equal the MD5 of the file
//!    (single PUT) or the MD5 of the part MD5s with `-N` (multipart). An ETag that differs is
//!    not proof of anything (a store may use another ETag scheme): go to 4.
//! 3. **Encrypted, our own upload** (SSE-KMS or SSE-C, no checksum): size and metadata only,
//!    reported as such; the bytes were sent in the request that wrote that metadata.
//! 4. **Read the bytes** (GetObject and hash): exact, costs the object's size in traffic;
//!    for objects the agent did not upload and for answers 1 and 2 cannot settle. An SSE-C
//!    object the agent did not upload cannot be read without its key: not verified.
//!
//! Each part of a multipart upload is held to its MD5 the same way ([`part_etag_differs`]):
//! where the store's ETags are MD5s, a part whose ETag is another MD5 is not the part sent.

use aws_sdk_s3::types::ServerSideEncryption;

use super::super::{SentDigests, hex_to_b64};

/// What HeadObject says about an object's content, beyond its size and metadata.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Reported<'a> {
    pub checksum_sha256: Option<&'a str>,
    pub etag: Option<&'a str>,
    /// Why the ETag is not an MD5 of the bytes (`"SSE-KMS"`, `"SSE-C"`), if it is not.
    pub encrypted: Option<&'static str>,
}

/// The outcome of comparing what the store reports with what the agent knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Tied exactly to the bytes, by the form named.
    Exact(&'static str),
    /// The object is not the clip: what differs.
    Mismatch(String),
    /// Nothing reported can be compared with what we know: read the object and hash it.
    ReadBytes(&'static str),
    /// Nothing ties object and bytes short of reading them, and reading is not done (why):
    /// accepted on size and metadata.
    SizeAndMetadata(String),
}

/// Compares `reported` with the file's SHA-256 (`sha256_hex`) and what was `sent`.
pub(super) fn judge(reported: &Reported, sha256_hex: &str, sent: &SentDigests) -> Verdict {
    let full = match hex_to_b64(sha256_hex) {
        Ok(b) => b,
        Err(e) => return Verdict::Mismatch(e.to_string()),
    };
    if let Some(checksum) = reported.checksum_sha256 {
        let verdict = judge_checksum(checksum.trim(), &full, sent, reported.etag);
        return etag_agrees(verdict, reported, sent);
    }
    if let Some(why) = reported.encrypted {
        return match (why, sent) {
            (_, SentDigests::Single { .. } | SentDigests::Multipart { .. }) => {
                Verdict::SizeAndMetadata(format!(
                    "{why}: the ETag is not an MD5 of the bytes and the store reports no SHA-256"
                ))
            }
            // Not ours, and unreadable without its customer key: nothing ties it to the clip.
            ("SSE-C", SentDigests::Unknown) => Verdict::Mismatch(
                "an SSE-C object this agent did not upload cannot be verified".into(),
            ),
            (_, SentDigests::Unknown) => {
                Verdict::ReadBytes("an encrypted object this agent did not upload")
            }
        };
    }
    let Some(expected) = expected_etag(sent) else {
        return Verdict::ReadBytes("no digests of our own to compare");
    };
    match reported.etag.map(unquote) {
        Some(etag) if etag.eq_ignore_ascii_case(&expected) => Verdict::Exact(match sent {
            SentDigests::Multipart { .. } => "ETag = MD5 of the part MD5s",
            _ => "ETag = MD5 of the file",
        }),
        _ => Verdict::ReadBytes("the ETag is not the MD5 the agent computed"),
    }
}

/// The ETag an unencrypted object made by our upload has: the MD5 of the file (single PUT)
/// or the MD5 of the part MD5s with `-N`.
fn expected_etag(sent: &SentDigests) -> Option<String> {
    match sent {
        SentDigests::Unknown => None,
        SentDigests::Single { md5_hex } => Some(md5_hex.clone()),
        SentDigests::Multipart { parts, md5_hex, .. } => Some(format!("{md5_hex}-{parts}")),
    }
}

/// A checksum match is the client's own claim coming back on a store that does not check
/// what clients send (moto keeps it unchecked). The ETag of an unencrypted object is the
/// store's MD5 of the bytes it received: when it has that shape and is not the MD5 the agent
/// computed, the checksum alone does not settle it, and the bytes are read back.
/// With no MD5 of our own to compare (an object the agent did not upload, or found at its
/// key), a checksum match on such an object is only the uploader's claim: read the bytes.
fn etag_agrees(verdict: Verdict, reported: &Reported, sent: &SentDigests) -> Verdict {
    let (Verdict::Exact(_), None, Some(etag)) =
        (&verdict, reported.encrypted, reported.etag.map(unquote))
    else {
        return verdict;
    };
    if !is_md5_etag(etag) {
        return verdict;
    }
    match expected_etag(sent) {
        None => Verdict::ReadBytes("the checksum matches, but there is no MD5 of ours to compare"),
        Some(expected) if !etag.eq_ignore_ascii_case(&expected) => {
            Verdict::ReadBytes("the checksum matches but the ETag is not the MD5 sent")
        }
        Some(_) => verdict,
    }
}

/// Why an object's or a part's ETag is not an MD5 of its bytes, from the encryption a
/// reply reports: SSE-KMS (`aws:kms`, `aws:kms:dsse`) or SSE-C. (SSE-S3, `AES256`, keeps
/// MD5 ETags.)
pub(super) fn encryption(
    sse: Option<&ServerSideEncryption>,
    sse_customer_algorithm: Option<&str>,
) -> Option<&'static str> {
    if sse_customer_algorithm.is_some() {
        return Some("SSE-C");
    }
    match sse {
        Some(ServerSideEncryption::AwsKms | ServerSideEncryption::AwsKmsDsse) => Some("SSE-KMS"),
        _ => None,
    }
}

/// Whether a part's ETag proves the store holds other bytes than the part whose MD5 (hex)
/// is `md5_hex`: the part is not encrypted (`encrypted` is `None`, see [`encryption`]), its
/// ETag has an MD5's shape (32 hex digits, quotes aside) and it is another MD5. An ETag of
/// another scheme proves nothing, as for objects.
pub(super) fn part_etag_differs(etag: &str, md5_hex: &str, encrypted: Option<&str>) -> bool {
    let etag = unquote(etag);
    encrypted.is_none()
        && etag.len() == 32
        && etag.bytes().all(|b| b.is_ascii_hexdigit())
        && !etag.eq_ignore_ascii_case(md5_hex.trim())
}

/// How an object was made, by its ETag's shape where that is an MD5's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Md5Etag {
    /// `0123…cdef`: one PUT.
    Single,
    /// `0123…cdef-N`: a multipart upload of N parts.
    Parts(u32),
}

/// [`Md5Etag`] of `etag` (quotes aside); `None` when it has not an MD5's shape.
pub(super) fn md5_etag(etag: &str) -> Option<Md5Etag> {
    let etag = unquote(etag);
    if !is_md5_etag(etag) {
        return None;
    }
    match etag.split_once('-') {
        None => Some(Md5Etag::Single),
        Some((_, n)) => n.parse().ok().map(Md5Etag::Parts),
    }
}

/// `0123…cdef` or `0123…cdef-N`: the shape of an MD5 ETag (single or multipart).
fn is_md5_etag(etag: &str) -> bool {
    let md5 = etag.split_once('-').map_or(etag, |(m, n)| {
        if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) {
            m
        } else {
            ""
        }
    });
    md5.len() == 32 && md5.bytes().all(|b| b.is_ascii_hexdigit())
}

fn judge_checksum(checksum: &str, full: &str, sent: &SentDigests, etag: Option<&str>) -> Verdict {
    let ours = match sent {
        SentDigests::Multipart {
            parts, sha256_b64, ..
        } => Some((*parts, sha256_b64.as_str())),
        _ => None,
    };
    if let Some((digest, n)) = checksum.rsplit_once('-') {
        let Ok(n) = n.parse::<u32>() else {
            return Verdict::Mismatch(format!("checksum sha256: malformed {checksum}"));
        };
        return match ours {
            Some((parts, composite)) if parts == n && digest == composite => {
                Verdict::Exact("composite SHA-256 checksum")
            }
            Some((parts, composite)) => Verdict::Mismatch(format!(
                "checksum sha256: stored {checksum}, expected {composite}-{parts}"
            )),
            None => Verdict::ReadBytes("a composite checksum of parts this agent did not send"),
        };
    }
    if checksum == full {
        return Verdict::Exact("full-object SHA-256 checksum");
    }
    match ours {
        Some((_, composite)) if checksum == composite => {
            Verdict::Exact("composite SHA-256 checksum (without -N)")
        }
        // A multipart object (ETag `…-N`) whose composite checksum is given without `-N`
        // (moto's HeadObject), of parts we do not know.
        None if etag.map(unquote).is_some_and(is_multipart_etag) => {
            Verdict::ReadBytes("a composite checksum of parts this agent did not send")
        }
        Some((_, composite)) => Verdict::Mismatch(format!(
            "checksum sha256: stored {checksum}, expected {full} or {composite}"
        )),
        None => Verdict::Mismatch(format!(
            "checksum sha256: stored {checksum}, expected {full}"
        )),
    }
}

pub(super) fn unquote(etag: &str) -> &str {
    let etag = etag.trim();
    let etag = etag.strip_prefix("W/").unwrap_or(etag);
    etag.trim_matches('"')
}

fn is_multipart_etag(etag: &str) -> bool {
    etag.rsplit_once('-')
        .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    // SHA-256 of "", and the MD5 of "".
    const HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const FULL: &str = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";
    const MD5: &str = "d41d8cd98f00b204e9800998ecf8427e";
    const COMPOSITE: &str = "Zm9yIHRoZSB0ZXN0IG9ubHksIG5vdCBhIHJlYWwgZGlnZXN0IQ==";

    fn multipart() -> SentDigests {
        SentDigests::Multipart {
            parts: 3,
            sha256_b64: COMPOSITE.into(),
            md5_hex: "0123456789abcdef0123456789abcdef".into(),
        }
    }

    fn single() -> SentDigests {
        SentDigests::Single {
            md5_hex: MD5.into(),
        }
    }

    fn checksum(c: &str) -> Reported<'_> {
        Reported {
            checksum_sha256: Some(c),
            ..Default::default()
        }
    }

    fn etag(e: &str) -> Reported<'_> {
        Reported {
            etag: Some(e),
            ..Default::default()
        }
    }

    fn exact(v: Verdict) -> bool {
        matches!(v, Verdict::Exact(_))
    }

    #[test]
    fn full_object_sha256() {
        for sent in [SentDigests::Unknown, single(), multipart()] {
            assert!(exact(judge(&checksum(FULL), HEX, &sent)));
        }
        assert!(matches!(
            judge(&checksum("AAAA"), HEX, &single()),
            Verdict::Mismatch(_)
        ));
    }

    #[test]
    fn composite_with_n() {
        let c = format!("{COMPOSITE}-3");
        assert!(exact(judge(&checksum(&c), HEX, &multipart())));
        // Another part count with the same digest is not our object.
        let c2 = format!("{COMPOSITE}-2");
        assert!(matches!(
            judge(&checksum(&c2), HEX, &multipart()),
            Verdict::Mismatch(_)
        ));
        // Parts we did not send cannot be recomputed: the bytes are read instead.
        assert!(matches!(
            judge(&checksum(&c), HEX, &SentDigests::Unknown),
            Verdict::ReadBytes(_)
        ));
    }

    #[test]
    fn composite_without_n_as_motos_head_object_gives_it() {
        let head = Reported {
            checksum_sha256: Some(COMPOSITE),
            etag: Some("\"0123456789abcdef0123456789abcdef-3\""),
            encrypted: None,
        };
        assert!(exact(judge(&head, HEX, &multipart())));
        // Not ours: neither full-object nor a composite we know; read the bytes.
        assert!(matches!(
            judge(&head, HEX, &SentDigests::Unknown),
            Verdict::ReadBytes(_)
        ));
        // Any other unsuffixed value is refused, on a multipart object or not.
        let other = Reported {
            checksum_sha256: Some("b3RoZXI="),
            ..head
        };
        assert!(matches!(
            judge(&other, HEX, &multipart()),
            Verdict::Mismatch(_)
        ));
        assert!(matches!(
            judge(&checksum(COMPOSITE), HEX, &SentDigests::Unknown),
            Verdict::Mismatch(_)
        ));
    }

    #[test]
    fn a_composite_of_the_right_shape_but_the_wrong_digest_is_refused() {
        // Today's code accepted any `-N` with a plausible N.
        let forged = "d3JvbmcgZGlnZXN0IG9mIHRoZSByaWdodCBzaGFwZSEhISE=-3";
        assert!(matches!(
            judge(&checksum(forged), HEX, &multipart()),
            Verdict::Mismatch(_)
        ));
        assert!(matches!(
            judge(&checksum("abc=-x"), HEX, &multipart()),
            Verdict::Mismatch(_)
        ));
    }

    #[test]
    fn etag_md5_of_a_single_put() {
        assert!(exact(judge(&etag(&format!("\"{MD5}\"")), HEX, &single())));
        assert!(matches!(
            judge(
                &etag("\"00000000000000000000000000000000\""),
                HEX,
                &single()
            ),
            Verdict::ReadBytes(_)
        ));
        assert!(matches!(
            judge(&etag(MD5), HEX, &SentDigests::Unknown),
            Verdict::ReadBytes(_)
        ));
    }

    #[test]
    fn etag_md5_of_md5s_of_a_multipart_upload() {
        let ok = "\"0123456789abcdef0123456789abcdef-3\"";
        assert!(exact(judge(&etag(ok), HEX, &multipart())));
        for wrong in [
            "\"0123456789abcdef0123456789abcdef-2\"",
            "\"0123456789abcdef0123456789abcdef\"",
            "\"ffffffffffffffffffffffffffffffff-3\"",
        ] {
            assert!(
                matches!(
                    judge(&etag(wrong), HEX, &multipart()),
                    Verdict::ReadBytes(_)
                ),
                "{wrong}"
            );
        }
    }

    #[test]
    fn sse_falls_back_to_size_and_metadata_or_reads_the_bytes() {
        let kms = Reported {
            etag: Some("\"not-an-md5\""),
            encrypted: Some("SSE-KMS"),
            ..Default::default()
        };
        assert!(matches!(
            judge(&kms, HEX, &multipart()),
            Verdict::SizeAndMetadata(_)
        ));
        assert!(matches!(
            judge(&kms, HEX, &SentDigests::Unknown),
            Verdict::ReadBytes(_)
        ));
        let ssec = Reported {
            encrypted: Some("SSE-C"),
            ..kms
        };
        assert!(matches!(
            judge(&ssec, HEX, &SentDigests::Unknown),
            Verdict::Mismatch(_)
        ));
        assert!(matches!(
            judge(&ssec, HEX, &single()),
            Verdict::SizeAndMetadata(_)
        ));
        // A checksum, when the store keeps one, still decides.
        let with_checksum = Reported {
            checksum_sha256: Some(FULL),
            ..kms
        };
        assert!(exact(judge(&with_checksum, HEX, &single())));
    }

    #[test]
    fn a_matching_checksum_with_an_etag_of_other_bytes_is_read_back() {
        // moto keeps a client-sent checksum unchecked; its ETag is the MD5 of what it got.
        let other_bytes = Reported {
            checksum_sha256: Some(FULL),
            etag: Some("\"ffffffffffffffffffffffffffffffff\""),
            encrypted: None,
        };
        assert!(matches!(
            judge(&other_bytes, HEX, &single()),
            Verdict::ReadBytes(_)
        ));
        let same_bytes = Reported {
            etag: Some("\"d41d8cd98f00b204e9800998ecf8427e\""),
            ..other_bytes
        };
        assert!(exact(judge(&same_bytes, HEX, &single())));
        // An ETag of another scheme says nothing: the checksum decides.
        let opaque = Reported {
            etag: Some("\"v2-opaque\""),
            ..other_bytes
        };
        assert!(exact(judge(&opaque, HEX, &single())));
    }

    #[test]
    fn a_matching_checksum_on_an_object_we_have_no_md5_of_is_read_back() {
        // Found at its key (another agent, an earlier run): the checksum may be the
        // uploader's unchecked claim, and there is no MD5 of ours to hold the ETag to.
        let found = Reported {
            checksum_sha256: Some(FULL),
            etag: Some("\"d41d8cd98f00b204e9800998ecf8427e\""),
            encrypted: None,
        };
        assert!(matches!(
            judge(&found, HEX, &SentDigests::Unknown),
            Verdict::ReadBytes(_)
        ));
        // A store whose ETags are not MD5s: the checksum decides.
        let opaque = Reported {
            etag: Some("\"v2-opaque\""),
            ..found
        };
        assert!(exact(judge(&opaque, HEX, &SentDigests::Unknown)));
    }

    #[test]
    fn a_part_etag_counts_only_where_it_is_an_md5() {
        // Quoted or not, either case: the MD5 sent is the part sent.
        assert!(!part_etag_differs(&format!("\"{MD5}\""), MD5, None));
        assert!(!part_etag_differs(&MD5.to_ascii_uppercase(), MD5, None));
        // Another MD5: the store holds other bytes.
        let other = "\"ffffffffffffffffffffffffffffffff\"";
        assert!(part_etag_differs(other, MD5, None));
        // Encrypted, or of another scheme: proves nothing.
        assert!(!part_etag_differs(other, MD5, Some("SSE-KMS")));
        assert!(!part_etag_differs("\"v2-opaque\"", MD5, None));
        assert!(!part_etag_differs(&format!("{MD5}-2"), MD5, None));
        assert_eq!(
            encryption(Some(&ServerSideEncryption::AwsKms), None),
            Some("SSE-KMS")
        );
        assert_eq!(encryption(Some(&ServerSideEncryption::Aes256), None), None);
        assert_eq!(encryption(None, Some("AES256")), Some("SSE-C"));
        assert_eq!(md5_etag(&format!("\"{MD5}\"")), Some(Md5Etag::Single));
        assert_eq!(md5_etag(&format!("{MD5}-12")), Some(Md5Etag::Parts(12)));
        assert_eq!(md5_etag("\"v2-opaque\""), None);
    }
}
