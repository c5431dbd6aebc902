//! The bit packing that GPTQ and compressed-tensors files share: b-bit values (1 ≤ b ≤ 8) laid
//! end to end in a little-endian bit stream of 32-bit words, value k at bits b·k .. b·k + b, a
//! value crossing a word boundary split between the two words (AutoGPTQ's 3-bit layout;
//! compressed-tensors' pack_to_int32), the last word zero-padded.

/// Words needed for `n` values of `bits` bits.
pub fn packed_words(n: usize, bits: u32) -> usize {
    (n * bits as usize).div_ceil(32)
}

/// Packs `values` (each below 2^bits) into words.
pub fn pack(values: impl IntoIterator<Item = u32>, bits: u32, out: &mut Vec<u32>) {
    let (mut word, mut used) = (0u64, 0u32);
    for v in values {
        debug_assert!(v < (1 << bits));
        word |= (v as u64) << used;
        used += bits;
        if used >= 32 {
            out.push(word as u32);
            word >>= 32;
            used -= 32;
        }
    }
    if used > 0 {
        out.push(word as u32);
    }
}

/// Unpacks the first `n` values of `bits` bits from `words`, which must hold them.
pub fn unpack(words: &[u32], bits: u32, n: usize, out: &mut Vec<u8>) {
    assert!(words.len() >= packed_words(n, bits), "too few words");
    let mask = (1u64 << bits) - 1;
    let (mut acc, mut have, mut next) = (0u64, 0u32, 0usize);
    for _ in 0..n {
        if have < bits {
            acc |= (words[next] as u64) << have;
            next += 1;
            have += 32;
        }
        out.push((acc & mask) as u8);
        acc >>= bits;
        have -= bits;
    }
}

/// Little-endian bytes of 32-bit words, as safetensors stores int32 tensors.
pub fn words_le(words: &[u32]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Index loops on purpose: they spell out AutoGPTQ's packing loop.
    #[allow(clippy::needless_range_loop)]
    #[test]
    fn three_bit_stream_matches_autogptq_layout() {
        // AutoGPTQ pack, 3 bits: values 0..9 at 3j of word 0, value 10 split (bits 30-31 of
        // word 0, bit 0 of word 1), values 11..20 at 3(j−11)+1 of word 1, ...
        let v: Vec<u32> = (0..32).map(|i| (i * 5 + 3) % 8).collect();
        let mut w = Vec::new();
        pack(v.iter().copied(), 3, &mut w);
        assert_eq!(w.len(), 3);
        let mut want = [0u32; 3];
        for j in 0..10 {
            want[0] |= v[j] << (3 * j);
        }
        want[0] |= v[10] << 30;
        want[1] |= (v[10] >> 2) & 1;
        for j in 11..21 {
            want[1] |= v[j] << (3 * (j - 11) + 1);
        }
        want[1] |= v[21] << 31;
        want[2] |= (v[21] >> 1) & 3;
        for j in 22..32 {
            want[2] |= v[j] << (3 * (j - 22) + 2);
        }
        assert_eq!(w, want);
        let mut back = Vec::new();
        unpack(&w, 3, 32, &mut back);
        assert_eq!(back, v.iter().map(|x| *x as u8).collect::<Vec<_>>());
    }

    #[test]
    fn round_trips_every_width_with_padding() {
        for bits in 1..=8u32 {
            let v: Vec<u32> = (0..37).map(|i| (i * 7 + bits) % (1 << bits)).collect();
            let mut w = Vec::new();
            pack(v.iter().copied(), bits, &mut w);
            assert_eq!(w.len(), packed_words(37, bits));
            let mut back = Vec::new();
            unpack(&w, bits, 37, &mut back);
            assert_eq!(
                back,
                v.iter().map(|x| *x as u8).collect::<Vec<_>>(),
                "{bits}"
            );
        }
        let mut w = Vec::new();
        pack([1, 2, 3, 4, 5, 6, 7, 8], 4, &mut w);
        assert_eq!(w, vec![0x8765_4321]);
    }
}
