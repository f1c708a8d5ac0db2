//! One percent/form codec (RFC 3986 §2.1, `application/x-www-form-urlencoded`).
//!
//! A leaf: login reads form bodies, credential injection rewrites query
//! strings and form fields, the OAuth2 client posts forms, and the echo
//! upstream redacts an injected value in its encoded form. All of them encode
//! and decode here, so no two of them can disagree on a byte.

/// Percent-encodes everything but RFC 3986 unreserved characters: for query
/// values, path segments and form fields alike.
pub fn encode(text: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xF)]));
        }
    }
    out
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// A form or query component decoded: `%XX` escapes and `+` as a space. A
/// `%` not followed by two hex digits is kept as it is.
pub fn form_decode(text: &str) -> Vec<u8> {
    decode_with(text, true)
}

/// A path segment decoded: `%XX` escapes only (`+` stays `+`).
pub fn path_decode(text: &str) -> Vec<u8> {
    decode_with(text, false)
}

fn decode_with(text: &str, plus_is_space: bool) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' if plus_is_space => out.push(b' '),
            b'%' => {
                let escape = bytes
                    .get(i + 1)
                    .and_then(|&h| hex_digit(h))
                    .zip(bytes.get(i + 2).and_then(|&l| hex_digit(l)));
                if let Some((high, low)) = escape {
                    out.push(high << 4 | low);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            other => out.push(other),
        }
        i += 1;
    }
    out
}

/// The fields of an `application/x-www-form-urlencoded` body, in order;
/// bytes that are not UTF-8 become U+FFFD.
pub fn form_fields(body: &[u8]) -> Vec<(String, String)> {
    let text = |raw: &str| String::from_utf8_lossy(&form_decode(raw)).into_owned();
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (text(name), text(value))
        })
        .collect()
}

/// Pairs as an `application/x-www-form-urlencoded` body.
pub fn form_encode(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(name, value)| format!("{}={}", encode(name), encode(value)))
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_but_unreserved_is_escaped_with_uppercase_hex() {
        assert_eq!(encode("a-b.c_d~e"), "a-b.c_d~e");
        assert_eq!(encode("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
    }

    #[test]
    fn decoding_undoes_encoding_and_reads_plus_as_space() {
        let text = "p@ss w+rd&=%/é";
        assert_eq!(form_decode(&encode(text)), text.as_bytes());
        assert_eq!(form_decode("a+b%2Bc"), b"a b+c");
    }

    #[test]
    fn a_broken_escape_is_kept_not_guessed() {
        assert_eq!(form_decode("100%"), b"100%");
        assert_eq!(form_decode("%zz%4"), b"%zz%4");
        // `+` is not a hex digit, even though `from_str_radix` would take it.
        assert_eq!(form_decode("%+5"), b"% 5");
    }

    #[test]
    fn form_fields_split_on_ampersand_and_decode_each_side() {
        assert_eq!(
            form_fields(b"grant_type=client_credentials&scope=a+b&&flag"),
            vec![
                ("grant_type".to_owned(), "client_credentials".to_owned()),
                ("scope".to_owned(), "a b".to_owned()),
                ("flag".to_owned(), String::new()),
            ]
        );
        assert_eq!(form_encode(&[("a", "x y"), ("b", "&")]), "a=x%20y&b=%26");
    }
}
