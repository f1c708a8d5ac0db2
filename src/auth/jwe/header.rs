//! The compact JWE serialization (RFC 7516 §7.1), read strictly: exactly
//! five segments of canonical base64url, a protected header that is a JSON
//! object with no member twice, and the header's members checked against
//! SPEC §12's allow-list.
//!
//! Above `alg.rs`, `base64url.rs` and `error.rs`; `decrypt.rs` uses it. The
//! protected header's segment is kept exactly as received, because it is
//! the AAD: a header that means the same but is encoded differently
//! (whitespace, member order) is another AAD, and fails the tag. Checks run
//! in this order, so each refused vector gets its own reason: syntax,
//! `zip`, `crit`, `alg` (`RSA1_5` and `PBES2-*` named), `enc`, then the
//! types of `kid`, `cty`, `apu` and `apv`. The JSON serialization is
//! refused outright. `jku`, `jwk`, `x5u` and `x5c` are never read.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::{Map, Value};

use super::alg::{Curve, Enc, KeyAlg};
use super::base64url;
use super::error::DecryptFailure;

/// The five segments of a compact JWE, decoded; the header segment as received.
#[derive(Debug)]
pub(super) struct Compact<'a> {
    /// The protected header's segment, exactly as received: the AAD.
    pub protected: &'a str,
    /// The protected header.
    pub header: Map<String, Value>,
    /// The JWE Encrypted Key (empty for `dir` and `ECDH-ES`).
    pub encrypted_key: Vec<u8>,
    /// The JWE Initialization Vector.
    pub iv: Vec<u8>,
    /// The JWE Ciphertext.
    pub ciphertext: Vec<u8>,
    /// The JWE Authentication Tag.
    pub tag: Vec<u8>,
}

/// A JSON object in which no member name appears twice (RFC 7516 §4 lets a
/// parser take the last one; two readers might then disagree on `alg`).
struct StrictObject(Map<String, Value>);

impl<'de> Deserialize<'de> for StrictObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;
        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = StrictObject;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<StrictObject, A::Error> {
                let mut map = Map::new();
                while let Some(name) = access.next_key::<String>()? {
                    let value: Value = access.next_value()?;
                    if map.insert(name, value).is_some() {
                        return Err(de::Error::custom("a member appears twice"));
                    }
                }
                Ok(StrictObject(map))
            }
        }
        deserializer.deserialize_map(ObjectVisitor)
    }
}

/// Splits and decodes a compact JWE.
pub(super) fn split(token: &str) -> Result<Compact<'_>, DecryptFailure> {
    if token.trim_start().starts_with('{') {
        return Err(DecryptFailure::JsonSerialization);
    }
    let mut segments = token.split('.');
    let (Some(protected), Some(encrypted_key), Some(iv), Some(ciphertext), Some(tag), None) = (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) else {
        return Err(DecryptFailure::Malformed);
    };
    let decode = |segment: &str| base64url::decode(segment).ok_or(DecryptFailure::Malformed);
    if protected.is_empty() {
        return Err(DecryptFailure::Malformed);
    }
    let header_bytes = decode(protected)?;
    let StrictObject(header) =
        serde_json::from_slice(&header_bytes).map_err(|_| DecryptFailure::Malformed)?;
    Ok(Compact {
        protected,
        header,
        encrypted_key: decode(encrypted_key)?,
        iv: decode(iv)?,
        ciphertext: decode(ciphertext)?,
        tag: decode(tag)?,
    })
}

/// The members of a protected header that decryption reads.
#[derive(Debug)]
pub(super) struct Header {
    /// `alg`, on the allow-list.
    pub alg: KeyAlg,
    /// `enc`, on the allow-list.
    pub enc: Enc,
    /// `kid`, when present.
    pub kid: Option<String>,
    /// `cty`, when present.
    pub cty: Option<String>,
    /// `epk`, when present (read against the key's curve later).
    pub epk: Option<Value>,
    /// `apu`, decoded (empty when absent).
    pub apu: Vec<u8>,
    /// `apv`, decoded (empty when absent).
    pub apv: Vec<u8>,
}

fn optional_string(
    header: &Map<String, Value>,
    name: &str,
) -> Result<Option<String>, DecryptFailure> {
    match header.get(name) {
        None => Ok(None),
        Some(Value::String(value)) => Ok(Some(value.clone())),
        Some(_) => Err(DecryptFailure::Malformed),
    }
}

fn optional_bytes(header: &Map<String, Value>, name: &str) -> Result<Vec<u8>, DecryptFailure> {
    match optional_string(header, name)? {
        None => Ok(Vec::new()),
        Some(text) => base64url::decode(&text).ok_or(DecryptFailure::Malformed),
    }
}

/// Checks the protected header against the allow-list.
pub(super) fn read_header(header: &Map<String, Value>) -> Result<Header, DecryptFailure> {
    if header.contains_key("zip") {
        return Err(DecryptFailure::ZipRefused);
    }
    if header.contains_key("crit") {
        return Err(DecryptFailure::CritRefused);
    }
    let alg = match header.get("alg") {
        Some(Value::String(name)) if name == "RSA1_5" => {
            return Err(DecryptFailure::Rsa15Refused);
        }
        Some(Value::String(name)) if name.starts_with("PBES2-") => {
            return Err(DecryptFailure::Pbes2Refused);
        }
        Some(Value::String(name)) => KeyAlg::parse(name).ok_or(DecryptFailure::AlgNotAllowed)?,
        _ => return Err(DecryptFailure::AlgNotAllowed),
    };
    let enc = match header.get("enc") {
        Some(Value::String(name)) => Enc::parse(name).ok_or(DecryptFailure::EncNotAllowed)?,
        _ => return Err(DecryptFailure::EncNotAllowed),
    };
    Ok(Header {
        alg,
        enc,
        kid: optional_string(header, "kid")?,
        cty: optional_string(header, "cty")?,
        epk: header.get("epk").cloned(),
        apu: optional_bytes(header, "apu")?,
        apv: optional_bytes(header, "apv")?,
    })
}

/// The sender's ephemeral public key for a key on `curve`: the uncompressed
/// point `0x04 || x || y`, or `x` for X25519. Its coordinates must be of the
/// curve's size; aws-lc-rs checks that the point is on the curve.
pub(super) fn epk_point(epk: Option<&Value>, curve: Curve) -> Result<Vec<u8>, DecryptFailure> {
    let invalid = DecryptFailure::InvalidEpk;
    let epk = epk.and_then(Value::as_object).ok_or(invalid)?;
    let member = |name: &str| epk.get(name).and_then(Value::as_str).ok_or(invalid);
    let epk_curve = Curve::parse(member("crv")?).ok_or(invalid)?;
    if epk_curve != curve {
        return Err(DecryptFailure::EpkWrongCurve);
    }
    if member("kty")? != curve.kty() || epk.contains_key("d") {
        return Err(invalid);
    }
    let coordinate = |name: &str| {
        base64url::decode(member(name)?)
            .filter(|bytes| bytes.len() == curve.coordinate_len())
            .ok_or(invalid)
    };
    let x = coordinate("x")?;
    if curve == Curve::X25519 {
        return Ok(x);
    }
    let y = coordinate("y")?;
    Ok([&[0x04][..], &x, &y].concat())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(text: &str) -> String {
        base64url::encode(text.as_bytes())
    }

    fn token(header: &str) -> String {
        format!(
            "{}..AAAAAAAAAAAAAAAA.AAAA.AAAAAAAAAAAAAAAAAAAAAA",
            b64(header)
        )
    }

    fn reason(header: &str) -> DecryptFailure {
        let token = token(header);
        let compact = match split(&token) {
            Ok(compact) => compact,
            Err(reason) => return reason,
        };
        read_header(&compact.header).expect_err("refused")
    }

    #[test]
    fn the_compact_form_has_exactly_five_canonical_segments() {
        let good = token(r#"{"alg":"dir","enc":"A128GCM"}"#);
        let compact = split(&good).expect("splits");
        assert_eq!(compact.protected, b64(r#"{"alg":"dir","enc":"A128GCM"}"#));
        assert!(compact.encrypted_key.is_empty());
        assert_eq!(compact.iv.len(), 12);
        for bad in [
            String::new(),
            "a.b.c".to_owned(),
            format!("{good}."),
            format!(".{good}"),
            good.replacen('.', "..", 1),
            good.replace("AAAA.", "AAAA=."),
            good.replace("AAAA.", "AA+A."),
            format!("{good} "),
            format!("{}....", b64("[]")),
            format!("{}....", b64(r#"{"alg":"dir""#)),
            format!("{}....", b64(r#"{"alg":"dir"} x"#)),
            format!("....{}", b64(r#"{"alg":"dir"}"#)),
        ] {
            assert_eq!(
                split(&bad).err(),
                Some(DecryptFailure::Malformed),
                "{bad:?}"
            );
        }
        assert_eq!(
            split(r#"{"protected":"eyJ9","ciphertext":"AA"}"#).err(),
            Some(DecryptFailure::JsonSerialization)
        );
    }

    #[test]
    fn a_member_twice_is_malformed() {
        assert_eq!(
            reason(r#"{"alg":"dir","enc":"A128GCM","alg":"RSA-OAEP-256"}"#),
            DecryptFailure::Malformed
        );
    }

    #[test]
    fn each_refused_header_has_its_reason() {
        let cases = [
            (
                r#"{"alg":"RSA1_5","enc":"A128GCM"}"#,
                DecryptFailure::Rsa15Refused,
            ),
            (
                r#"{"alg":"PBES2-HS256+A128KW","enc":"A128GCM"}"#,
                DecryptFailure::Pbes2Refused,
            ),
            (
                r#"{"alg":"RSA-OAEP","enc":"A128GCM"}"#,
                DecryptFailure::AlgNotAllowed,
            ),
            (
                r#"{"alg":"A128KW","enc":"A128GCM"}"#,
                DecryptFailure::AlgNotAllowed,
            ),
            (
                r#"{"alg":"none","enc":"A128GCM"}"#,
                DecryptFailure::AlgNotAllowed,
            ),
            (r#"{"alg":"HS256"}"#, DecryptFailure::AlgNotAllowed),
            (r#"{"enc":"A128GCM"}"#, DecryptFailure::AlgNotAllowed),
            (
                r#"{"alg":7,"enc":"A128GCM"}"#,
                DecryptFailure::AlgNotAllowed,
            ),
            (
                r#"{"alg":"dir","enc":"A192GCM"}"#,
                DecryptFailure::EncNotAllowed,
            ),
            (r#"{"alg":"dir"}"#, DecryptFailure::EncNotAllowed),
            (
                r#"{"alg":"A128KW","enc":"A128GCM","zip":"DEF"}"#,
                DecryptFailure::ZipRefused,
            ),
            (
                r#"{"alg":"dir","enc":"A128GCM","crit":["exp"],"exp":1}"#,
                DecryptFailure::CritRefused,
            ),
            (
                r#"{"alg":"dir","enc":"A128GCM","crit":[]}"#,
                DecryptFailure::CritRefused,
            ),
            (
                r#"{"alg":"dir","enc":"A128GCM","kid":1}"#,
                DecryptFailure::Malformed,
            ),
            (
                r#"{"alg":"dir","enc":"A128GCM","cty":null}"#,
                DecryptFailure::Malformed,
            ),
            (
                r#"{"alg":"ECDH-ES","enc":"A128GCM","apu":"a+b"}"#,
                DecryptFailure::Malformed,
            ),
        ];
        for (header, expected) in cases {
            assert_eq!(reason(header), expected, "{header}");
        }
    }

    #[test]
    fn an_epk_must_be_a_public_key_on_the_keys_curve() {
        let x = base64url::encode(&[1u8; 32]);
        let p256 = serde_json::json!({"kty": "EC", "crv": "P-256", "x": x, "y": x});
        let point = epk_point(Some(&p256), Curve::P256).expect("reads");
        assert_eq!(point.len(), 65);
        assert_eq!(point[0], 4);
        assert_eq!(
            epk_point(Some(&p256), Curve::P384),
            Err(DecryptFailure::EpkWrongCurve)
        );
        assert_eq!(
            epk_point(None, Curve::P256),
            Err(DecryptFailure::InvalidEpk)
        );
        let okp = serde_json::json!({"kty": "OKP", "crv": "X25519", "x": x});
        assert_eq!(
            epk_point(Some(&okp), Curve::X25519).expect("reads"),
            [1u8; 32]
        );
        for bad in [
            serde_json::json!("P-256"),
            serde_json::json!({"kty": "OKP", "crv": "P-256", "x": x, "y": x}),
            serde_json::json!({"kty": "EC", "crv": "P-256", "x": x}),
            serde_json::json!({"kty": "EC", "crv": "P-256", "x": x, "y": base64url::encode(&[1u8; 31])}),
            serde_json::json!({"kty": "EC", "crv": "P-256", "x": x, "y": x, "d": x}),
            serde_json::json!({"kty": "EC", "crv": "P-521", "x": x, "y": x}),
        ] {
            assert_eq!(
                epk_point(Some(&bad), Curve::P256),
                Err(DecryptFailure::InvalidEpk),
                "{bad}"
            );
        }
    }
}
