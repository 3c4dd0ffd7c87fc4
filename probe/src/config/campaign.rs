//! A campaign from the collector as a [`Layer`]: the probe configuration
//! file's TOML, for many probes at once, so it names no probe id or
//! campaign of its own (the store names the campaign).

use super::file::ConfigFile;
use super::layer::Layer;
use super::resolve::resolve;
use super::{ConfigError, ProbeConfig, UploadConfig};
use std::path::PathBuf;
use std::time::Duration;
use vantage_wire::campaign::CampaignDoc;

/// How often a probe polls for its campaign unless `--poll-every` says.
pub const POLL_EVERY: Duration = Duration::from_secs(30);

/// What a probe runs on.
#[derive(Debug, Clone)]
pub enum Plan {
    /// Its own targets or URLs, from its flags and file.
    Own(Box<ProbeConfig>),
    /// No targets of its own, but a collector and a token: it takes its
    /// campaign from the collector.
    FromCollector(Box<CampaignPlan>),
}

/// A probe that takes its campaign from its collector: its own flags and
/// file, kept as layers above whatever campaign arrives.
#[derive(Debug, Clone)]
pub struct CampaignPlan {
    flags: Layer,
    file: Layer,
    /// Where batches and polls go.
    pub upload: UploadConfig,
    /// Where the probe keeps its id, sequence and last good campaign.
    pub state_dir: PathBuf,
    /// How often it polls.
    pub poll_every: Duration,
}

impl CampaignPlan {
    /// The plan for these layers when they name a collector and a token;
    /// `None` when they do not.
    pub(super) fn new(
        flags: Layer,
        file: Layer,
        poll_every: Duration,
    ) -> Result<Option<Self>, ConfigError> {
        let (upload, state_dir) = super::resolve::resolve_collector(&[&flags, &file])?;
        Ok(upload.map(|upload| CampaignPlan {
            flags,
            file,
            upload,
            state_dir,
            poll_every,
        }))
    }

    /// The probe's own labels (flags over file), which label-selector
    /// assignments match: a campaign's labels cannot move its probes.
    pub fn own_labels(&self) -> Result<vantage_wire::Labels, ConfigError> {
        super::resolve::resolve_labels(&[&self.flags, &self.file])
    }

    /// How long to run, if the flags or the file say: across every
    /// campaign the run takes on.
    pub fn duration(&self) -> Option<Duration> {
        self.flags.duration.or(self.file.duration)
    }

    /// The probe id the flags or the file set, if any.
    pub fn probe_id(&self) -> Option<&str> {
        self.flags
            .probe_id
            .as_deref()
            .or(self.file.probe_id.as_deref())
    }

    /// The configuration campaign `doc` gives this probe: its flags beat
    /// its file, which beats the campaign, key by key. The phase switches
    /// apply unless the flags or the file set `phase`.
    pub fn config(&self, doc: &CampaignDoc) -> Result<ProbeConfig, CampaignError> {
        let campaign = campaign_layer(&doc.name, &doc.body)?;
        let mut config = resolve(&[&self.flags, &self.file, &campaign])
            .map_err(|e| CampaignError::Invalid(e.to_string()))?;
        let pinned = [&self.flags, &self.file].iter().any(|l| {
            l.labels
                .iter()
                .any(|(k, _)| k == vantage_wire::Labels::PHASE)
        });
        if !pinned {
            config.phases = doc.phases.clone();
        }
        Ok(config)
    }
}

/// Why a campaign's TOML cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CampaignError {
    /// Not TOML of the configuration file's schema; the text has the line
    /// and column.
    #[error("{0}")]
    Toml(String),
    /// A key a campaign may not set.
    #[error("`{0}` cannot be set in a campaign, which is for many probes: set it on each probe (--probe-id), or leave it out (the campaign's name is its own)")]
    NotForCampaign(&'static str),
    /// Parses, but the probe could not run it.
    #[error("{0}")]
    Invalid(String),
}

/// The settings campaign `name`'s TOML gives, as a layer below the flags
/// and the `--config` file.
pub fn campaign_layer(name: &str, body: &str) -> Result<Layer, CampaignError> {
    let file: ConfigFile = toml::from_str(body).map_err(|e| CampaignError::Toml(e.to_string()))?;
    if file.probe_id.is_some() {
        return Err(CampaignError::NotForCampaign("probe_id"));
    }
    if file.campaign.is_some() {
        return Err(CampaignError::NotForCampaign("campaign"));
    }
    let mut layer = file
        .layer()
        .map_err(|e| CampaignError::Invalid(e.to_string()))?;
    layer.campaign = Some(name.to_string());
    Ok(layer)
}

/// Checks that a probe given only this campaign could run it: it parses
/// and resolves (targets, rates, durations, trust), as `vantage campaign
/// set` checks before storing.
pub fn check_campaign(name: &str, body: &str) -> Result<(), CampaignError> {
    let layer = campaign_layer(name, body)?;
    resolve(&[&layer])
        .map(|_| ())
        .map_err(|e| CampaignError::Invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
window = "60s"
metrics = ["udp_rtt", "quic_request"]
[labels]
study = "move"
[[target]]
name = "singapore"
address = "127.0.0.1:4433"
pin = "sha256:0000000000000000000000000000000000000000000000000000000000000000"
"#;

    #[test]
    fn a_good_campaign_gives_its_layer() {
        check_campaign("move", GOOD).unwrap();
        let layer = campaign_layer("move", GOOD).unwrap();
        assert_eq!(layer.campaign.as_deref(), Some("move"));
        assert_eq!(layer.targets.len(), 1);
        assert_eq!(layer.labels, [("study".to_string(), "move".to_string())]);
    }

    #[test]
    fn a_bad_campaign_says_where_and_what() {
        let typo = GOOD.replace("metrics", "metricz");
        let e = check_campaign("move", &typo).unwrap_err().to_string();
        assert!(e.contains("line 3") && e.contains("metricz"), "{e}");
        let e = check_campaign("move", "probe_id = \"x\"\n").unwrap_err();
        assert_eq!(e, CampaignError::NotForCampaign("probe_id"));
        let e = check_campaign("move", "window = \"60s\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no target"), "{e}");
        let e = check_campaign("move", &GOOD.replace("60s", "sixty")).unwrap_err();
        assert!(e.to_string().contains("sixty"), "{e}");
    }
}
