//! Campaign pull and probe health, between a probe and its collector, on
//! the upload protocol's channel: the token authenticates the probe, the
//! collector's certificate pin the collector.
//!
//! Over QUIC (ALPN `vantage-collect/1`), one bidirectional stream per poll.
//! The probe sends a [`Heartbeat`] and finishes the stream:
//!
//! ```text
//! "VNTC" | version=1 | token_len u8 | token (UTF-8) | heartbeat (text)
//! ```
//!
//! and the collector answers with a [`CampaignAnswer`] (text) and finishes.
//! Over HTTPS: `POST /v1/campaign` with `Authorization: Bearer TOKEN` and
//! the heartbeat as the body; the answer is the body of a 200.
//!
//! Both texts are lines of `key value`, so a person can read them with
//! `curl`; an answer that carries a campaign ends its lines with an empty
//! one, and the campaign's TOML follows. Unknown keys are skipped, so
//! either side may add one.

use crate::labels::{LabelError, Labels};
use std::fmt::Write;

/// The HTTPS path of a campaign poll.
pub const HTTP_PATH: &str = "/v1/campaign";
const MAGIC: &[u8; 4] = b"VNTC";
const VERSION: u8 = 1;
/// Longest heartbeat accepted, bytes.
pub const MAX_HEARTBEAT_BYTES: usize = 16 * 1024;
/// Longest answer accepted, bytes (the campaign's TOML included).
pub const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// True when `bytes` begin a campaign poll (not a batch upload).
pub fn is_poll(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC)
}

/// A phase label that every probe of a campaign takes from the first
/// window starting at or after `at_unix_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhaseSwitch {
    /// The instant, ms since the epoch.
    pub at_unix_ms: u64,
    /// The phase label's new value, such as `after`.
    pub phase: String,
}

/// The phase of a window starting at `window_start_unix_ms`: that of the
/// latest switch at or before it, if any.
pub fn phase_at(switches: &[PhaseSwitch], window_start_unix_ms: u64) -> Option<&str> {
    switches
        .iter()
        .filter(|s| s.at_unix_ms <= window_start_unix_ms)
        .max_by_key(|s| s.at_unix_ms)
        .map(|s| s.phase.as_str())
}

/// What a probe tells its collector on every poll (at least once a minute).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Heartbeat {
    /// The probe's id (its token must be this probe's).
    pub probe_id: String,
    /// The probe's software version.
    pub software: String,
    /// The campaign applied, and its version.
    pub applied: Option<(String, u64)>,
    /// Why the newest campaign the probe received could not be applied
    /// (the previous one keeps running).
    pub campaign_error: Option<String>,
    /// Batches waiting in the spool, and their bytes.
    pub backlog_batches: u64,
    /// Bytes waiting in the spool.
    pub backlog_bytes: u64,
    /// Batches the spool dropped at its cap, in all.
    pub dropped_batches: u64,
    /// Seconds since the probe started.
    pub uptime_s: u64,
    /// The probe's clock minus the collector's, from the last poll's round
    /// trip, µs, and its uncertainty (half the round trip), µs.
    pub clock_offset: Option<(i64, u64)>,
    /// The probe's own labels (flags and file), for label-selector
    /// assignments.
    pub labels: Labels,
    /// The probe's window length, ms (the collector's run-rate check).
    pub window_ms: u64,
}

/// What the collector answers to a poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollStatus {
    /// A campaign follows.
    Campaign,
    /// The probe has the campaign version assigned to it: nothing follows.
    Current,
    /// No campaign is assigned to this probe.
    Unassigned,
    /// No token, or an unknown or revoked one.
    Unauthorized,
    /// The token belongs to another probe than the heartbeat names.
    Forbidden,
    /// The heartbeat does not parse.
    Invalid,
    /// The collector could not answer now: poll again later.
    Unavailable,
}

impl PollStatus {
    /// Its name on the wire and in logs.
    pub fn name(self) -> &'static str {
        match self {
            PollStatus::Campaign => "campaign",
            PollStatus::Current => "current",
            PollStatus::Unassigned => "unassigned",
            PollStatus::Unauthorized => "unauthorized",
            PollStatus::Forbidden => "forbidden",
            PollStatus::Invalid => "invalid",
            PollStatus::Unavailable => "unavailable",
        }
    }

    /// The HTTP status the HTTPS route answers with (the body is the
    /// answer either way).
    pub fn http_status(self) -> u16 {
        match self {
            PollStatus::Campaign | PollStatus::Current | PollStatus::Unassigned => 200,
            PollStatus::Unauthorized => 401,
            PollStatus::Forbidden => 403,
            PollStatus::Invalid => 400,
            PollStatus::Unavailable => 503,
        }
    }

    fn from_name(s: &str) -> Option<Self> {
        Some(match s {
            "campaign" => PollStatus::Campaign,
            "current" => PollStatus::Current,
            "unassigned" => PollStatus::Unassigned,
            "unauthorized" => PollStatus::Unauthorized,
            "forbidden" => PollStatus::Forbidden,
            "invalid" => PollStatus::Invalid,
            "unavailable" => PollStatus::Unavailable,
            _ => return None,
        })
    }
}

/// One version of a campaign, as a probe receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CampaignDoc {
    /// The campaign's name.
    pub name: String,
    /// Its version; every change makes a higher one.
    pub version: u64,
    /// The phase switches, in order.
    pub phases: Vec<PhaseSwitch>,
    /// The settings, in the probe configuration file's TOML.
    pub body: String,
}

/// The collector's answer to a poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CampaignAnswer {
    /// What it is.
    pub status: PollStatus,
    /// Why, for a refusal.
    pub reason: String,
    /// The collector's clock when it answered, µs since the epoch.
    pub collector_unix_us: u64,
    /// The campaign, with [`PollStatus::Campaign`].
    pub campaign: Option<CampaignDoc>,
}

/// Why poll bytes do not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PollError {
    /// Too short.
    #[error("campaign poll truncated")]
    Truncated,
    /// Not a poll of this version.
    #[error("not a vantage-collect/1 campaign poll")]
    BadMagic,
    /// Not UTF-8.
    #[error("campaign poll is not UTF-8 text")]
    NotText,
    /// Longer than the limit.
    #[error("campaign poll of {0} bytes is over the limit")]
    TooLong(usize),
    /// A token longer than any token can be.
    #[error("campaign poll: token of {0} bytes is longer than {max}", max = crate::upload::MAX_TOKEN_LEN)]
    TokenTooLong(usize),
    /// A line's value does not parse.
    #[error("campaign poll: `{key}` has the value `{value}`, which is not {expected}")]
    BadValue {
        /// The key.
        key: String,
        /// Its value.
        value: String,
        /// What was expected.
        expected: &'static str,
    },
    /// A label is malformed.
    #[error("campaign poll: {0}")]
    Label(#[from] LabelError),
    /// A required line is missing.
    #[error("campaign poll: no `{0}` line")]
    Missing(&'static str),
}

/// Encodes a poll: header, token, heartbeat.
pub fn encode_poll(token: &str, heartbeat: &Heartbeat) -> Vec<u8> {
    let token = &token.as_bytes()[..token.len().min(crate::upload::MAX_TOKEN_LEN)];
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.push(token.len() as u8);
    out.extend_from_slice(token);
    out.extend_from_slice(heartbeat.encode().as_bytes());
    out
}

/// Splits a poll into its token and heartbeat text.
pub fn decode_poll(bytes: &[u8]) -> Result<(&str, &[u8]), PollError> {
    if bytes.len() < 6 {
        return Err(PollError::Truncated);
    }
    if &bytes[..4] != MAGIC || bytes[4] != VERSION {
        return Err(PollError::BadMagic);
    }
    let n = bytes[5] as usize;
    if n > crate::upload::MAX_TOKEN_LEN {
        return Err(PollError::TokenTooLong(n));
    }
    let token = bytes.get(6..6 + n).ok_or(PollError::Truncated)?;
    let token = std::str::from_utf8(token).map_err(|_| PollError::NotText)?;
    Ok((token, &bytes[6 + n..]))
}

/// One line's value, with newlines folded so it stays one line.
fn one_line(s: &str) -> String {
    s.replace(['\r', '\n'], " ")
}

fn number<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, PollError> {
    value.parse().map_err(|_| PollError::BadValue {
        key: key.to_string(),
        value: value.chars().take(64).collect(),
        expected: "a whole number",
    })
}

/// The `key value` lines of `text`, up to an empty line; and what follows.
fn lines(text: &str) -> (impl Iterator<Item = (&str, &str)>, &str) {
    let (head, rest) = match text.find("\n\n") {
        Some(at) => (&text[..at], &text[at + 2..]),
        None => (text, ""),
    };
    let pairs = head
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.split_once(' ').unwrap_or((l, "")));
    (pairs, rest)
}

impl Heartbeat {
    /// The heartbeat as text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "probe {}", one_line(&self.probe_id));
        let _ = writeln!(out, "software {}", one_line(&self.software));
        if let Some((name, version)) = &self.applied {
            let _ = writeln!(out, "applied {version} {}", one_line(name));
        }
        if let Some(e) = &self.campaign_error {
            let _ = writeln!(out, "campaign_error {}", one_line(e));
        }
        let _ = writeln!(out, "backlog_batches {}", self.backlog_batches);
        let _ = writeln!(out, "backlog_bytes {}", self.backlog_bytes);
        let _ = writeln!(out, "dropped_batches {}", self.dropped_batches);
        let _ = writeln!(out, "uptime_s {}", self.uptime_s);
        if let Some((offset, uncertainty)) = self.clock_offset {
            let _ = writeln!(out, "clock_offset_us {offset} {uncertainty}");
        }
        let _ = writeln!(out, "window_ms {}", self.window_ms);
        for (k, v) in self.labels.iter() {
            let _ = writeln!(out, "label {k}={}", one_line(v));
        }
        out
    }

    /// Parses a heartbeat.
    pub fn decode(bytes: &[u8]) -> Result<Self, PollError> {
        if bytes.len() > MAX_HEARTBEAT_BYTES {
            return Err(PollError::TooLong(bytes.len()));
        }
        let text = std::str::from_utf8(bytes).map_err(|_| PollError::NotText)?;
        // A lone CR is folded as `encode` folds it (found by fuzzing: a
        // heartbeat with one did not read back the same).
        let text = text.replace('\r', " ");
        let text = text.as_str();
        let mut h = Heartbeat::default();
        let mut probe = None;
        let (pairs, _) = lines(text);
        for (key, value) in pairs {
            match key {
                "probe" => probe = Some(value.to_string()),
                "software" => h.software = value.to_string(),
                "applied" => {
                    let (v, name) = value.split_once(' ').unwrap_or((value, ""));
                    h.applied = Some((name.to_string(), number(key, v)?));
                }
                "campaign_error" => h.campaign_error = Some(value.to_string()),
                "backlog_batches" => h.backlog_batches = number(key, value)?,
                "backlog_bytes" => h.backlog_bytes = number(key, value)?,
                "dropped_batches" => h.dropped_batches = number(key, value)?,
                "uptime_s" => h.uptime_s = number(key, value)?,
                "window_ms" => h.window_ms = number(key, value)?,
                "clock_offset_us" => {
                    let (o, u) = value.split_once(' ').unwrap_or((value, ""));
                    h.clock_offset = Some((number(key, o)?, number(key, u)?));
                }
                "label" => h.labels.insert_pair(value)?,
                _ => {}
            }
        }
        h.probe_id = probe
            .filter(|p| !p.is_empty())
            .ok_or(PollError::Missing("probe"))?;
        Ok(h)
    }
}

impl CampaignAnswer {
    /// A refusal or a body-less answer.
    pub fn status(status: PollStatus, reason: impl Into<String>, collector_unix_us: u64) -> Self {
        CampaignAnswer {
            status,
            reason: reason.into(),
            collector_unix_us,
            campaign: None,
        }
    }

    /// The answer as text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "status {}", self.status.name());
        if !self.reason.is_empty() {
            let _ = writeln!(out, "reason {}", one_line(&self.reason));
        }
        let _ = writeln!(out, "collector_unix_us {}", self.collector_unix_us);
        if let Some(c) = &self.campaign {
            let _ = writeln!(out, "campaign {}", one_line(&c.name));
            let _ = writeln!(out, "version {}", c.version);
            for p in &c.phases {
                let _ = writeln!(out, "phase {} {}", p.at_unix_ms, one_line(&p.phase));
            }
            out.push('\n');
            out.push_str(&c.body);
        }
        out
    }

    /// Parses an answer.
    pub fn decode(bytes: &[u8]) -> Result<Self, PollError> {
        if bytes.len() > MAX_ANSWER_BYTES {
            return Err(PollError::TooLong(bytes.len()));
        }
        let text = std::str::from_utf8(bytes).map_err(|_| PollError::NotText)?;
        let (pairs, body) = lines(text);
        let (mut status, mut reason, mut clock) = (None, String::new(), 0);
        let (mut name, mut version, mut phases) = (None, None, Vec::new());
        for (key, value) in pairs {
            match key {
                "status" => {
                    status = Some(PollStatus::from_name(value).ok_or(PollError::BadValue {
                        key: key.into(),
                        value: value.chars().take(64).collect(),
                        expected: "a poll status",
                    })?)
                }
                // Values are folded as `encode` folds them (found by
                // fuzzing: a lone CR in a phase did not read back the same).
                "reason" => reason = one_line(value),
                "collector_unix_us" => clock = number(key, value)?,
                "campaign" => name = Some(one_line(value)),
                "version" => version = Some(number(key, value)?),
                "phase" => {
                    let (at, phase) = value.split_once(' ').unwrap_or((value, ""));
                    phases.push(PhaseSwitch {
                        at_unix_ms: number(key, at)?,
                        phase: one_line(phase),
                    });
                }
                _ => {}
            }
        }
        let status = status.ok_or(PollError::Missing("status"))?;
        let campaign = match status {
            PollStatus::Campaign => Some(CampaignDoc {
                name: name.ok_or(PollError::Missing("campaign"))?,
                version: version.ok_or(PollError::Missing("version"))?,
                phases,
                body: body.to_string(),
            }),
            _ => None,
        };
        Ok(CampaignAnswer {
            status,
            reason,
            collector_unix_us: clock,
            campaign,
        })
    }
}

/// The probe's clock minus the collector's, and its uncertainty, both µs,
/// from one poll: sent and answered on the probe's wall clock, handled on
/// the collector's. The collector's instant lies somewhere in the round
/// trip, so the middle is the estimate and half the round trip the bound.
pub fn clock_offset(
    sent_unix_us: u64,
    received_unix_us: u64,
    collector_unix_us: u64,
) -> (i64, u64) {
    let round_trip = received_unix_us.saturating_sub(sent_unix_us);
    let middle = sent_unix_us as i128 + round_trip as i128 / 2;
    let offset = middle - collector_unix_us as i128;
    (
        offset.clamp(i64::MIN as i128, i64::MAX as i128) as i64,
        round_trip.div_ceil(2),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Found by the `poll_messages` fuzz target: a lone CR in an answer's
    /// phase (or name, or reason) read back as itself the first time and
    /// as a space after encoding. Decoding folds it as encoding does.
    #[test]
    fn a_lone_cr_in_an_answer_reads_back_the_same() {
        let text = "status campaign\ncampaign move\r1\nversion 4\nphase 1700000000000 after\rt4\nreason a\rb\n\nbody\r\n";
        let answer = CampaignAnswer::decode(text.as_bytes()).unwrap();
        let doc = answer.campaign.as_ref().unwrap();
        assert_eq!(doc.name, "move 1");
        assert_eq!(doc.phases[0].phase, "after t4");
        assert_eq!(answer.reason, "a b");
        assert_eq!(doc.body, "body\r\n", "the body is kept as sent");
        assert_eq!(
            CampaignAnswer::decode(answer.encode().as_bytes()),
            Ok(answer)
        );
    }

    fn heartbeat() -> Heartbeat {
        let mut labels = Labels::new();
        labels.insert("country", "IN").unwrap();
        labels.insert("device", "pixel-8").unwrap();
        Heartbeat {
            probe_id: "in-1".into(),
            software: "0.1.0".into(),
            applied: Some(("move".into(), 3)),
            campaign_error: Some("line 2\nbad".into()),
            backlog_batches: 4,
            backlog_bytes: 4096,
            dropped_batches: 1,
            uptime_s: 3600,
            clock_offset: Some((-1500, 800)),
            labels,
            window_ms: 60_000,
        }
    }

    #[test]
    fn a_poll_round_trips() {
        let bytes = encode_poll("vt_abc", &heartbeat());
        assert!(is_poll(&bytes));
        assert!(!is_poll(&crate::upload::encode_request("vt_abc", b"x")));
        let (token, text) = decode_poll(&bytes).unwrap();
        assert_eq!(token, "vt_abc");
        let mut long = b"VNTC\x01\xff".to_vec();
        long.extend_from_slice(&[b'a'; 255]);
        assert_eq!(decode_poll(&long), Err(PollError::TokenTooLong(255)));
        let mut back = Heartbeat::decode(text).unwrap();
        assert_eq!(back.campaign_error.as_deref(), Some("line 2 bad"));
        back.campaign_error = heartbeat().campaign_error;
        assert_eq!(back, heartbeat());
        assert_eq!(
            Heartbeat::decode(b"software 1\n"),
            Err(PollError::Missing("probe"))
        );
        assert!(matches!(
            Heartbeat::decode(b"probe p\nuptime_s soon\n"),
            Err(PollError::BadValue { .. })
        ));
    }

    #[test]
    fn an_answer_round_trips_with_its_campaign() {
        let answer = CampaignAnswer {
            status: PollStatus::Campaign,
            reason: String::new(),
            collector_unix_us: 1_796_000_000_000_000,
            campaign: Some(CampaignDoc {
                name: "move".into(),
                version: 7,
                phases: vec![PhaseSwitch {
                    at_unix_ms: 1_796_000_000_000,
                    phase: "after".into(),
                }],
                body: "window = \"60s\"\n\n[[target]]\nname = \"sg\"\n".into(),
            }),
        };
        assert_eq!(
            CampaignAnswer::decode(answer.encode().as_bytes()).unwrap(),
            answer
        );
        let refused = CampaignAnswer::status(PollStatus::Forbidden, "not yours", 5);
        assert_eq!(
            CampaignAnswer::decode(refused.encode().as_bytes()).unwrap(),
            refused
        );
    }

    #[test]
    fn a_window_takes_the_phase_of_the_latest_switch_at_or_before_it() {
        let s = |at, phase: &str| PhaseSwitch {
            at_unix_ms: at,
            phase: phase.into(),
        };
        let switches = [s(1_000, "before"), s(5_000, "after")];
        assert_eq!(phase_at(&switches, 999), None);
        assert_eq!(phase_at(&switches, 1_000), Some("before"));
        assert_eq!(phase_at(&switches, 4_999), Some("before"));
        assert_eq!(phase_at(&switches, 5_000), Some("after"));
    }

    #[test]
    fn the_clock_offset_is_the_middle_of_the_round_trip() {
        // Probe 2 ms ahead; 10 ms there and back.
        assert_eq!(
            clock_offset(1_000_000, 1_010_000, 1_003_000),
            (2_000, 5_000)
        );
        assert_eq!(clock_offset(1_000_000, 1_000_000, 1_000_000), (0, 0));
        // A clock stepped back during the poll: no negative round trip.
        assert_eq!(clock_offset(1_000_000, 999_000, 1_000_000).1, 0);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = decode_poll(&bytes);
            let _ = Heartbeat::decode(&bytes);
            let _ = CampaignAnswer::decode(&bytes);
        }
    }
}
