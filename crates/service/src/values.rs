//! The textual values of a run request (`--timeout 1.5`, `--memory 512M`,
//! `--pids 64`, `--cpus 0.5`, `--expose PATH`): parsed and checked here,
//! with messages that name the option, for every front end.

use crate::error::{io_reason, Error, Result};
use cloche_policy::parse_size;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn invalid<T>(msg: String) -> Result<T> {
    Err(Error::Invalid(msg))
}

/// Seconds, fractions allowed: positive and below 1e9.
pub fn parse_timeout(t: &str) -> Result<Duration> {
    let Ok(secs) = t.trim().parse::<f64>() else {
        return invalid(format!("--timeout {t}: expected a number of seconds"));
    };
    if !(secs.is_finite() && secs > 0.0 && secs < 1e9) {
        return invalid(format!("--timeout {t}: must be a positive number of seconds (below 1e9)"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Bytes, or 512M, 2GiB, ... (binary units): positive.
pub fn parse_memory(m: &str) -> Result<u64> {
    if m.trim().starts_with('-') {
        return invalid(format!("--memory {m}: must be a positive size (bytes, or 512M, 2GiB, ...)"));
    }
    match parse_size(m) {
        Ok(0) => invalid(format!("--memory {m}: must be a positive size")),
        Ok(n) => Ok(n),
        Err(e) => invalid(format!("--memory {m}: {e}")),
    }
}

/// A whole number of processes, 1 or more.
pub fn parse_pids(p: &str) -> Result<u64> {
    match p.trim().parse::<i128>() {
        Ok(n) if n > 0 => u64::try_from(n).map_err(|_| Error::Invalid(format!("--pids {p}: too large"))),
        Ok(_) => invalid(format!("--pids {p}: must be a positive whole number")),
        Err(_) => invalid(format!("--pids {p}: expected a whole number")),
    }
}

/// A positive number of cores (at most a million).
pub fn parse_cpus(c: &str) -> Result<f64> {
    let Ok(n) = c.trim().parse::<f64>() else {
        return invalid(format!("--cpus {c}: expected a number of cores"));
    };
    if !(n.is_finite() && n > 0.0 && n <= 1e6) {
        return invalid(format!("--cpus {c}: must be a positive number of cores"));
    }
    Ok(n)
}

/// A path to keep visible through the masks: absolute (from the current
/// directory), and existing.
pub fn expose_path(p: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(p).map_err(|e| Error::Invalid(format!("--expose {}: {e}", p.display())))?;
    if std::fs::symlink_metadata(&abs).is_err() {
        return invalid(format!("--expose {}: no such file or directory", p.display()));
    }
    Ok(abs)
}

/// Refuses a report path that cannot be written, before the world starts:
/// its directory must exist and be writable, and it must name a file
/// (`-` is stdout).
pub fn check_report(path: &Path) -> Result<()> {
    if path == Path::new("-") {
        return Ok(());
    }
    let bad = |why: String| invalid(format!("--report {}: {why}", path.display()));
    if path.file_name().is_none() || path.as_os_str().as_encoded_bytes().ends_with(b"/") {
        return bad("not a file name".into());
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    match std::fs::metadata(&dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return bad(format!("{} is not a directory", dir.display())),
        Err(e) => return bad(format!("directory {}: {}", dir.display(), io_reason(&e))),
    }
    if let Err(e) = nix::unistd::access(&dir, nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK) {
        return bad(format!("cannot write in {}: {}", dir.display(), e.desc()));
    }
    if std::fs::metadata(path).is_ok_and(|m| m.is_dir()) {
        return bad("is a directory".into());
    }
    // A link, a device, a pipe or a terminal is written in place
    // (`report::write_document`): it must open for writing now (a link to
    // nothing does not).
    if std::fs::symlink_metadata(path).is_ok_and(|m| !m.file_type().is_file()) {
        if let Err(e) = nix::unistd::access(path, nix::unistd::AccessFlags::W_OK) {
            return bad(format!("cannot write to it: {}", e.desc()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_must_be_positive_values() {
        assert_eq!(parse_timeout("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_pids("64").unwrap(), 64);
        assert_eq!(parse_cpus("0.5").unwrap(), 0.5);
        assert_eq!(parse_memory("512M").unwrap(), 512 << 20);
        for (got, flag) in [
            (parse_timeout("-1").map(drop), "--timeout -1: must be a positive"),
            (parse_timeout("0").map(drop), "--timeout 0: must be a positive"),
            (parse_cpus("-3").map(drop), "--cpus -3: must be a positive"),
            (parse_cpus("nan").map(drop), "--cpus nan: must be a positive"),
            (parse_pids("-1").map(drop), "--pids -1: must be a positive"),
            (parse_pids("0").map(drop), "--pids 0: must be a positive"),
            (parse_memory("-1").map(drop), "--memory -1: must be a positive"),
            (parse_memory("0").map(drop), "--memory 0: must be a positive"),
        ] {
            let msg = got.as_ref().map_err(|e| e.to_string());
            assert!(msg.as_ref().is_err_and(|e| e.starts_with(flag)), "{msg:?} for {flag}");
        }
    }

    #[test]
    fn a_report_path_is_checked_before_the_world() {
        let dir = tempfile::tempdir().unwrap();
        assert!(check_report(Path::new("-")).is_ok());
        assert!(check_report(&dir.path().join("r.json")).is_ok());
        for bad in [
            dir.path().join("missing/r.json"),
            dir.path().to_path_buf(),
            dir.path().join("sub/"),
            PathBuf::from("/proc/version/r.json"),
        ] {
            let e = check_report(&bad).unwrap_err().to_string();
            assert!(e.starts_with("--report "), "{e}");
        }
        assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none(), "the check wrote nothing");
    }

    #[test]
    fn an_exposure_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(expose_path(dir.path()).unwrap(), dir.path());
        let e = expose_path(&dir.path().join("missing")).unwrap_err().to_string();
        assert!(e.starts_with("--expose ") && e.ends_with("no such file or directory"), "{e}");
    }
}
