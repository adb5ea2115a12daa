//! Image metadata in the text format of AUTOMATIC1111's web UI, which sd.cpp, civitai, image
//! viewers and PNG-info tools read from a PNG's `parameters` text chunk:
//!
//! ```text
//! a red cat
//! Negative prompt: blurry
//! Steps: 30, Sampler: euler, CFG scale: 7.5, Seed: 14, Size: 512x512, Model: sd15, …
//! ```
//!
//! The prompt (one or more lines), then optionally `Negative prompt:` and its lines, then
//! one line of `key: value` pairs separated by `, `; a value holding `,`, `:` or a newline is
//! written as a JSON string, as the web UI does. [`format()`] writes it from a run record,
//! [`parse`] reads it back (from steerdiff's PNGs and from other tools').

use std::fmt::Write as _;

use serde_json::Value;

/// The fields of an A1111 `parameters` text.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct A1111 {
    /// The prompt (for class-conditional models: the class name).
    pub prompt: String,
    /// The negative prompt, when there is one.
    pub negative_prompt: Option<String>,
    /// The `key: value` pairs of the last line, in order.
    pub fields: Vec<(String, String)>,
}

impl A1111 {
    /// The value of field `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A value as the web UI writes it: bare, or as a JSON string when it holds `,`, `:` or a
/// line break.
fn quote(v: &str) -> String {
    if v.contains([',', ':', '\n', '"']) {
        serde_json::to_string(v).unwrap_or_default()
    } else {
        v.to_string()
    }
}

/// Numbers as the record has them (`7.5`, `30`), strings bare.
fn text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// The A1111 fields of an image: `params` is the run record's `parameters`, `seed` the
/// image's own seed, `(width, height)` its size; `steerdiff` names the strategy and reward.
pub fn from_record(params: &Value, seed: u64, width: u32, height: u32) -> A1111 {
    let mut fields: Vec<(String, String)> = vec![];
    let mut put = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            fields.push((k.to_string(), v));
        }
    };
    put("Steps", text(&params["steps"]));
    put("Sampler", text(&params["sampler"]));
    put("CFG scale", text(&params["cfg"]));
    put("Seed", Some(seed.to_string()));
    put("Size", Some(format!("{width}x{height}")));
    put("Model", text(&params["model"]));
    // A1111's model hash: the first 10 hex digits of the weights' sha256 (the UNet or
    // transformer for text-to-image models, the flow network for the toy).
    let config = &params["model_config"];
    let sha = config["weights_sha256"]
        .as_str()
        .or_else(|| config["weights"][0]["sha256"].as_str());
    put("Model hash", sha.map(|s| s.chars().take(10).collect()));
    if params["eta"].as_f64().is_some_and(|e| e != 0.0) {
        put("Eta", text(&params["eta"]));
    }
    let strategy = &params["strategy"];
    let kind = strategy["kind"].as_str().unwrap_or("none");
    let mut what = kind.to_string();
    if let Some(r) = strategy["reward"].as_str() {
        let _ = write!(what, " reward={r}");
    }
    if let Some(k) = params["particles_per_group"].as_u64().filter(|&k| k > 1) {
        let _ = write!(what, " particles={k}");
    }
    put(
        "steerdiff",
        Some(format!("{} {what}", env!("CARGO_PKG_VERSION"))),
    );
    A1111 {
        prompt: params["prompt"]
            .as_str()
            .or(params["class_name"].as_str())
            .unwrap_or_default()
            .to_string(),
        negative_prompt: params["negative"].as_str().map(str::to_string),
        fields,
    }
}

/// The `parameters` text of `a`.
pub fn format(a: &A1111) -> String {
    let mut out = a.prompt.clone();
    if let Some(n) = &a.negative_prompt {
        let _ = write!(out, "\nNegative prompt: {n}");
    }
    let pairs: Vec<String> = a
        .fields
        .iter()
        .map(|(k, v)| format!("{k}: {}", quote(v)))
        .collect();
    let _ = write!(out, "\n{}", pairs.join(", "));
    out
}

/// One `key: value` pair at the start of `s`: the key, the value and the rest after `,`.
fn pair(s: &str) -> Option<(String, String, &str)> {
    let s = s.trim_start();
    let colon = s.find(':')?;
    let key = &s[..colon];
    let key_ok = key
        .chars()
        .next()
        .is_some_and(|c| c.is_alphanumeric() || c == '_')
        && key
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '/' | '_'));
    if !key_ok {
        return None;
    }
    let rest = s[colon + 1..].trim_start();
    if rest.starts_with('"') {
        // A JSON string: up to its closing quote.
        let mut stream = serde_json::Deserializer::from_str(rest).into_iter::<String>();
        let value = stream.next()?.ok()?;
        let after = &rest[stream.byte_offset()..];
        let after = after.trim_start();
        let after = after.strip_prefix(',').unwrap_or(after);
        return Some((key.to_string(), value, after));
    }
    match rest.find(',') {
        Some(i) => Some((
            key.to_string(),
            rest[..i].trim().to_string(),
            &rest[i + 1..],
        )),
        None => Some((key.to_string(), rest.trim().to_string(), "")),
    }
}

/// The pairs of a whole line, or `None` when it is not a pairs line (fewer than 3 pairs,
/// as the web UI's own reader requires).
fn pairs(line: &str) -> Option<Vec<(String, String)>> {
    let mut out = vec![];
    let mut rest = line;
    while !rest.trim().is_empty() {
        let (k, v, after) = pair(rest)?;
        out.push((k, v));
        rest = after;
    }
    (out.len() >= 3).then_some(out)
}

/// Reads an A1111 `parameters` text; `None` when it is not one (no pairs line).
pub fn parse(text: &str) -> Option<A1111> {
    let lines: Vec<&str> = text.trim_end().lines().collect();
    let (last, body) = lines.split_last()?;
    let fields = pairs(last)?;
    let mut prompt = vec![];
    let mut negative: Option<Vec<&str>> = None;
    for line in body {
        match (line.strip_prefix("Negative prompt:"), &mut negative) {
            (Some(n), None) => negative = Some(vec![n.trim_start()]),
            (_, Some(neg)) => neg.push(line),
            (None, None) => prompt.push(*line),
        }
    }
    Some(A1111 {
        prompt: prompt.join("\n"),
        negative_prompt: negative.map(|n| n.join("\n")),
        fields,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_and_parse_round_trip() {
        let a = A1111 {
            prompt: "a red cat,\nin a hat".into(),
            negative_prompt: Some("blurry".into()),
            fields: vec![
                ("Steps".into(), "30".into()),
                ("Sampler".into(), "euler".into()),
                ("CFG scale".into(), "7.5".into()),
                ("Model".into(), "gmm:/x/y.json".into()),
                (
                    "steerdiff".into(),
                    "0.1.0 fk reward=ensemble:sum:1*a;2*b".into(),
                ),
            ],
        };
        let text = format(&a);
        assert!(text.contains("Model: \"gmm:/x/y.json\""), "{text}");
        assert_eq!(parse(&text), Some(a));
    }

    #[test]
    fn other_tools_texts_parse_and_non_a1111_texts_do_not() {
        let sdcpp = "a lovely cat\nNegative prompt: \nSteps: 20, CFG scale: 7, Guidance: \
                     3.5, Seed: 42, Size: 512x512, Model: v1-5, RNG: CUDA, Sampler: euler_a";
        let p = parse(sdcpp).unwrap();
        assert_eq!(p.prompt, "a lovely cat");
        assert_eq!(p.negative_prompt.as_deref(), Some(""));
        assert_eq!(p.get("Seed"), Some("42"));
        assert_eq!(p.get("Sampler"), Some("euler_a"));
        assert_eq!(parse("{\"steerdiff\": \"0.1.0\"}"), None);
        assert_eq!(parse("just a prompt"), None);
    }
}
