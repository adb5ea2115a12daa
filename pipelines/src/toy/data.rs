//! The toy dataset: a deterministic procedural generator of 32×32 RGB shape images.
//!
//! Ten classes ([`CLASS_NAMES`]): circle, square, triangle, cross, ring, star, diamond, heart,
//! bars, arrow. Each image draws, from its own seeded stream:
//! - a background colour with a linear gradient (amplitude ≤ 0.2) in a random direction;
//! - a foreground colour at least 0.35 away (RGB distance) from the background;
//! - the shape's centre (anywhere the shape fits, ±~6 px), scale (radius 7–12 px) and
//!   rotation ([`Rotation`]: uniform over the circle, or within ±20° of upright; the circle
//!   and ring are rotation-invariant);
//! - a mild texture on the shape (a sinusoidal grating of amplitude ≤ 0.1) and pixel noise
//!   (σ = 0.03) everywhere.
//!
//! Shapes are rendered with 4×4 supersampling (anti-aliased coverage). Image `i` of seed `s`
//! has class `i mod 10` (balanced) and is a pure function of `(s, i)`: the same seed gives the
//! same images in any order, on any machine. Pixels are returned channel-first in `[-1, 1]`
//! (the models' data scale).

use rand::Rng;
use steerdiff_guidance::rng::{Domain, StreamKey};

/// Image side in pixels.
pub const SIZE: usize = 32;

/// Values per image (`3·32·32`).
pub const PIXELS: usize = 3 * SIZE * SIZE;

/// The class names, indexed by label.
pub const CLASS_NAMES: [&str; 10] = [
    "circle", "square", "triangle", "cross", "ring", "star", "diamond", "heart", "bars", "arrow",
];

/// Number of classes.
pub const NUM_CLASSES: usize = CLASS_NAMES.len();

/// The label of a class name.
pub fn class_by_name(name: &str) -> Option<u32> {
    CLASS_NAMES
        .iter()
        .position(|n| *n == name)
        .map(|i| i as u32)
}

/// How much the shapes turn: the two variants of the generator. Every other draw is the
/// same, so image `i` of seed `s` differs between them only in its angle.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rotation {
    /// Uniform over the full circle (the classifiers' training data).
    #[default]
    Full,
    /// Within ±20° of upright: shapes keep their canonical pose, which a small flow model
    /// learns far faster.
    Upright,
}

impl std::str::FromStr for Rotation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "full" => Ok(Rotation::Full),
            "upright" => Ok(Rotation::Upright),
            other => Err(format!("unknown rotation `{other}`; valid: full, upright")),
        }
    }
}

/// The generator variant `steerdiff toy dataset` and the evaluations use.
pub const DATASET_ROTATION: Rotation = Rotation::Full;

/// The class of image `index` (classes cycle, so every run of 10 images is balanced).
pub fn label_of(index: u64) -> u32 {
    (index % NUM_CLASSES as u64) as u32
}

fn in_polygon(p: (f64, f64), poly: &[(f64, f64)]) -> bool {
    let mut inside = false;
    let n = poly.len();
    let mut j = n - 1;
    for i in 0..n {
        let (xi, yi) = poly[i];
        let (xj, yj) = poly[j];
        if (yi > p.1) != (yj > p.1) && p.0 < (xj - xi) * (p.1 - yi) / (yj - yi) + xi {
            inside = !inside;
        }
        j = i;
    }
    inside
}

fn regular(n: usize, r: f64, start: f64) -> Vec<(f64, f64)> {
    (0..n)
        .map(|k| {
            let a = start + std::f64::consts::TAU * k as f64 / n as f64;
            (r * a.cos(), r * a.sin())
        })
        .collect()
}

/// The shape of a class in unit coordinates (`y` down, extent about `[-1, 1]`).
#[derive(Debug, Clone)]
struct Shape {
    class: u32,
    poly: Vec<(f64, f64)>,
}

impl Shape {
    fn new(class: u32) -> Self {
        use std::f64::consts::FRAC_PI_2;
        let poly = match class {
            2 => regular(3, 1.0, -FRAC_PI_2),
            5 => (0..10)
                .map(|k| {
                    let r = if k % 2 == 0 { 1.0 } else { 0.42 };
                    let a = -FRAC_PI_2 + std::f64::consts::TAU * k as f64 / 10.0;
                    (r * a.cos(), r * a.sin())
                })
                .collect(),
            6 => vec![(0.0, -1.0), (0.55, 0.0), (0.0, 1.0), (-0.55, 0.0)],
            9 => vec![
                (-0.9, -0.2),
                (0.15, -0.2),
                (0.15, -0.6),
                (0.95, 0.0),
                (0.15, 0.6),
                (0.15, 0.2),
                (-0.9, 0.2),
            ],
            _ => Vec::new(),
        };
        Shape { class, poly }
    }

    fn contains(&self, u: f64, v: f64) -> bool {
        match self.class {
            0 => u * u + v * v < 0.85 * 0.85,
            1 => u.abs().max(v.abs()) < 0.72,
            3 => (u.abs() < 0.26 && v.abs() < 0.92) || (v.abs() < 0.26 && u.abs() < 0.92),
            4 => {
                let r2 = u * u + v * v;
                r2 < 0.92 * 0.92 && r2 > 0.55 * 0.55
            }
            7 => {
                let x = u * 1.15;
                let y = -v * 1.15 + 0.12;
                let a = x * x + y * y - 1.0;
                a * a * a - x * x * y * y * y < 0.0
            }
            8 => u.abs() < 0.75 && v.abs() < 0.85 && ((u + 0.75) / 0.6).fract() < 0.5,
            _ => in_polygon((u, v), &self.poly),
        }
    }
}

/// One image of the dataset ([`DATASET_ROTATION`]): `(pixels [3, 32, 32] in [-1, 1], label)`,
/// a pure function of `(seed, index)`.
pub fn image(seed: u64, index: u64) -> (Vec<f32>, u32) {
    image_with(DATASET_ROTATION, seed, index)
}

/// One image of the generator variant `rotation`.
pub fn image_with(rotation: Rotation, seed: u64, index: u64) -> (Vec<f32>, u32) {
    let label = label_of(index);
    let mut rng = StreamKey {
        seed,
        lineage: index,
        step: 0,
        domain: Domain::Search,
    }
    .rng();
    let shape = Shape::new(label);
    let bg: [f64; 3] = [rng.random(), rng.random(), rng.random()];
    let mut fg: [f64; 3];
    loop {
        fg = [rng.random(), rng.random(), rng.random()];
        let d2: f64 = (0..3).map(|c| (fg[c] - bg[c]).powi(2)).sum();
        if d2.sqrt() > 0.35 {
            break;
        }
    }
    let grad_amp = rng.random::<f64>() * 0.2;
    let grad_dir = rng.random::<f64>() * std::f64::consts::TAU;
    let radius = 7.0 + rng.random::<f64>() * 5.0;
    let room = (15.5 - radius).max(0.0);
    let cx = 15.5 + (rng.random::<f64>() * 2.0 - 1.0) * room;
    let cy = 15.5 + (rng.random::<f64>() * 2.0 - 1.0) * room;
    let turn = rng.random::<f64>();
    let rot = match rotation {
        Rotation::Full => turn * std::f64::consts::TAU,
        Rotation::Upright => (turn * 2.0 - 1.0) * 20f64.to_radians(),
    };
    let (sr, cr) = rot.sin_cos();
    let tex_amp = rng.random::<f64>() * 0.1;
    let tex_freq = 0.3 + rng.random::<f64>() * 0.9;
    let tex_dir = rng.random::<f64>() * std::f64::consts::TAU;
    let tex_phase = rng.random::<f64>() * std::f64::consts::TAU;
    let noise = StreamKey {
        seed,
        lineage: index,
        step: 1,
        domain: Domain::Search,
    }
    .normals(PIXELS);
    let mut out = vec![0f32; PIXELS];
    const SS: usize = 4;
    for py in 0..SIZE {
        for px in 0..SIZE {
            let mut cover = 0usize;
            for sy in 0..SS {
                for sx in 0..SS {
                    let x = px as f64 + (sx as f64 + 0.5) / SS as f64 - cx;
                    let y = py as f64 + (sy as f64 + 0.5) / SS as f64 - cy;
                    let u = (cr * x + sr * y) / radius;
                    let v = (-sr * x + cr * y) / radius;
                    if shape.contains(u, v) {
                        cover += 1;
                    }
                }
            }
            let a = cover as f64 / (SS * SS) as f64;
            let (fx, fy) = (px as f64 - 15.5, py as f64 - 15.5);
            let g = grad_amp * (fx * grad_dir.cos() + fy * grad_dir.sin()) / 16.0;
            let t =
                tex_amp * (tex_freq * (fx * tex_dir.cos() + fy * tex_dir.sin()) + tex_phase).sin();
            for c in 0..3 {
                let back = bg[c] + g;
                let front = fg[c] + t;
                let val = a * front + (1.0 - a) * back;
                let i = c * SIZE * SIZE + py * SIZE + px;
                let val = (val + 0.03 * noise[i] as f64).clamp(0.0, 1.0);
                out[i] = (val * 2.0 - 1.0) as f32;
            }
        }
    }
    (out, label)
}

/// Images `start..start + n` of `seed` ([`DATASET_ROTATION`]), concatenated, with their labels.
pub fn batch(seed: u64, start: u64, n: usize) -> (Vec<f32>, Vec<u32>) {
    batch_with(DATASET_ROTATION, seed, start, n)
}

/// [`batch`] of the generator variant `rotation`.
pub fn batch_with(rotation: Rotation, seed: u64, start: u64, n: usize) -> (Vec<f32>, Vec<u32>) {
    let mut pix = Vec::with_capacity(n * PIXELS);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n as u64 {
        let (p, l) = image_with(rotation, seed, start + i);
        pix.extend(p);
        labels.push(l);
    }
    (pix, labels)
}

/// Pixels in `[-1, 1]` (channel-first) to 8-bit RGB, row-major (`H·W·3`).
pub fn to_rgb8(pixels: &[f32]) -> Vec<u8> {
    let hw = pixels.len() / 3;
    let mut out = vec![0u8; hw * 3];
    for i in 0..hw {
        for c in 0..3 {
            let v = ((pixels[c * hw + i] + 1.0) * 0.5).clamp(0.0, 1.0);
            out[i * 3 + c] = (v * 255.0).round() as u8;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_image_and_classes_cycle() {
        assert_eq!(image(3, 17), image(3, 17));
        assert_ne!(image(3, 17).0, image(4, 17).0);
        assert_eq!(image(3, 17).1, 7);
        let (p, l) = batch(1, 0, 20);
        assert_eq!(p.len(), 20 * PIXELS);
        assert_eq!(l[..10], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
        assert!(p.iter().all(|v| (-1.0..=1.0).contains(v)));
    }

    #[test]
    fn every_shape_covers_a_fair_area() {
        for k in 0..NUM_CLASSES as u32 {
            let s = Shape::new(k);
            let mut n = 0;
            for i in 0..100 {
                for j in 0..100 {
                    if s.contains(i as f64 / 50.0 - 1.0, j as f64 / 50.0 - 1.0) {
                        n += 1;
                    }
                }
            }
            assert!(
                (1500..7000).contains(&n),
                "{}: {n}",
                CLASS_NAMES[k as usize]
            );
        }
    }
}
