//! Per-sequence key/value cache, f32, grown as the sequence grows.

use kernels::attention::KeyBlocks;

/// One layer's keys and values, `len` positions of `width` (= n_kv_heads · head_dim) channels:
/// keys in the attention kernel's transposed blocks, values as rows.
#[derive(Clone, Debug, Default)]
pub struct LayerKv {
    pub k: KeyBlocks,
    pub v: Vec<f32>,
    pub width: usize,
    pub len: usize,
}

impl LayerKv {
    pub fn new(width: usize) -> LayerKv {
        LayerKv {
            k: KeyBlocks::new(width),
            width,
            ..Default::default()
        }
    }

    pub fn append(&mut self, k: &[f32], v: &[f32]) {
        debug_assert_eq!(k.len() % self.width, 0);
        self.k.append(k);
        self.v.extend_from_slice(v);
        self.len += k.len() / self.width;
    }

    pub fn clear(&mut self) {
        self.truncate(0);
    }

    /// Drops positions from `len` on (e.g. to reuse a shared prompt prefix).
    pub fn truncate(&mut self, len: usize) {
        self.k.truncate(len);
        self.v.truncate(len * self.width);
        self.len = self.len.min(len);
    }
}

/// The cache of one sequence across all layers.
#[derive(Clone, Debug)]
pub struct KvCache {
    pub layers: Vec<LayerKv>,
}

impl KvCache {
    pub fn new(n_layers: usize, width: usize) -> KvCache {
        KvCache {
            layers: vec![LayerKv::new(width); n_layers],
        }
    }

    /// Positions already cached.
    pub fn len(&self) -> usize {
        self.layers.first().map_or(0, |l| l.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn clear(&mut self) {
        self.layers.iter_mut().for_each(LayerKv::clear);
    }

    pub fn truncate(&mut self, len: usize) {
        self.layers.iter_mut().for_each(|l| l.truncate(len));
    }
}
