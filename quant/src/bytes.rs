//! Shared, cheaply cloned byte ranges: a window into a memory map or an owned buffer, so weights
//! can stay in the file they came from.

use std::ops::{Deref, Range};
use std::sync::Arc;

#[derive(Clone)]
pub struct SharedBytes {
    owner: Arc<dyn AsRef<[u8]> + Send + Sync>,
    range: Range<usize>,
}

impl SharedBytes {
    /// A window of `owner`; panics if the range is out of bounds (callers validate first).
    pub fn new(owner: Arc<dyn AsRef<[u8]> + Send + Sync>, range: Range<usize>) -> SharedBytes {
        assert!(range.start <= range.end && range.end <= (*owner).as_ref().len());
        SharedBytes { owner, range }
    }

    pub fn from_vec(v: Vec<u8>) -> SharedBytes {
        let n = v.len();
        SharedBytes::new(Arc::new(v), 0..n)
    }

    /// A sub-window, relative to this one.
    pub fn slice(&self, r: Range<usize>) -> SharedBytes {
        assert!(r.start <= r.end && r.end <= self.len());
        SharedBytes {
            owner: self.owner.clone(),
            range: self.range.start + r.start..self.range.start + r.end,
        }
    }
}

impl Deref for SharedBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &(*self.owner).as_ref()[self.range.clone()]
    }
}

impl std::fmt::Debug for SharedBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SharedBytes({} bytes)", self.len())
    }
}
