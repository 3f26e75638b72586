//! Pruning: rows in final states leave the database after an age (`[sync] prune_after`),
//! so a camera's state stays small for years. What pruning keeps, and why, is in
//! `docs/clip-lifecycle.md` ("Pruning"): the counts of what it removed (the `pruned`
//! table, which [`Store::counts`] and [`Store::last_verified`] add in), and every row the
//! generation rules still need.

use anyhow::Result;
use rusqlite::params;

use super::Store;
use super::listing::LOST_CONFIRMED;

/// The rows pruning may remove (see the module doc), with `?1` the cutoff (Unix seconds):
/// off the camera, not from the spool quarantine, not verified weakly (`status` lists
/// those), untouched since the cutoff, and in a
/// final state: `skipped`, `elsewhere`, `lost` once the bucket was checked (`?2`), `retained`
/// and gone from the camera, or `deleted`, except a path's latest generation deleted by
/// the agent with its block digests (the rule for a delete that did not take needs it).
const PRUNABLE: &str = "on_camera = 0 AND origin IS NULL AND weak_proof IS NULL
    AND MAX(last_seen, COALESCE(deleted_at, 0), COALESCE(verified_at, 0)) < ?1
    AND (state IN ('skipped', 'elsewhere', 'retained')
         OR (state = 'lost' AND reason = ?2)
         OR (state = 'deleted' AND NOT (reason IS NULL AND blocks IS NOT NULL
             AND generation = (SELECT MAX(o.generation) FROM clips o
                                WHERE o.imei = clips.imei AND o.path = clips.path))))";

/// Rows pruned in one transaction: the store answers other calls between batches.
const PRUNE_BATCH: usize = 5_000;

impl Store {
    /// Removes the rows in final states untouched since `cutoff` (Unix seconds; see
    /// [`PRUNABLE`]), adding them to the `pruned` counts in the same transaction, in
    /// batches of [`PRUNE_BATCH`]. Returns how many rows went.
    pub async fn prune(&self, cutoff: i64) -> Result<usize> {
        let mut gone = 0;
        loop {
            let n = self.call(move |c| prune_batch(c, cutoff)).await?;
            gone += n;
            if n < PRUNE_BATCH {
                return Ok(gone);
            }
        }
    }
}

/// One batch of [`Store::prune`]: the counts of the rows, then the rows, in one
/// transaction (the same rows both times: nothing else writes in between).
fn prune_batch(c: &mut rusqlite::Connection, cutoff: i64) -> Result<usize> {
    let batch = format!("SELECT id FROM clips WHERE {PRUNABLE} ORDER BY id LIMIT {PRUNE_BATCH}");
    let tx = c.transaction()?;
    tx.execute(
        &format!(
            "INSERT INTO pruned (imei, state, clips, bytes, last_verified)
             SELECT imei, state, COUNT(*), COALESCE(SUM(size), 0), MAX(verified_at)
               FROM clips WHERE id IN ({batch}) GROUP BY imei, state
             ON CONFLICT(imei, state) DO UPDATE SET
                clips = clips + excluded.clips,
                bytes = bytes + excluded.bytes,
                last_verified = MAX(COALESCE(last_verified, 0),
                                    COALESCE(excluded.last_verified, 0))"
        ),
        params![cutoff, LOST_CONFIRMED],
    )?;
    let gone = tx.execute(
        &format!("DELETE FROM clips WHERE id IN ({batch})"),
        params![cutoff, LOST_CONFIRMED],
    )?;
    tx.commit()?;
    Ok(gone)
}
