//! A plugin served over HTTP: `POST BASE/describe` and `POST BASE/score`, each body one
//! message in the plugin framing (a JSON header line, then the payload), and the answer the
//! same. Only loopback hosts are accepted unless remote hosts are allowed explicitly: a
//! reward sees every image a run makes.

use std::io::Read as _;
use std::time::Duration;

use super::protocol::{self, Request};
use super::{Failure, Transport};

/// Content type of request and response bodies.
pub const CONTENT_TYPE: &str = "application/x-steerdiff-reward";

/// A plugin at an `http://` base URL.
pub struct HttpTransport {
    base: String,
    max_answer_bytes: usize,
}

/// Whether `url` reaches this machine only: parsed by a real URL parser (the `url` crate),
/// with no user info, query or fragment that could make another parser see another host,
/// and a host that is a loopback address, or `localhost` resolving to loopback addresses
/// only (checked before any connection).
pub fn is_loopback(url: &str) -> bool {
    use std::net::ToSocketAddrs as _;
    let Ok(u) = url::Url::parse(url) else {
        return false;
    };
    if !u.username().is_empty()
        || u.password().is_some()
        || u.query().is_some()
        || u.fragment().is_some()
        || !matches!(u.scheme(), "http" | "https")
    {
        return false;
    }
    let port = u.port_or_known_default().unwrap_or(80);
    match u.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => {
            d.eq_ignore_ascii_case("localhost")
                && (d, port).to_socket_addrs().is_ok_and(|addrs| {
                    let addrs: Vec<_> = addrs.collect();
                    !addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback())
                })
        }
        None => false,
    }
}

impl HttpTransport {
    /// A transport for `base` (e.g. `http://127.0.0.1:8765`); refuses non-loopback hosts
    /// unless `allow_remote`.
    /// Answers may carry at most `max_answer_bytes` of payload.
    pub fn new(
        base: &str,
        allow_remote: bool,
        max_answer_bytes: usize,
    ) -> Result<HttpTransport, Failure> {
        if !base.starts_with("http://") && !base.starts_with("https://") {
            return Err(Failure::fatal(format!(
                "plugin URL `{base}` must start with http:// (e.g. http://127.0.0.1:8765)"
            )));
        }
        if let Err(e) = url::Url::parse(base) {
            return Err(Failure::fatal(format!(
                "plugin URL `{base}` is not a valid URL: {e} (e.g. http://127.0.0.1:8765)"
            )));
        }
        if !allow_remote && !is_loopback(base) {
            return Err(Failure::fatal(format!(
                "plugin URL `{base}` is not on this machine; a reward plugin is sent every image, \
                 so only loopback hosts are used unless you pass --plugin-allow-remote"
            )));
        }
        Ok(HttpTransport {
            base: base.trim_end_matches('/').to_string(),
            max_answer_bytes,
        })
    }
}

impl Transport for HttpTransport {
    fn call(
        &mut self,
        header: &Request,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<(serde_json::Value, Vec<u8>), Failure> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .build()
            .into();
        let url = format!("{}/{}", self.base, header.op);
        let body = protocol::message_bytes(header, payload);
        let mut response = agent
            .post(&url)
            .header("content-type", CONTENT_TYPE)
            .send(&body[..])
            .map_err(|e| Failure::retry(format!("POST {url}: {e}")))?;
        let status = response.status();
        // The answer is read up to its cap, never without bound.
        let cap = (protocol::MAX_HEADER_BYTES + self.max_answer_bytes) as u64;
        let mut bytes = Vec::new();
        response
            .body_mut()
            .as_reader()
            .take(cap + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Failure::retry(format!("POST {url}: reading the answer: {e}")))?;
        if bytes.len() as u64 > cap {
            return Err(Failure::protocol(format!(
                "POST {url}: the answer is longer than {cap} bytes (--plugin-max-answer-mib \
                 raises the cap)"
            )));
        }
        if !status.is_success() {
            let text: String = String::from_utf8_lossy(&bytes).chars().take(200).collect();
            return Err(Failure::retry(format!("POST {url}: HTTP {status}: {text}")));
        }
        protocol::read_message_capped(&mut &bytes[..], self.max_answer_bytes).map_err(|e| {
            let why = format!("POST {url}: {e}");
            if e.broke_protocol() {
                Failure::protocol(why)
            } else {
                Failure::retry(why)
            }
        })
    }

    fn reset(&mut self) {}

    fn describe_target(&self) -> String {
        self.base.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_hosts_pass() {
        for url in [
            "http://127.0.0.1:8000",
            "http://localhost/x",
            "http://[::1]:9/",
            "http://127.3.2.1",
        ] {
            assert!(is_loopback(url), "{url}");
        }
        for url in [
            "http://10.0.0.1:80",
            "http://example.com",
            "http://127.0.0.1.evil.com",
            // Another parser could read these as the host after `@`, or the reverse.
            "http://0.0.0.0:8765?@127.0.0.1",
            "http://example.com?@127.0.0.1",
            "http://example.com#@127.0.0.1",
            "http://127.0.0.1@example.com",
            "http://user:pw@127.0.0.1:8765",
            "http://0.0.0.0:8765",
            "ftp://127.0.0.1",
        ] {
            assert!(!is_loopback(url), "{url}");
        }
        assert!(HttpTransport::new("http://example.com", false, 1 << 20).is_err());
        assert!(HttpTransport::new("http://example.com", true, 1 << 20).is_ok());
    }
}
