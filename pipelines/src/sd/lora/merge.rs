//! The merge itself: a weight backend that adds `scale · alpha / r · B·A` to each weight a
//! LoRA module adapts, as the layer asks for it.

use std::sync::Arc;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::Init;

use super::flux_names::RowPart;
use super::{Loras, Module, Naming, Target};

/// A backend whose weights carry the merged LoRA modules of one network.
pub struct WithLora {
    inner: Box<dyn SimpleBackend>,
    loras: Arc<Loras>,
    target: Target,
    naming: Naming,
}

impl WithLora {
    /// `inner` with the modules of `target` in `loras` merged.
    pub fn new(
        inner: Box<dyn SimpleBackend>,
        loras: Arc<Loras>,
        target: Target,
        naming: Naming,
    ) -> WithLora {
        WithLora {
            inner,
            loras,
            target,
            naming,
        }
    }

    /// `weight` (f32, of the model's shape) plus every module's delta, cast to `dtype`.
    fn merged(&self, name: &str, weight: Tensor, dtype: DType) -> candle_core::Result<Tensor> {
        let dims = weight.dims();
        let (out, inp) = (
            dims.first().copied().unwrap_or(0),
            dims.get(1).copied().unwrap_or(0),
        );
        let hits = self
            .loras
            .modules_for(self.target, &self.naming, name, (out, inp));
        if hits.is_empty() {
            return weight.to_dtype(dtype);
        }
        let mut w = weight;
        for hit in hits {
            let d = match &hit.rows {
                None => self.delta(hit.file, &hit.key, hit.module, w.shape(), w.device())?,
                Some(part) => {
                    self.row_delta(hit.file, &hit.key, hit.module, part, w.shape(), w.device())?
                }
            };
            w = (w + d)?;
            self.loras.mark_used(hit.file, self.target, hit.key);
        }
        w.to_dtype(dtype)
    }

    /// The delta of a module covering rows `part.dst ..` of a 2-D weight of `shape`: its
    /// product's rows `part.src ..`, zero elsewhere.
    fn row_delta(
        &self,
        file: usize,
        key: &str,
        m: &Module,
        part: &RowPart,
        shape: &Shape,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let (out, inp) = shape.dims2()?;
        let (tensors, spec) = self.loras.tensors(file);
        let up_rows = tensors.load(&m.up, dev)?.dim(0)?;
        if part.src + part.len > up_rows || part.dst + part.len > out {
            candle_core::bail!(
                "LoRA `{}`, layer `{key}`: {up_rows} rows, but rows {}..{} of a {out}-row fused \
                 weight are asked for (a LoRA for another model family?)",
                spec.path.display(),
                part.src,
                part.src + part.len
            )
        }
        let full = self.delta(file, key, m, &Shape::from((up_rows, inp)), dev)?;
        let rows = full.narrow(0, part.src, part.len)?;
        let zeros = |n: usize| Tensor::zeros((n, inp), DType::F32, dev);
        let below = out - part.dst - part.len;
        Tensor::cat(&[&zeros(part.dst)?, &rows, &zeros(below)?], 0)
    }

    /// `scale · alpha / r · B·A`, shaped as the weight.
    fn delta(
        &self,
        file: usize,
        key: &str,
        m: &Module,
        shape: &Shape,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let (tensors, spec) = self.loras.tensors(file);
        let at = || format!("LoRA `{}`, layer `{key}`", spec.path.display());
        let down = tensors.load(&m.down, dev)?.to_dtype(DType::F32)?;
        let up = tensors.load(&m.up, dev)?.to_dtype(DType::F32)?;
        let (rank, out) = (down.dim(0)?, up.dim(0)?);
        let up_is_matrix =
            up.rank() >= 2 && up.dim(1)? == rank && up.dims()[2..].iter().all(|&d| d == 1);
        if rank == 0 || !up_is_matrix {
            candle_core::bail!(
                "{}: up {:?} and down {:?} do not form a rank-{rank} product",
                at(),
                up.dims(),
                down.dims()
            )
        }
        let inner = down.elem_count() / rank;
        if out != shape.dims()[0] || out * inner != shape.elem_count() {
            candle_core::bail!(
                "{}: its product is [{out}, {inner}] but the model's weight is {:?} (a LoRA for \
                 another model family?)",
                at(),
                shape.dims()
            )
        }
        let alpha = m.alpha.unwrap_or(rank as f64);
        let factor = spec.scale * alpha / rank as f64;
        up.reshape((out, rank))?
            .matmul(&down.reshape((rank, inner))?)?
            .reshape(shape)?
            .affine(factor, 0.0)
    }
}

impl SimpleBackend for WithLora {
    fn get(
        &self,
        s: Shape,
        name: &str,
        h: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        // Read in f32 (exact for every stored float type), merged, then cast once.
        let w = self.inner.get(s, name, h, DType::F32, dev)?;
        self.merged(name, w, dtype)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let w = self.inner.get_unchecked(name, DType::F32, dev)?;
        self.merged(name, w, dtype)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.inner.contains_tensor(name)
    }
}
