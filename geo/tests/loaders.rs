//! The site-map and dataset loaders on small fixtures in each format
//! (geo/tests/fixtures): what they find, and the errors bad files get.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use vantage_geo::{GeoError, HopDatasets, SiteMap};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Writes `text` to a file in `dir` and returns its path.
/// Checks that `loaded` was refused as a parse error at `file`:`line`,
/// its reason containing `needle`.
fn refused_at<T: std::fmt::Debug>(
    loaded: Result<T, GeoError>,
    file: &Path,
    line: u64,
    needle: &str,
) {
    match loaded {
        Err(GeoError::Parse {
            file: at,
            line: l,
            reason,
        }) => {
            assert_eq!((at.as_path(), l), (file, line), "{reason}");
            assert!(reason.contains(needle), "`{reason}` lacks `{needle}`");
        }
        other => panic!("{}:{line}: {other:?}", file.display()),
    }
}

fn file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn sites_come_from_the_users_csv_and_each_providers_file() {
    let map = SiteMap::load(&[
        fixture("sites.csv"),
        fixture("aws-ip-ranges.json"),
        fixture("gcp-cloud.json"),
        fixture("azure-service-tags.json"),
    ])
    .unwrap();
    let site = |a: &str| {
        map.site_of(ip(a))
            .map(|s| (s.name.as_str(), s.provider.as_str(), s.country.as_deref()))
    };
    // The user's own, with coordinates where given.
    assert_eq!(site("198.18.0.10"), Some(("beijing", "lab", Some("CN"))));
    assert_eq!(
        map.site_of(ip("198.18.0.11")).unwrap().coords,
        Some((1.352, 103.820))
    );
    assert_eq!(
        site("2001:db8:100::7"),
        Some(("frankfurt", "ours", Some("DE")))
    );
    assert_eq!(map.site_of(ip("2001:db8:100::7")).unwrap().coords, None);
    // AWS: a region's block and a service's inside it; GLOBAL has no country.
    assert_eq!(
        site("13.212.1.1"),
        Some(("ap-southeast-1", "aws", Some("SG")))
    );
    assert_eq!(
        site("13.213.20.9"),
        Some(("ap-southeast-1", "aws", Some("SG")))
    );
    assert_eq!(site("52.80.3.4"), Some(("cn-north-1", "aws", Some("CN"))));
    assert_eq!(site("15.230.39.1"), Some(("GLOBAL", "aws", None)));
    assert_eq!(
        site("2406:da18::1"),
        Some(("ap-southeast-1", "aws", Some("SG")))
    );
    // Google Cloud.
    assert_eq!(
        site("34.1.130.1"),
        Some(("asia-southeast1", "gcp", Some("SG")))
    );
    assert_eq!(
        site("2600:1900:4180::5"),
        Some(("us-west1", "gcp", Some("US")))
    );
    // Azure: regional tags only; the regionless AzureCloud says nothing.
    assert_eq!(
        site("4.144.0.1"),
        Some(("southeastasia", "azure", Some("SG")))
    );
    assert_eq!(
        site("40.73.0.1"),
        Some(("chinanorth3", "azure", Some("CN")))
    );
    assert_eq!(site("4.1.2.3"), None);
    assert_eq!(site("192.0.2.1"), None, "unknown, never guessed");
}

#[test]
fn the_users_sites_win_over_a_providers() {
    let dir = tempfile::tempdir().unwrap();
    let own = file(
        dir.path(),
        "own.csv",
        "cidr,site,provider,region,country\n13.213.20.0/24,our-sg-edge,ours,sg,SG\n",
    );
    let map = SiteMap::load(&[fixture("aws-ip-ranges.json"), own]).unwrap();
    assert_eq!(map.site_of(ip("13.213.20.5")).unwrap().name, "our-sg-edge");
    assert_eq!(
        map.site_of(ip("13.212.0.1")).unwrap().name,
        "ap-southeast-1"
    );
}

#[test]
fn bad_site_maps_are_refused_with_file_line_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let header = "cidr,site,provider,region,country\n";
    for (text, line, needle) in [
        ("cidr,name\n10.0.0.0/8,x\n", 1, "the header must be"),
        (
            &*format!("{header}10.0.0.0/8,a,p,r,CN\n10.0.0.0/33,b,p,r,CN\n"),
            3,
            "not a CIDR range",
        ),
        (
            &*format!("{header}# comment\n10.0.0.0/8,,p,r,CN\n"),
            3,
            "site name is empty",
        ),
        (
            &*format!("{header}10.0.0.0/8,a,p,r,China\n"),
            2,
            "ISO 3166-1 alpha-2",
        ),
        (
            "cidr,site,provider,region,country,latitude,longitude\n10.0.0.0/8,a,p,r,CN,95,0\n",
            2,
            "latitude and longitude",
        ),
    ] {
        let f = file(dir.path(), "bad.csv", text);
        refused_at(SiteMap::load(std::slice::from_ref(&f)), &f, line, needle);
    }
    // Overlapping ranges: both named, with their lines.
    let f = file(
        dir.path(),
        "overlap.csv",
        &format!("{header}10.0.0.0/8,a,p,r,CN\n192.0.2.0/24,b,p,r,SG\n10.1.0.0/16,c,p,r,IN\n"),
    );
    let err = SiteMap::load(&[f]).unwrap_err().to_string();
    assert!(
        err.contains("overlap.csv:2") && err.contains("overlap.csv:4"),
        "{err}"
    );
    assert!(
        err.contains("10.0.0.0/8") && err.contains("10.1.0.0/16"),
        "{err}"
    );
    // JSON of no provider's format, and JSON that does not parse.
    let f = file(dir.path(), "other.json", "{\"prefixes\": []}");
    assert!(matches!(SiteMap::load(&[f]), Err(GeoError::Format { .. })));
    let f = file(dir.path(), "broken.json", "{\n\"syncToken\": \n");
    let err = SiteMap::load(&[f]).unwrap_err().to_string();
    assert!(
        err.contains("broken.json:") && err.contains("not valid JSON"),
        "{err}"
    );
    // A provider's bad prefix: its line.
    let f = file(
        dir.path(),
        "aws.json",
        "{\"syncToken\": \"1\", \"createDate\": \"x\",\n\"prefixes\": [\n{\"ip_prefix\": \"13.0.0.0/99\", \"region\": \"us-east-1\"}]}",
    );
    let err = SiteMap::load(&[f]).unwrap_err().to_string();
    assert!(
        err.contains("aws.json:3") && err.contains("13.0.0.0/99"),
        "{err}"
    );
    // A file that is not there.
    let err = SiteMap::load(&[dir.path().join("missing.csv")]).unwrap_err();
    assert!(matches!(err, GeoError::Read { .. }));
}

#[test]
fn datasets_give_countries_and_networks_and_nothing_they_do_not_hold() {
    let d = HopDatasets::load(&[
        fixture("ip-country.csv"),
        fixture("ip-asn.csv"),
        fixture("delegated-apnic.txt"),
    ])
    .unwrap();
    assert_eq!(d.country_of(ip("198.18.0.25")), Some("IN"));
    assert_eq!(d.country_of(ip("198.18.0.31")), Some("CN"));
    assert_eq!(d.country_of(ip("198.18.1.200")), Some("SG"), "integer form");
    assert_eq!(d.country_of(ip("2001:db8:2aa::1")), Some("HK"));
    assert_eq!(
        d.country_of(ip("198.18.0.50")),
        None,
        "unknown, never guessed"
    );
    // From the registry file: allocated and assigned ranges only.
    assert_eq!(d.country_of(ip("1.0.1.200")), Some("CN"));
    assert_eq!(d.country_of(ip("1.7.255.255")), Some("IN"));
    assert_eq!(
        d.country_of(ip("1.8.0.1")),
        None,
        "available, not delegated"
    );
    assert_eq!(d.country_of(ip("2001:df0:1000::1")), Some("SG"));
    let net = d.network_of(ip("198.18.0.22")).unwrap();
    assert_eq!(
        (net.asn, net.name.as_str()),
        (9498, "BHARTI Airtel Ltd., Mumbai")
    );
    assert_eq!(d.network_of(ip("198.18.0.33")).unwrap().asn, 4809);
    assert_eq!(d.network_of(ip("198.18.0.41")), None, "AS 0 is not routed");
}

#[test]
fn bad_datasets_are_refused_with_file_line_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    for (text, line, needle) in [
        (
            "10.0.0.0,10.0.0.255,CN\n10.0.1.0,nope,IN\n",
            2,
            "is not an address",
        ),
        ("10.0.0.9,10.0.0.1,CN\n", 1, "is not a range"),
        ("10.0.0.0,10.0.0.255,ASX,name\n", 1, "is not an AS number"),
        ("10.0.0.0,10.0.0.255\n", 1, "expected `start,end,country`"),
        (
            "apnic|CN|ipv4|1.0.0.0|many|2011|allocated\n",
            1,
            "is not a number",
        ),
    ] {
        let f = file(dir.path(), "bad.csv", text);
        refused_at(
            HopDatasets::load(std::slice::from_ref(&f)),
            &f,
            line,
            needle,
        );
    }
    let f = file(
        dir.path(),
        "overlap.csv",
        "10.0.0.0,10.0.0.255,CN\n10.0.0.128,10.0.1.0,IN\n",
    );
    let err = HopDatasets::load(&[f]).unwrap_err().to_string();
    assert!(
        err.contains("overlap.csv:1") && err.contains("overlap.csv:2"),
        "{err}"
    );
}
