//! `steerdiff quantize IN.safetensors OUT.gguf --type q8_0|q4_k|…`: a FLUX transformer's
//! weights quantized into a GGUF file that `generate --model OUT.gguf` (and ComfyUI-GGUF)
//! loads, kept quantized in memory.
//!
//! What is quantized and the fallbacks for matrices whose width does not fit the type's
//! blocks are [`steerdiff_pipelines::sd::quantize`]'s; the command prints what became what.
//! The file is written to a hidden temporary in OUT's folder and renamed into place when
//! complete, so OUT is never half-written; an existing OUT is replaced only with `--force`.
//! Nothing is written anywhere else.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::Args;
use steerdiff_pipelines::sd::quantize::{self, TYPES};

use crate::error::input_error;
use crate::output::staged::TempFile;

/// Flags of `steerdiff quantize`.
#[derive(Debug, Args)]
pub struct QuantizeArgs {
    /// The FLUX transformer (BFL's single file, e.g. flux1-dev.safetensors).
    #[arg(value_name = "IN.safetensors")]
    pub input: PathBuf,
    /// The GGUF file to write.
    #[arg(value_name = "OUT.gguf")]
    pub output: PathBuf,
    /// The quantization: q8_0, q6_k, q5_k, q5_1, q5_0, q4_k, q4_1, q4_0, q3_k, q2_k, f16,
    /// f32. Matrices whose inner width is not a multiple of a k-quant's 256 fall back as
    /// llama.cpp does (Q4_K → Q5_0, Q5_K → Q5_1, Q6_K → Q8_0, Q2_K/Q3_K → Q4_0).
    #[arg(long = "type", value_name = "TYPE", default_value = "q8_0")]
    pub qtype: String,
    /// Replace OUT if it exists.
    #[arg(long)]
    pub force: bool,
}

/// `n` bytes in words (`1.2 MB`).
fn size(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.2} GB", n as f64 / 1e9),
        n if n >= 1 << 20 => format!("{:.1} MB", n as f64 / 1e6),
        n => format!("{:.1} kB", n as f64 / 1e3),
    }
}

/// Runs `steerdiff quantize`.
pub fn execute(args: &QuantizeArgs) -> Result<()> {
    let want = match quantize::parse_type(&args.qtype) {
        Ok(t) => t,
        Err(e) => input_error!("--type: {e}"),
    };
    if !steerdiff_pipelines::sd::gguf::is_gguf(&args.output) {
        input_error!(
            "the output `{}` must end in .gguf (the loader picks GGUF by that extension)",
            args.output.display()
        );
    }
    if let (Ok(a), Ok(b)) = (
        std::fs::canonicalize(&args.input),
        std::fs::canonicalize(&args.output),
    ) {
        if a == b {
            input_error!("the input and the output are the same file; write a new file");
        }
    }
    if std::fs::symlink_metadata(&args.output).is_ok() && !args.force {
        input_error!(
            "`{}` exists; pass --force to replace it, or name a new file",
            args.output.display()
        );
    }
    let q = quantize::quantize_flux(&args.input, want)?;
    let (tmp, file) = TempFile::new(&args.output).map_err(|e| {
        anyhow::Error::new(crate::error::InputError(format!(
            "{e:#} (does the folder exist and is it writable?)"
        )))
    })?;
    let mut tmp = tmp;
    let mut w = std::io::BufWriter::new(file);
    quantize::write_gguf(&mut w, &q)?;
    let file = w
        .into_inner()
        .map_err(|e| e.into_error())
        .with_context(|| format!("writing `{}`", args.output.display()))?;
    file.sync_all()
        .with_context(|| format!("writing `{}`", args.output.display()))?;
    drop(file);
    tmp.commit()?;
    let s = &q.summary;
    let per_type: Vec<String> = s.per_type.iter().map(|(t, n)| format!("{n} {t}")).collect();
    let mut err = std::io::stderr().lock();
    writeln!(
        err,
        "steerdiff: wrote `{}`: {} tensors ({}), {} of tensor data from {}",
        args.output.display(),
        q.tensors.len(),
        per_type.join(", "),
        size(s.bytes_out),
        size(s.bytes_in)
    )?;
    if !s.fallbacks.is_empty() {
        let want_name = TYPES
            .iter()
            .find(|(_, t)| *t == want)
            .map(|(n, _)| n.to_uppercase())
            .unwrap_or_default();
        writeln!(
            err,
            "steerdiff: {} matrices are not {want_name}: their inner width is not a multiple \
             of its {}-element blocks:",
            s.fallbacks.len(),
            want.block_size()
        )?;
        for (name, inner, got) in &s.fallbacks {
            writeln!(err, "  {name} (width {inner}) → {got}")?;
        }
    }
    Ok(())
}
