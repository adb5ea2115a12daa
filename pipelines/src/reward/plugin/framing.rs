//! Reading one message off a plugin's output: a JSON header line (at most
//! [`MAX_HEADER_BYTES`]) and its payload (at most a cap, [`MAX_ANSWER_PAYLOAD_BYTES`] unless
//! the user sets another), refused before anything is allocated when it announces more.

use std::io::BufRead;

/// Largest header line accepted, bytes (guards against a plugin printing garbage forever).
pub const MAX_HEADER_BYTES: usize = 1 << 20;

/// Longest payload a plugin's answer may carry by default (64 MiB; `--plugin-max-answer-mib`
/// sets another); a header announcing more is a broken plugin, refused before anything is
/// allocated.
pub const MAX_ANSWER_PAYLOAD_BYTES: usize = 64 << 20;

/// Why a message could not be read.
#[derive(Debug, Clone, PartialEq)]
pub enum ReadError {
    /// The stream ended before a full header line.
    Eof,
    /// The header line was longer than [`MAX_HEADER_BYTES`].
    TooLong,
    /// The header announced more payload bytes (first) than the cap (second).
    PayloadTooLarge(u64, usize),
    /// Reading failed.
    Io(String),
    /// The header was not a JSON object.
    NotJson(String),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Eof => write!(f, "the plugin closed its output"),
            ReadError::TooLong => write!(f, "a header line longer than {MAX_HEADER_BYTES} bytes"),
            ReadError::PayloadTooLarge(n, cap) => write!(
                f,
                "an answer announcing {n} payload bytes (at most {cap} are accepted; \
                 --plugin-max-answer-mib raises the cap)"
            ),
            ReadError::Io(e) => write!(f, "reading from the plugin failed: {e}"),
            ReadError::NotJson(line) => write!(f, "not a JSON header: `{line}`"),
        }
    }
}

impl ReadError {
    /// Whether the bytes read break the protocol (as opposed to the stream ending or failing).
    pub fn broke_protocol(&self) -> bool {
        matches!(
            self,
            ReadError::TooLong | ReadError::PayloadTooLarge(..) | ReadError::NotJson(_)
        )
    }
}

/// Reads one message: the parsed JSON header and its payload (`payload_bytes`, if present,
/// at most [`MAX_ANSWER_PAYLOAD_BYTES`]).
pub fn read_message(input: &mut impl BufRead) -> Result<(serde_json::Value, Vec<u8>), ReadError> {
    read_message_capped(input, MAX_ANSWER_PAYLOAD_BYTES)
}

/// [`read_message`] with a payload of at most `max_payload` bytes.
pub fn read_message_capped(
    input: &mut impl BufRead,
    max_payload: usize,
) -> Result<(serde_json::Value, Vec<u8>), ReadError> {
    let mut line = Vec::new();
    loop {
        let buf = input.fill_buf().map_err(|e| ReadError::Io(e.to_string()))?;
        if buf.is_empty() {
            return Err(ReadError::Eof);
        }
        match buf.iter().position(|&b| b == b'\n') {
            Some(i) => {
                line.extend_from_slice(&buf[..i]);
                input.consume(i + 1);
                break;
            }
            None => {
                line.extend_from_slice(buf);
                let n = buf.len();
                input.consume(n);
            }
        }
        if line.len() > MAX_HEADER_BYTES {
            return Err(ReadError::TooLong);
        }
    }
    let text = String::from_utf8_lossy(&line).trim().to_string();
    let parsed =
        serde_json::from_str(&text).or_else(|_| serde_json::from_str(&non_finite_to_null(&text)));
    let value: serde_json::Value = match parsed {
        Ok(v @ serde_json::Value::Object(_)) => v,
        _ => {
            let mut shown: String = text.chars().take(200).collect();
            if shown.len() < text.len() {
                shown.push('…');
            }
            return Err(ReadError::NotJson(shown));
        }
    };
    let n = value
        .get("payload_bytes")
        .and_then(|v| v.as_u64())
        .unwrap_or(0);
    if n > max_payload as u64 {
        return Err(ReadError::PayloadTooLarge(n, max_payload));
    }
    let mut payload = vec![0u8; n as usize];
    input
        .read_exact(&mut payload)
        .map_err(|e| ReadError::Io(e.to_string()))?;
    Ok((value, payload))
}

/// Replaces the non-JSON tokens `NaN`, `Infinity` and `-Infinity` (which Python's `json`
/// writes for non-finite floats) outside strings by `null`, a failed item.
fn non_finite_to_null(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut escaped = false;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if in_string {
            in_string = c != '"' || escaped;
            escaped = c == '\\' && !escaped;
        } else if c == '"' {
            in_string = true;
        } else if let Some(token) = ["-Infinity", "Infinity", "NaN"]
            .into_iter()
            .find(|t| rest.starts_with(t))
        {
            out.push_str("null");
            rest = &rest[token.len()..];
            continue;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}
