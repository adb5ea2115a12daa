//! The merge itself: a weight backend that adds `scale · alpha / r · B·A` to each weight a
//! LoRA module adapts, as the layer asks for it.

use std::sync::Arc;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::Init;

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

    /// `weight` (of the model's shape) plus every module's delta, in f32 then `dtype`.
    fn merged(&self, name: &str, weight: Tensor, dtype: DType) -> candle_core::Result<Tensor> {
        let modules = self.loras.modules_for(self.target, &self.naming, name);
        if modules.is_empty() {
            return Ok(weight);
        }
        let mut w = weight.to_dtype(DType::F32)?;
        for (file, key, module) in modules {
            let d = self.delta(file, &key, module, w.shape(), w.device())?;
            w = (w + d)?;
            self.loras.mark_used(file, self.target, key);
        }
        w.to_dtype(dtype)
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
        let w = self.inner.get(s, name, h, dtype, dev)?;
        self.merged(name, w, dtype)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let w = self.inner.get_unchecked(name, dtype, dev)?;
        self.merged(name, w, dtype)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.inner.contains_tensor(name)
    }
}
