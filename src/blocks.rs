//! A clip's bytes as the delete challenge knows them: the SHA-256 of every fixed block
//! ([`BLOCK`], 1 MiB; the last one may be shorter), computed in the same read that hashes
//! the whole clip ([`ClipHasher`]), whether the bytes arrive from the camera, resume from a
//! `.part` file or are read back from the spool.
//!
//! 32 bytes a block: 32 KiB of state for a 1 GiB clip. Right before a delete, the agent
//! reads a few blocks of the clip from the camera at offsets it draws at random and
//! compares them with these digests (`agent::camera::challenge`).

use sha2::{Digest, Sha256};

/// Bytes per block.
pub const BLOCK: u64 = 1 << 20;
/// Bytes per block digest.
const DIGEST: usize = 32;

/// The SHA-256 of each block of a clip, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockDigests(Vec<u8>);

impl BlockDigests {
    /// The digests stored as one blob (32 bytes each); `None` when its length is not a
    /// whole number of digests.
    pub fn from_blob(blob: Vec<u8>) -> Option<Self> {
        blob.len().is_multiple_of(DIGEST).then_some(Self(blob))
    }

    /// The blob to store.
    pub fn as_blob(&self) -> &[u8] {
        &self.0
    }

    /// How many blocks.
    pub fn count(&self) -> u64 {
        (self.0.len() / DIGEST) as u64
    }

    /// Whether `bytes` are block `i`'s.
    pub fn matches(&self, i: u64, bytes: &[u8]) -> bool {
        let Ok(i) = usize::try_from(i) else {
            return false;
        };
        match self.0.get(i * DIGEST..(i + 1) * DIGEST) {
            Some(d) => d == Sha256::digest(bytes).as_slice(),
            None => false,
        }
    }

    /// Whether these are the digests of a clip of `size` bytes (one per block, at least
    /// one).
    pub fn fit(&self, size: u64) -> bool {
        self.count() == blocks_in(size)
    }
}

/// How many blocks a clip of `size` bytes has (at least one: an empty clip is one empty
/// block).
pub fn blocks_in(size: u64) -> u64 {
    size.div_ceil(BLOCK).max(1)
}

/// The byte range of block `i` of a clip of `size` bytes: (first byte, length).
pub fn block_range(i: u64, size: u64) -> (u64, u64) {
    let start = i.saturating_mul(BLOCK).min(size);
    (start, BLOCK.min(size - start))
}

/// Hashes a clip's bytes in order: the whole clip's SHA-256 and each block's.
#[derive(Clone, Default)]
pub struct ClipHasher {
    whole: Sha256,
    block: Sha256,
    /// Bytes in the block under way.
    in_block: u64,
    digests: Vec<u8>,
}

impl ClipHasher {
    pub fn new() -> Self {
        Self::default()
    }

    /// Hashes the next bytes of the clip.
    pub fn update(&mut self, mut data: &[u8]) {
        self.whole.update(data);
        while !data.is_empty() {
            let room = usize::try_from(BLOCK - self.in_block).unwrap_or(usize::MAX);
            let take = room.min(data.len());
            self.block.update(&data[..take]);
            self.in_block += take as u64;
            data = &data[take..];
            if self.in_block == BLOCK {
                let done = std::mem::take(&mut self.block);
                self.digests.extend_from_slice(&done.finalize());
                self.in_block = 0;
            }
        }
    }

    /// The whole clip's SHA-256 (hex) and its block digests.
    pub fn finish(mut self) -> (String, BlockDigests) {
        if self.in_block > 0 || self.digests.is_empty() {
            self.digests.extend_from_slice(&self.block.finalize());
        }
        (
            hex::encode(self.whole.finalize()),
            BlockDigests(self.digests),
        )
    }
}

/// The SHA-256 (hex) and block digests of a whole file (blocking; call from a blocking
/// context).
pub fn hash_file(path: &std::path::Path) -> std::io::Result<(String, BlockDigests)> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut hasher = ClipHasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn blocks_are_hashed_whatever_the_chunks() {
        let data = bytes(BLOCK as usize * 2 + 1000);
        let mut one = ClipHasher::new();
        one.update(&data);
        let (sha, blocks) = one.finish();
        assert_eq!(sha, hex::encode(Sha256::digest(&data)));
        assert_eq!(blocks.count(), 3);
        assert!(blocks.fit(data.len() as u64));
        let mut chunked = ClipHasher::new();
        for c in data.chunks(77_777) {
            chunked.update(c);
        }
        assert_eq!(chunked.finish(), (sha, blocks.clone()));
        for i in 0..3 {
            let (start, len) = block_range(i, data.len() as u64);
            let block = &data[start as usize..(start + len) as usize];
            assert!(blocks.matches(i, block), "block {i}");
            let mut other = block.to_vec();
            other[0] ^= 1;
            assert!(!blocks.matches(i, &other), "block {i} changed");
        }
        assert!(!blocks.matches(3, b""), "no fourth block");
        assert_eq!(block_range(2, data.len() as u64), (2 * BLOCK, 1000));
    }

    #[test]
    fn an_exact_or_empty_clip_has_no_spurious_block() {
        let mut h = ClipHasher::new();
        h.update(&bytes(BLOCK as usize));
        assert_eq!(h.finish().1.count(), 1);
        let (_, empty) = ClipHasher::new().finish();
        assert_eq!(empty.count(), 1);
        assert!(empty.matches(0, b""));
        assert_eq!(blocks_in(0), 1);
        assert_eq!(blocks_in(BLOCK + 1), 2);
        assert!(BlockDigests::from_blob(vec![0; 33]).is_none());
        assert_eq!(BlockDigests::from_blob(vec![0; 64]).unwrap().count(), 2);
    }
}
