//! The plugin's answers checked against the protocol: the `describe` handshake and `score`
//! answers. What breaks the protocol makes the plugin unusable as given.

use std::collections::BTreeSet;

use super::protocol::{self, Description, Request, ScoreResponse};
use super::{unusable, Ask, Failure, PluginOptions, Transport};

/// The `describe` handshake on one transport.
pub(super) fn handshake(
    t: &mut dyn Transport,
    options: &PluginOptions,
    label: &str,
) -> steerdiff_guidance::Result<Description> {
    let (v, _) = t
        .call(&Request::bare("describe", 0), &[], options.startup_timeout)
        .map_err(|f| {
            unusable(
                label,
                format!("the describe handshake failed: {}", f.message),
            )
        })?;
    let d: Description = serde_json::from_value(v.clone()).map_err(|e| {
        unusable(
            label,
            format!("the describe answer is not a valid description ({e}): {v}"),
        )
    })?;
    if d.protocol != protocol::PROTOCOL {
        return Err(unusable(
            label,
            format!(
                "the plugin speaks `{}`; this steerdiff speaks `{}`",
                d.protocol,
                protocol::PROTOCOL
            ),
        ));
    }
    if d.batch_size == 0 {
        return Err(unusable(label, "the plugin's batch_size is 0".into()));
    }
    let unknown: Vec<&String> = d
        .inputs
        .iter()
        .filter(|i| !protocol::INPUTS.contains(&i.as_str()))
        .collect();
    if !unknown.is_empty() {
        return Err(unusable(
            label,
            format!(
                "the plugin reads inputs {unknown:?} that steerdiff does not send (it sends {})",
                protocol::INPUTS.join(", ")
            ),
        ));
    }
    Ok(d)
}

/// The scores of a `score` answer, in `items` order; any id mismatch breaks the protocol.
pub(super) fn parse_scores(
    v: serde_json::Value,
    items: &[Ask],
) -> Result<Vec<Option<f64>>, Failure> {
    let r: ScoreResponse = serde_json::from_value(v.clone())
        .map_err(|e| Failure::protocol(format!("the answer is not a score response ({e}): {v}")))?;
    if let Some(e) = r.error {
        return Err(Failure::retry(format!("the plugin reported an error: {e}")));
    }
    let Some(scores) = r.scores else {
        return Err(Failure::protocol(format!(
            "the answer has no `scores`: {v}"
        )));
    };
    let asked: BTreeSet<&str> = items.iter().map(|a| a.id.as_str()).collect();
    let got: BTreeSet<&str> = scores.keys().map(String::as_str).collect();
    if asked != got {
        let missing: Vec<&&str> = asked.difference(&got).take(3).collect();
        let extra: Vec<&&str> = got.difference(&asked).take(3).collect();
        return Err(Failure::protocol(format!(
            "the answer has {} scores for {} items (missing ids {missing:?}, unexpected ids \
             {extra:?}); a plugin must return exactly one score per requested id",
            scores.len(),
            items.len()
        )));
    }
    Ok(items.iter().map(|a| scores[a.id.as_str()]).collect())
}
