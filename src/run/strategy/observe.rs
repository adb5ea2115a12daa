//! The observed image and its known pixels, as FlowChef and inpainting by replacement read
//! them: from the library's [`Observation`] or from `--image` / `--mask` / `--box`, checked
//! against the model's sample shape and put on its device.

use anyhow::Result;
use candle_core::Tensor;

use super::Inputs;
use crate::error::input_error;
use crate::run::observation::{self, Observation};

/// The observation for strategy `i`; with `need_mask` (inpainting) it must match the model's
/// image size and carry its known pixels.
pub fn observed(i: &Inputs, need_mask: bool) -> Result<Observation> {
    let (t, a, name) = (i.target, &i.args.per_step, i.name());
    let dims: [usize; 3] = match t.sample_shape.as_slice() {
        [c, h, w] if t.toy => [*c, *h, *w],
        _ => input_error!(
            "--guidance {name} works on images; `{}` samples {:?}-vectors (use --model toy)",
            t.model,
            t.sample_shape
        ),
    };
    let mut obs = match i.observation {
        Some(o) => o.clone(),
        None => {
            let Some(path) = &a.image else {
                input_error!(
                    "--guidance {name} needs --image PNG (the observed {}×{} image)",
                    dims[2],
                    dims[1]
                );
            };
            let (image, d) = observation::read_rgb(path, "--image")?;
            Observation {
                image,
                dims: d,
                known: None,
            }
        }
    };
    if need_mask && obs.dims != dims {
        input_error!(
            "--image is {}×{} but `{}` makes {}×{} images; give a {}×{} PNG",
            obs.dims[2],
            obs.dims[1],
            t.model,
            dims[2],
            dims[1],
            dims[2],
            dims[1]
        );
    }
    if !need_mask {
        if a.mask.is_some() || a.fill_box.is_some() {
            input_error!(
                "--mask / --box are for inpainting only (--task inpaint or --guidance replace)"
            );
        }
        return Ok(obs);
    }
    if obs.known.is_none() {
        obs.known = Some(match (&a.mask, a.fill_box) {
            (Some(_), Some(_)) => {
                input_error!("give either --mask PNG or --box X0,Y0,X1,Y1, not both")
            }
            (Some(m), None) => observation::read_mask(m, obs.dims)?,
            (None, Some(b)) => observation::box_mask(b, obs.dims)?,
            (None, None) => input_error!(
                "inpainting needs the known pixels: --mask PNG (white = known) or --box \
                 X0,Y0,X1,Y1 (the rectangle to fill, e.g. 8,8,24,24)"
            ),
        });
    }
    Ok(obs)
}

/// An observed image (or mask) as a tensor on the model's device.
pub fn tensor(v: &[f32], dims: [usize; 3], i: &Inputs) -> Result<Tensor> {
    Ok(Tensor::from_vec(
        v.to_vec(),
        dims.as_slice(),
        &i.target.device,
    )?)
}

/// The inpainting pair `(mask, target)` as tensors shaped like one sample.
pub fn mask_and_target(obs: &Observation, i: &Inputs) -> Result<(Tensor, Tensor)> {
    let known = obs.known.as_deref().unwrap_or(&[]);
    if known.len() != obs.image.len() {
        input_error!(
            "the known-pixel mask has {} values for an image of {}; give a mask of the image's size",
            known.len(),
            obs.image.len()
        );
    }
    Ok((
        tensor(known, obs.dims, i)?,
        tensor(&obs.image, obs.dims, i)?,
    ))
}
