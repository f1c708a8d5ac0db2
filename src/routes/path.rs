//! Path normalisation: the one reading of a request's path.
//!
//! A request's path is normalised once ([`normalize_path`]): unreserved
//! characters are percent-decoded, other escapes get uppercase hex, duplicate
//! slashes collapse, and `.`/`..` segments are resolved. Matching and the
//! upstream both use that one normalised path, so no part of the gateway reads
//! a path differently from another. An encoded slash (`%2F`), an encoded NUL,
//! a broken escape, a `..` that climbs above the root, a backslash, a `;`
//! (raw or encoded: Java servers strip `;` path parameters), a raw byte
//! outside ASCII and a double encoding (`%25` + two hex digits) are rejected
//! (SPEC §2, §16): each is a way to make an upstream read a path other than
//! the one that was matched.

use std::borrow::Cow;

/// Why a path was refused. Each is a 400.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path does not start with `/`.
    #[error("the path must start with '/'")]
    NotAbsolute,
    /// `%2F` would make one path read as two different ones.
    #[error("the path contains an encoded slash (%2F)")]
    EncodedSlash,
    /// `%00` has no place in a path.
    #[error("the path contains an encoded NUL (%00)")]
    EncodedNul,
    /// `%` not followed by two hex digits.
    #[error("the path contains a malformed percent-escape")]
    BadEscape,
    /// A `..` segment climbs above `/`.
    #[error("the path climbs above the root with '..'")]
    AboveRoot,
    /// A backslash: some upstreams (IIS) read it as a separator, so the
    /// path they see would not be the path that was matched.
    #[error("the path contains a backslash")]
    Ambiguous,
    /// A `;` (raw or `%3B`): Tomcat, Jetty and Spring strip `;…` path
    /// parameters, so `/admin;x/y` would match one route here and be served
    /// as `/admin/y` there.
    #[error("the path contains a ';' (path parameters are not accepted)")]
    Parameters,
    /// A raw byte outside ASCII: upstreams decode it in different charsets.
    /// Non-ASCII characters are sent percent-encoded.
    #[error("the path contains a raw byte outside ASCII (send it percent-encoded)")]
    NonAscii,
    /// `%25` followed by two hex digits: an upstream that decodes once more
    /// would see a character (`%252e` → `%2e` → `.`) this gateway never matched.
    #[error("the path is percent-encoded twice (%25 followed by two hex digits)")]
    DoubleEncoded,
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Whether the path can be returned as it is: no escapes, no empty, `.` or
/// `..` segments. Most real paths take this branch and allocate nothing.
fn is_already_normal(path: &str) -> bool {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') || bytes.contains(&b'%') || bytes.contains(&b'\\') {
        return false;
    }
    for segment in path[1..].split('/') {
        if segment.starts_with('.') && matches!(segment.split(';').next(), Some("." | "..")) {
            return false;
        }
    }
    !path.contains("//")
}

/// Bytes refused wherever they stand: `;` and anything outside ASCII.
fn refuse_bytes(raw: &str) -> Result<(), PathError> {
    for &b in raw.as_bytes() {
        if b == b';' {
            return Err(PathError::Parameters);
        }
        if !b.is_ascii() {
            return Err(PathError::NonAscii);
        }
    }
    Ok(())
}

/// Normalises a request path (without its query) as described in the module docs.
pub fn normalize_path(raw: &str) -> Result<Cow<'_, str>, PathError> {
    refuse_bytes(raw)?;
    if is_already_normal(raw) {
        return Ok(Cow::Borrowed(raw));
    }
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if raw.contains('\\') {
        return Err(PathError::Ambiguous);
    }

    // Pass 1: decode the unreserved escapes, canonicalise the others. Only
    // ASCII is ever decoded, so the result stays valid UTF-8.
    let mut decoded = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(at) = rest.find('%') {
        decoded.push_str(&rest[..at]);
        let escape = rest.as_bytes();
        let value = match (escape.get(at + 1), escape.get(at + 2)) {
            (Some(&h), Some(&l)) => hex_value(h).zip(hex_value(l)).map(|(h, l)| h << 4 | l),
            _ => None,
        };
        match value {
            None => return Err(PathError::BadEscape),
            Some(b'/') => return Err(PathError::EncodedSlash),
            Some(0) => return Err(PathError::EncodedNul),
            Some(b'\\') => return Err(PathError::Ambiguous),
            Some(b';') => return Err(PathError::Parameters),
            Some(v) if is_unreserved(v) => decoded.push(char::from(v)),
            Some(v) => {
                const HEX: &[u8; 16] = b"0123456789ABCDEF";
                decoded.push('%');
                decoded.push(char::from(HEX[usize::from(v >> 4)]));
                decoded.push(char::from(HEX[usize::from(v & 0xF)]));
            }
        }
        rest = &rest[at + 3..];
    }
    decoded.push_str(rest);
    // Double encoding is judged on the decoded form, so escaped hex digits
    // (`%25%32%65`, `%252%65`) cannot hide a `%2e` from it.
    let bytes = decoded.as_bytes();
    let double_encoded = (0..bytes.len()).any(|i| {
        bytes[i..].starts_with(b"%25")
            && bytes
                .get(i + 3..i + 5)
                .is_some_and(|next| next.iter().all(|&b| hex_value(b).is_some()))
    });
    if double_encoded {
        return Err(PathError::DoubleEncoded);
    }

    // Pass 2: collapse empty segments and resolve dot segments.
    let mut segments: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for segment in decoded[1..].split('/') {
        trailing_slash = false;
        match segment {
            "" => trailing_slash = true,
            "." => trailing_slash = true,
            ".." => {
                if segments.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
                trailing_slash = true;
            }
            other => {
                if matches!(other.split(';').next(), Some("." | "..")) {
                    return Err(PathError::Ambiguous);
                }
                segments.push(other);
            }
        }
    }
    let mut normal = String::with_capacity(decoded.len());
    for segment in &segments {
        normal.push('/');
        normal.push_str(segment);
    }
    if normal.is_empty() || trailing_slash {
        normal.push('/');
    }
    Ok(Cow::Owned(normal))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_matrix() {
        let cases: &[(&str, Result<&str, PathError>)] = &[
            ("/", Ok("/")),
            ("/api/users", Ok("/api/users")),
            ("/api/users/", Ok("/api/users/")),
            ("//api", Ok("/api")),
            ("/api//users///x", Ok("/api/users/x")),
            ("/api/../admin", Ok("/admin")),
            ("/api/./users", Ok("/api/users")),
            ("/api/%2e%2e/admin", Ok("/admin")),
            ("/api/%2E%2E/admin", Ok("/admin")),
            ("/api/.%2e/admin", Ok("/admin")),
            ("/%61pi", Ok("/api")),
            ("/api/%7euser", Ok("/api/~user")),
            ("/api/a%20b", Ok("/api/a%20b")),
            ("/api/a%3fb", Ok("/api/a%3Fb")),
            ("/API/Users", Ok("/API/Users")),
            ("/api/..", Ok("/")),
            ("/api/x/..", Ok("/api/")),
            ("/.well-known/jwks.json", Ok("/.well-known/jwks.json")),
            ("/api/%2Fadmin", Err(PathError::EncodedSlash)),
            ("/api/%2fadmin", Err(PathError::EncodedSlash)),
            ("/..", Err(PathError::AboveRoot)),
            ("/api/../../etc/passwd", Err(PathError::AboveRoot)),
            ("/%2e%2e/x", Err(PathError::AboveRoot)),
            ("/a%00b", Err(PathError::EncodedNul)),
            ("/a%zz", Err(PathError::BadEscape)),
            ("/a%2", Err(PathError::BadEscape)),
            ("/a%ff", Ok("/a%FF")),
            ("/caf%C3%A9", Ok("/caf%C3%A9")),
            ("api", Err(PathError::NotAbsolute)),
            ("/api\\..\\admin", Err(PathError::Ambiguous)),
            ("/api/%5C../admin", Err(PathError::Ambiguous)),
            ("/api/..;/admin", Err(PathError::Parameters)),
            ("/api/.;x/admin", Err(PathError::Parameters)),
            ("/api/a;b/c", Err(PathError::Parameters)),
            ("/prot;/x", Err(PathError::Parameters)),
            ("/prot;jsessionid=1/x", Err(PathError::Parameters)),
            ("/prot%3Bx/x", Err(PathError::Parameters)),
            ("/prot%3bx/x", Err(PathError::Parameters)),
            ("/caf\u{e9}", Err(PathError::NonAscii)),
            ("/x/%252e%252e/admin", Err(PathError::DoubleEncoded)),
            ("/x/%2541", Err(PathError::DoubleEncoded)),
            ("/x/%25%32%65%25%32%65/admin", Err(PathError::DoubleEncoded)),
            ("/x/%252%65", Err(PathError::DoubleEncoded)),
            ("/x/100%25", Ok("/x/100%25")),
            ("/x/%25zz", Ok("/x/%25zz")),
            ("/api/...", Ok("/api/...")),
        ];
        for (raw, expected) in cases {
            let got = normalize_path(raw);
            assert_eq!(got.as_deref().map_err(|e| *e), *expected, "for {raw:?}");
        }
    }

    #[test]
    fn normalisation_is_idempotent() {
        for raw in ["/a/./b/../c//d/", "/%7e/x%2e/%41", "/x/%20/y"] {
            let once = normalize_path(raw).map(Cow::into_owned);
            let twice = once
                .as_deref()
                .map(|p| normalize_path(p).map(Cow::into_owned));
            assert_eq!(twice.ok().and_then(Result::ok), once.ok(), "{raw}");
        }
    }
}
