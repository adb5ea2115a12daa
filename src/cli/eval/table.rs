//! The report of `steerdiff eval` as aligned text.

use super::measure::Row;
use super::stats::Estimate;
use super::Report;

/// `mean ± se` with `digits` decimals (`-` when absent).
fn pm(e: Option<Estimate>, digits: usize) -> String {
    match e {
        Some(e) if e.se.is_finite() => format!("{:.digits$} ± {:.digits$}", e.mean, e.se),
        Some(e) => format!("{:.digits$}", e.mean),
        None => "-".into(),
    }
}

/// The difference column: `+0.052 ± 0.021 vs CFG 3`.
fn versus(r: &Row) -> String {
    match &r.vs_cfg_baseline {
        Some(c) => format!(
            "{:+.3} ± {:.3} vs CFG {}",
            c.difference.mean, c.difference.se, c.baseline_cfg
        ),
        None if r.cfg_baseline => "(the baseline)".into(),
        None => "-".into(),
    }
}

/// The report as a header and an aligned table.
pub fn table(report: &Report) -> String {
    let mut out = String::new();
    let judged = match (&report.judge, &report.judge_measures) {
        (Some(j), Some(m)) => format!("judge {j} ({m})"),
        _ => "no judge (comparisons on the steering reward)".into(),
    };
    out += &format!("{judged}; ± is one standard error over output groups\n");
    if let Some(b) = &report.baseline {
        let sweep: Vec<String> = b
            .sweep
            .iter()
            .map(|p| format!("{} → {:.3}", p.cfg, p.value.mean))
            .collect();
        out += &format!(
            "CFG baseline: scale {} chosen by {} on {} tuning groups from seed {} ({})\n",
            b.cfg,
            b.selected_by,
            b.tune_groups,
            b.tune_seed,
            sweep.join(", ")
        );
    }
    let second = report.second_judge.is_some();
    out += &format!(
        "{:<14} {:>5} {:>9} {:>8} {:>17} {:>17} {:>26}{} {:>9} {:>8}\n",
        "strategy",
        "CFG",
        "NFE/group",
        "outputs",
        "reward",
        "judge",
        "vs matched CFG",
        if second {
            format!(" {:>17} {:>6}", "2nd judge", "agree")
        } else {
            String::new()
        },
        "diversity",
        "seconds"
    );
    for r in &report.rows {
        let cfg = r.cfg.map_or("auto".to_string(), |c| format!("{c}"));
        let mark = if r.cfg_baseline { "*" } else { "" };
        let second_cols = match &r.second_judge {
            Some(s) => format!(" {:>17} {:>6.3}", pm(Some(s.accuracy), 3), s.agreement),
            None if second => format!(" {:>17} {:>6}", "-", "-"),
            None => String::new(),
        };
        out += &format!(
            "{:<14} {:>5} {:>9.0} {:>8} {:>17} {:>17} {:>26}{} {:>9.4} {:>8.2}\n",
            format!("{}{mark}", r.strategy),
            cfg,
            r.nfe_per_group,
            r.outputs,
            pm(Some(r.reward).filter(|e| e.groups > 0), 4),
            pm(r.judged, 3),
            versus(r),
            second_cols,
            r.diversity,
            r.seconds
        );
    }
    if report.baseline.is_some() {
        out += "* the CFG baseline; \"vs matched CFG\": judge value minus that of the best \
                CFG-only row of at most the row's NFE, paired over the same seeds\n";
    }
    out
}
