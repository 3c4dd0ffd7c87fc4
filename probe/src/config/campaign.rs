//! A campaign from the collector as a [`Layer`]: the probe configuration
//! file's TOML, for many probes at once, so it names no probe id or
//! campaign of its own (the store names the campaign).

use super::file::ConfigFile;
use super::layer::Layer;
use super::resolve::resolve;

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
