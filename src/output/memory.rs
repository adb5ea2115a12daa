//! The process's peak resident memory, recorded in `timing.json` and reported by `bench`.

/// Peak resident memory of this process, from `/proc/self/status` (`VmHWM`); `None` where
/// there is no such file.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    #[test]
    fn peak_memory_is_read_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(super::peak_rss_bytes().unwrap() > 1 << 20);
        }
    }
}
