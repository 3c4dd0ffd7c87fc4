//! The resolutions a store keeps: the probe's own windows, and exact
//! hourly and daily roll-ups of them.

use std::fmt;
use std::str::FromStr;

/// How finely stored series are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Resolution {
    /// The series as the probes sent them, one per window (one minute by
    /// default): `1m`.
    #[default]
    Window,
    /// One merged series per (probe, target, metric, labels) and UTC hour: `1h`.
    Hour,
    /// The same per UTC day: `1d`.
    Day,
}

impl Resolution {
    /// Every resolution, finest first.
    pub const ALL: [Resolution; 3] = [Resolution::Window, Resolution::Hour, Resolution::Day];

    /// The roll-ups a store maintains, finest first.
    pub const ROLLUPS: [Resolution; 2] = [Resolution::Hour, Resolution::Day];

    /// A roll-up's block, ms; `None` for the probes' own windows.
    pub fn block_ms(self) -> Option<u64> {
        match self {
            Resolution::Window => None,
            Resolution::Hour => Some(3_600_000),
            Resolution::Day => Some(86_400_000),
        }
    }

    /// The start of the block holding `unix_ms` (UTC-aligned).
    pub fn block_start(self, unix_ms: u64) -> u64 {
        match self.block_ms() {
            Some(b) => unix_ms - unix_ms % b,
            None => unix_ms,
        }
    }

    /// Its name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Resolution::Window => "1m",
            Resolution::Hour => "1h",
            Resolution::Day => "1d",
        }
    }
}

impl fmt::Display for Resolution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A resolution that does not parse.
#[derive(Debug, Clone, thiserror::Error)]
#[error("resolution `{0}`: use 1m (the probes' windows), 1h or 1d")]
pub struct ResolutionError(pub String);

impl FromStr for Resolution {
    type Err = ResolutionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "1m" | "window" => Ok(Resolution::Window),
            "1h" | "hour" => Ok(Resolution::Hour),
            "1d" | "day" => Ok(Resolution::Day),
            other => Err(ResolutionError(other.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_utc_hours_and_days() {
        let t = 1_796_263_200_123; // 2026-12-03T02:00:00.123Z
        assert_eq!(Resolution::Hour.block_start(t), 1_796_263_200_000);
        assert_eq!(Resolution::Day.block_start(t), 1_796_256_000_000);
        assert_eq!(Resolution::Window.block_start(t), t);
        for r in Resolution::ALL {
            assert_eq!(r.name().parse::<Resolution>().unwrap(), r);
        }
        assert!("2h"
            .parse::<Resolution>()
            .unwrap_err()
            .to_string()
            .contains("1h"));
    }
}
