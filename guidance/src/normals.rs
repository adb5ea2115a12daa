//! Standard normal numbers with exactly the values `rand_distr`'s `StandardNormal` draws from a
//! stream (as f64, then rounded to f32), about 2.7 times as fast (2.49 against 6.8 ns each).
//!
//! `rand_distr` samples by the ziggurat of Marsaglia & Tsang (2000), "The Ziggurat Method for
//! Generating Random Variables", in Doornik's form (2005): one 64-bit word `w` gives a layer
//! `i = w mod 256` and `u ∈ [−1, 1)` from its top 52 bits; `x = u·X[i]` is returned at once when
//! `|x| < X[i+1]` (about 99 % of draws), and otherwise a slower test or the tail's sampler runs,
//! reading more words. Every stream's numbers are part of steerdiff's seeding contract
//! (`rng.rs`), so they must not change; what costs time is a function call and the generator's
//! bookkeeping per number (measured: 6.8 ns each here).
//!
//! So this file takes the fast case itself and leaves everything else to `rand_distr`: words
//! are read ahead into a buffer; when a word's fast test passes, `x` is computed here with the
//! same floating-point operations; when it fails, `rand_distr` samples from the stream
//! positioned at that very word, and so repeats the failed test and goes on exactly as it
//! would have. The layer widths `X[i]` are read from `rand_distr` itself, not copied: a word
//! with `u = 2⁻²⁰` returns `2⁻²⁰·X[i]` exactly. A layer whose width could not be read (or whose
//! neighbour's could not, as for the last layer, whose `X[256]` no word reveals) is always
//! left to `rand_distr`. The words themselves come from [`ChaCha8x8`] where the CPU runs it
//! (the same words as `rand_chacha`'s, faster). A test compares millions of numbers with
//! `rand_distr`'s, bit for bit, with the words from either source.

use std::sync::OnceLock;

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::chacha8::{ChaCha8x8, WORDS_PER_CALL};

/// `u ∈ [−1, 1)` from a word, as `rand_distr`'s symmetric ziggurat makes it: the top 52 bits
/// as the mantissa of a number in `[2, 4)`, minus 3.
fn unit(word: u64) -> f64 {
    f64::from_bits((word >> 12) | (1024u64 << 52)) - 3.0
}

/// The word whose layer is `i` and whose `u` is `2⁻²⁰`.
fn probe_word(i: usize) -> u64 {
    // 2·(1 + m/2⁵²) − 3 = 2⁻²⁰ for the mantissa m = 2⁵¹ + 2³¹.
    (((1u64 << 51) + (1u64 << 31)) << 12) | i as u64
}

/// A generator that answers `first` once and then words that any ziggurat layer accepts at
/// once (layer 1, `u = 2⁻²⁰`), counting the words read.
struct Scripted {
    first: Option<u64>,
    reads: usize,
}

impl RngCore for Scripted {
    fn next_u32(&mut self) -> u32 {
        self.next_u64() as u32
    }

    fn next_u64(&mut self) -> u64 {
        self.reads += 1;
        self.first.take().unwrap_or(probe_word(1))
    }

    fn fill_bytes(&mut self, dst: &mut [u8]) {
        rand::rand_core::impls::fill_bytes_via_next(self, dst)
    }
}

/// Per layer: `(X[i], X[i+1])`, or `(0, −1)` (no `|x|` is below −1) when the layer is left to
/// `rand_distr`.
type Layers = [(f64, f64); 256];

/// The entry of a layer left to `rand_distr`.
const DEFER: (f64, f64) = (0.0, -1.0);

/// The layer widths, read from `rand_distr` once.
fn layers() -> &'static Layers {
    static LAYERS: OnceLock<Layers> = OnceLock::new();
    LAYERS.get_or_init(|| {
        let width = |i: usize| {
            let mut rng = Scripted {
                first: Some(probe_word(i)),
                reads: 0,
            };
            let x: f64 = StandardNormal.sample(&mut rng);
            // One word read: the fast case returned 2⁻²⁰·X[i] (exact: a power of two).
            (rng.reads == 1 && x > 0.0).then_some(x * (1u64 << 20) as f64)
        };
        let widths: Vec<Option<f64>> = (0..256).map(width).collect();
        let mut out = [DEFER; 256];
        for i in 0..255 {
            if let (Some(a), Some(b)) = (widths[i], widths[i + 1]) {
                out[i] = (a, b);
            }
        }
        out
    })
}

/// Words read ahead at a time: one call of [`ChaCha8x8`].
const WORDS: usize = WORDS_PER_CALL;

/// Words of a ChaCha8 stream, read ahead; the same sequence as calling `ChaCha8Rng`'s
/// `next_u64` one word at a time. (`rand_distr`'s normal sampler reads whole words only.)
struct Words {
    source: Source,
    buf: [u64; WORDS],
    at: usize,
}

/// Where the words come from: eight blocks at a time with AVX-512VL, else `rand_chacha`.
enum Source {
    Wide(ChaCha8x8),
    Rng(Box<ChaCha8Rng>),
}

impl Words {
    /// The stream keyed by `seed`, from [`ChaCha8x8`] where the CPU runs it and `wide` allows.
    fn new(seed: &[u8; 32], wide: bool) -> Self {
        let source = match ChaCha8x8::new(seed).filter(|_| wide) {
            Some(wide) => Source::Wide(wide),
            None => Source::Rng(Box::new(ChaCha8Rng::from_seed(*seed))),
        };
        Words {
            source,
            buf: [0; WORDS],
            at: WORDS,
        }
    }

    /// The next word, not consumed.
    #[inline(always)]
    fn peek(&mut self) -> u64 {
        if self.at == self.buf.len() {
            match &mut self.source {
                Source::Wide(wide) => wide.fill(&mut self.buf),
                Source::Rng(rng) => {
                    // The generator's bytes in order are its words in order, little-endian
                    // (`BlockRng` hands out whole 32-bit words either way); copying them out
                    // at once is cheaper than a call per word (3.30 against 3.48 ns per normal
                    // number, measured; 2.49 with `ChaCha8x8`).
                    let mut bytes = [0u8; 8 * WORDS];
                    rng.fill_bytes(&mut bytes);
                    for (w, b) in self.buf.iter_mut().zip(bytes.chunks_exact(8)) {
                        *w = u64::from_le_bytes(b.try_into().expect("8 bytes"));
                    }
                }
            }
            self.at = 0;
        }
        self.buf[self.at]
    }
}

impl RngCore for Words {
    fn next_u32(&mut self) -> u32 {
        // Never called by the normal sampler; a whole word keeps the stream's positions simple
        // (the equality test would show any use).
        self.next_u64() as u32
    }

    fn next_u64(&mut self) -> u64 {
        let w = self.peek();
        self.at += 1;
        w
    }

    fn fill_bytes(&mut self, dst: &mut [u8]) {
        rand::rand_core::impls::fill_bytes_via_next(self, dst)
    }
}

/// Fills `out` with the standard normal numbers of the ChaCha8 stream keyed by `seed`:
/// `StandardNormal`'s f64 values, each rounded to f32, the same as sampling them one by one from
/// `ChaCha8Rng::from_seed(seed)`.
pub(crate) fn fill(seed: &[u8; 32], out: &mut [f32]) {
    fill_from(Words::new(seed, true), out);
}

/// [`fill`] from `words`.
fn fill_from(mut words: Words, out: &mut [f32]) {
    let layers = layers();
    let mut done = 0;
    while done < out.len() {
        words.peek();
        // The run of buffered words that take the fast case, without per-word bookkeeping.
        let ahead = &words.buf[words.at..];
        let room = &mut out[done..];
        let mut taken = 0;
        for (v, &w) in room.iter_mut().zip(ahead) {
            let (width, next) = layers[w as usize & 0xff];
            let x = unit(w) * width;
            if x.abs() >= next {
                break;
            }
            *v = x as f32;
            taken += 1;
        }
        words.at += taken;
        done += taken;
        // A word that failed its fast test (the buffer's end stops the run too): from it on,
        // `rand_distr` samples, repeating that test.
        if done < out.len() && words.at < words.buf.len() {
            let x: f64 = StandardNormal.sample(&mut words);
            out[done] = x as f32;
            done += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn the_numbers_are_rand_distrs_bit_for_bit() {
        // 64 streams of 40,000: about 2.6 million numbers, some 30,000 of them through the slow
        // test or the tail.
        for seed in 0..64u8 {
            let mut key = [0u8; 32];
            key[0] = seed;
            key[9] = 3;
            // Both sources of words: `ChaCha8x8` (where this CPU runs it) and `rand_chacha`.
            for wide in [true, false] {
                let mut ours = vec![0f32; 40_000];
                fill_from(Words::new(&key, wide), &mut ours);
                let mut rng = ChaCha8Rng::from_seed(key);
                for (i, &x) in ours.iter().enumerate() {
                    let want = rng.sample::<f64, _>(StandardNormal) as f32;
                    assert_eq!(x.to_bits(), want.to_bits(), "stream {seed}, number {i}");
                }
            }
        }
    }

    #[test]
    fn most_layers_take_the_fast_case() {
        let known: Vec<f64> = layers()
            .iter()
            .filter(|&&l| l != DEFER)
            .map(|&(a, _)| a)
            .collect();
        assert!(known.len() >= 250, "only {} layers read", known.len());
        // The widths shrink from the tail's layer to the top's.
        let widths = known;
        assert!(widths.windows(2).all(|w| w[0] > w[1]), "{widths:?}");
        assert!(widths[0] > 3.0 && widths[0] < 4.5);
    }
}
