//! A plugin served by a long-lived child process over its stdin and stdout.
//!
//! The child is spawned from an argv list (never through a shell), so no quoting or
//! injection can happen. A reader thread turns its stdout into messages, so a request can wait
//! with a timeout; the child's stderr is passed through to ours, prefixed, and its last lines
//! are kept for error messages. A child that times out is killed; every child is reaped when
//! the plugin is dropped, so no zombie remains.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt as _;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::protocol::{self, ReadError, Request};
use super::{Failure, Transport};

/// Lines of a child's stderr kept for error messages.
const STDERR_TAIL: usize = 8;

/// A plugin child process (spawned on first use and again after a failure).
pub struct StdioTransport {
    argv: Vec<String>,
    max_answer_bytes: usize,
    running: Option<Running>,
}

struct Running {
    child: Child,
    stdin: Option<ChildStdin>,
    messages: Receiver<Result<(serde_json::Value, Vec<u8>), ReadError>>,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
}

impl StdioTransport {
    /// A transport for `argv` (program, then arguments); nothing runs until the first call.
    pub fn new(argv: Vec<String>, max_answer_bytes: usize) -> StdioTransport {
        StdioTransport {
            argv,
            max_answer_bytes,
            running: None,
        }
    }

    fn spawn(&self) -> Result<Running, Failure> {
        if super::children::stopping() {
            return Err(Failure::fatal(
                "steerdiff is stopping (a stop signal arrived)",
            ));
        }
        let (program, args) = self
            .argv
            .split_first()
            .ok_or_else(|| Failure::fatal("the plugin command is empty"))?;
        // Its own process group: stopping the group stops whatever the plugin started too.
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .map_err(|e| {
                Failure::fatal(format!(
                    "cannot start `{}`: {e} (is the program installed and on PATH?)",
                    self.argv.join(" ")
                ))
            })?;
        super::children::register(child.id());
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, messages) = mpsc::channel();
        let cap = self.max_answer_bytes;
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            loop {
                let msg = protocol::read_message_capped(&mut reader, cap);
                let end = msg.is_err();
                if tx.send(msg).is_err() || end {
                    break;
                }
            }
        });
        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        let tail = Arc::clone(&stderr_tail);
        // `[plugin python3 brightness_stdio.py]`: the program and its script, without paths.
        let base = |s: &String| s.rsplit('/').next().unwrap_or(s).to_string();
        let name = std::iter::once(base(program))
            .chain(args.first().filter(|a| !a.starts_with('-')).map(base))
            .collect::<Vec<_>>()
            .join(" ");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                eprintln!("[plugin {name}] {line}");
                let mut t = tail.lock().expect("stderr tail");
                if t.len() == STDERR_TAIL {
                    t.pop_front();
                }
                t.push_back(line);
            }
        });
        Ok(Running {
            stdin: child.stdin.take(),
            child,
            messages,
            stderr_tail,
        })
    }
}

impl Running {
    /// Why the child stopped, with its last stderr lines; reaps it.
    fn death(&mut self, what: &str) -> String {
        // Give the child a moment to finish exiting (and its stderr to drain) before asking.
        let deadline = Instant::now() + Duration::from_millis(500);
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                _ => break None,
            }
        };
        let status = match status {
            Some(s) => format!("it exited ({s})"),
            None => {
                self.kill();
                "it was stopped".to_string()
            }
        };
        std::thread::sleep(Duration::from_millis(20));
        let tail: Vec<String> = self
            .stderr_tail
            .lock()
            .expect("stderr tail")
            .iter()
            .cloned()
            .collect();
        if tail.is_empty() {
            format!("{what}; {status}")
        } else {
            format!(
                "{what}; {status}; its last stderr lines: {}",
                tail.join(" | ")
            )
        }
    }

    fn kill(&mut self) {
        super::children::kill_group(self.child.id());
        let _ = self.child.kill();
        let _ = self.child.wait();
        super::children::unregister(self.child.id());
    }

    /// Asks the child to stop (shutdown message, closed stdin), then kills it if it lingers.
    fn stop(mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = protocol::write_message(&mut stdin, &Request::bare("shutdown", 0), &[]);
        }
        let deadline = Instant::now() + Duration::from_millis(500);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                // Whatever it started goes with it.
                super::children::kill_group(self.child.id());
                super::children::unregister(self.child.id());
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill();
    }
}

impl Transport for StdioTransport {
    fn call(
        &mut self,
        header: &Request,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<(serde_json::Value, Vec<u8>), Failure> {
        if self.running.is_none() {
            self.running = Some(self.spawn()?);
        }
        let run = self.running.as_mut().expect("spawned");
        let sent = match run.stdin.as_mut() {
            Some(stdin) => protocol::write_message(stdin, header, payload),
            None => Err(std::io::Error::other("stdin closed")),
        };
        if let Err(e) = sent {
            let why = run.death(&format!("cannot send the request ({e})"));
            self.running = None;
            return Err(Failure::retry(why));
        }
        match run.messages.recv_timeout(timeout) {
            Ok(Ok(msg)) => Ok(msg),
            Ok(Err(ReadError::Eof)) | Err(RecvTimeoutError::Disconnected) => {
                let why = run.death("the plugin closed its output before answering");
                self.running = None;
                Err(Failure::retry(why))
            }
            Ok(Err(e)) => {
                // The stream is out of step after garbage: start a fresh child on retry.
                let why = e.to_string();
                if let Some(r) = self.running.take() {
                    r.stop();
                }
                Err(if e.broke_protocol() {
                    Failure::protocol(why)
                } else {
                    Failure::retry(why)
                })
            }
            Err(RecvTimeoutError::Timeout) => {
                let mut r = self.running.take().expect("running");
                r.kill();
                Err(Failure::retry(format!(
                    "no answer within {:.1} s (the timeout); the plugin was stopped",
                    timeout.as_secs_f64()
                )))
            }
        }
    }

    fn reset(&mut self) {
        if let Some(r) = self.running.take() {
            r.stop();
        }
    }

    fn describe_target(&self) -> String {
        format!("`{}`", self.argv.join(" "))
    }
}

impl Drop for StdioTransport {
    fn drop(&mut self) {
        self.reset();
    }
}
