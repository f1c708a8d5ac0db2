//! What an attacker reaches first (SPEC §16), over real sockets: path
//! parameters and encodings that Java upstreams read differently, and the
//! malleable twin of an ECDSA signature.

#![allow(clippy::unwrap_used)]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde_json::json;

use crate::common::*;

const ISS: &str = "https://warden.test";
const AUD: &str = "orders-api";

/// The order of the P-256 group, big-endian.
const P256_ORDER: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];

/// The other valid encoding of an ES256 token's signature: `(r, n − s)`.
fn high_s_twin(token: &str) -> String {
    let (input, signature) = token.rsplit_once('.').unwrap();
    let mut sig = URL_SAFE_NO_PAD.decode(signature).unwrap();
    assert_eq!(sig.len(), 64);
    let s = &mut sig[32..];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let mut digit = i16::from(P256_ORDER[i]) - i16::from(s[i]) - borrow;
        borrow = i16::from(digit < 0);
        if digit < 0 {
            digit += 256;
        }
        s[i] = digit as u8;
    }
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

/// A gateway with an ES256 key, a jwt route on `/prot` and a public
/// catch-all on `/`, both in front of `upstream`.
async fn gateway(upstream: &RecordingUpstream) -> (TestGateway, TestKey, TempFile) {
    let key = TestKey::generate("es-1", Algorithm::ES256);
    let file = key.file();
    let rest = format!(
        "{}\n[issuer]\niss = \"{ISS}\"\naud = [\"{AUD}\"]\nsigning_kid = \"es-1\"\n\
         \n[[routes]]\nname = \"prot\"\npath_prefix = \"/prot\"\nupstream = \"{url}\"\n{catch_all}",
        key.config_entry(&file),
        url = upstream.url(),
        catch_all = route("public", "/", &upstream.url(), ""),
    );
    let gateway = spawn_gateway(&config("", &rest)).await;
    (gateway, key, file)
}

fn claims() -> serde_json::Value {
    let now = warden::clock::unix_now();
    json!({ "iss": ISS, "aud": AUD, "sub": "alice", "iat": now, "exp": now + 300 })
}

#[tokio::test]
async fn path_parameters_raw_non_ascii_and_double_encoding_are_400_and_reach_no_upstream() {
    let upstream = RecordingUpstream::start(Behaviour::ok()).await;
    let (gateway, _key, _file) = gateway(&upstream).await;
    // Each would reach the upstream through the public catch-all, where
    // Tomcat, Jetty and Spring strip `;…` or decode again and serve /prot/x.
    for target in [
        "/prot;/x",
        "/prot;jsessionid=1/x",
        "/prot%3Bx/x",
        "/prot%3bx/x",
        "/x;y",
        "/%252e%252e/prot/x",
        "/prot%2541",
    ] {
        let reply = raw_get(gateway.addr, target, &[]).await;
        reply.assert_json_error(400, "invalid_request");
    }
    // A raw byte outside ASCII (here UTF-8 for é) in the request line.
    let reply = raw_request(
        gateway.addr,
        b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: gateway.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(reply.status, 400, "a raw non-ASCII path is refused");
    // The same character percent-encoded is a plain path.
    let reply = raw_get(gateway.addr, "/caf%C3%A9", &[]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        upstream.heads().len(),
        1,
        "only the well-formed request reached the upstream: {:?}",
        upstream.heads()
    );
}

#[tokio::test]
async fn the_high_s_twin_of_a_valid_es256_token_is_refused() {
    let upstream = RecordingUpstream::start(Behaviour::ok()).await;
    let (gateway, key, _file) = gateway(&upstream).await;
    let token = key.token(&claims());
    let twin = high_s_twin(&token);
    assert_ne!(twin, token);
    let ok = get_with(
        &gateway.url("/prot/x"),
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await;
    assert_eq!(ok.status, 200, "the low-s form verifies");
    let refused = get_with(
        &gateway.url("/prot/x"),
        &[("authorization", &format!("Bearer {twin}"))],
    )
    .await;
    assert_json_error(&refused, 401, "invalid_token");
    assert_eq!(
        refused.json()["error_description"],
        "ECDSA signature with a high s (only the low-s form is accepted)"
    );
    assert_eq!(
        upstream.heads().len(),
        1,
        "the twin never reached the upstream"
    );
}

#[tokio::test]
async fn tokens_the_gateway_issues_are_always_in_the_low_s_form() {
    warden::crypto::install_providers();
    let key = TestKey::generate("es-1", Algorithm::ES256);
    let file = key.file();
    let text = format!(
        "{}\n[issuer]\niss = \"{ISS}\"\naud = [\"{AUD}\"]\nsigning_kid = \"es-1\"\n",
        key.config_entry(&file)
    );
    let config = warden::Config::from_toml(&text, "test.toml").unwrap();
    // Random nonces give a high s half of the time: 64 tokens all low.
    for i in 0..64 {
        let token = warden::cli::token(&config, &format!("user-{i}"), "a", None).unwrap();
        let signature = URL_SAFE_NO_PAD
            .decode(token.rsplit('.').next().unwrap())
            .unwrap();
        assert!(
            !warden::auth::ecdsa::has_high_s(Algorithm::ES256, &signature),
            "token {i} was issued with a high s"
        );
    }
}

#[tokio::test]
async fn a_refused_transfer_encoding_closes_the_connection_so_nothing_after_it_is_read() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = RecordingUpstream::start(Behaviour::ok()).await;
    let (gateway, _key, _file) = gateway(&upstream).await;
    let mut stream = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    // Keep-alive: only the gateway's answer can end the connection.
    stream
        .write_all(
            b"POST /x HTTP/1.1\r\nHost: gateway.test\r\nTransfer-Encoding: chunked, chunked\r\n\r\n\
              0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: gateway.test\r\n\r\n",
        )
        .await
        .unwrap();
    let mut received = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut received))
        .await
        .expect("the gateway closes the connection")
        .unwrap();
    let text = String::from_utf8_lossy(&received).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 400"), "{text}");
    assert!(text.contains("connection: close"), "{text}");
    assert_eq!(
        text.matches("http/1.1 ").count(),
        1,
        "one answer only: {text}"
    );
    assert!(upstream.heads().is_empty(), "nothing reached the upstream");
}
