//! What `/admin/v1/status` tells about the config source: when the served config
//! was loaded and by what, whether the source still holds it, and the last error.

use std::time::SystemTime;

use serde::Serialize;

use crate::config::ConfigError;
use crate::config::immutable::PublishedEdit;

/// Allowed in-place edits of published versions kept in the status.
const EDITS_KEPT: usize = 50;

/// What caused a config load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// The gateway started.
    Startup,
    /// The watcher saw the file change.
    FileChange,
    /// SIGHUP.
    Signal,
    /// An admin API write.
    Admin,
}

impl Cause {
    /// Lower-case name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Startup => "startup",
            Cause::FileChange => "file_change",
            Cause::Signal => "signal",
            Cause::Admin => "admin",
        }
    }
}

/// The most recent rejected change of the source.
#[derive(Debug, Clone, Serialize)]
pub struct LastError {
    /// When (RFC 3339, UTC).
    pub at: String,
    /// What triggered the attempt.
    pub cause: Cause,
    /// SHA-256 of the rejected text, when it could be read.
    pub sha256: Option<String>,
    /// Every problem, with its key path.
    pub errors: Vec<ConfigError>,
}

/// The state of the config source.
#[derive(Debug, Clone, Serialize)]
pub struct SourceStatus {
    /// When the served config was loaded (RFC 3339, UTC).
    pub loaded_at: String,
    /// What loaded it.
    pub loaded_by: Cause,
    /// Whether the source holds the served config (false while it holds a rejected change).
    pub in_sync: bool,
    /// SHA-256 of the source text that is served (None until known, or without a file).
    pub sha256: Option<String>,
    /// The last rejected change, kept until the next one.
    pub last_error: Option<LastError>,
    /// Whether the gateway accepts in-place edits of published versions.
    pub allow_published_edits: bool,
    /// The most recent in-place edits of published versions, newest last (only with
    /// `--allow-published-edits`).
    pub published_edits: Vec<EditRecord>,
}

/// One in-place edit of a published version that the gateway accepted.
#[derive(Debug, Clone, Serialize)]
pub struct EditRecord {
    /// When (RFC 3339, UTC).
    pub at: String,
    /// What applied it.
    pub cause: Cause,
    /// `service@version`.
    pub version: String,
    /// Key path of the field.
    pub path: String,
    /// Its value before.
    pub was: serde_json::Value,
    /// Its value after.
    pub now: serde_json::Value,
}

impl SourceStatus {
    pub(super) fn new() -> Self {
        Self {
            loaded_at: rfc3339(SystemTime::now()),
            loaded_by: Cause::Startup,
            in_sync: true,
            sha256: None,
            last_error: None,
            allow_published_edits: false,
            published_edits: Vec::new(),
        }
    }

    pub(super) fn published_edited(&mut self, edits: &[PublishedEdit], cause: Cause) {
        let at = rfc3339(SystemTime::now());
        self.published_edits.extend(edits.iter().map(|e| EditRecord {
            at: at.clone(),
            cause,
            version: e.version.clone(),
            path: e.path.clone(),
            was: e.was.clone(),
            now: e.now.clone(),
        }));
        let excess = self.published_edits.len().saturating_sub(EDITS_KEPT);
        self.published_edits.drain(..excess);
    }

    pub(super) fn loaded(&mut self, cause: Cause) {
        self.loaded_at = rfc3339(SystemTime::now());
        self.loaded_by = cause;
    }

    pub(super) fn rejected(&mut self, cause: Cause, hash: Option<&str>, errors: &[ConfigError]) {
        self.last_error = Some(LastError {
            at: rfc3339(SystemTime::now()),
            cause,
            sha256: hash.map(str::to_string),
            errors: errors.to_vec(),
        });
    }
}

/// `2026-01-02T03:04:05.678Z`
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Days since 1970-01-01 -> (year, month, day), proleptic Gregorian (H. Hinnant).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_rfc3339() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_709_210_096_123);
        assert_eq!(rfc3339(t), "2024-02-29T12:34:56.123Z");
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }
}
