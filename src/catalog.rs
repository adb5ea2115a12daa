//! Everything `steerdiff list` names: one table per kind, so an addition is one line.

use std::fmt::Write as _;

use steerdiff_guidance::sampler::SAMPLERS;

/// Models: `(how to name it on the command line, one-line description)`.
pub const MODELS: &[(&str, &str)] = &[(
    "gmm:SPEC.json",
    "exact Gaussian-mixture denoiser (ground truth, zero model error); SPEC.json = \
     {\"dim\": D, \"components\": [{\"weight\", \"mean\", \"std\", \"class\"}], \"class_names\"?}",
)];

/// Guidance strategies: `(name, one-line description)`.
pub const GUIDANCE: &[(&str, &str)] = &[(
    "cfg",
    "classifier-free guidance (Ho & Salimans 2022): --cfg S (1 = off, needs --class), \
     --cfg-rescale PHI (Lin et al. 2024), --cfg-interval LO,HI on σ/α (Kynkäänniemi et al. 2024)",
)];

/// Rewards: `(name, one-line description)`. None are implemented yet.
pub const REWARDS: &[(&str, &str)] = &[];

/// The text of `steerdiff list`: sections MODELS, SAMPLERS, GUIDANCE, REWARDS.
pub fn listing() -> String {
    let sections: [(&str, &[(&str, &str)]); 4] = [
        ("MODELS", MODELS),
        ("SAMPLERS", SAMPLERS),
        ("GUIDANCE", GUIDANCE),
        ("REWARDS", REWARDS),
    ];
    let width = sections
        .iter()
        .flat_map(|(_, rows)| rows.iter().map(|(n, _)| n.chars().count()))
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (i, (title, rows)) in sections.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let _ = writeln!(out, "{title}");
        if rows.is_empty() {
            let _ = writeln!(out, "  (none yet)");
        }
        for (name, desc) in rows.iter() {
            let _ = writeln!(out, "  {name:<width$}  {desc}");
        }
    }
    out
}

/// The model names, comma-separated (for error messages).
pub fn model_names() -> String {
    MODELS
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_names_everything() {
        let text = listing();
        for (name, _) in MODELS.iter().chain(SAMPLERS).chain(GUIDANCE).chain(REWARDS) {
            assert!(text.contains(name), "{name} missing");
        }
        for title in ["MODELS", "SAMPLERS", "GUIDANCE", "REWARDS"] {
            assert!(text.contains(title));
        }
    }
}
