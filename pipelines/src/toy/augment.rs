//! Data augmentation for classifier training: random translations and mirror images.
//!
//! The toy generator already varies position, scale, rotation and colour; the judge is
//! trained with these two extra transformations (the guidance classifier without), so the two
//! classifiers see differently distributed training images as well as different images. A
//! mirror image keeps every class (each class is mirror-symmetric up to a rotation, and the
//! generator draws rotations over the full circle).

use serde::{Deserialize, Serialize};
use steerdiff_guidance::rng::StreamKey;

use super::data::SIZE;

/// How training images are augmented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Augment {
    /// Each image moves by up to this many pixels in each direction (uniform integer offsets;
    /// the edge pixels repeat into the uncovered border).
    pub shift: usize,
    /// Mirror each image left–right with probability ½.
    pub flip: bool,
}

impl Augment {
    /// Applies the augmentation in place to `n` channel-first `3×32×32` images, with the
    /// draws of stream `key` (three uniforms per image: x offset, y offset, mirror).
    pub fn apply(&self, pixels: &mut [f32], n: usize, key: StreamKey) {
        let draws = key.uniforms(3 * n);
        let plane = SIZE * SIZE;
        let span = 2 * self.shift + 1;
        let offset = |u: f64| {
            (u * span as f64).floor().min((span - 1) as f64) as isize - self.shift as isize
        };
        let clamp = |v: isize| v.clamp(0, SIZE as isize - 1) as usize;
        let mut source = vec![0f32; 3 * plane];
        for (i, d) in draws.chunks(3).enumerate() {
            let (dx, dy) = (offset(d[0]), offset(d[1]));
            let mirror = self.flip && d[2] < 0.5;
            let image = &mut pixels[i * 3 * plane..(i + 1) * 3 * plane];
            source.copy_from_slice(image);
            for c in 0..3 {
                for y in 0..SIZE {
                    let sy = clamp(y as isize - dy);
                    for x in 0..SIZE {
                        let mx = if mirror { SIZE - 1 - x } else { x };
                        let sx = clamp(mx as isize - dx);
                        image[c * plane + y * SIZE + x] = source[c * plane + sy * SIZE + sx];
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use steerdiff_guidance::rng::Domain;

    fn key(seed: u64) -> StreamKey {
        StreamKey {
            seed,
            lineage: 4,
            step: 0,
            domain: Domain::Step,
        }
    }

    #[test]
    fn no_shift_and_no_flip_is_the_identity() {
        let (mut px, _) = super::super::data::batch(5, 0, 4);
        let before = px.clone();
        Augment {
            shift: 0,
            flip: false,
        }
        .apply(&mut px, 4, key(1));
        assert_eq!(px, before);
    }

    #[test]
    fn images_move_by_at_most_the_shift_and_keep_their_values() {
        let n = 16;
        let (mut px, _) = super::super::data::batch(5, 0, n);
        let before = px.clone();
        Augment {
            shift: 2,
            flip: true,
        }
        .apply(&mut px, n, key(1));
        assert_ne!(px, before, "16 images drawn without a single move");
        let plane = SIZE * SIZE;
        for i in 0..n {
            let img = &before[i * 3 * plane..(i + 1) * 3 * plane];
            let out = &px[i * 3 * plane..(i + 1) * 3 * plane];
            // Every output pixel is some input pixel of the same channel within reach.
            for c in 0..3 {
                for y in 0..SIZE {
                    for x in 0..SIZE {
                        let v = out[c * plane + y * SIZE + x];
                        let found = (0..SIZE).any(|sy| {
                            (y as isize - sy as isize).abs() <= 2
                                && (0..SIZE).any(|sx| img[c * plane + sy * SIZE + sx] == v)
                        });
                        assert!(found, "image {i} pixel ({c},{y},{x}) came from nowhere");
                    }
                }
            }
        }
    }
}
