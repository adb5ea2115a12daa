//! `--device`: which candle device runs a command.

use anyhow::{bail, Result};
use candle_core::Device;

/// The `--device` used when none is given.
pub const DEFAULT_DEVICE: &str = "auto";

/// Parses `auto`, `cpu`, `cuda`, `cuda:N`, `metal` or `metal:N` into a device.
///
/// `auto` takes the first GPU the binary was built for (CUDA, then Metal) and falls back to
/// the CPU. A named GPU device needs a binary built with the matching feature
/// (`--features cuda` or `--features metal`); without it the error says so and how to
/// rebuild. Errors are the user's to fix (exit code 2).
pub fn parse_device(spec: &str) -> Result<Device> {
    parse(spec).map_err(|e| anyhow::Error::new(crate::error::InputError(e.to_string())))
}

fn parse(spec: &str) -> Result<Device> {
    if spec == "auto" {
        if candle_core::utils::cuda_is_available() {
            if let Ok(d) = cuda(0) {
                return Ok(d);
            }
        }
        if candle_core::utils::metal_is_available() {
            if let Ok(d) = Device::new_metal(0) {
                return Ok(d);
            }
        }
        return Ok(Device::Cpu);
    }
    let (kind, ordinal) = match spec.split_once(':') {
        Some((k, n)) => match n.parse::<usize>() {
            Ok(n) => (k, n),
            Err(_) => bail!("--device {spec}: `{n}` is not a device number (e.g. cuda:0)"),
        },
        None => (spec, 0),
    };
    let built = |feature: &str, compiled: bool, r: candle_core::Result<Device>| {
        r.map_err(|e| {
            // candle appends a backtrace to its errors when RUST_BACKTRACE is set: the first
            // line is the message.
            let e = e.to_string();
            let e = e.lines().next().unwrap_or_default();
            if compiled {
                anyhow::anyhow!(
                    "--device {spec}: {e} (no usable {feature} device here: use --device cpu, \
                     or --device auto, which falls back to the CPU)"
                )
            } else {
                anyhow::anyhow!(
                    "--device {spec}: {e} (a {feature} device needs a binary built with \
                     `cargo build --release --features {feature}`)"
                )
            }
        })
    };
    match kind {
        "cpu" if ordinal == 0 => Ok(Device::Cpu),
        "cuda" => built("cuda", cfg!(feature = "cuda"), cuda(ordinal)),
        "metal" => built("metal", cfg!(feature = "metal"), Device::new_metal(ordinal)),
        _ => bail!("unknown --device `{spec}`; valid: auto, cpu, cuda, cuda:N, metal, metal:N"),
    }
}

/// Opens CUDA device `ordinal` and runs one matrix product on it, so that the driver and
/// cuBLAS are loaded now. cudarc loads them at run time and panics when a library is missing;
/// that panic becomes an error naming the libraries and how to point at them.
fn cuda(ordinal: usize) -> candle_core::Result<Device> {
    let open = || -> candle_core::Result<Device> {
        let d = Device::new_cuda(ordinal)?;
        let x = candle_core::Tensor::ones((2, 2), candle_core::DType::F32, &d)?;
        x.matmul(&x)?.to_vec2::<f32>()?;
        Ok(d)
    };
    if !cfg!(feature = "cuda") {
        return open();
    }
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(open);
    std::panic::set_hook(hook);
    match result {
        Ok(r) => r,
        Err(_) => Err(candle_core::Error::Msg(
            "cannot load CUDA's libraries (the driver's libcuda.so.1, CUDA 13's libcublas.so.13 \
             and libcurand.so.10): put the folders holding them on LD_LIBRARY_PATH (PyTorch's \
             pip packages have them under site-packages/nvidia/*/lib)"
                .into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_parses_and_bad_names_are_refused() {
        assert!(matches!(parse_device("cpu").unwrap(), Device::Cpu));
        #[cfg(not(any(feature = "cuda", feature = "metal")))]
        assert!(matches!(parse_device("auto").unwrap(), Device::Cpu));
        for bad in ["gpu", "cpu:1", "cuda:x", ""] {
            let e = parse_device(bad).unwrap_err().to_string();
            assert!(e.contains("--device"), "{bad}: {e}");
        }
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_says_how_to_rebuild() {
        let e = parse_device("cuda:0").unwrap_err().to_string();
        assert!(e.contains("--features cuda"), "{e}");
    }
}
