//! Rewards served by plugins in any language, over a child's stdio or HTTP.
//!
//! A plugin speaks `steerdiff-reward/1` ([`protocol`], documented for plugin authors in
//! `docs/reward-plugins.md`): a `describe` handshake, then `score` requests whose answers are
//! keyed by item id. The engine side, [`PluginReward`], is an ordinary
//! [`steerdiff_guidance::Reward`] that
//!
//! - splits a batch into requests of the plugin's preferred size and keeps up to
//!   `concurrency` of them in flight (one child process or HTTP connection each);
//! - answers repeated items from a cache keyed by a SHA-256 of the item's bytes, class, prompt
//!   and (if the plugin reads it) noise level, so copies made by resampling are scored once
//!   (pointwise, deterministic plugins only); [`Reward::take_cached`] reports the hits;
//! - gives every request a timeout, retries failed requests (a crash, a timeout, garbage, a
//!   wrong set of ids, an `error` answer) a bounded number of times with exponential backoff,
//!   restarting a child first, and then applies the [`OnError`] policy; an item scored `null`
//!   or NaN is a failed item under the same policy (not retried).

mod answers;
pub mod children;
pub mod framing;
pub mod http;
pub mod protocol;
mod stdio;
pub mod transport;

pub use transport::{Failure, Transport};

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use candle_core::{DType, Tensor};
use sha2::{Digest, Sha256};
use steerdiff_guidance::{Condition, Reward, RewardContext};

use answers::{handshake, parse_scores};
use protocol::{Description, Direction, Encoding, Item, Mode, Request};

/// What to do with items a plugin could not score, after retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnError {
    /// Stop the run with an error naming the plugin and the failure (the default).
    #[default]
    Abort,
    /// Score the items `−∞` (strategies give them zero weight), warn on stderr and go on.
    Skip,
}

/// Where a plugin is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginTarget {
    /// A child process: program and arguments.
    Stdio(Vec<String>),
    /// An HTTP base URL.
    Http(String),
}

impl PluginTarget {
    /// Parses `stdio:PROGRAM ARG…` (split on whitespace), `stdio:["PROGRAM", "ARG", …]`
    /// (a JSON array, for arguments with spaces) or `http://HOST:PORT[/PATH]`.
    pub fn parse(spec: &str) -> Option<std::result::Result<PluginTarget, String>> {
        if let Some(rest) = spec.strip_prefix("stdio:") {
            let rest = rest.trim();
            let argv: Vec<String> = if rest.starts_with('[') {
                match serde_json::from_str(rest) {
                    Ok(v) => v,
                    Err(e) => {
                        return Some(Err(format!("`{spec}`: not a JSON list of strings: {e}")))
                    }
                }
            } else {
                rest.split_whitespace().map(String::from).collect()
            };
            if argv.is_empty() {
                return Some(Err(format!(
                    "`{spec}`: no command; write e.g. stdio:python3 examples/plugins/brightness_stdio.py"
                )));
            }
            return Some(Ok(PluginTarget::Stdio(argv)));
        }
        if spec.starts_with("http://") || spec.starts_with("https://") {
            return Some(Ok(PluginTarget::Http(spec.to_string())));
        }
        None
    }
}

/// Engine-side settings of a plugin.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginOptions {
    /// Longest wait for one answer.
    pub timeout: Duration,
    /// Longest wait for the `describe` answer (plugins often load models at start).
    pub startup_timeout: Duration,
    /// Extra attempts of a failed request.
    pub retries: u32,
    /// Wait before the first retry; doubled for each further one.
    pub backoff: Duration,
    /// Policy for items that still fail.
    pub on_error: OnError,
    /// Requests in flight at once (child processes or connections).
    pub concurrency: usize,
    /// Items per request (default: the plugin's preferred batch size).
    pub batch_size: Option<usize>,
    /// Whether non-loopback HTTP hosts may be used.
    pub allow_remote: bool,
    /// Whether to answer repeated items from the cache.
    pub cache: bool,
    /// Most payload bytes one answer may carry.
    pub max_answer_bytes: usize,
}

impl Default for PluginOptions {
    fn default() -> Self {
        PluginOptions {
            timeout: Duration::from_secs(60),
            startup_timeout: Duration::from_secs(120),
            retries: 2,
            backoff: Duration::from_millis(100),
            on_error: OnError::Abort,
            concurrency: 1,
            batch_size: None,
            allow_remote: false,
            cache: true,
            max_answer_bytes: protocol::MAX_ANSWER_PAYLOAD_BYTES,
        }
    }
}

/// A reward computed by a plugin (see the module docs).
pub struct PluginReward {
    description: Description,
    encoding: Encoding,
    options: PluginOptions,
    workers: Vec<Mutex<Box<dyn Transport>>>,
    target: String,
    prompts: Vec<String>,
    cache: Mutex<HashMap<[u8; 32], f64>>,
    cached: AtomicU64,
    next_id: AtomicU64,
}

impl std::fmt::Debug for PluginReward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginReward")
            .field("target", &self.target)
            .field("description", &self.description)
            .finish()
    }
}

/// One item to send: its id, condition, noise level and encoded bytes.
struct Ask<'a> {
    id: String,
    cond: Condition,
    sigma: f64,
    bytes: &'a [u8],
}

/// The error of a plugin that failed in a way the run cannot go on from.
fn fail(name: &str, message: String) -> steerdiff_guidance::Error {
    steerdiff_guidance::Error::Reward {
        name: name.into(),
        message,
    }
}

/// The error of a plugin that cannot be used as given (it does not start, or breaks the
/// protocol): the plugin or the command must change.
fn unusable(name: &str, message: String) -> steerdiff_guidance::Error {
    steerdiff_guidance::Error::RewardUnusable {
        name: name.into(),
        message,
    }
}

impl PluginReward {
    /// Starts `concurrency` connections to `target` and checks each one's `describe`
    /// handshake (protocol version, an encoding both sides know, matching descriptions).
    pub fn connect(
        target: &PluginTarget,
        options: PluginOptions,
    ) -> steerdiff_guidance::Result<PluginReward> {
        let n = options.concurrency.max(1);
        let label = match target {
            PluginTarget::Stdio(argv) => format!("stdio:{}", argv.join(" ")),
            PluginTarget::Http(url) => url.clone(),
        };
        let mut workers: Vec<Box<dyn Transport>> = Vec::with_capacity(n);
        for _ in 0..n {
            workers.push(match target {
                PluginTarget::Stdio(argv) => Box::new(stdio::StdioTransport::new(
                    argv.clone(),
                    options.max_answer_bytes,
                )),
                PluginTarget::Http(url) => Box::new(
                    http::HttpTransport::new(url, options.allow_remote, options.max_answer_bytes)
                        .map_err(|f| unusable(&label, f.message))?,
                ),
            });
        }
        let mut description: Option<Description> = None;
        for w in &mut workers {
            let d = handshake(w.as_mut(), &options, &label)?;
            if let Some(first) = &description {
                if first != &d {
                    return Err(unusable(
                        &label,
                        "two instances describe themselves differently".into(),
                    ));
                }
            }
            description = Some(d);
        }
        let description = description.expect("at least one worker");
        let encoding = protocol::ENCODING_PREFERENCE
            .into_iter()
            .find(|e| description.encodings.contains(e))
            .ok_or_else(|| {
                unusable(
                    &label,
                    format!(
                        "the plugin accepts encodings {:?}; steerdiff sends f32, rgb8 or png",
                        description.encodings
                    ),
                )
            })?;
        Ok(PluginReward {
            description,
            encoding,
            options,
            workers: workers.into_iter().map(Mutex::new).collect(),
            target: label,
            prompts: vec![],
            cache: Mutex::new(HashMap::new()),
            cached: AtomicU64::new(0),
            next_id: AtomicU64::new(1),
        })
    }

    /// Prompt texts, so that `Condition::Prompt(i)` items carry `prompts[i]`.
    pub fn with_prompts(mut self, prompts: Vec<String>) -> PluginReward {
        self.prompts = prompts;
        self
    }

    /// What the plugin said about itself.
    pub fn description(&self) -> &Description {
        &self.description
    }

    /// The encoding chosen for item pixels.
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    fn cacheable(&self) -> bool {
        self.options.cache
            && self.description.mode == Mode::Pointwise
            && self.description.deterministic
    }

    fn key(&self, bytes: &[u8], cond: Condition, sigma: f64) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update([self.encoding as u8]);
        h.update(bytes);
        match cond {
            Condition::Null => h.update(b"null"),
            Condition::Class(k) => {
                h.update(b"class");
                h.update(k.to_le_bytes());
            }
            Condition::Prompt(i) => {
                h.update(b"prompt");
                h.update(self.prompt(cond).unwrap_or_default().as_bytes());
                h.update(i.to_le_bytes());
            }
        }
        if self.description.inputs.iter().any(|i| i == "sigma") {
            h.update(sigma.to_le_bytes());
        }
        h.finalize().into()
    }

    fn prompt(&self, cond: Condition) -> Option<String> {
        match cond {
            Condition::Prompt(i) => self.prompts.get(i as usize).cloned(),
            _ => None,
        }
    }

    /// Scores one request's worth of items on worker `w`, with retries; `Err` after the last.
    fn request(
        &self,
        w: usize,
        shape: [usize; 3],
        items: &[Ask],
    ) -> Result<Vec<Option<f64>>, Failure> {
        let mut payload = Vec::new();
        let mut header = Request::bare("score", 0);
        header.encoding = Some(self.encoding);
        header.shape = Some(shape.to_vec());
        for a in items {
            header.items.push(Item {
                id: a.id.clone(),
                class: match a.cond {
                    Condition::Class(k) => Some(k),
                    _ => None,
                },
                prompt: self.prompt(a.cond),
                sigma: a.sigma,
                offset: payload.len(),
                bytes: a.bytes.len(),
            });
            payload.extend_from_slice(a.bytes);
        }
        let mut transport = self.workers[w].lock().expect("plugin worker");
        let mut last = Failure::retry("");
        for attempt in 0..=self.options.retries {
            if attempt > 0 {
                std::thread::sleep(self.options.backoff * 2u32.pow(attempt - 1));
            }
            header.request_id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let answer = transport
                .call(&header, &payload, self.options.timeout)
                .and_then(|(v, _)| parse_scores(v, items));
            match answer {
                Ok(scores) => return Ok(scores),
                Err(failure) => {
                    transport.reset();
                    if failure.retryable && attempt < self.options.retries && !children::stopping()
                    {
                        eprintln!(
                            "steerdiff: warning: plugin {}: {}; retrying ({} of {})",
                            self.target,
                            failure.message,
                            attempt + 1,
                            self.options.retries
                        );
                    }
                    // After a stop signal, no retry: the run is ending.
                    let stop = !failure.retryable || children::stopping();
                    last = failure;
                    if stop {
                        break;
                    }
                }
            }
        }
        let tries = self.options.retries + 1;
        last.message = format!(
            "{} (after {tries} attempt{})",
            last.message,
            if tries == 1 { "" } else { "s" }
        );
        Err(last)
    }
}

/// What one `score` call must ask for: the distinct uncached items, the rows each answer
/// fills, their cache keys (empty when not caching), and the rows already answered.
struct Plan<'a> {
    ask: Vec<Ask<'a>>,
    rows_of: Vec<Vec<usize>>,
    keys: Vec<[u8; 32]>,
    out: Vec<f64>,
    cached: u64,
}

impl PluginReward {
    /// Splits rows into cache hits, repeats of an earlier row, and items to send.
    fn plan<'a>(&self, encoded: &'a [Vec<u8>], conds: &[Condition], sigma: f64) -> Plan<'a> {
        let mut plan = Plan {
            ask: vec![],
            rows_of: vec![],
            keys: vec![],
            out: vec![f64::NAN; encoded.len()],
            cached: 0,
        };
        if !self.cacheable() {
            for (i, bytes) in encoded.iter().enumerate() {
                plan.ask.push(Ask {
                    id: format!("item-{i}"),
                    cond: conds[i],
                    sigma,
                    bytes,
                });
                plan.rows_of.push(vec![i]);
            }
            return plan;
        }
        let cache = self.cache.lock().expect("plugin cache");
        let mut pending: HashMap<[u8; 32], usize> = HashMap::new();
        for (i, bytes) in encoded.iter().enumerate() {
            let key = self.key(bytes, conds[i], sigma);
            if let Some(&s) = cache.get(&key) {
                plan.out[i] = s;
                plan.cached += 1;
            } else if let Some(&j) = pending.get(&key) {
                plan.rows_of[j].push(i);
                plan.cached += 1;
            } else {
                pending.insert(key, plan.ask.len());
                plan.ask.push(Ask {
                    id: key[..8].iter().map(|b| format!("{b:02x}")).collect(),
                    cond: conds[i],
                    sigma,
                    bytes,
                });
                plan.rows_of.push(vec![i]);
                plan.keys.push(key);
            }
        }
        plan
    }

    /// Sends every chunk, worker `w` taking chunks `w, w + W, …`; answers in chunk order.
    fn ask_all(
        &self,
        chunks: &[&[Ask]],
        shape: [usize; 3],
    ) -> Vec<Result<Vec<Option<f64>>, Failure>> {
        let workers = self.workers.len();
        let mut answers: Vec<Option<Result<Vec<Option<f64>>, Failure>>> = vec![None; chunks.len()];
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..workers.min(chunks.len()))
                .map(|w| {
                    s.spawn(move || {
                        (w..chunks.len())
                            .step_by(workers)
                            .map(|c| (c, self.request(w, shape, chunks[c])))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            for h in handles {
                for (c, r) in h.join().expect("plugin worker thread") {
                    answers[c] = Some(r);
                }
            }
        });
        answers
            .into_iter()
            .map(|a| a.expect("every chunk answered"))
            .collect()
    }

    /// The [`OnError`] policy for `n` items that failed because of `what` (by a plugin
    /// unusable as given when `unusable`): an error, or −∞.
    fn failed(
        &self,
        what: &str,
        unusable_plugin: bool,
        n: usize,
    ) -> steerdiff_guidance::Result<f64> {
        match self.options.on_error {
            OnError::Abort => Err((if unusable_plugin { unusable } else { fail })(
                self.name(),
                format!(
                    "plugin {}: {what}; pass --plugin-on-error skip to score such items −∞ and \
                     go on",
                    self.target
                ),
            )),
            OnError::Skip => {
                eprintln!(
                    "steerdiff: warning: plugin {}: {what}; scoring {n} item(s) −∞",
                    self.target
                );
                Ok(f64::NEG_INFINITY)
            }
        }
    }
}

impl Reward for PluginReward {
    fn name(&self) -> &str {
        &self.description.name
    }

    fn score(&self, x0: &Tensor, cx: &RewardContext) -> steerdiff_guidance::Result<Vec<f64>> {
        let dims = x0.dims().to_vec();
        let shape: [usize; 3] = match dims.as_slice() {
            [_, c, h, w] => [*c, *h, *w],
            _ => {
                return Err(fail(
                    self.name(),
                    format!("plugins score images [B, C, H, W]; got shape {dims:?}"),
                ))
            }
        };
        let flat: Vec<f32> = x0.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        let per = shape.iter().product::<usize>();
        let encoded: Vec<Vec<u8>> = flat
            .chunks(per.max(1))
            .map(|row| protocol::encode_item(row, shape, self.encoding))
            .collect();
        let plan = self.plan(&encoded, cx.conds, cx.at.sigma_ve());
        self.cached.fetch_add(plan.cached, Ordering::Relaxed);
        let chunk = match self.description.mode {
            Mode::Groupwise => plan.ask.len().max(1),
            Mode::Pointwise => self
                .options
                .batch_size
                .unwrap_or(self.description.batch_size)
                .max(1),
        };
        let chunks: Vec<&[Ask]> = plan.ask.chunks(chunk).collect();
        let answers = self.ask_all(&chunks, shape);
        let sign = match self.description.direction {
            Direction::Maximize => 1.0,
            Direction::Minimize => -1.0,
        };
        let mut out = plan.out;
        let mut fresh = vec![];
        let mut j = 0;
        for (items, answer) in chunks.iter().zip(answers) {
            let values: Vec<f64> = match answer {
                Ok(scores) => scores
                    .into_iter()
                    .zip(items.iter())
                    .map(|(s, item)| match s.filter(|v| v.is_finite()) {
                        Some(v) => Ok(sign * v),
                        None => self.failed(
                            &format!("it scored item {} as null or not finite", item.id),
                            false,
                            1,
                        ),
                    })
                    .collect::<steerdiff_guidance::Result<_>>()?,
                Err(f) => {
                    let v = self.failed(&f.message, f.unusable, items.len())?;
                    vec![v; items.len()]
                }
            };
            for v in values {
                if v.is_finite() && !plan.keys.is_empty() {
                    fresh.push((plan.keys[j], v));
                }
                for &row in &plan.rows_of[j] {
                    out[row] = v;
                }
                j += 1;
            }
        }
        if !fresh.is_empty() {
            self.cache.lock().expect("plugin cache").extend(fresh);
        }
        Ok(out)
    }

    fn take_cached(&self) -> u64 {
        self.cached.swap(0, Ordering::Relaxed)
    }
}
