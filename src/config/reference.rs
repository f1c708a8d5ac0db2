//! Every key the parser accepts, read from the serde structs of `file.rs`
//! themselves, for the test that holds `docs/configuration.md` to them
//! (`tests/suite/config_reference.rs`).
//!
//! [`accepted_keys`] hands each section's `*File` struct a probing
//! deserializer: a struct tells it its field names (`deserialize_struct`),
//! and the probe answers with every field present, each one probed in turn,
//! so nested tables (`server.tls`, `routes[].rate_limit`) are reached too.
//! A key added to a struct is listed here without anyone listing it; a
//! section added to the parser but not to [`SECTION_PROBES`] fails the test,
//! which compares them with the parser's own list of sections.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::fmt;

use serde::de::{self, DeserializeOwned, IntoDeserializer, Visitor};

use super::file::{
    AuditFile, CredentialsFile, IssuerFile, KeyFile, LogFile, LoginFile, OauthConnectionFile,
    RouteFile, ServerFile, SharedStateFile, TrustedIssuerFile, ValidationFile,
};

type Probe = fn(&str, &RefCell<BTreeSet<String>>);

/// Each section the parser reads, and how to probe its struct. An array
/// of tables is probed as `name[]`.
const SECTION_PROBES: &[(&str, Probe)] = &[
    ("server", |p, out| probe::<ServerFile>(p, out)),
    ("log", |p, out| probe::<LogFile>(p, out)),
    ("audit", |p, out| probe::<AuditFile>(p, out)),
    ("keys", |p, out| probe::<Vec<KeyFile>>(p, out)),
    ("issuer", |p, out| probe::<IssuerFile>(p, out)),
    ("validation", |p, out| probe::<ValidationFile>(p, out)),
    ("trusted_issuers", |p, out| {
        probe::<Vec<TrustedIssuerFile>>(p, out)
    }),
    ("login", |p, out| probe::<LoginFile>(p, out)),
    ("credentials", |p, out| probe::<CredentialsFile>(p, out)),
    ("oauth_connections", |p, out| {
        probe::<Vec<OauthConnectionFile>>(p, out)
    }),
    ("shared_state", |p, out| probe::<SharedStateFile>(p, out)),
    ("routes", |p, out| probe::<Vec<RouteFile>>(p, out)),
];

/// The sections [`accepted_keys`] probes.
pub fn probed_sections() -> Vec<&'static str> {
    SECTION_PROBES.iter().map(|(name, _)| *name).collect()
}

/// The sections the parser knows (its "unknown section" list).
pub fn known_sections() -> Vec<&'static str> {
    super::validate::SECTIONS.split(", ").collect()
}

/// Every key path the parser accepts, such as `server.listen`,
/// `server.tls.cert_file`, `routes[].rate_limit.burst` or
/// `login.api_keys[].id`. Keys of free-form tables (`claims`,
/// `method_scopes`, `forward_claims`, …) are the user's, not listed.
pub fn accepted_keys() -> BTreeSet<String> {
    let out = RefCell::new(BTreeSet::new());
    for (name, probe) in SECTION_PROBES {
        probe(name, &out);
    }
    out.into_inner()
}

fn probe<T: DeserializeOwned>(path: &str, out: &RefCell<BTreeSet<String>>) {
    // A probe that fails still recorded what it reached; the test then
    // finds keys missing from the docs, or a section with no keys.
    let _ = T::deserialize(Prober { path, out });
}

#[derive(Debug)]
struct ProbeError(String);

impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ProbeError {}

impl de::Error for ProbeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        ProbeError(msg.to_string())
    }
}

#[derive(Clone, Copy)]
struct Prober<'a> {
    path: &'a str,
    out: &'a RefCell<BTreeSet<String>>,
}

impl<'de> de::Deserializer<'de> for Prober<'_> {
    type Error = ProbeError;

    /// A value whose type the struct does not say: a string is the most
    /// common answer (`upstream` is a string or a list of them).
    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ProbeError> {
        visitor.visit_str("")
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ProbeError> {
        visitor.visit_bool(false)
    }

    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ProbeError> {
        visitor.visit_i64(0)
    }

    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ProbeError> {
        visitor.visit_u64(0)
    }

    fn deserialize_u32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ProbeError> {
        visitor.visit_u32(0)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ProbeError> {
        visitor.visit_f64(0.0)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ProbeError> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, ProbeError> {
        visitor.visit_newtype_struct(self)
    }

    /// One element, probed as `path[]`: its struct's keys are listed.
    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ProbeError> {
        let path = format!("{}[]", self.path);
        visitor.visit_seq(OneElement {
            prober: Some(Prober {
                path: &path,
                out: self.out,
            }),
        })
    }

    /// A free-form table: its keys are the user's.
    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ProbeError> {
        visitor.visit_map(de::value::MapDeserializer::new(std::iter::empty::<(
            &str,
            &str,
        )>()))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ProbeError> {
        visitor.visit_map(Fields {
            parent: self,
            fields: fields.iter(),
            current: String::new(),
        })
    }

    serde::forward_to_deserialize_any! {
        i8 i16 i32 i128 u8 u16 u128 f32 char str string bytes byte_buf unit
        unit_struct tuple tuple_struct enum identifier ignored_any
    }
}

struct OneElement<'a> {
    prober: Option<Prober<'a>>,
}

impl<'de> de::SeqAccess<'de> for OneElement<'_> {
    type Error = ProbeError;

    fn next_element_seed<T: de::DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, ProbeError> {
        match self.prober.take() {
            Some(prober) => seed.deserialize(prober).map(Some),
            None => Ok(None),
        }
    }
}

struct Fields<'a> {
    parent: Prober<'a>,
    fields: std::slice::Iter<'static, &'static str>,
    current: String,
}

impl<'de> de::MapAccess<'de> for Fields<'_> {
    type Error = ProbeError;

    fn next_key_seed<K: de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, ProbeError> {
        let Some(field) = self.fields.next() else {
            return Ok(None);
        };
        self.current = format!("{}.{field}", self.parent.path);
        self.parent.out.borrow_mut().insert(self.current.clone());
        let key: de::value::StrDeserializer<'_, ProbeError> = field.into_deserializer();
        seed.deserialize(key).map(Some)
    }

    fn next_value_seed<V: de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, ProbeError> {
        seed.deserialize(Prober {
            path: &self.current,
            out: self.parent.out,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_tables_and_arrays_of_tables_are_reached() {
        let keys = accepted_keys();
        for key in [
            "server.listen",
            "server.tls.cert_file",
            "routes[].name",
            "routes[].rate_limit.burst",
            "routes[].inject.credential",
            "routes[].upstream_token.encrypt_to",
            "login.api_keys[].key_sha256",
            "login.users[].password_argon2",
            "keys[].secret_env",
            "validation.max_token_lifetime",
        ] {
            assert!(keys.contains(key), "{key} missing from {keys:?}");
        }
        assert!(!keys.iter().any(|k| k.contains("claims.")), "{keys:?}");
    }
}
