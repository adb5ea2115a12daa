//! The wire format of reward plugins, `steerdiff-reward/1` (see `docs/reward-plugins.md`).
//!
//! A message is one line of JSON (the header, no raw newlines inside) ended by `\n`, then
//! exactly `payload_bytes` bytes of binary payload (none when the field is absent or 0). The
//! same framing is used on a child's stdin/stdout and as HTTP request and response bodies.
//! Scores come back keyed by item id, so the order of a response does not matter; a response
//! that misses an id, adds one, or repeats one is an error.

use std::collections::BTreeMap;
use std::io::Write;

use serde::{Deserialize, Serialize};

/// The protocol name and major version, sent in every request.
pub const PROTOCOL: &str = "steerdiff-reward/1";

/// How item pixels travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// Little-endian `f32`, channel-major (`C, H, W`), the model's own values (the toy's
    /// pixels lie in `[-1, 1]`); exact, so a plugin can reproduce a Rust reward bit for bit.
    F32,
    /// `u8` RGB, row-major (`H, W, 3`), from `[-1, 1]` by `round((x + 1)·127.5)`, clamped.
    Rgb8,
    /// A PNG file of the same RGB8 image.
    Png,
}

/// What a plugin may list in its description's `inputs`.
pub const INPUTS: [&str; 5] = ["pixels", "latents", "class", "prompt", "sigma"];

/// The engine's order of preference among the encodings a plugin accepts.
pub const ENCODING_PREFERENCE: [Encoding; 3] = [Encoding::F32, Encoding::Rgb8, Encoding::Png];

/// Whether a plugin scores items one by one or as a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A score depends on its item only: items may be batched, split and cached freely.
    Pointwise,
    /// Scores depend on the whole request (ranks, pairwise judges): never split or cached.
    Groupwise,
}

/// Which way is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Higher is better (used as is).
    Maximize,
    /// Lower is better (the engine steers towards `−score`).
    Minimize,
}

/// A request header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Always [`PROTOCOL`].
    pub protocol: String,
    /// `describe`, `score` or `shutdown`.
    pub op: String,
    /// Increases with every request of a session; echoed back.
    #[serde(default)]
    pub request_id: u64,
    /// `score`: how the payload encodes each item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<Encoding>,
    /// `score`: the shape of one item, `[C, H, W]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shape: Option<Vec<usize>>,
    /// `score`: the items.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<Item>,
    /// Bytes of payload after the header line.
    #[serde(default)]
    pub payload_bytes: usize,
}

impl Request {
    /// A payload-less request for `op`.
    pub fn bare(op: &str, request_id: u64) -> Request {
        Request {
            protocol: PROTOCOL.into(),
            op: op.into(),
            request_id,
            encoding: None,
            shape: None,
            items: vec![],
            payload_bytes: 0,
        }
    }
}

/// One item of a `score` request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    /// Unique within the request (the engine uses a content hash).
    pub id: String,
    /// Class label, if the item is class-conditional.
    #[serde(default)]
    pub class: Option<u32>,
    /// Text prompt, if any.
    #[serde(default)]
    pub prompt: Option<String>,
    /// Noise level `σ/α` the estimate was made at (0 for final samples).
    pub sigma: f64,
    /// Start of the item's bytes within the payload.
    pub offset: usize,
    /// Length of the item's bytes.
    pub bytes: usize,
}

/// The answer to `describe`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Description {
    /// Must equal [`PROTOCOL`].
    pub protocol: String,
    /// The reward's name (used in ledgers and records).
    pub name: String,
    /// The plugin's own version.
    #[serde(default)]
    pub version: String,
    /// What it reads: any of `pixels`, `latents`, `class`, `prompt`, `sigma`.
    #[serde(default = "pixels_only")]
    pub inputs: Vec<String>,
    /// Pointwise (default) or groupwise.
    #[serde(default = "pointwise")]
    pub mode: Mode,
    /// Items per request it prefers (the engine splits larger batches; default 16).
    #[serde(default = "sixteen")]
    pub batch_size: usize,
    /// The range scores lie in, if known (reported, not enforced).
    #[serde(default)]
    pub range: Option<[f64; 2]>,
    /// Higher or lower is better.
    #[serde(default = "maximize")]
    pub direction: Direction,
    /// Whether equal inputs always get equal scores (required for caching).
    #[serde(default = "yes")]
    pub deterministic: bool,
    /// Encodings it accepts (default `["png"]`).
    #[serde(default = "png_only")]
    pub encodings: Vec<Encoding>,
}

fn pixels_only() -> Vec<String> {
    vec!["pixels".into()]
}
fn pointwise() -> Mode {
    Mode::Pointwise
}
fn sixteen() -> usize {
    16
}
fn maximize() -> Direction {
    Direction::Maximize
}
fn yes() -> bool {
    true
}
fn png_only() -> Vec<Encoding> {
    vec![Encoding::Png]
}

/// A `score` response header: `scores` keyed by item id (`null` = this item failed), or
/// `error` for the whole request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreResponse {
    /// Echo of the request's id.
    #[serde(default)]
    pub request_id: Option<u64>,
    /// One score per requested id.
    #[serde(default)]
    pub scores: Option<BTreeMap<String, Option<f64>>>,
    /// Set when the plugin could not score the request at all.
    #[serde(default)]
    pub error: Option<String>,
}

/// Writes `header` (its `payload_bytes` set to `payload.len()`) and `payload`.
pub fn write_message(
    out: &mut impl Write,
    header: &Request,
    payload: &[u8],
) -> std::io::Result<()> {
    let mut header = header.clone();
    header.payload_bytes = payload.len();
    let mut line = serde_json::to_vec(&header)?;
    line.push(b'\n');
    out.write_all(&line)?;
    out.write_all(payload)?;
    out.flush()
}

/// The bytes of a message: the header line and the payload (an HTTP body).
pub fn message_bytes(header: &Request, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 256);
    write_message(&mut out, header, payload).expect("writing to memory");
    out
}

pub use super::framing::{
    read_message, read_message_capped, ReadError, MAX_ANSWER_PAYLOAD_BYTES, MAX_HEADER_BYTES,
};

/// Item `i`'s bytes: `f32` CHW little-endian, RGB8 HWC, or a PNG of it.
pub fn encode_item(values: &[f32], shape: [usize; 3], encoding: Encoding) -> Vec<u8> {
    match encoding {
        Encoding::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        Encoding::Rgb8 => rgb8(values, shape),
        Encoding::Png => {
            let [_, h, w] = shape;
            let img = image::RgbImage::from_raw(w as u32, h as u32, rgb8(values, shape))
                .expect("an RGB image of the item's size");
            let mut png = std::io::Cursor::new(Vec::new());
            img.write_to(&mut png, image::ImageFormat::Png)
                .expect("encoding a PNG in memory");
            png.into_inner()
        }
    }
}

/// `[C, H, W]` values in `[-1, 1]` → `H, W, 3` bytes (one channel is repeated; extra ones are
/// dropped).
fn rgb8(values: &[f32], [c, h, w]: [usize; 3]) -> Vec<u8> {
    let mut out = Vec::with_capacity(h * w * 3);
    for y in 0..h {
        for x in 0..w {
            for ch in 0..3 {
                let v = values[(ch.min(c - 1) * h + y) * w + x];
                out.push(((v + 1.0) * 127.5).round().clamp(0.0, 255.0) as u8);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_garbage_is_named() {
        let mut req = Request::bare("score", 3);
        req.items.push(Item {
            id: "a".into(),
            class: Some(2),
            prompt: None,
            sigma: 0.5,
            offset: 0,
            bytes: 4,
        });
        let bytes = message_bytes(&req, &[1, 2, 3, 4]);
        let (v, payload) = read_message(&mut &bytes[..]).unwrap();
        assert_eq!(payload, vec![1, 2, 3, 4]);
        let back: Request = serde_json::from_value(v).unwrap();
        assert_eq!(back.items, req.items);
        assert_eq!(back.payload_bytes, 4);
        let err = read_message(&mut &b"hello world\n"[..]).unwrap_err();
        assert_eq!(err, ReadError::NotJson("hello world".into()));
        assert_eq!(read_message(&mut &b""[..]).unwrap_err(), ReadError::Eof);
        let (v, _) = read_message(&mut &b"{\"scores\": {\"a\": NaN, \"NaN\": -Infinity}}\n"[..])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v["scores"]["a"], serde_json::Value::Null);
        assert_eq!(v["scores"]["NaN"], serde_json::Value::Null);
    }

    #[test]
    fn rgb8_maps_the_pixel_range() {
        let v = [-1.0f32, 0.0, 1.0, 2.0];
        // C = 1, H = 1, W = 4: grey repeated over three channels.
        let b = encode_item(&v, [1, 1, 4], Encoding::Rgb8);
        assert_eq!(
            b,
            vec![0, 0, 0, 128, 128, 128, 255, 255, 255, 255, 255, 255]
        );
    }

    #[test]
    fn an_oversized_payload_is_refused_before_allocating() {
        let text = format!("{{\"payload_bytes\": {}}}\n", 1u64 << 50);
        match read_message(&mut text.as_bytes()) {
            Err(ReadError::PayloadTooLarge(n, _)) => assert_eq!(n, 1 << 50),
            other => panic!("{other:?}"),
        }
    }
}
