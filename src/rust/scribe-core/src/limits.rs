//! Sizes a user can ask for (steps, draws, chains), checked before anything
//! is allocated, so that an impossible request is an error naming the
//! argument instead of an allocation failure that aborts R.

use crate::error::{CoreError, Result};

/// The memory the system says is available, in bytes (Linux
/// `/proc/meminfo`'s `MemAvailable`; `None` elsewhere).
pub fn available_bytes() -> Option<f64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024.0)
}

/// Where the system does not say, requests above 1 TiB are refused.
const UNKNOWN_LIMIT: f64 = 1024.0 * 1024.0 * 1024.0 * 1024.0;

fn gb(bytes: f64) -> String {
    format!("{:.1} GB", bytes / 1e9)
}

/// Checks that `n_values` numbers of 8 bytes fit in the memory available;
/// otherwise an error about `arg` that says how much the request needs.
pub fn check_values(arg: &str, n_values: f64) -> Result<()> {
    let bytes = 8.0 * n_values;
    if !bytes.is_finite() || bytes > isize::MAX as f64 {
        return Err(CoreError::arg(
            arg,
            "asks for more values than this machine can address",
        ));
    }
    let limit = available_bytes().unwrap_or(UNKNOWN_LIMIT);
    if bytes > limit {
        return Err(CoreError::arg(
            arg,
            format!(
                "needs {} of memory for its results, and {} is available",
                gb(bytes),
                gb(limit)
            ),
        ));
    }
    Ok(())
}

/// A vector capacity for a history of up to `n` entries that grows as it
/// fills instead of reserving everything up front.
pub fn history_capacity(n: usize) -> usize {
    n.min(1 << 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn impossible_requests_name_their_argument() {
        assert!(check_values("n_samples", 1000.0).is_ok());
        let e = check_values("n_steps", 1e16).unwrap_err();
        assert_eq!(e.argument(), Some("n_steps"));
        assert!(e.message().contains("GB"), "{}", e.message());
        assert!(check_values("n_samples", f64::INFINITY).is_err());
        assert_eq!(history_capacity(1_000_000_000_000), 1 << 16);
    }
}
