//! Depot Wi-Fi's memory (table `hotspots`, schema 6, the failure's reason schema 7, the
//! suspicious mark schema 11, the refused credentials schema 12): one row per camera hotspot (BSSID) met, with the IMEI that
//! answered behind it, when it was last seen, joined and completely offloaded, its join
//! failures with the reason of the last one ([`JoinFailure`]), and whether its network was
//! found suspicious after a join ([`Suspicious`]); and per IMEI, the work a visit would
//! find ([`CameraWork`]).
//! Times are milliseconds since the epoch, as the caller gives them.

use std::collections::BTreeMap;
use std::fmt;

use anyhow::Result;
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::Store;
use super::state::Group;

/// What is known about one hotspot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HotspotRow {
    pub bssid: String,
    pub ssid: String,
    /// The IMEI that last answered behind this BSSID.
    pub imei: Option<String>,
    /// Strength (percent) when last seen.
    pub signal: Option<u8>,
    pub last_seen: Option<i64>,
    pub last_joined: Option<i64>,
    pub last_complete: Option<i64>,
    /// Failed joins since the last one that succeeded.
    pub failures: u32,
    /// Not joined before this time.
    pub retry_at: Option<i64>,
    /// Why the last join failed; `None` once a join succeeds (or none ever failed, or the
    /// reason stored is one this build does not know).
    pub last_failure: Option<JoinFailure>,
    /// A password was refused since the last join that succeeded (whatever failed after
    /// it): reported once, and shown until a join succeeds.
    pub wrong_password: bool,
    /// A fingerprint of the credentials last refused since the last join that succeeded
    /// (never shown): other credentials clear the wait ([`Store::hotspot_credentials_changed`]).
    #[serde(skip)]
    pub refused_credentials: Option<String>,
    /// The network it leased failed the check after a join (cleared by a join that passes
    /// it, or a change of its credentials).
    pub suspicious: Option<Suspicious>,
}

/// A hotspot whose network failed the check after a join: not joined before `until` unless
/// its credentials change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Suspicious {
    /// Not joined again before this time (ms).
    pub until: i64,
    /// Why, in words (the lease and what it failed).
    pub reason: String,
    /// A fingerprint of the credentials it was joined with (never shown): other credentials
    /// clear the mark.
    #[serde(skip)]
    pub credentials: String,
}

/// Why a join failed, as the store keeps it (`hotspots.last_failure`) and `status` and
/// `/metrics` show it (the `reason` label). A text this program does not know is an error
/// when read, never a panic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum JoinFailure {
    /// The password known for the hotspot was refused.
    #[serde(rename = "wrong_password")]
    WrongPassword,
    /// The hotspot went away before the join completed (the truck drove off).
    #[serde(rename = "gone")]
    Gone,
    /// The activation failed for another reason.
    #[serde(rename = "activation_failed")]
    ActivationFailed,
    /// The activation did not complete in time.
    #[serde(rename = "timeout")]
    Timeout,
    /// NetworkManager itself failed (D-Bus, permissions).
    #[serde(rename = "networkmanager")]
    NetworkManager,
    /// Joined, but the network it leased failed the check after the join: left at once.
    #[serde(rename = "suspicious")]
    Suspicious,
}

impl JoinFailure {
    pub const ALL: [JoinFailure; 6] = [
        JoinFailure::WrongPassword,
        JoinFailure::Gone,
        JoinFailure::ActivationFailed,
        JoinFailure::Timeout,
        JoinFailure::NetworkManager,
        JoinFailure::Suspicious,
    ];

    /// The stored text (also the `reason` label of the join failure metric).
    pub const fn as_str(self) -> &'static str {
        match self {
            JoinFailure::WrongPassword => "wrong_password",
            JoinFailure::Gone => "gone",
            JoinFailure::ActivationFailed => "activation_failed",
            JoinFailure::Timeout => "timeout",
            JoinFailure::NetworkManager => "networkmanager",
            JoinFailure::Suspicious => "suspicious",
        }
    }

    /// The failure whose stored text is `text`.
    pub fn parse(text: &str) -> Option<JoinFailure> {
        JoinFailure::ALL.into_iter().find(|f| f.as_str() == text)
    }

    /// In words, for `status`.
    pub const fn describe(self) -> &'static str {
        match self {
            JoinFailure::WrongPassword => "wrong password",
            JoinFailure::Gone => "the hotspot was gone",
            JoinFailure::ActivationFailed => "activation failed",
            JoinFailure::Timeout => "activation timed out",
            JoinFailure::NetworkManager => "NetworkManager error",
            JoinFailure::Suspicious => "SUSPICIOUS network, left at once",
        }
    }

    /// Whether it is a refused password: reported once until a join succeeds (see
    /// [`Store::hotspot_failed`]), retried after a wait that starts at minutes and doubles
    /// per failed visit up to `wifi.wrong_password_retry`, or at once with other
    /// credentials.
    pub const fn counts_as_wrong_password(self) -> bool {
        match self {
            JoinFailure::WrongPassword => true,
            JoinFailure::Gone
            | JoinFailure::ActivationFailed
            | JoinFailure::Timeout
            | JoinFailure::NetworkManager
            | JoinFailure::Suspicious => false,
        }
    }
}

impl fmt::Display for JoinFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ToSql for JoinFailure {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for JoinFailure {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let text = value.as_str()?;
        JoinFailure::parse(text)
            .ok_or_else(|| FromSqlError::Other(format!("unknown join failure {text:?}").into()))
    }
}

/// A camera's work for its next visit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CameraWork {
    /// Clips whose bytes are still needed from the camera ([`Group::BEFORE_DOWNLOAD`]:
    /// seen, queued, downloading, failed at download).
    pub to_download: usize,
    /// Verified clips still on the camera (deletes wait for the next visit).
    pub verified: usize,
}

/// What [`Store::hotspot_failed`] recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinFailed {
    /// The first failure that counts as a wrong password since the last join that
    /// succeeded: report it once.
    pub first_wrong_password: bool,
    /// Failed joins in a row recorded before this one; for a refused password, refused
    /// passwords in a row (a wrong password's wait doubles with these only).
    pub failures_before: u32,
}

/// A row for `bssid` if there is none yet (a hotspot joined before any scan recorded it).
const ENSURE: &str =
    "INSERT INTO hotspots (bssid, ssid) VALUES (?1, '') ON CONFLICT(bssid) DO NOTHING";

impl Store {
    /// Records the hotspots a scan found: `(bssid, ssid, strength)`, seen at `at`.
    pub async fn hotspots_seen(&self, aps: Vec<(String, String, u8)>, at: i64) -> Result<()> {
        self.call(move |c| {
            let tx = c.transaction()?;
            for (bssid, ssid, signal) in &aps {
                tx.execute(
                    "INSERT INTO hotspots (bssid, ssid, signal, last_seen) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT(bssid) DO UPDATE SET ssid = ?2, signal = ?3, last_seen = ?4",
                    params![bssid, ssid, signal, at],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// A join succeeded at `at`: also clears its failures, backoff, last failure's reason
    /// and reported wrong password.
    pub async fn hotspot_joined(&self, bssid: String, at: i64) -> Result<()> {
        self.call(move |c| {
            let tx = c.transaction()?;
            tx.execute(ENSURE, params![bssid])?;
            tx.execute(
                "UPDATE hotspots SET last_joined = ?2, failures = 0, refusals = 0, retry_at = NULL,
                    last_failure = NULL, wrong_password_reported = 0, refused_credentials = NULL,
                    suspicious_until = NULL, suspicious_reason = NULL,
                    suspicious_credentials = NULL WHERE bssid = ?1",
                params![bssid, at],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Records the IMEI answering behind `bssid`; returns the previously recorded IMEI if it
    /// was different.
    pub async fn hotspot_identified(&self, bssid: String, imei: String) -> Result<Option<String>> {
        self.call(move |c| {
            let tx = c.transaction()?;
            tx.execute(ENSURE, params![bssid])?;
            let before: Option<String> = tx
                .query_row(
                    "SELECT imei FROM hotspots WHERE bssid = ?1",
                    params![bssid],
                    |r| r.get(0),
                )
                .optional()?
                .flatten();
            tx.execute(
                "UPDATE hotspots SET imei = ?2 WHERE bssid = ?1",
                params![bssid, imei],
            )?;
            tx.commit()?;
            Ok(before.filter(|b| *b != imei))
        })
        .await
    }

    /// A visit offloaded everything the camera had (at `at`).
    pub async fn hotspot_complete(&self, bssid: String, at: i64) -> Result<()> {
        self.call(move |c| {
            let tx = c.transaction()?;
            tx.execute(ENSURE, params![bssid])?;
            tx.execute(
                "UPDATE hotspots SET last_complete = ?2 WHERE bssid = ?1",
                params![bssid, at],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// A failed join with the credentials whose fingerprint is `credentials`, for
    /// `reason`: not before `retry_at(failures)`, given the failed joins recorded before
    /// this one (read and written in one transaction). A wrong password is reported once
    /// until a join succeeds, whatever other failures come between, and keeps the
    /// fingerprint of the credentials refused.
    pub async fn hotspot_failed(
        &self,
        bssid: String,
        reason: JoinFailure,
        credentials: String,
        retry_at: impl FnOnce(u32) -> i64 + Send + 'static,
    ) -> Result<JoinFailed> {
        self.call(move |c| {
            let tx = c.transaction()?;
            tx.execute(ENSURE, params![bssid])?;
            let (reported, failures, refusals): (bool, u32, u32) = tx.query_row(
                "SELECT wrong_password_reported, failures, refusals FROM hotspots
                    WHERE bssid = ?1",
                params![bssid],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?;
            let wrong = reason.counts_as_wrong_password();
            // A refusal's wait grows with refusals in a row only; other failures with all.
            let before = if wrong { refusals } else { failures };
            tx.execute(
                "UPDATE hotspots SET failures = failures + 1, retry_at = ?2, last_failure = ?3,
                    wrong_password_reported = MAX(wrong_password_reported, ?4),
                    refusals = refusals + ?4,
                    refused_credentials = CASE WHEN ?4 THEN ?5 ELSE refused_credentials END
                    WHERE bssid = ?1",
                params![bssid, retry_at(before), reason, wrong, credentials],
            )?;
            tx.commit()?;
            Ok(JoinFailed {
                first_wrong_password: wrong && !reported,
                failures_before: before,
            })
        })
        .await
    }

    /// The network `bssid` leased failed the check after a join (`reason`), joined with the
    /// credentials whose fingerprint is `credentials`: not joined again before `until`
    /// (ms), unless its credentials change ([`Store::hotspot_trusted_again`]).
    pub async fn hotspot_suspicious(
        &self,
        bssid: String,
        until: i64,
        reason: String,
        credentials: String,
    ) -> Result<()> {
        self.call(move |c| {
            let tx = c.transaction()?;
            tx.execute(ENSURE, params![bssid])?;
            tx.execute(
                "UPDATE hotspots SET suspicious_until = ?2, suspicious_reason = ?3,
                    suspicious_credentials = ?4, retry_at = MAX(COALESCE(retry_at, 0), ?2)
                    WHERE bssid = ?1",
                params![bssid, until, reason, credentials],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// The credentials of suspicious hotspot `bssid` changed: the mark and the wait it set
    /// are cleared (its failures in a row start over).
    pub async fn hotspot_trusted_again(&self, bssid: String) -> Result<()> {
        self.call(move |c| {
            c.execute(
                "UPDATE hotspots SET suspicious_until = NULL, suspicious_reason = NULL,
                    suspicious_credentials = NULL, retry_at = NULL, failures = 0
                    WHERE bssid = ?1 AND suspicious_until IS NOT NULL",
                params![bssid],
            )?;
            Ok(())
        })
        .await
    }

    /// The credentials offered to `bssid` are not those it refused last: the wait the
    /// refusals set is cleared (tried at the next rotation), and so are its failures in a
    /// row and the reported refusal (new credentials refused are news). A suspicious mark
    /// keeps its own wait ([`Store::hotspot_trusted_again`] clears it).
    pub async fn hotspot_credentials_changed(&self, bssid: String) -> Result<()> {
        self.call(move |c| {
            c.execute(
                "UPDATE hotspots SET retry_at = suspicious_until, failures = 0, refusals = 0,
                    last_failure = NULL, wrong_password_reported = 0, refused_credentials = NULL
                    WHERE bssid = ?1 AND refused_credentials IS NOT NULL",
                params![bssid],
            )?;
            Ok(())
        })
        .await
    }

    /// Every hotspot met, by BSSID.
    pub async fn hotspots(&self) -> Result<Vec<HotspotRow>> {
        self.call(|c| {
            let mut st = c.prepare(
                "SELECT bssid, ssid, imei, signal, last_seen, last_joined, last_complete,
                    failures, retry_at, last_failure, wrong_password_reported,
                    suspicious_until, suspicious_reason, suspicious_credentials,
                    refused_credentials FROM hotspots ORDER BY bssid",
            )?;
            let rows = st
                .query_map([], |r| {
                    Ok(HotspotRow {
                        bssid: r.get(0)?,
                        ssid: r.get(1)?,
                        imei: r.get(2)?,
                        signal: r.get(3)?,
                        last_seen: r.get(4)?,
                        last_joined: r.get(5)?,
                        last_complete: r.get(6)?,
                        failures: r.get(7)?,
                        retry_at: r.get(8)?,
                        // An unknown reason (a newer build's, after a downgrade) reads as
                        // none: it never hides the hotspot's other columns.
                        last_failure: r
                            .get::<_, Option<String>>(9)?
                            .as_deref()
                            .and_then(JoinFailure::parse),
                        wrong_password: r.get(10)?,
                        refused_credentials: r.get(14)?,
                        suspicious: r.get::<_, Option<i64>>(11)?.map(|until| Suspicious {
                            until,
                            reason: r
                                .get::<_, Option<String>>(12)
                                .ok()
                                .flatten()
                                .unwrap_or_default(),
                            credentials: r
                                .get::<_, Option<String>>(13)
                                .ok()
                                .flatten()
                                .unwrap_or_default(),
                        }),
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    /// Per IMEI with any: clips still to download from the camera, and verified clips
    /// still on it (deletes waiting for the next visit).
    pub async fn camera_work(&self) -> Result<BTreeMap<String, CameraWork>> {
        self.call(|c| {
            let download = Group::BEFORE_DOWNLOAD.sql();
            let mut st = c.prepare(&format!(
                "SELECT imei, SUM({download}), SUM(state = 'verified') FROM clips
                 WHERE on_camera = 1 AND ({download} OR state = 'verified') GROUP BY imei"
            ))?;
            let rows = st
                .query_map([], |r| {
                    let work = CameraWork {
                        to_download: r.get::<_, i64>(1)?.max(0) as usize,
                        verified: r.get::<_, i64>(2)?.max(0) as usize,
                    };
                    Ok((r.get::<_, String>(0)?, work))
                })?
                .collect::<rusqlite::Result<BTreeMap<_, _>>>()?;
            Ok(rows)
        })
        .await
    }
}
