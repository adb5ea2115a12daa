//! `steerdiff info IMAGE.png`: the run record inside a PNG steerdiff wrote, and the command
//! that reproduces it.

use std::path::Path;

use anyhow::Result;

/// `steerdiff info IMAGE.png`: the record, as text or (`json`) as JSON.
pub fn info(path: &Path, json: bool) -> Result<()> {
    let (record, _) = crate::output::png_record::read(path)?;
    let text = if json {
        format!("{}\n", serde_json::to_string_pretty(&record)?)
    } else {
        let mut t = format!("written by steerdiff {}\n", record.steerdiff);
        t += &format!(
            "reproduce (writes {}): {} -o OUT\n",
            record.file,
            super::invocation::shell_line(&record.argv)
        );
        if let Some(r) = record.reward {
            t += &format!("reward: {r}\n");
        }
        t + &format!(
            "parameters: {}\n",
            serde_json::to_string_pretty(&record.parameters)?
        )
    };
    use std::io::Write as _;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        // A closed pipe (`steerdiff info X | head`) is not an error.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}
