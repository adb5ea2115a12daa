//! ChaCha8's keystream eight blocks at a time: the very words `rand_chacha`'s `ChaCha8Rng`
//! gives for a seed (tested word for word), about twice as fast here.
//!
//! Why hand-written: the normal numbers of every seeded stream (`normals.rs`) are ChaCha8
//! words, and drawing them is about half of the engine's own time in a particle run on a small
//! model. `rand_chacha` computes four blocks at a time with two blocks per AVX2 register, so
//! every round shuffles lanes. Here each of the 16 state words is one 256-bit register holding
//! that word for 8 consecutive blocks (the "vertical" layout), so a round is plain adds, xors
//! and rotations, and two 8 × 8 transposes at the end put the words back in stream order. It is
//! compiled with AVX-512VL, whose one-instruction rotation replaces AVX2's three, and used only
//! where the CPU has it; elsewhere the words come from `rand_chacha` itself. (AVX2 intrinsics:
//! the AVX-512 ones need a newer Rust than the MSRV.)
//!
//! The stream (Bernstein 2008, "ChaCha, a variant of Salsa20"; the 64-bit-counter form
//! `rand_chacha` uses): the state is the four constants `"expand 32-byte k"`, the 32-byte key
//! (the seed) as eight little-endian words, a 64-bit block counter from 0 (words 12–13) and a
//! zero 64-bit nonce (words 14–15); 8 rounds alternate column and diagonal quarter rounds, and
//! the block is the final state plus the initial one. The stream is the blocks in counter order,
//! each block's words in order; a 64-bit word is two consecutive 32-bit words, low first.

/// Eight blocks: 128 32-bit words, 64 64-bit ones.
pub(crate) const WORDS_PER_CALL: usize = 64;

/// A ChaCha8 keystream from a 32-byte seed, eight blocks per call. (Off x86-64 it is never
/// made: [`ChaCha8x8::new`] answers `None` there.)
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) struct ChaCha8x8 {
    key: [u32; 8],
    /// The next block's counter.
    block: u64,
}

impl ChaCha8x8 {
    /// The generator at the start of `seed`'s stream, if this CPU has AVX2 and AVX-512VL.
    pub(crate) fn new(seed: &[u8; 32]) -> Option<Self> {
        if !available() {
            return None;
        }
        let mut key = [0u32; 8];
        for (k, b) in key.iter_mut().zip(seed.chunks_exact(4)) {
            *k = u32::from_le_bytes(b.try_into().expect("4 bytes"));
        }
        Some(ChaCha8x8 { key, block: 0 })
    }

    /// The stream's next [`WORDS_PER_CALL`] 64-bit words.
    pub(crate) fn fill(&mut self, out: &mut [u64; WORDS_PER_CALL]) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `new` made this generator only where the CPU has the features `blocks8` is
        // compiled for.
        unsafe {
            x86::blocks8(&self.key, self.block, out)
        };
        self.block = self.block.wrapping_add(8);
    }
}

/// Whether this CPU has what [`ChaCha8x8`] is compiled for (detected once).
fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static HAS: OnceLock<bool> = OnceLock::new();
        *HAS.get_or_init(|| {
            std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512vl")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// `"expand 32-byte k"` as four little-endian words.
    const SIGMA: [u32; 4] = [0x6170_7865, 0x3320_646e, 0x7962_2d32, 0x6b20_6574];

    /// `x <<< R` on each 32-bit lane (`L = 32 − R`); one `vprold` under AVX-512VL.
    #[inline(always)]
    unsafe fn rotate<const R: i32, const L: i32>(x: __m256i) -> __m256i {
        _mm256_or_si256(_mm256_slli_epi32::<R>(x), _mm256_srli_epi32::<L>(x))
    }

    /// One quarter round on four registers of eight lanes each.
    #[inline(always)]
    unsafe fn quarter(a: &mut __m256i, b: &mut __m256i, c: &mut __m256i, d: &mut __m256i) {
        *a = _mm256_add_epi32(*a, *b);
        *d = rotate::<16, 16>(_mm256_xor_si256(*d, *a));
        *c = _mm256_add_epi32(*c, *d);
        *b = rotate::<12, 20>(_mm256_xor_si256(*b, *c));
        *a = _mm256_add_epi32(*a, *b);
        *d = rotate::<8, 24>(_mm256_xor_si256(*d, *a));
        *c = _mm256_add_epi32(*c, *d);
        *b = rotate::<7, 25>(_mm256_xor_si256(*b, *c));
    }

    /// Blocks `block .. block + 8` of the stream under `key`, as 64 64-bit words in stream
    /// order.
    #[target_feature(enable = "avx2,avx512f,avx512vl")]
    pub(super) unsafe fn blocks8(key: &[u32; 8], block: u64, out: &mut [u64; 64]) {
        let splat = |w: u32| _mm256_set1_epi32(w as i32);
        let counter: [u64; 8] = std::array::from_fn(|l| block.wrapping_add(l as u64));
        let low: [i32; 8] = counter.map(|c| c as u32 as i32);
        let high: [i32; 8] = counter.map(|c| (c >> 32) as u32 as i32);
        let init: [__m256i; 16] = [
            splat(SIGMA[0]),
            splat(SIGMA[1]),
            splat(SIGMA[2]),
            splat(SIGMA[3]),
            splat(key[0]),
            splat(key[1]),
            splat(key[2]),
            splat(key[3]),
            splat(key[4]),
            splat(key[5]),
            splat(key[6]),
            splat(key[7]),
            _mm256_loadu_si256(low.as_ptr().cast()),
            _mm256_loadu_si256(high.as_ptr().cast()),
            // The nonce: 0.
            _mm256_setzero_si256(),
            _mm256_setzero_si256(),
        ];
        let mut x = init;
        for _ in 0..4 {
            let [x0, x1, x2, x3, x4, x5, x6, x7, x8, x9, x10, x11, x12, x13, x14, x15] = &mut x;
            quarter(x0, x4, x8, x12);
            quarter(x1, x5, x9, x13);
            quarter(x2, x6, x10, x14);
            quarter(x3, x7, x11, x15);
            quarter(x0, x5, x10, x15);
            quarter(x1, x6, x11, x12);
            quarter(x2, x7, x8, x13);
            quarter(x3, x4, x9, x14);
        }
        for (w, i) in x.iter_mut().zip(&init) {
            *w = _mm256_add_epi32(*w, *i);
        }
        // `x[w]` holds word `w` of the 8 blocks; transposed, words 0–7 and 8–15 of block `b`.
        let (first, second) = x.split_at_mut(8);
        transpose8(first.try_into().expect("8 rows"));
        transpose8(second.try_into().expect("8 rows"));
        let dst = out.as_mut_ptr().cast::<__m256i>();
        for b in 0..8 {
            _mm256_storeu_si256(dst.add(2 * b), first[b]);
            _mm256_storeu_si256(dst.add(2 * b + 1), second[b]);
        }
    }

    /// Transposes an 8 × 8 matrix of 32-bit words held one row per register.
    #[inline(always)]
    unsafe fn transpose8(r: &mut [__m256i; 8]) {
        // Within each 128-bit lane: 32-bit, then 64-bit interleaves make a 4 × 4 transpose,
        // so lane `l` of `s[j]` holds words 0–3 of block `4l + j` and of `s[4 + j]` words 4–7.
        let t: [__m256i; 8] = std::array::from_fn(|k| {
            let (a, b) = (r[k / 2 * 2], r[k / 2 * 2 + 1]);
            if k % 2 == 0 {
                _mm256_unpacklo_epi32(a, b)
            } else {
                _mm256_unpackhi_epi32(a, b)
            }
        });
        let mut s = [_mm256_setzero_si256(); 8];
        for h in 0..2 {
            let (t0, t1, t2, t3) = (t[4 * h], t[4 * h + 1], t[4 * h + 2], t[4 * h + 3]);
            s[4 * h] = _mm256_unpacklo_epi64(t0, t2);
            s[4 * h + 1] = _mm256_unpackhi_epi64(t0, t2);
            s[4 * h + 2] = _mm256_unpacklo_epi64(t1, t3);
            s[4 * h + 3] = _mm256_unpackhi_epi64(t1, t3);
        }
        // Block j takes the low lanes of s[j] and s[4 + j]; block 4 + j their high lanes.
        for j in 0..4 {
            r[j] = _mm256_permute2x128_si256::<0x20>(s[j], s[4 + j]);
            r[4 + j] = _mm256_permute2x128_si256::<0x31>(s[j], s[4 + j]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngCore, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn the_words_are_rand_chachas() {
        for s in 0..20u8 {
            let mut seed = [0u8; 32];
            for (i, b) in seed.iter_mut().enumerate() {
                *b = s.wrapping_mul(31).wrapping_add(i as u8 * 7);
            }
            let Some(mut ours) = ChaCha8x8::new(&seed) else {
                eprintln!("no AVX-512 here: nothing to compare");
                return;
            };
            let mut theirs = ChaCha8Rng::from_seed(seed);
            let mut buf = [0u64; WORDS_PER_CALL];
            for call in 0..5 {
                ours.fill(&mut buf);
                for (i, &w) in buf.iter().enumerate() {
                    assert_eq!(w, theirs.next_u64(), "seed {s}, call {call}, word {i}");
                }
            }
        }
    }
}
