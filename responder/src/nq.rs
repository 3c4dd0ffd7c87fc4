//! The configuration document of the responsiveness endpoints
//! (draft-ietf-ippm-responsiveness, `/.well-known/nq`), served alike over
//! HTTP/1.1, HTTP/2 and HTTP/3. Plain code: the request's named authority
//! and the address it arrived on come in as arguments.

use std::net::SocketAddr;

/// Size of the responsiveness test's large download: 8 GiB, as the draft
/// suggests, far more than a test of a few seconds moves.
pub(crate) const NQ_LARGE_BYTES: u64 = 8 << 30;

/// The origin (`host[:port]`) the test URLs point at: the authority the
/// request named (`:authority` in HTTP/2 and 3, `Host` in HTTP/1.1) when it
/// is a plain host and port, else the address the request arrived on, so a
/// client that sent none (HTTP/1.0) or one that is refused is still sent
/// to the port it reached, not to 443.
pub(crate) fn origin(named: Option<&str>, local: Option<SocketAddr>) -> String {
    if let Some(named) = named.filter(|n| usable_authority(n)) {
        return named.to_string();
    }
    match local {
        Some(addr) if !addr.ip().is_unspecified() => addr.to_string(),
        Some(addr) => format!("localhost:{}", addr.port()),
        None => "localhost".to_string(),
    }
}

/// Whether `named` is a host (name, IPv4, or IPv6 in brackets) with an
/// optional port, and nothing else: no user, path or stray character.
fn usable_authority(named: &str) -> bool {
    !named.is_empty()
        && named
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c))
        && named.parse::<hyper::http::uri::Authority>().is_ok()
        && (!named.contains(':') || named.starts_with('[') || named.matches(':').count() == 1)
}

/// The JSON document of `/.well-known/nq` for `origin`.
pub(crate) fn config_json(origin: &str) -> String {
    format!(
        "{{\n  \"version\": 1,\n  \"urls\": {{\n    \"large_download_url\": \"https://{origin}/nq/large\",\n    \"small_download_url\": \"https://{origin}/nq/small\",\n    \"upload_url\": \"https://{origin}/nq/upload\"\n  }}\n}}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_origin_is_the_named_one_or_the_address_the_request_reached() {
        let v4: SocketAddr = "127.0.0.1:4443".parse().unwrap();
        let v6: SocketAddr = "[::1]:4443".parse().unwrap();
        for (named, local, want) in [
            (Some("dc.example:4443"), Some(v4), "dc.example:4443"),
            (Some("dc.example"), Some(v4), "dc.example"),
            (Some("[::1]:4443"), Some(v6), "[::1]:4443"),
            // HTTP/1.0: no Host at all.
            (None, Some(v4), "127.0.0.1:4443"),
            (None, Some(v6), "[::1]:4443"),
            // Refused: a bare IPv6 address, a user part, a path, spaces.
            (Some("::1:4443"), Some(v6), "[::1]:4443"),
            (Some("evil@dc.example"), Some(v4), "127.0.0.1:4443"),
            (Some("dc.example/x"), Some(v4), "127.0.0.1:4443"),
            (Some("dc example"), Some(v4), "127.0.0.1:4443"),
            (Some(""), Some(v4), "127.0.0.1:4443"),
            (
                None,
                Some("0.0.0.0:4443".parse().unwrap()),
                "localhost:4443",
            ),
        ] {
            assert_eq!(origin(named, local), want, "{named:?} at {local:?}");
        }
        let doc = config_json("[::1]:4443");
        assert!(doc.contains("\"small_download_url\": \"https://[::1]:4443/nq/small\""));
    }
}
