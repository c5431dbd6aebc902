//! Weights of the 32-element block types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL) and of the
//! K-quants Q4_K, Q5_K and Q6_K rearranged sixteen rows at a time for the AVX-512 VNNI kernels,
//! as llama.cpp's CPU backend repacks them at load time.
//!
//! In ggml's layout one row's blocks are contiguous, so a SIMD dot product of one row needs a
//! horizontal reduction and a scale conversion per block. Here the sixteen rows of a group share
//! every vector: for each 32 elements ("chunk"), byte 4r + i of vector j holds element 4j + i of
//! row r, so one `vpdpbusd` with four activation bytes broadcast gives all sixteen rows' partial
//! sums in its sixteen lanes, and the rows' scales load as one vector.
//!
//! Quants are stored unsigned, u = q + offset (offset 128 for Q8_0 and IQ4_NL's codebook values,
//! 8 for Q4_0, 16 for Q5_0, 32 for Q6_K, 0 for the types with a minimum): `vpdpbusd` multiplies
//! unsigned by signed bytes, and Σ u·a − offset·Σa is exactly ggml's integer Σ q·a (Q8_0
//! activation rows carry Σa per block, Q8_K rows per 16 elements). The bytes are the same quants
//! and scales, in another order; the layout takes about as many bytes as the original.
//!
//! A chunk's quants are 512 bytes of bytes (Q8_0), or 256 bytes of nibbles (vector p holds
//! vectors p and p + 4 in its low and high nibbles) followed by one (Q5_x: bit 4) or two (Q6_K:
//! bits 4 and 5) planes of eight 64-bit masks. A group is `nb` blocks' quants (one chunk per
//! 32-element block, eight per K-quant super-block), then their scales: for 32-element blocks
//! each block's sixteen f16 d, then (Q4_1, Q5_1) each block's sixteen f16 m; for K-quants, per
//! super-block, Q4_K/Q5_K: the 6-bit scales as bytes (8 × 16), the minimums as i16 pairs of
//! sub-blocks (4 × 16 × 2), d and dmin (16 f16 each); Q6_K: the i8 scales (16 × 16), d. Rows past
//! the end of the matrix are zero.

use half::f16;
use quant::ggml::blocks::IQ4_VALUES;
use quant::ggml::GgmlType;

/// Rows per group: one per 32-bit lane of a 512-bit vector.
pub const ROWS: usize = 16;

/// How a block type is stored in the interleaved layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub ty: GgmlType,
    /// Quants as 4-bit nibbles (else whole bytes).
    pub nibbles: bool,
    /// Planes of higher quant bits above the nibbles: 1 (Q5_x), 2 (Q6_K) or 0.
    pub high_bits: usize,
    /// An additive minimum per block or sub-block (Q4_1, Q5_1, Q4_K, Q5_K).
    pub min: bool,
    /// Nibbles index IQ4_NL's codebook.
    pub codebook: bool,
    /// u − q, subtracted through the activations' block sums.
    pub offset: i32,
    /// A 256-element K-quant super-block of eight chunks (else one 32-element block).
    pub super_block: bool,
}

impl Layout {
    pub fn of(ty: GgmlType) -> Option<Layout> {
        use GgmlType::*;
        let l = |nibbles, high_bits, min, codebook, offset, super_block| Layout {
            ty,
            nibbles,
            high_bits,
            min,
            codebook,
            offset,
            super_block,
        };
        Some(match ty {
            Q4_0 => l(true, 0, false, false, 8, false),
            Q4_1 => l(true, 0, true, false, 0, false),
            Q5_0 => l(true, 1, false, false, 16, false),
            Q5_1 => l(true, 1, true, false, 0, false),
            Q8_0 => l(false, 0, false, false, 128, false),
            IQ4NL => l(true, 0, false, true, 128, false),
            Q4K => l(true, 0, true, false, 0, true),
            Q5K => l(true, 1, true, false, 0, true),
            Q6K => l(true, 2, false, false, 32, true),
            _ => return None,
        })
    }

    /// Bytes of one chunk's quants (and high-bit masks) for the sixteen rows.
    pub fn chunk_bytes(self) -> usize {
        (if self.nibbles { 256 } else { 512 }) + 64 * self.high_bits
    }

    /// Bytes of one block's quants.
    pub fn quant_bytes(self) -> usize {
        self.chunk_bytes() * if self.super_block { 8 } else { 1 }
    }

    /// Bytes of one block's scales.
    pub fn scale_bytes(self) -> usize {
        match (self.super_block, self.min) {
            (false, false) => 32,
            (false, true) => 64,
            // Scales, minimum pairs, d, dmin.
            (true, true) => 128 + 256 + 64,
            // Scales, d.
            (true, false) => 256 + 32,
        }
    }

    /// Bytes of a group of `nb` blocks, padded to 64-byte lines.
    pub fn group_bytes(self, nb: usize) -> usize {
        (nb * (self.quant_bytes() + self.scale_bytes())).next_multiple_of(64)
    }
}

/// A whole matrix in the interleaved layout.
pub struct Interleaved {
    layout: Layout,
    /// Blocks per row.
    nb: usize,
    groups: usize,
    data: PageBuffer,
}

impl Interleaved {
    /// The `rows` × `cols` matrix stored as ggml blocks in `weights`, rearranged; None when
    /// `ty` has no interleaved layout.
    pub fn new(ty: GgmlType, weights: &[u8], rows: usize, cols: usize) -> Option<Interleaved> {
        let layout = Layout::of(ty)?;
        let (bs, ts) = (ty.block_size(), ty.type_size());
        assert!(cols.is_multiple_of(bs) && weights.len() == rows * cols / bs * ts);
        let nb = cols / bs;
        let groups = rows.div_ceil(ROWS);
        let gb = layout.group_bytes(nb);
        let mut data = PageBuffer::zeroed(groups * gb);
        let bytes: &mut [u8] = data.bytes_mut();
        crate::parallel::for_each_chunk_mut(bytes, gb, |g, out| {
            for r in 0..ROWS.min(rows - g * ROWS) {
                let row = &weights[(g * ROWS + r) * nb * ts..][..nb * ts];
                for (b, block) in row.chunks_exact(ts).enumerate() {
                    put_block(layout, nb, out, b, r, block);
                }
            }
        });
        Some(Interleaved {
            layout,
            nb,
            groups,
            data,
        })
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Blocks per row.
    pub fn blocks(&self) -> usize {
        self.nb
    }

    pub fn groups(&self) -> usize {
        self.groups
    }

    pub fn group_bytes(&self) -> usize {
        self.layout.group_bytes(self.nb)
    }

    /// The bytes of group `g` (rows 16g..16g+16), 64-byte aligned.
    pub fn group(&self, g: usize) -> &[u8] {
        let gb = self.group_bytes();
        &self.data.bytes()[g * gb..(g + 1) * gb]
    }

    pub fn storage_bytes(&self) -> usize {
        self.data.len
    }
}

/// A zeroed, 64-byte aligned buffer, carved out of 2 MiB-aligned chunks that the kernel is asked
/// to back with huge pages: a decoded token streams every weight once, and with 4 KiB pages each
/// of the tens of thousands of pages of even a small model costs a TLB miss per token. The
/// matrices of a model are made one after another and share chunks; a chunk is freed with its
/// last buffer.
struct PageBuffer {
    chunk: std::sync::Arc<Chunk>,
    offset: usize,
    len: usize,
}

impl PageBuffer {
    fn zeroed(len: usize) -> PageBuffer {
        static CURRENT: std::sync::Mutex<Option<(std::sync::Arc<Chunk>, usize)>> =
            std::sync::Mutex::new(None);
        let len64 = len.next_multiple_of(64).max(64);
        let mut current = CURRENT.lock().unwrap_or_else(|e| e.into_inner());
        let (chunk, offset) = match current.as_mut() {
            Some((chunk, used)) if chunk.size - *used >= len64 => {
                *used += len64;
                (chunk.clone(), *used - len64)
            }
            _ => {
                let chunk = std::sync::Arc::new(Chunk::new(len64.max(Chunk::SIZE)));
                *current = Some((chunk.clone(), len64));
                (chunk, 0)
            }
        };
        // Zeroing is the first touch of these pages, after the huge-page advice.
        // SAFETY: offset + len64 is inside the chunk, and no other buffer covers it.
        unsafe { std::ptr::write_bytes(chunk.ptr.as_ptr().add(offset), 0, len64) };
        PageBuffer { chunk, offset, len }
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: offset + len is inside the chunk, zeroed when the buffer was carved.
        unsafe { std::slice::from_raw_parts(self.chunk.ptr.as_ptr().add(self.offset), self.len) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`; only this buffer covers these bytes, and only `Interleaved::new`
        // writes them, before the buffer is shared.
        unsafe {
            std::slice::from_raw_parts_mut(self.chunk.ptr.as_ptr().add(self.offset), self.len)
        }
    }
}

struct Chunk {
    ptr: std::ptr::NonNull<u8>,
    size: usize,
    layout: std::alloc::Layout,
}

// SAFETY: plain owned memory; buffers in it are disjoint.
unsafe impl Send for Chunk {}
unsafe impl Sync for Chunk {}

impl Chunk {
    const HUGE: usize = 2 << 20;
    const SIZE: usize = 16 * Self::HUGE;

    fn new(size: usize) -> Chunk {
        let size = size.next_multiple_of(Self::HUGE);
        let layout = std::alloc::Layout::from_size_align(size, Self::HUGE).expect("chunk layout");
        // SAFETY: the layout has a non-zero size. The memory stays untouched until a buffer is
        // carved out and zeroed, so the advice below applies before any page is faulted in.
        let raw = unsafe { std::alloc::alloc(layout) };
        let ptr =
            std::ptr::NonNull::new(raw).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        #[cfg(target_os = "linux")]
        // A hint: where transparent huge pages are off, nothing changes.
        // SAFETY: the range is this allocation, aligned to the huge page size.
        unsafe {
            libc::madvise(raw as *mut libc::c_void, size, libc::MADV_HUGEPAGE)
        };
        Chunk { ptr, size, layout }
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

/// Writes block `b` of row `r` (ggml bytes `block`) into its group's bytes `out`.
fn put_block(l: Layout, nb: usize, out: &mut [u8], b: usize, r: usize, block: &[u8]) {
    let quants = &mut out[b * l.quant_bytes()..(b + 1) * l.quant_bytes()];
    if l.super_block {
        let k = k_quants(l.ty, block);
        for (c, q) in quants.chunks_exact_mut(l.chunk_bytes()).enumerate() {
            put_chunk(l, q, r, k.u[32 * c..32 * (c + 1)].try_into().unwrap());
        }
        let scales = &mut out[nb * l.quant_bytes() + b * l.scale_bytes()..][..l.scale_bytes()];
        if l.min {
            for (j, (sc, m)) in k.scales.iter().zip(k.mins).enumerate() {
                scales[16 * j + r] = *sc as u8;
                scales[128 + (j / 2) * 64 + 4 * r + 2 * (j % 2)..][..2]
                    .copy_from_slice(&m.to_le_bytes());
            }
            scales[384 + 2 * r..][..2].copy_from_slice(&k.d.to_le_bytes());
            scales[416 + 2 * r..][..2].copy_from_slice(&k.dmin.to_le_bytes());
        } else {
            for (s, sc) in k.scales.iter().enumerate() {
                scales[16 * s + r] = *sc as u8;
            }
            scales[256 + 2 * r..][..2].copy_from_slice(&k.d.to_le_bytes());
        }
        return;
    }
    let (u, d, m) = unsigned_quants(l.ty, block);
    put_chunk(l, quants, r, &u);
    let scales = &mut out[nb * l.quant_bytes()..];
    scales[b * 32 + 2 * r..][..2].copy_from_slice(&d.to_le_bytes());
    if let Some(m) = m {
        scales[nb * 32 + b * 32 + 2 * r..][..2].copy_from_slice(&m.to_le_bytes());
    }
}

/// Writes row `r`'s 32 unsigned quants `u` of one chunk into the chunk's bytes `quants`.
fn put_chunk(l: Layout, quants: &mut [u8], r: usize, u: &[u8; 32]) {
    // Four elements (one lane of one vector) at a time.
    let word = |j: usize| u32::from_le_bytes([u[4 * j], u[4 * j + 1], u[4 * j + 2], u[4 * j + 3]]);
    let mut put = |at: usize, w: u32| quants[at..at + 4].copy_from_slice(&w.to_le_bytes());
    if l.nibbles {
        // Vector p: vectors p (low nibbles) and p + 4 (high nibbles).
        for p in 0..4 {
            let (lo, hi) = (word(p) & 0x0F0F_0F0F, word(p + 4) & 0x0F0F_0F0F);
            put(p * 64 + 4 * r, lo | hi << 4);
        }
    } else {
        for j in 0..8 {
            put(j * 64 + 4 * r, word(j));
        }
    }
    for plane in 0..l.high_bits {
        for j in 0..8 {
            // Bit 4 + plane of each of the four bytes, to bits 4r..4r+4 of mask j.
            let h = (word(j) >> (4 + plane)) & 0x0101_0101;
            let bits = (h | h >> 7 | h >> 14 | h >> 21) & 0xF;
            quants[256 + 64 * plane + 8 * j + r / 2] |= (bits as u8) << (4 * (r % 2));
        }
    }
}

/// A K-quant super-block's 256 quants as stored here (Q6_K: q + 32, its stored form), its
/// sub-block scales (Q4_K/Q5_K: 8 unsigned 6-bit; Q6_K: 16 signed), minimums (Q4_K/Q5_K), d and
/// dmin.
struct KBlock {
    u: [u8; 256],
    scales: Vec<i16>,
    mins: Vec<i16>,
    d: f16,
    dmin: f16,
}

fn k_quants(ty: GgmlType, b: &[u8]) -> KBlock {
    use quant::ggml::blocks::scale_min_k4;
    let f16_at = |at: usize| f16::from_le_bytes([b[at], b[at + 1]]);
    let mut u = [0u8; 256];
    match ty {
        GgmlType::Q4K | GgmlType::Q5K => {
            let packed: [u8; 12] = b[4..16].try_into().unwrap();
            let (scales, mins) = (0..8)
                .map(|j| scale_min_k4(j, &packed))
                .unzip::<_, _, Vec<_>, Vec<_>>();
            // Chunk j: the low (even j) or high (odd j) nibbles of qs[32·(j/2)..][..32], and for
            // Q5_K bit j of qh[l] as bit 4.
            let qs = if ty == GgmlType::Q4K {
                &b[16..144]
            } else {
                &b[48..176]
            };
            for (k, u) in u.iter_mut().enumerate() {
                let (j, l) = (k / 32, k % 32);
                let byte = qs[32 * (j / 2) + l];
                *u = if j % 2 == 0 { byte & 0xF } else { byte >> 4 };
                if ty == GgmlType::Q5K {
                    *u |= ((b[16 + l] >> j) & 1) << 4;
                }
            }
            KBlock {
                u,
                scales: scales.into_iter().map(i16::from).collect(),
                mins: mins.into_iter().map(i16::from).collect(),
                d: f16_at(0),
                dmin: f16_at(2),
            }
        }
        GgmlType::Q6K => {
            // Element 128n + 32i + l: low nibble of ql[64n + 32(i % 2) + l] (high nibble for
            // i ≥ 2), two high bits from qh[32n + l] at bit 2i.
            let (ql, qh) = (&b[..128], &b[128..192]);
            for (k, u) in u.iter_mut().enumerate() {
                let (n, i, l) = (k / 128, (k % 128) / 32, k % 32);
                let byte = ql[64 * n + 32 * (i % 2) + l];
                let low = if i < 2 { byte & 0xF } else { byte >> 4 };
                *u = low | ((qh[32 * n + l] >> (2 * i)) & 3) << 4;
            }
            KBlock {
                u,
                scales: b[192..208].iter().map(|s| *s as i8 as i16).collect(),
                mins: Vec::new(),
                d: f16_at(208),
                dmin: f16::ZERO,
            }
        }
        _ => unreachable!("{ty} is not an interleaved K-quant"),
    }
}

/// A block's 32 quants as stored here (q + offset; IQ4_NL: codebook indices), its d and its m.
fn unsigned_quants(ty: GgmlType, b: &[u8]) -> ([u8; 32], f16, Option<f16>) {
    use GgmlType::*;
    let f16_at = |at: usize| f16::from_le_bytes([b[at], b[at + 1]]);
    // Elements 0..16 of a 4-bit block are the low nibbles of its 16 bytes, 16..32 the high ones.
    let nibble = |qs: &[u8], k: usize| {
        if k < 16 {
            qs[k] & 0xF
        } else {
            qs[k - 16] >> 4
        }
    };
    let fifth = |qh: &[u8], k: usize| {
        let h = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
        (((h >> k) & 1) << 4) as u8
    };
    let mut u = [0u8; 32];
    let (d, m) = match ty {
        Q4_0 | IQ4NL => {
            for (k, u) in u.iter_mut().enumerate() {
                *u = nibble(&b[2..18], k);
            }
            (f16_at(0), None)
        }
        Q4_1 => {
            for (k, u) in u.iter_mut().enumerate() {
                *u = nibble(&b[4..20], k);
            }
            (f16_at(0), Some(f16_at(2)))
        }
        Q5_0 => {
            for (k, u) in u.iter_mut().enumerate() {
                *u = nibble(&b[6..22], k) | fifth(&b[2..6], k);
            }
            (f16_at(0), None)
        }
        Q5_1 => {
            for (k, u) in u.iter_mut().enumerate() {
                *u = nibble(&b[8..24], k) | fifth(&b[4..8], k);
            }
            (f16_at(0), Some(f16_at(2)))
        }
        Q8_0 => {
            for (k, u) in u.iter_mut().enumerate() {
                *u = (b[2 + k] as i8 as i16 + 128) as u8;
            }
            (f16_at(0), None)
        }
        _ => unreachable!("{ty} has no interleaved layout"),
    };
    (u, d, m)
}

/// IQ4_NL's codebook shifted to unsigned bytes (value + 128), for the kernels' lookups.
pub fn iq4_codebook_unsigned() -> [u8; 16] {
    IQ4_VALUES.map(|v| (v as i16 + 128) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Row r's unsigned quant of element k, read back out of the layout (the inverse of
    /// `put_chunk`).
    fn quant(iv: &Interleaved, r: usize, k: usize) -> u8 {
        let l = iv.layout;
        let g = iv.group(r / ROWS);
        let (rr, kk) = (r % ROWS, k % 32);
        let (j, i) = (kk / 4, kk % 4);
        let q = &g[(k / 32) * l.chunk_bytes()..];
        let mut u = if l.nibbles {
            (q[(j % 4) * 64 + 4 * rr + i] >> (4 * (j / 4))) & 0xF
        } else {
            q[j * 64 + 4 * rr + i]
        };
        for plane in 0..l.high_bits {
            let bit = 4 * rr + i;
            u |= ((q[256 + 64 * plane + 8 * j + bit / 8] >> (bit % 8)) & 1) << (4 + plane);
        }
        u
    }

    fn f16_at(b: &[u8], at: usize) -> u16 {
        u16::from_le_bytes([b[at], b[at + 1]])
    }

    fn random_bytes(n: usize) -> Vec<u8> {
        let mut s = 0x9E37_79B9_7F4A_7C15u64;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 32) as u8
            })
            .collect()
    }

    #[test]
    fn every_quant_and_scale_lands_where_the_kernels_read_it() {
        use GgmlType::*;
        for ty in [Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4NL, Q4K, Q5K, Q6K] {
            let rows = 21;
            let cols = 3 * ty.block_size();
            let bytes = random_bytes(rows * ty.row_bytes(cols).unwrap());
            let iv = Interleaved::new(ty, &bytes, rows, cols).unwrap();
            let l = iv.layout();
            assert_eq!(iv.groups(), 2);
            assert_eq!(iv.group(0).as_ptr() as usize % 64, 0);
            let ts = ty.type_size();
            for r in 0..rows {
                let (g, rr) = (iv.group(r / ROWS), r % ROWS);
                let s = &g[iv.nb * l.quant_bytes()..];
                for b in 0..iv.nb {
                    let block = &bytes[(r * iv.nb + b) * ts..][..ts];
                    if l.super_block {
                        let k = k_quants(ty, block);
                        for (e, u) in k.u.iter().enumerate() {
                            assert_eq!(quant(&iv, r, 256 * b + e), *u, "{ty} r={r} e={e}");
                        }
                        let s = &s[b * l.scale_bytes()..];
                        if l.min {
                            for j in 0..8 {
                                assert_eq!(s[16 * j + rr] as i16, k.scales[j]);
                                let at = 128 + (j / 2) * 64 + 4 * rr + 2 * (j % 2);
                                assert_eq!(f16_at(s, at) as i16, k.mins[j]);
                            }
                            assert_eq!(f16_at(s, 384 + 2 * rr), k.d.to_bits());
                            assert_eq!(f16_at(s, 416 + 2 * rr), k.dmin.to_bits());
                        } else {
                            for j in 0..16 {
                                assert_eq!(s[16 * j + rr] as i8 as i16, k.scales[j]);
                            }
                            assert_eq!(f16_at(s, 256 + 2 * rr), k.d.to_bits());
                        }
                    } else {
                        let (u, d, m) = unsigned_quants(ty, block);
                        for (e, u) in u.iter().enumerate() {
                            assert_eq!(quant(&iv, r, 32 * b + e), *u, "{ty} r={r} e={e}");
                        }
                        assert_eq!(f16_at(s, b * 32 + 2 * rr), d.to_bits());
                        if let Some(m) = m {
                            assert_eq!(f16_at(s, iv.nb * 32 + b * 32 + 2 * rr), m.to_bits());
                        }
                    }
                }
            }
            // Padding rows are zero.
            assert!((rows..32).all(|r| quant(&iv, r, 5) == 0));
        }
    }

    /// The quants read out of ggml's blocks against quant's reference dequantizer: with scale 1
    /// and minimum 0 everywhere, element k dequantizes to its quant minus the offset.
    #[test]
    fn decoded_quants_match_the_reference_dequantizer() {
        use GgmlType::*;
        for ty in [Q4_0, Q5_0, Q8_0, Q4K, Q5K, Q6K] {
            let cols = ty.block_size().max(256);
            let mut bytes = random_bytes(ty.row_bytes(cols).unwrap());
            let one = f16::ONE.to_le_bytes();
            for b in bytes.chunks_exact_mut(ty.type_size()) {
                match ty {
                    Q4K | Q5K => {
                        b[0..2].copy_from_slice(&one);
                        b[2..4].fill(0);
                        // Every 6-bit scale 1, every minimum 0.
                        b[4..8].fill(1);
                        b[8..12].fill(0);
                        b[12..16].fill(1);
                    }
                    Q6K => {
                        b[192..208].fill(1);
                        b[208..210].copy_from_slice(&one);
                    }
                    _ => b[0..2].copy_from_slice(&one),
                }
            }
            let mut want = vec![0f32; cols];
            quant::ggml::dequantize_row(ty, &bytes, &mut want).unwrap();
            let l = Layout::of(ty).unwrap();
            let got: Vec<f32> = bytes
                .chunks_exact(ty.type_size())
                .flat_map(|b| {
                    let u: Vec<u8> = if l.super_block {
                        k_quants(ty, b).u.to_vec()
                    } else {
                        unsigned_quants(ty, b).0.to_vec()
                    };
                    u.into_iter().map(move |u| (u as i32 - l.offset) as f32)
                })
                .collect();
            assert_eq!(got, want, "{ty}");
        }
    }

    #[test]
    fn unsigned_quants_are_ggml_quants_plus_the_offset() {
        // Q8_0: -128 and 127 map to 0 and 255; IQ4_NL keeps indices; Q5_0 adds the fifth bit.
        let mut b = vec![0u8; 34];
        b[2] = 0x80;
        b[3] = 0x7F;
        let (u, _, _) = unsigned_quants(GgmlType::Q8_0, &b);
        assert_eq!((u[0], u[1], u[2]), (0, 255, 128));
        let mut b = vec![0u8; 22];
        b[2] = 0b10; // fifth bit of element 1
        b[6] = 0x3F; // elements 0 (low nibble 15) and 16 (high nibble 3)
        let (u, _, _) = unsigned_quants(GgmlType::Q5_0, &b);
        assert_eq!((u[0], u[1], u[16]), (15, 16, 3));
        assert_eq!(iq4_codebook_unsigned()[0], 1); // −127 + 128
    }
}
