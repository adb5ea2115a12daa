//! A stochastic step's noise: standard normal numbers shaped like the population's `x`, each
//! particle's row from its own stream ([`StreamKey`]), drawn when read.
//!
//! The engine hands a solver the streams, not the numbers: a solver that reads the noise as a
//! tensor ([`Noise::tensor`]) gets exactly what drawing it up front gave, and DDIM's one-pass
//! step on the CPU draws each particle's row inside its own pass (`fused.rs`), so the step's
//! noise is never written out as a tensor. Either way every number is the stream's, so outputs
//! do not depend on which path ran. A step whose noise scale is 0 (the last step of DDPM onto
//! the clean sample) draws nothing.

use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;

use crate::rng::StreamKey;
use crate::Result;

/// Noise for one step: given as a tensor, or one stream per row drawn when read.
#[derive(Debug, Clone)]
pub struct Noise {
    source: Source,
}

#[derive(Debug, Clone)]
enum Source {
    Tensor(Tensor),
    Streams(Streams),
}

/// One stream per row of a `shape` tensor (`shape[0]` = the number of streams) of `dtype` on
/// `device`; the numbers are drawn in f32.
#[derive(Debug, Clone)]
pub(crate) struct Streams {
    pub(crate) keys: Vec<StreamKey>,
    shape: Vec<usize>,
    dtype: DType,
    device: Device,
}

impl Streams {
    /// The shape of the noise (rows first).
    pub(crate) fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Values per row.
    pub(crate) fn row_len(&self) -> usize {
        self.shape[1..].iter().product()
    }

    /// Whether rows are drawn straight into f32 CPU memory (no conversion, no copy).
    pub(crate) fn is_f32_cpu(&self) -> bool {
        self.dtype == DType::F32 && self.device.is_cpu()
    }
}

impl Noise {
    /// Noise given as numbers (`z` shaped like the state it is added to).
    pub fn from_tensor(z: Tensor) -> Self {
        Noise {
            source: Source::Tensor(z),
        }
    }

    /// Noise of `keys.len()` rows shaped `shape` (`shape[0] == keys.len()`), row `i` the first
    /// numbers of stream `keys[i]`, as a `dtype` tensor on `device` when read.
    pub(crate) fn from_streams(
        keys: Vec<StreamKey>,
        shape: Vec<usize>,
        dtype: DType,
        device: &Device,
    ) -> Self {
        Noise {
            source: Source::Streams(Streams {
                keys,
                shape,
                dtype,
                device: device.clone(),
            }),
        }
    }

    /// The streams, when this noise is drawn when read.
    pub(crate) fn streams(&self) -> Option<&Streams> {
        match &self.source {
            Source::Streams(s) => Some(s),
            Source::Tensor(_) => None,
        }
    }

    /// All rows as one tensor (drawn now, in parallel over the rows, if given as streams).
    pub fn tensor(&self) -> Result<Tensor> {
        let s = match &self.source {
            Source::Tensor(z) => return Ok(z.clone()),
            Source::Streams(s) => s,
        };
        let row = s.row_len();
        let mut data = vec![0f32; s.keys.len() * row];
        // Each row is drawn from its own stream, so drawing them in parallel gives the same
        // numbers as one after another.
        data.par_chunks_mut(row.max(1))
            .zip(&s.keys)
            .for_each(|(out, key)| key.fill_normals(out));
        Ok(Tensor::from_vec(data, s.shape.clone(), &s.device)?.to_dtype(s.dtype)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Domain;

    #[test]
    fn rows_are_their_streams_numbers() {
        let keys: Vec<StreamKey> = (0..3)
            .map(|lineage| StreamKey {
                seed: 9,
                lineage,
                step: 4,
                domain: Domain::Step,
            })
            .collect();
        let noise = Noise::from_streams(keys.clone(), vec![3, 2, 5], DType::F32, &Device::Cpu);
        let z = noise.tensor().unwrap();
        assert_eq!(z.dims(), &[3, 2, 5]);
        for (i, key) in keys.iter().enumerate() {
            let row: Vec<f32> = z.get(i).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            assert_eq!(row, key.normals(10));
        }
        let given = Noise::from_tensor(z.clone());
        assert!(given.streams().is_none());
        assert_eq!(
            given.tensor().unwrap().to_vec3::<f32>().unwrap(),
            z.to_vec3::<f32>().unwrap()
        );
    }
}
