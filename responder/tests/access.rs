//! `--require-token`: a responder given access keys serves heavy requests
//! (photos, large echoes, /nq/large) only on a token one of them signed
//! and that has not expired, on every transport; light echoes, /health
//! and STAMP stay open. Every refusal is counted by its cause.

mod common;

use common::{https_head_with, quic_client};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use vantage_responder::{AccessKeys, Responder, ResponderConfig};
use vantage_tls::access::AccessSigner;
use vantage_wire::access::encode_preamble;
use vantage_wire::echo::{EchoRequest, EchoResponse, EchoStatus, RESPONSE_HEADER_LEN};
use vantage_wire::photo::{PhotoReply, PhotoRequest, PhotoStatus, REPLY_LEN};

struct Tokens {
    good: String,
    expired: String,
    forged: String,
}

fn tokens(signer: &AccessSigner) -> Tokens {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (stranger, _) = AccessSigner::generate().unwrap();
    Tokens {
        good: signer.issue("in-1", now + 3600).unwrap(),
        expired: signer.issue("in-1", now - 1).unwrap(),
        forged: stranger.issue("in-1", now + 3600).unwrap(),
    }
}

fn status(head: &str) -> &str {
    head.get(9..12).unwrap_or("")
}

#[tokio::test]
async fn https_heavy_requests_need_a_valid_token_and_light_ones_do_not() {
    let (signer, _) = AccessSigner::generate().unwrap();
    let t = tokens(&signer);
    let mut config = ResponderConfig::local().unwrap();
    config.access = Some(Arc::new(
        AccessKeys::parse(&signer.public_text(), "test").unwrap(),
    ));
    let responder = Responder::start(config.clone()).await.unwrap();
    let addr = responder.https_addr();
    let bearer = |token: &str| format!("Authorization: Bearer {token}\r\n");

    let none = https_head_with(&config, addr, "GET", "/echo?bytes=100000", "").await;
    assert_eq!(status(&none), "401", "{none}");
    assert!(none.contains("www-authenticate: bearer"), "{none}");
    for (token, why) in [
        (&t.forged, "forged"),
        (&t.expired, "expired"),
        (&"vt1.garbage".to_string(), "malformed"),
    ] {
        let head =
            https_head_with(&config, addr, "GET", "/echo?bytes=100000", &bearer(token)).await;
        assert_eq!(status(&head), "403", "{why}: {head}");
        assert!(head.contains("invalid_token"), "{why}: {head}");
    }
    let good = https_head_with(&config, addr, "GET", "/echo?bytes=100000", &bearer(&t.good)).await;
    assert_eq!(status(&good), "200", "{good}");
    let photo = https_head_with(
        &config,
        addr,
        "GET",
        "/photo?size=1000&seed=1",
        &bearer(&t.good),
    )
    .await;
    assert_eq!(status(&photo), "200", "{photo}");
    let large = https_head_with(&config, addr, "GET", "/nq/large", "").await;
    assert_eq!(status(&large), "401", "{large}");
    // An upload is refused from its head, before its body is read.
    let upload = https_head_with(
        &config,
        addr,
        "PUT",
        "/photo",
        "x-photo-crc32: 00000000\r\nContent-Length: 100000000\r\n",
    )
    .await;
    assert_eq!(status(&upload), "401", "{upload}");
    // Light requests need nothing.
    for target in ["/echo?bytes=1000", "/health"] {
        let head = https_head_with(&config, addr, "GET", target, "").await;
        assert_eq!(status(&head), "200", "{target}: {head}");
    }

    let stats = responder.stats();
    assert_eq!(stats.access_missing, 3);
    assert_eq!(stats.access_invalid, 2);
    assert_eq!(stats.access_expired, 1);
    assert_eq!(stats.access_granted, 2);
    assert!(stats.refusals().contains(&("access_invalid", 2)));
    responder.shutdown().await;
}

/// A QUIC stream's request, after the access preamble of `token` if given.
fn with_token(token: Option<&str>, request: &[u8]) -> Vec<u8> {
    let mut bytes = token.map_or_else(Vec::new, |t| encode_preamble(t).unwrap());
    bytes.extend_from_slice(request);
    bytes
}

async fn quic_exchange(conn: &quinn::Connection, request: &[u8]) -> Vec<u8> {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(request).await.unwrap();
    let _ = send.finish();
    recv.read_to_end(1 << 20).await.unwrap_or_default()
}

#[tokio::test]
async fn quic_heavy_requests_need_the_token_preamble() {
    let (signer, _) = AccessSigner::generate().unwrap();
    let t = tokens(&signer);
    let mut config = ResponderConfig::local().unwrap();
    config.access = Some(Arc::new(
        AccessKeys::parse(&signer.public_text(), "test").unwrap(),
    ));
    let responder = Responder::start(config.clone()).await.unwrap();
    let endpoint = quic_client(&config);
    let conn = endpoint
        .connect(responder.quic_addr(), "localhost")
        .unwrap()
        .await
        .unwrap();
    let download = PhotoRequest::Download {
        size: 1000,
        seed: 7,
    }
    .encode();
    let photo_status = |bytes: &[u8]| PhotoReply::decode(&bytes[..REPLY_LEN]).unwrap().status;

    let refused = quic_exchange(&conn, &with_token(None, &download)).await;
    assert_eq!(photo_status(&refused), PhotoStatus::Forbidden);
    let forged = quic_exchange(&conn, &with_token(Some(&t.forged), &download)).await;
    assert_eq!(photo_status(&forged), PhotoStatus::Forbidden);
    let served = quic_exchange(&conn, &with_token(Some(&t.good), &download)).await;
    assert_eq!(photo_status(&served), PhotoStatus::Ok);
    assert_eq!(served.len(), REPLY_LEN + 1000);

    let echo = |response_len| {
        EchoRequest {
            response_len,
            padding_len: 0,
        }
        .encode()
    };
    let echo_status = |bytes: &[u8]| {
        EchoResponse::decode(&bytes[..RESPONSE_HEADER_LEN])
            .unwrap()
            .status
    };
    let large = quic_exchange(&conn, &with_token(None, &echo(100_000))).await;
    assert_eq!(echo_status(&large), EchoStatus::Forbidden);
    let expired = quic_exchange(&conn, &with_token(Some(&t.expired), &echo(100_000))).await;
    assert_eq!(echo_status(&expired), EchoStatus::Forbidden);
    let large = quic_exchange(&conn, &with_token(Some(&t.good), &echo(100_000))).await;
    assert_eq!(echo_status(&large), EchoStatus::Ok);
    assert_eq!(large.len(), RESPONSE_HEADER_LEN + 100_000);
    // A light echo needs no token, and a token on one does no harm.
    let light = quic_exchange(&conn, &with_token(None, &echo(64))).await;
    assert_eq!(echo_status(&light), EchoStatus::Ok);
    let light = quic_exchange(&conn, &with_token(Some(&t.good), &echo(64))).await;
    assert_eq!(echo_status(&light), EchoStatus::Ok);

    // A preamble declaring more than any token is refused before the
    // responder allocates for it, and counted.
    let before = responder.stats().quic_bad_requests;
    let oversized = quic_exchange(&conn, &[0x56, 1, 4, 0xff, 0xff]).await;
    assert!(oversized.is_empty());
    assert_eq!(responder.stats().quic_bad_requests, before + 1);

    let stats = responder.stats();
    assert_eq!(stats.access_missing, 2);
    assert_eq!(stats.access_invalid, 1);
    assert_eq!(stats.access_expired, 1);
    assert_eq!(stats.access_granted, 2);
    conn.close(0u32.into(), b"done");
    responder.shutdown().await;
}

#[tokio::test]
async fn without_keys_no_token_is_asked_for() {
    let config = ResponderConfig::local().unwrap();
    let responder = Responder::start(config.clone()).await.unwrap();
    let head = https_head_with(
        &config,
        responder.https_addr(),
        "GET",
        "/echo?bytes=100000",
        "",
    )
    .await;
    assert_eq!(status(&head), "200", "{head}");
    assert_eq!(responder.stats().access_missing, 0);
    responder.shutdown().await;
}
