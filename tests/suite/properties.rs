//! Property tests of the parsers that read untrusted bytes: the same
//! functions the `fuzz/` targets drive, on the stable toolchain, with a
//! fixed case budget so the file runs in seconds in CI.
//!
//! - path normalisation: never panics; idempotent; never yields an empty,
//!   `.` or `..` segment, an encoded slash, NUL or backslash;
//! - the bearer token: any `Authorization` value reads without a panic, and
//!   a well-formed `Bearer` header gives back its token;
//! - tokens: a token minted here verifies, and every single-byte change of it
//!   is rejected (HS256 and ES256);
//! - the config loader: mutated versions of `gateway.toml` never panic;
//! - the form codec: `form_decode(encode(x)) == x`, and fields round-trip;
//! - JWKS documents: mutated vector key sets never panic, and every key is
//!   either usable or skipped with a reason;
//! - the credential store: arbitrary files and every single-byte change of a
//!   real store are errors, never panics.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, HeaderValue, Method, header};
use jsonwebtoken::{Algorithm, EncodingKey};
use proptest::prelude::*;
use serde_json::{Value, json};
use warden::auth::bearer_token;
use warden::auth::jwk::parse_jwks;
use warden::auth::jwt::{self, IssuerPolicy, KeySet, VerifyingKey};
use warden::auth::keys::{self, KeySettings, KeySource, SUPPORTED_ALGORITHMS, parse_algorithm};
use warden::credentials::store::{MasterKey, Store};
use warden::credentials::{Credential, Kind};
use warden::percent::{encode, form_decode, form_encode, form_fields};
use warden::routes::{Match, RouteKey, RouteTable, normalize_path};
use warden::secret::SecretString;

/// The verifier's clock.
const NOW: i64 = 1_700_000_000;
const LEEWAY: i64 = 30;
const ISS: &str = "https://issuer.properties";
const AUD: &str = "properties-api";

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------
// Paths

/// Asserts what a normalised path may never hold.
fn assert_normal(path: &str) {
    assert!(path.starts_with('/'), "{path:?}");
    assert!(!path.contains("//"), "{path:?}");
    assert!(!path.contains('\\'), "{path:?}");
    let upper = path.to_ascii_uppercase();
    for banned in ["%2F", "%00", "%5C"] {
        assert!(!upper.contains(banned), "{path:?} holds {banned}");
    }
    for segment in path[1..].split('/') {
        assert!(segment != "." && segment != "..", "{path:?}");
    }
}

/// Paths built from the pieces that make normalisation hard.
fn tricky_path() -> impl Strategy<Value = String> {
    let piece = prop::sample::select(vec![
        "/", "/", "/", ".", "..", "%2e", "%2E", "%2f", "%2F", "%00", "%5c", "%5C", "%41", "%7e",
        "%20", "%ff", "%", "%z", "%2", "a", "api", ";", ";x", "\\", "é", "~", "-",
    ]);
    prop::collection::vec(piece, 0..24).prop_map(|pieces| pieces.concat())
}

fn route_table() -> RouteTable<&'static str> {
    let route = |prefix: &str, methods: Option<Vec<Method>>, name| {
        let key = RouteKey {
            host: None,
            path_prefix: prefix.to_owned(),
            methods,
        };
        (key, name)
    };
    RouteTable::new(vec![
        route("/", None, "root"),
        route("/api", Some(vec![Method::GET]), "api"),
        route("/api/admin", Some(vec![Method::POST]), "admin"),
    ])
}

fn check_path(raw: &str, table: &RouteTable<&'static str>) {
    if let Ok(once) = normalize_path(raw) {
        assert_normal(&once);
        let twice = normalize_path(&once).expect("a normalised path normalises");
        assert_eq!(twice, once, "not idempotent for {raw:?}");
        let found = table.lookup(Some("example.com"), &once, &Method::GET);
        assert!(!matches!(found, Match::NotFound), "/ takes every path");
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn normalisation_is_idempotent_and_safe_on_tricky_paths(raw in tricky_path()) {
        check_path(&format!("/{raw}"), &route_table());
        check_path(&raw, &route_table());
    }

    #[test]
    fn normalisation_never_panics_on_any_string(raw in any::<String>()) {
        check_path(&raw, &route_table());
        check_path(&format!("/{raw}"), &route_table());
    }
}

// ---------------------------------------------------------------------------
// The bearer token

fn authorization(value: HeaderValue) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(header::AUTHORIZATION, value);
    headers
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn a_well_formed_bearer_header_gives_back_its_token(
        token in "[A-Za-z0-9._~+/-]{1,200}=*",
        upper in prop::collection::vec(any::<bool>(), 6),
        spaces in 1usize..4,
    ) {
        let scheme: String = "bearer"
            .chars()
            .zip(&upper)
            .map(|(c, &up)| if up { c.to_ascii_uppercase() } else { c })
            .collect();
        let value = format!("{scheme}{}{token}", " ".repeat(spaces));
        let headers = authorization(HeaderValue::from_str(&value).expect("a header value"));
        prop_assert_eq!(bearer_token(&headers).ok(), Some(token.as_str()));
    }

    #[test]
    fn any_authorization_value_reads_without_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(value) = HeaderValue::from_bytes(&bytes) {
            let headers = authorization(value);
            if let Ok(token) = bearer_token(&headers) {
                prop_assert!(!token.is_empty() && !token.starts_with(' '));
                prop_assert!(bytes.ends_with(token.as_bytes()));
                let _ = jwt::verify(token, &[], NOW, LEEWAY);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Tokens

struct Signer {
    kid: &'static str,
    alg: Algorithm,
    encoding: EncodingKey,
    set: KeySet,
}

impl Signer {
    fn generate(kid: &'static str, alg: Algorithm) -> Self {
        warden::crypto::install_providers();
        let loaded = keys::load(&KeySettings {
            kid: kid.to_owned(),
            alg,
            source: KeySource::Generate,
        })
        .expect("a key");
        let set = KeySet::new(vec![VerifyingKey {
            kid: Some(kid.to_owned()),
            alg,
            key: loaded.decoding.clone(),
            issuer: Arc::new(IssuerPolicy {
                iss: ISS.into(),
                audiences: vec![AUD.into()],
                accept_high_s: false,
            }),
        }]);
        Self {
            kid,
            alg,
            encoding: loaded.encoding.expect("a signing key"),
            set,
        }
    }

    fn token(&self, claims: &Value) -> String {
        let header = json!({"alg": keys::alg_name(self.alg), "typ": "JWT", "kid": self.kid});
        let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
        let input = format!("{}.{}", b64(&header), b64(claims));
        let signature =
            jsonwebtoken::crypto::sign(input.as_bytes(), &self.encoding, self.alg).expect("signed");
        // ECDSA in the one form the gateway accepts (SPEC §16).
        let signature = warden::auth::ecdsa::low_s_segment(self.alg, &signature);
        format!("{input}.{signature}")
    }

    fn verify(&self, token: &str) -> Result<jwt::Principal, jwt::Reason> {
        jwt::verify(token, &[&self.set], NOW, LEEWAY).map_err(|(rejection, _)| rejection.reason)
    }
}

fn hs256() -> &'static Signer {
    static KEY: OnceLock<Signer> = OnceLock::new();
    KEY.get_or_init(|| Signer::generate("hs-props", Algorithm::HS256))
}

fn es256() -> &'static Signer {
    static KEY: OnceLock<Signer> = OnceLock::new();
    KEY.get_or_init(|| Signer::generate("es-props", Algorithm::ES256))
}

fn claims(sub: &str, scope: &str) -> Value {
    json!({"iss": ISS, "aud": AUD, "sub": sub, "scope": scope, "exp": NOW + 600, "iat": NOW})
}

/// Every token that differs from `token` in one byte (and is still text).
fn assert_every_single_byte_change_is_rejected(signer: &Signer, token: &str) {
    let principal = signer.verify(token).expect("the minted token verifies");
    assert_eq!(principal.iss, ISS);
    let mut bytes = token.as_bytes().to_vec();
    for at in 0..bytes.len() {
        let original = bytes[at];
        // A byte above 0x7f alone is never UTF-8, so never a header's text.
        for changed in (0u8..0x80).filter(|&b| b != original) {
            bytes[at] = changed;
            let mutated = std::str::from_utf8(&bytes).expect("ASCII");
            assert!(
                signer.verify(mutated).is_err(),
                "{:?} accepted a change of byte {at} to {changed:#04x}: {mutated}",
                signer.alg
            );
        }
        bytes[at] = original;
    }
}

#[test]
fn every_single_byte_change_of_an_hs256_token_is_rejected() {
    let signer = hs256();
    let token = signer.token(&claims("alice", "orders:read orders:write"));
    assert_every_single_byte_change_is_rejected(signer, &token);
}

#[test]
fn every_single_byte_change_of_an_es256_token_is_rejected() {
    let signer = es256();
    let token = signer.token(&claims("bob", "orders:read"));
    assert_every_single_byte_change_is_rejected(signer, &token);
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn a_minted_token_verifies_with_its_claims(
        sub in "\\PC{0,40}",
        scopes in prop::collection::vec("[a-z:]{1,12}", 0..5),
        es in any::<bool>(),
    ) {
        let signer = if es { es256() } else { hs256() };
        let token = signer.token(&claims(&sub, &scopes.join(" ")));
        let principal = signer.verify(&token).expect("the minted token verifies");
        prop_assert_eq!(principal.sub.as_deref(), Some(sub.as_str()));
        let mut expected = scopes.clone();
        expected.sort_unstable();
        expected.dedup();
        prop_assert_eq!(principal.scopes, expected);
    }

    #[test]
    fn a_token_with_one_byte_changed_is_rejected(at in any::<prop::sample::Index>(), changed in 0u8..0x80, es in any::<bool>()) {
        let signer = if es { es256() } else { hs256() };
        let token = signer.token(&claims("carol", "a"));
        let mut bytes = token.into_bytes();
        let at = at.index(bytes.len());
        prop_assume!(bytes[at] != changed);
        bytes[at] = changed;
        let mutated = String::from_utf8(bytes).expect("ASCII");
        prop_assert!(signer.verify(&mutated).is_err());
    }
}

// ---------------------------------------------------------------------------
// The config loader

const GATEWAY_TOML: &str = include_str!("../../gateway.toml");

/// One change to a config's lines.
#[derive(Clone, Debug)]
enum Edit {
    DeleteLine(prop::sample::Index),
    DuplicateLine(prop::sample::Index),
    SwapLines(prop::sample::Index, prop::sample::Index),
    /// The value after the line's `=` becomes this.
    SetValue(prop::sample::Index, String),
    /// Text put into the line at a character position.
    Insert(prop::sample::Index, prop::sample::Index, String),
    Truncate(prop::sample::Index),
}

fn toml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("\"\"".to_owned()),
        Just("0".to_owned()),
        Just("-1".to_owned()),
        Just("18446744073709551615".to_owned()),
        Just("9223372036854775807".to_owned()),
        Just("1e400".to_owned()),
        Just("nan".to_owned()),
        Just("true".to_owned()),
        Just("[]".to_owned()),
        Just("{}".to_owned()),
        Just("\"0s\"".to_owned()),
        Just("\"18446744073709551615s\"".to_owned()),
        Just("\"99999999999999h\"".to_owned()),
        Just("\"[::1]:0\"".to_owned()),
        Just("\"/\"".to_owned()),
        Just("\"builtin:echo\"".to_owned()),
        Just("\"http://[::1\"".to_owned()),
        Just("\"HS256\"".to_owned()),
        Just("\"none\"".to_owned()),
        "[0-9]{1,25}",
        "\"[ -~]{0,30}\"",
        "\\[\"[a-z:/*.]{0,12}\"(, \"[a-z:/*.]{0,12}\"){0,3}\\]",
    ]
}

fn edit() -> impl Strategy<Value = Edit> {
    let index = any::<prop::sample::Index>;
    prop_oneof![
        index().prop_map(Edit::DeleteLine),
        index().prop_map(Edit::DuplicateLine),
        (index(), index()).prop_map(|(a, b)| Edit::SwapLines(a, b)),
        (index(), toml_value()).prop_map(|(i, v)| Edit::SetValue(i, v)),
        (index(), index(), "[ -~\n\t]{0,12}").prop_map(|(i, at, t)| Edit::Insert(i, at, t)),
        index().prop_map(Edit::Truncate),
    ]
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    for edit in edits {
        if lines.is_empty() {
            break;
        }
        let n = lines.len();
        match edit {
            Edit::DeleteLine(i) => {
                lines.remove(i.index(n));
            }
            Edit::DuplicateLine(i) => {
                let line = lines[i.index(n)].clone();
                lines.insert(i.index(n), line);
            }
            Edit::SwapLines(a, b) => lines.swap(a.index(n), b.index(n)),
            Edit::SetValue(i, value) => {
                let line = &mut lines[i.index(n)];
                if let Some(at) = line.find('=') {
                    line.truncate(at + 1);
                    line.push(' ');
                    line.push_str(value);
                }
            }
            Edit::Insert(i, at, insert) => {
                let line = &mut lines[i.index(n)];
                let chars: Vec<char> = line.chars().collect();
                let at = at.index(chars.len() + 1);
                let mut changed: String = chars[..at].iter().collect();
                changed.push_str(insert);
                changed.extend(&chars[at..]);
                *line = changed;
            }
            Edit::Truncate(i) => lines.truncate(i.index(n + 1)),
        }
    }
    lines.join("\n")
}

#[test]
fn gateway_toml_itself_loads() {
    warden::crypto::install_providers();
    if let Err(err) = warden::Config::from_toml(GATEWAY_TOML, "gateway.toml") {
        panic!("gateway.toml does not load: {err}");
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn the_config_loader_never_panics_on_a_mutated_gateway_toml(
        edits in prop::collection::vec(edit(), 1..6),
    ) {
        warden::crypto::install_providers();
        let text = apply(GATEWAY_TOML, &edits);
        let _ = warden::Config::from_toml(&text, "mutated");
    }

    #[test]
    fn the_config_loader_never_panics_on_any_text(text in "\\PC{0,200}") {
        let _ = warden::Config::from_toml(&text, "text");
    }
}

// ---------------------------------------------------------------------------
// The form codec

proptest! {
    #![proptest_config(config())]

    #[test]
    fn form_decode_undoes_encode(text in any::<String>()) {
        prop_assert_eq!(form_decode(&encode(&text)), text.as_bytes());
    }

    #[test]
    fn form_fields_round_trip_through_form_encode(
        pairs in prop::collection::vec((any::<String>(), any::<String>()), 0..8),
    ) {
        let borrowed: Vec<(&str, &str)> =
            pairs.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        prop_assert_eq!(form_fields(form_encode(&borrowed).as_bytes()), pairs);
    }

    #[test]
    fn any_body_parses_and_its_fields_re_encode_to_themselves(
        body in prop::collection::vec(
            prop_oneof![any::<u8>(), prop::sample::select(b"&=+%2Aaf".to_vec())],
            0..200,
        ),
    ) {
        let fields = form_fields(&body);
        let borrowed: Vec<(&str, &str)> =
            fields.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        prop_assert_eq!(form_fields(form_encode(&borrowed).as_bytes()), fields);
        let text = String::from_utf8_lossy(&body);
        prop_assert!(form_decode(&text).len() <= text.len());
    }
}

// ---------------------------------------------------------------------------
// JWKS documents

/// The key sets of the vectors: RFC 7515 A.1–A.4, RFC 7520, RFC 8037 and
/// the Wycheproof key-set tests.
fn jwks_documents() -> &'static [Value] {
    static DOCS: OnceLock<Vec<Value>> = OnceLock::new();
    DOCS.get_or_init(|| {
        let read = |text: &str| -> Value { serde_json::from_str(text).expect("vector JSON") };
        let mut docs = Vec::new();
        let rfc7515 = read(include_str!("../fixtures/vectors/rfc7515_appendix_a.json"));
        for vector in rfc7515["vectors"].as_array().into_iter().flatten() {
            if vector["key"].is_object() {
                docs.push(json!({"keys": [vector["key"]]}));
            }
        }
        for text in [
            include_str!("../fixtures/vectors/rfc7520_cookbook/jws/4_1.rsa_v15_signature.json"),
            include_str!("../fixtures/vectors/rfc7520_cookbook/jws/4_3.ecdsa_signature.json"),
            include_str!(
                "../fixtures/vectors/rfc7520_cookbook/jws/4_4.hmac-sha2_integrity_protection.json"
            ),
            include_str!("../fixtures/vectors/rfc8037/ed25519_jws_rfc8037_A4.json"),
        ] {
            docs.push(json!({"keys": [read(text)["input"]["key"]]}));
        }
        let wycheproof = read(include_str!(
            "../fixtures/vectors/wycheproof/json_web_key_test.json"
        ));
        for group in wycheproof["testGroups"].as_array().into_iter().flatten() {
            for side in ["public", "private"] {
                if group[side].is_object() {
                    docs.push(group[side].clone());
                }
            }
        }
        docs
    })
}

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        prop::sample::select(vec![
            "RSA", "EC", "OKP", "oct", "P-256", "P-384", "P-521", "Ed25519", "X25519", "sig",
            "enc", "HS256", "RS256", "PS256", "ES256", "ES384", "EdDSA", "none", "", "AQAB", "AA",
        ])
        .prop_map(Value::from),
        "[A-Za-z0-9_-]{0,400}".prop_map(Value::from),
        "\\PC{0,20}".prop_map(Value::from),
        Just(json!([])),
        Just(json!({})),
        Just(json!(["sign", "verify"])),
    ]
}

/// Replaces the `target`-th node of `value` (pre-order) with `leaf`.
fn replace_node(value: &mut Value, target: &mut usize, leaf: &Value) -> bool {
    if *target == 0 {
        *value = leaf.clone();
        return true;
    }
    *target -= 1;
    match value {
        Value::Array(items) => items.iter_mut().any(|v| replace_node(v, target, leaf)),
        Value::Object(map) => map.values_mut().any(|v| replace_node(v, target, leaf)),
        _ => false,
    }
}

fn count_nodes(value: &Value) -> usize {
    1 + match value {
        Value::Array(items) => items.iter().map(count_nodes).sum(),
        Value::Object(map) => map.values().map(count_nodes).sum(),
        _ => 0,
    }
}

fn check_jwks(bytes: &[u8]) {
    let policy = Arc::new(IssuerPolicy {
        iss: ISS.into(),
        audiences: vec![AUD.into()],
        accept_high_s: false,
    });
    let all: Vec<Algorithm> = SUPPORTED_ALGORITHMS
        .split(", ")
        .filter_map(parse_algorithm)
        .collect();
    let (set, skipped) = parse_jwks(bytes, &policy, &all);
    let listed = match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(doc)) => doc.get("keys").and_then(Value::as_array).map(Vec::len),
        _ => None,
    };
    match listed {
        Some(n) => assert_eq!(set.len() + skipped.len(), n, "each key used or skipped"),
        None => assert!(set.is_empty() && skipped.len() == 1),
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn the_jwks_parser_never_panics_on_a_mutated_vector_key_set(
        doc in any::<prop::sample::Index>(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), json_leaf()), 1..4),
    ) {
        warden::crypto::install_providers();
        let docs = jwks_documents();
        let mut value = docs[doc.index(docs.len())].clone();
        for (node, leaf) in &edits {
            let mut target = node.index(count_nodes(&value));
            replace_node(&mut value, &mut target, leaf);
        }
        check_jwks(value.to_string().as_bytes());
    }

    #[test]
    fn the_jwks_parser_never_panics_on_a_byte_mutated_key_set(
        doc in any::<prop::sample::Index>(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        warden::crypto::install_providers();
        let docs = jwks_documents();
        let mut bytes = docs[doc.index(docs.len())].to_string().into_bytes();
        for (at, byte) in &edits {
            let at = at.index(bytes.len());
            bytes[at] = *byte;
        }
        check_jwks(&bytes);
    }
}

// ---------------------------------------------------------------------------
// The credential store

/// A file under the test target's temporary directory; never reused.
fn temp_path(suffix: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "warden-properties-{}-{}-{suffix}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}

fn master_key() -> MasterKey {
    MasterKey::from_base64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").expect("a 32-byte key")
}

/// A real store holding one credential, as its file's bytes.
fn sealed_store() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| {
        let store = Store::new(temp_path("sealed.store"), master_key());
        store.create().expect("a new store");
        store
            .update(|contents| {
                let kind = Kind::Secret {
                    value: SecretString::new("s3cret"),
                };
                contents
                    .credentials
                    .insert("billing".into(), Credential::new(kind, None));
            })
            .expect("an update");
        let bytes = std::fs::read(store.path()).expect("the store file");
        let _ = std::fs::remove_file(store.path());
        bytes
    })
}

#[test]
fn every_single_byte_change_of_a_store_file_is_an_error() {
    let path = temp_path("flipped.store");
    let store = Store::new(&path, master_key());
    let sealed = sealed_store();
    std::fs::write(&path, sealed).expect("write the store");
    let contents = store.read().expect("the untouched store reads");
    assert!(contents.credentials.contains_key("billing"));
    let mut bytes = sealed.to_vec();
    for at in 0..bytes.len() {
        for flip in [0x01, 0x80] {
            bytes[at] ^= flip;
            std::fs::write(&path, &bytes).expect("write the store");
            assert!(store.read().is_err(), "a flip at byte {at} was accepted");
            bytes[at] ^= flip;
        }
    }
    for len in 0..bytes.len() {
        std::fs::write(&path, &bytes[..len]).expect("write the store");
        assert!(
            store.read().is_err(),
            "a store cut to {len} bytes was accepted"
        );
    }
    let _ = std::fs::remove_file(&path);
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_store_file_that_was_not_sealed_with_the_key_is_an_error(
        header in prop::sample::select(vec![
            b"".to_vec(),
            b"WDNCRED".to_vec(),
            b"WDNCRED\x01\x01".to_vec(),
            b"WDNCRED\x02\x01".to_vec(),
            b"WDNCRED\x01\x02".to_vec(),
        ]),
        rest in prop::collection::vec(any::<u8>(), 0..120),
    ) {
        let path = temp_path("random.store");
        let mut bytes = header;
        bytes.extend_from_slice(&rest);
        std::fs::write(&path, &bytes).expect("write the store");
        let read = Store::new(&path, master_key()).read();
        let _ = std::fs::remove_file(&path);
        prop_assert!(read.is_err());
    }
}
