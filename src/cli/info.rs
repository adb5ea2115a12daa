//! `steerdiff info IMAGE.png`: the run record inside a PNG steerdiff wrote and the command
//! that reproduces it — or, for a PNG of another tool (the A1111 web UI, sd.cpp), the
//! A1111-format fields it carries.

use std::path::Path;

use anyhow::Result;

use crate::output::a1111::A1111;
use crate::output::png_record::{self, PngInfo};

/// The A1111 fields as text lines.
fn a1111_text(a: &A1111) -> String {
    let mut t = format!("prompt: {}\n", a.prompt);
    if let Some(n) = &a.negative_prompt {
        t += &format!("negative prompt: {n}\n");
    }
    for (k, v) in &a.fields {
        t += &format!("{k}: {v}\n");
    }
    t
}

/// `text` with every control character but the line break shown as an escape (`\u{1b}`),
/// so a forged record cannot drive the terminal.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() && c != '\n' {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// `steerdiff info IMAGE.png`: the record, as text or (`json`) as JSON.
pub fn info(path: &Path, json: bool) -> Result<()> {
    let (found, _) = png_record::read(path)?;
    let text = match (found, json) {
        (PngInfo::Steerdiff { record, .. }, true) => {
            format!("{}\n", serde_json::to_string_pretty(&record)?)
        }
        (PngInfo::A1111(a), true) => {
            let fields: serde_json::Map<String, serde_json::Value> = a
                .fields
                .iter()
                .map(|(k, v)| (k.clone(), v.clone().into()))
                .collect();
            let v = serde_json::json!({
                "format": "a1111",
                "prompt": a.prompt,
                "negative_prompt": a.negative_prompt,
                "parameters": fields,
            });
            format!("{}\n", serde_json::to_string_pretty(&v)?)
        }
        (PngInfo::Steerdiff { record, a1111 }, false) => {
            let mut t = format!("written by steerdiff {}\n", record.steerdiff);
            t += &format!(
                "reproduce (writes {}): {} -o OUT\n",
                record.file,
                super::invocation::shell_line(&record.argv)
            );
            if let Some(r) = record.reward {
                t += &format!("reward: {r}\n");
            }
            if let Some(a) = a1111 {
                t += &a1111_text(&a);
            }
            t + &format!(
                "parameters: {}\n",
                serde_json::to_string_pretty(&record.parameters)?
            )
        }
        (PngInfo::A1111(a), false) => {
            "written by another tool (A1111 format; not reproducible by steerdiff)\n".to_string()
                + &a1111_text(&a)
        }
    };
    let text = if json { text } else { printable(&text) };
    use std::io::Write as _;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        // A closed pipe (`steerdiff info X | head`) is not an error.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}
