//! `LO,HI` noise-level intervals of `--cfg-interval` and `--gfcg-interval`.

/// Parses `LO,HI`.
pub fn parse_interval(s: &str) -> std::result::Result<(f64, f64), String> {
    let bad = || format!("expected LO,HI (two numbers, e.g. 0.28,5.42), got `{s}`");
    let (lo, hi) = s.split_once(',').ok_or_else(bad)?;
    let lo: f64 = lo.trim().parse().map_err(|_| bad())?;
    let hi: f64 = hi.trim().parse().map_err(|_| bad())?;
    Ok((lo, hi))
}
