//! The command-line tools for encrypted tokens (SPEC §1 and §12), run as the
//! `warden` binary: `keygen` for every key-management algorithm makes a key
//! that `warden check` accepts, `token --encrypt-to` makes a nested JWT that
//! `verify --decrypt-key` opens (and the gateway accepts), every failure to
//! decrypt reads the same, and no key file is ever overwritten.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::common::*;
use base64::Engine;
use serde_json::Value;
use warden::auth::jwe::DECRYPT_ERROR_DESCRIPTION;

const ISS: &str = "https://warden.cli-jwe.test";

/// `warden ARGS` (and `env`): the exit code, stdout and stderr.
fn run_env(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let output = warden_command(args)
        .envs(env.iter().copied())
        .output()
        .expect("run warden");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn run(args: &[&str]) -> (Option<i32>, String, String) {
    run_env(args, &[])
}

/// `warden ARGS`, which must succeed: its stdout.
fn ok(args: &[&str]) -> String {
    let (code, stdout, stderr) = run(args);
    assert_eq!(
        code,
        Some(0),
        "warden {args:?}\nstdout: {stdout}\nstderr: {stderr}"
    );
    stdout
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

fn b64url(text: &str) -> Vec<u8> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text.trim())
        .expect("base64url")
}

/// The JWE's protected header.
fn jwe_header(token: &str) -> Value {
    assert_eq!(token.split('.').count(), 5, "a compact JWE: {token}");
    serde_json::from_slice(&b64url(token.split('.').next().unwrap())).expect("a JSON header")
}

/// The public JWK line and the SPKI PEM that `keygen` prints for a key pair.
fn printed_public_key(stdout: &str) -> (Option<Value>, Option<String>) {
    let jwk = stdout
        .lines()
        .find(|line| line.starts_with('{'))
        .map(|line| serde_json::from_str(line).expect("the JWK line is JSON"));
    let pem = stdout.find("-----BEGIN PUBLIC KEY-----").map(|start| {
        let end = stdout
            .find("-----END PUBLIC KEY-----")
            .expect("the PEM ends")
            + 24;
        format!("{}\n", &stdout[start..end])
    });
    (jwk, pem)
}

/// A directory with a signing key (ES256, kid "sign") made by `warden keygen`.
fn signing_dir(name: &str) -> (TempDir, PathBuf) {
    let dir = TempDir::new(name);
    let sign = dir.join("sign.pem");
    ok(&["keygen", "--alg", "ES256", "--out", path_str(&sign)]);
    (dir, sign)
}

/// A config with the signing key `sign.pem` and these `[[keys]]` entries
/// (and `extra` after them).
fn config_with(dir: &TempDir, entries: &str, extra: &str) -> ConfigFile {
    ConfigFile::new(&config(
        "",
        &format!(
            r#"
[[keys]]
kid = "sign"
alg = "ES256"
private_key_file = "{sign}"
{entries}
[issuer]
iss = "{ISS}"
aud = ["warden"]
signing_kid = "sign"
{extra}"#,
            sign = path_str(&dir.join("sign.pem")),
        ),
    ))
}

fn entry(kid: &str, alg: &str, source: &str, path: &Path) -> String {
    format!(
        "\n[[keys]]\nkid = \"{kid}\"\nalg = \"{alg}\"\n{source} = \"{}\"\n",
        path_str(path)
    )
}

/// The key pairs `keygen` makes: algorithm, curve (if any), file name.
const KEY_PAIRS: [(&str, Option<&str>, &str); 10] = [
    ("RSA-OAEP-256", None, "rsa"),
    ("ECDH-ES", None, "es-default"),
    ("ECDH-ES", Some("P-384"), "es-p384"),
    ("ECDH-ES", Some("X25519"), "es-x25519"),
    ("ECDH-ES+A128KW", Some("P-256"), "kw128-p256"),
    ("ECDH-ES+A128KW", Some("P-384"), "kw128-p384"),
    ("ECDH-ES+A128KW", Some("X25519"), "kw128-x25519"),
    ("ECDH-ES+A256KW", Some("P-256"), "kw256-p256"),
    ("ECDH-ES+A256KW", Some("P-384"), "kw256-p384"),
    ("ECDH-ES+A256KW", Some("X25519"), "kw256-x25519"),
];

fn keygen_pair(dir: &TempDir, alg: &str, curve: Option<&str>, name: &str) -> (PathBuf, String) {
    let out = dir.join(&format!("{name}.pem"));
    let mut args = vec!["keygen", "--alg", alg, "--out", path_str(&out)];
    if let Some(curve) = curve {
        args.extend(["--curve", curve]);
    }
    (out.clone(), ok(&args))
}

#[test]
fn keygen_makes_a_key_for_every_jwe_algorithm_that_the_config_accepts() {
    let (dir, _) = signing_dir("keygen-all");
    let mut entries = String::new();
    for (alg, curve, name) in KEY_PAIRS {
        let (out, stdout) = keygen_pair(&dir, alg, curve, name);
        assert!(stdout.contains(&format!("wrote {} (mode 0600)", out.display())));
        let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{name}");
        let private = std::fs::read_to_string(&out).unwrap();
        assert!(
            private.starts_with("-----BEGIN PRIVATE KEY-----\n"),
            "{name}"
        );

        let (jwk, pem) = printed_public_key(&stdout);
        let jwk = jwk.expect("the public JWK is printed");
        assert_eq!(jwk["use"], "enc", "{jwk}");
        assert_eq!(jwk["alg"], alg, "{jwk}");
        assert_eq!(jwk["kid"], name, "the kid is the file's name: {jwk}");
        let expected_kty = match curve {
            None if alg == "RSA-OAEP-256" => "RSA",
            Some("X25519") => "OKP",
            _ => "EC",
        };
        assert_eq!(jwk["kty"], expected_kty, "{jwk}");
        if alg.starts_with("ECDH") {
            assert_eq!(
                jwk["crv"],
                curve.unwrap_or("P-256"),
                "P-256 by default: {jwk}"
            );
        }
        for private_member in ["d", "p", "q", "dp", "dq", "qi", "k"] {
            assert!(jwk.get(private_member).is_none(), "{private_member}: {jwk}");
        }
        assert!(
            !stdout.contains("PRIVATE KEY"),
            "the private key is not printed"
        );
        let pem = pem.expect("the SPKI PEM is printed");

        // The private key decrypts; both forms of the public key encrypt.
        entries.push_str(&entry(name, alg, "private_key_file", &out));
        let pem_file = dir.join(&format!("{name}.pub.pem"));
        std::fs::write(&pem_file, pem).unwrap();
        entries.push_str(&entry(
            &format!("{name}-pem"),
            alg,
            "public_key_file",
            &pem_file,
        ));
        let jwk_file = dir.join(&format!("{name}.pub.json"));
        std::fs::write(&jwk_file, jwk.to_string()).unwrap();
        entries.push_str(&entry(
            &format!("{name}-jwk"),
            alg,
            "public_key_file",
            &jwk_file,
        ));
    }

    // A256KW prints a 32-byte secret as base64url, for secret_env.
    let printed = ok(&["keygen", "--alg", "A256KW"]);
    assert_eq!(b64url(&printed).len(), 32, "{printed:?}");
    entries.push_str(
        "\n[[keys]]\nkid = \"kw-env\"\nalg = \"A256KW\"\nsecret_env = \"WARDEN_TEST_KW\"\n",
    );
    // dir: the CEK length of --enc (A256GCM by default), for secret_file.
    for (enc, len) in [
        (None, 32),
        (Some("A128GCM"), 16),
        (Some("A128CBC-HS256"), 32),
        (Some("A256CBC-HS512"), 64),
    ] {
        let file = dir.join(&format!("dir-{}.secret", enc.unwrap_or("default")));
        let mut args = vec!["keygen", "--alg", "dir", "--out", path_str(&file)];
        if let Some(enc) = enc {
            args.extend(["--enc", enc]);
        }
        ok(&args);
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(b64url(&std::fs::read_to_string(&file).unwrap()).len(), len);
        let kid = format!("dir-{}", enc.unwrap_or("default"));
        entries.push_str(&entry(&kid, "dir", "secret_file", &file));
    }

    // Routes may encrypt their upstream token to either form of a public key.
    let routes = r#"
[[routes]]
name = "pem"
path_prefix = "/pem"
upstream = "http://127.0.0.1:9"
upstream_token = { aud = "pem-service", encrypt_to = "kw256-p256-pem" }

[[routes]]
name = "jwk"
path_prefix = "/jwk"
upstream = "http://127.0.0.1:9"
upstream_token = { aud = "jwk-service", encrypt_to = "rsa-jwk" }
"#;
    let file = config_with(&dir, &entries, routes);
    let (code, stdout, stderr) = run_env(
        &["check", "--config", file.path_str()],
        &[("WARDEN_TEST_KW", printed.trim())],
    );
    assert_eq!(code, Some(0), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("ok (2 routes)"), "{stdout}");
}

#[test]
fn keygen_public_out_writes_the_public_key_as_pem_or_jwk_and_prints_the_other_form() {
    let dir = TempDir::new("keygen-public-out");
    let out = dir.join("up.pem");
    let public = dir.join("up.pub.pem");
    let stdout = ok(&[
        "keygen",
        "--alg",
        "ECDH-ES+A256KW",
        "--out",
        path_str(&out),
        "--public-out",
        path_str(&public),
        "--kid",
        "orders-enc",
    ]);
    let text = std::fs::read_to_string(&public).unwrap();
    assert!(text.starts_with("-----BEGIN PUBLIC KEY-----\n"), "{text}");
    let mode = std::fs::metadata(&public).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644, "a public key is not secret");
    let (jwk, pem) = printed_public_key(&stdout);
    assert_eq!(pem, None, "the PEM went to the file: {stdout}");
    assert_eq!(jwk.expect("the JWK is printed")["kid"], "orders-enc");

    let jwk_out = dir.join("x.jwk");
    let stdout = ok(&[
        "keygen",
        "--alg",
        "ECDH-ES",
        "--curve",
        "X25519",
        "--out",
        path_str(&dir.join("x.pem")),
        "--public-out",
        path_str(&jwk_out),
    ]);
    let jwk: Value = serde_json::from_slice(&std::fs::read(&jwk_out).unwrap()).unwrap();
    assert_eq!(jwk["kty"], "OKP");
    assert_eq!(jwk["crv"], "X25519");
    assert_eq!(jwk["kid"], "x");
    assert_eq!(jwk["use"], "enc");
    let (printed_jwk, pem) = printed_public_key(&stdout);
    assert_eq!(printed_jwk, None, "the JWK went to the file: {stdout}");
    assert!(pem.is_some(), "{stdout}");
}

#[test]
fn keygen_refuses_to_overwrite_any_file() {
    let dir = TempDir::new("keygen-overwrite");
    let existing = dir.join("taken.pem");
    std::fs::write(&existing, "precious").unwrap();
    for alg in ["ECDH-ES+A256KW", "RSA-OAEP-256", "A256KW", "dir", "ES256"] {
        let (code, stdout, stderr) = run(&["keygen", "--alg", alg, "--out", path_str(&existing)]);
        assert_eq!(code, Some(1), "{alg}: {stdout}");
        assert!(stderr.contains("must not exist yet"), "{alg}: {stderr}");
        assert!(stdout.is_empty(), "{alg}: {stdout}");
        assert_eq!(std::fs::read_to_string(&existing).unwrap(), "precious");
    }

    // An existing --public-out is refused before the private key is written.
    let fresh = dir.join("fresh.pem");
    let (code, _, stderr) = run(&[
        "keygen",
        "--alg",
        "ECDH-ES",
        "--out",
        path_str(&fresh),
        "--public-out",
        path_str(&existing),
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("must not exist yet"), "{stderr}");
    assert!(!fresh.exists(), "nothing is left behind");
    assert_eq!(std::fs::read_to_string(&existing).unwrap(), "precious");
}

#[test]
fn keygen_refuses_options_that_do_not_fit_the_algorithm() {
    let dir = TempDir::new("keygen-options");
    let out = dir.join("k.pem");
    let out = path_str(&out);
    let cases: [(&[&str], &str); 8] = [
        (&["--alg", "ECDH-ES"], "give --out FILE"),
        (
            &["--alg", "RSA-OAEP-256", "--curve", "P-256", "--out", out],
            "--curve is for ECDH-ES",
        ),
        (
            &["--alg", "ECDH-ES", "--curve", "P-521", "--out", out],
            "not a supported curve",
        ),
        (&["--alg", "A256KW", "--enc", "A256GCM"], "--enc is for dir"),
        (
            &["--alg", "dir", "--enc", "A192GCM"],
            "not a supported content encryption",
        ),
        (&["--alg", "dir", "--public-out", out], "no public half"),
        (
            &["--alg", "ES256", "--curve", "P-256", "--out", out],
            "--curve is for the encryption algorithms",
        ),
        (
            &["--alg", "RSA1_5", "--out", out],
            "not a supported algorithm",
        ),
    ];
    for (args, wanted) in cases {
        let (code, _, stderr) = run(&[&["keygen"], args].concat());
        assert_eq!(code, Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(wanted), "{args:?}: {stderr}");
    }
    assert!(!dir.join("k.pem").exists());
}

/// A token for `sub` encrypted with `warden token --encrypt-to kid`.
fn encrypted_token(config: &ConfigFile, kid: &str, sub: &str) -> String {
    ok(&[
        "token",
        "--config",
        config.path_str(),
        "--sub",
        sub,
        "--scope",
        "orders:read",
        "--encrypt-to",
        kid,
    ])
    .trim()
    .to_owned()
}

/// `warden verify` of `token` with the signing key and `--decrypt-key`.
fn verify_decrypting(dir: &TempDir, token: &str, key: &Path, alg: &str) -> (Option<i32>, String) {
    let sign = dir.join("sign.pem");
    let (code, stdout, stderr) = run(&[
        "verify",
        "--key",
        path_str(&sign),
        "--alg",
        "ES256",
        "--decrypt-key",
        path_str(key),
        "--decrypt-alg",
        alg,
        token,
    ]);
    assert!(
        !stderr.contains("warden verify:"),
        "the key is usable: {stderr}"
    );
    (code, stdout)
}

#[test]
fn token_encrypt_to_then_verify_decrypt_key_round_trips_for_every_algorithm() {
    let (dir, _) = signing_dir("round-trip");
    let mut entries = String::new();
    // The gateway's own decryption keys, and an upstream's public key.
    let mut cases: Vec<(String, String, PathBuf, &str)> = Vec::new();
    for (alg, curve, name) in KEY_PAIRS {
        let (out, _) = keygen_pair(&dir, alg, curve, name);
        entries.push_str(&entry(name, alg, "private_key_file", &out));
        cases.push((name.to_owned(), alg.to_owned(), out, "A256GCM"));
    }
    let upstream_private = dir.join("upstream.pem");
    let upstream_public = dir.join("upstream.pub.pem");
    ok(&[
        "keygen",
        "--alg",
        "RSA-OAEP-256",
        "--out",
        path_str(&upstream_private),
        "--public-out",
        path_str(&upstream_public),
    ]);
    entries.push_str(&entry(
        "upstream",
        "RSA-OAEP-256",
        "public_key_file",
        &upstream_public,
    ));
    cases.push((
        "upstream".into(),
        "RSA-OAEP-256".into(),
        upstream_private,
        "A256GCM",
    ));
    // Shared secrets: the token is encrypted with the secret itself, with
    // A256GCM unless a dir secret has another length.
    for (alg, enc, name, expected_enc) in [
        ("A256KW", None, "kw", "A256GCM"),
        ("dir", None, "dir32", "A256GCM"),
        ("dir", Some("A128GCM"), "dir16", "A128GCM"),
        ("dir", Some("A256CBC-HS512"), "dir64", "A256CBC-HS512"),
    ] {
        let file = dir.join(&format!("{name}.secret"));
        let mut args = vec!["keygen", "--alg", alg, "--out", path_str(&file)];
        if let Some(enc) = enc {
            args.extend(["--enc", enc]);
        }
        ok(&args);
        entries.push_str(&entry(name, alg, "secret_file", &file));
        cases.push((name.into(), alg.into(), file, expected_enc));
    }
    let config = config_with(&dir, &entries, "");

    for (kid, alg, key_file, enc) in &cases {
        let token = encrypted_token(&config, kid, "alice");
        let header = jwe_header(&token);
        assert_eq!(header["alg"], alg.as_str(), "{header}");
        assert_eq!(header["enc"], *enc, "{header}");
        assert_eq!(header["kid"], kid.as_str(), "{header}");
        assert_eq!(header["cty"], "JWT", "a nested JWT: {header}");

        let (code, stdout) = verify_decrypting(&dir, &token, key_file, alg);
        assert_eq!(code, Some(0), "{kid}: {stdout}");
        let jwe_at = stdout.find("jwe header:").expect("the JWE header is shown");
        let inner_at = stdout.find("\nheader:").expect("the inner header is shown");
        let payload_at = stdout.find("\npayload:").expect("the payload is shown");
        assert!(jwe_at < inner_at && inner_at < payload_at, "{stdout}");
        assert!(stdout.contains(&format!("\"kid\": \"{kid}\"")), "{stdout}");
        assert!(
            stdout.contains(&format!("decrypted: {alg}, {enc}")),
            "{stdout}"
        );
        assert!(stdout.contains("\"alg\": \"ES256\""), "{stdout}");
        assert!(stdout.contains("\"sub\": \"alice\""), "{stdout}");
        assert!(stdout.contains(&format!("\"iss\": \"{ISS}\"")), "{stdout}");
        assert!(
            stdout.contains("signature: valid (ES256, kid sign)"),
            "{stdout}"
        );
    }
}

#[test]
fn a_wrong_decryption_key_a_wrong_algorithm_and_a_tampered_token_exit_1_with_the_one_text() {
    let (dir, _) = signing_dir("wrong-key");
    let (right, _) = keygen_pair(&dir, "ECDH-ES+A256KW", None, "right");
    let (wrong, _) = keygen_pair(&dir, "ECDH-ES+A256KW", None, "wrong");
    let (rsa, _) = keygen_pair(&dir, "RSA-OAEP-256", None, "rsa");
    let (wrong_rsa, _) = keygen_pair(&dir, "RSA-OAEP-256", None, "wrong-rsa");
    let kw = dir.join("kw.secret");
    let wrong_kw = dir.join("wrong-kw.secret");
    ok(&["keygen", "--alg", "A256KW", "--out", path_str(&kw)]);
    ok(&["keygen", "--alg", "A256KW", "--out", path_str(&wrong_kw)]);
    let entries = [
        entry("right", "ECDH-ES+A256KW", "private_key_file", &right),
        entry("rsa", "RSA-OAEP-256", "private_key_file", &rsa),
        entry("kw", "A256KW", "secret_file", &kw),
    ]
    .concat();
    let config = config_with(&dir, &entries, "");
    let ecdh_token = encrypted_token(&config, "right", "bob");
    let rsa_token = encrypted_token(&config, "rsa", "bob");
    let kw_token = encrypted_token(&config, "kw", "bob");
    let (code, _) = verify_decrypting(&dir, &ecdh_token, &right, "ECDH-ES+A256KW");
    assert_eq!(code, Some(0), "the right key decrypts");

    let mut tampered: Vec<String> = rsa_token.split('.').map(str::to_owned).collect();
    let mut tag = b64url(&tampered[4]);
    tag[0] ^= 1;
    tampered[4] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag);
    let tampered = tampered.join(".");

    let failures = [
        (&ecdh_token, &wrong, "ECDH-ES+A256KW"),
        (&ecdh_token, &right, "ECDH-ES+A128KW"),
        (&ecdh_token, &right, "ECDH-ES"),
        (&rsa_token, &wrong_rsa, "RSA-OAEP-256"),
        (&tampered, &rsa, "RSA-OAEP-256"),
        (&kw_token, &wrong_kw, "A256KW"),
    ];
    let mut verdicts = Vec::new();
    for (token, key, alg) in failures {
        let (code, stdout) = verify_decrypting(&dir, token, key, alg);
        assert_eq!(code, Some(1), "{alg}: {stdout}");
        assert!(stdout.starts_with("jwe header:"), "{stdout}");
        let verdict: Vec<&str> = stdout.lines().filter(|l| !l.starts_with(' ')).collect();
        assert_eq!(
            verdict.last().copied(),
            Some(format!("invalid: {DECRYPT_ERROR_DESCRIPTION}").as_str()),
            "{alg}: {stdout}"
        );
        assert!(
            !stdout.contains("payload"),
            "nothing decrypted is shown: {stdout}"
        );
        assert!(!stdout.contains("jwe_"), "no cause is shown: {stdout}");
        verdicts.push(verdict.last().copied().unwrap_or_default().to_owned());
    }
    verdicts.dedup();
    assert_eq!(verdicts.len(), 1, "one text for every cause: {verdicts:?}");
}

#[test]
fn an_encrypted_token_without_a_decryption_key_and_encrypted_bare_claims_are_invalid() {
    let (dir, sign) = signing_dir("no-key");
    let (enc, _) = keygen_pair(&dir, "ECDH-ES+A256KW", None, "enc");
    let config = config_with(
        &dir,
        &entry("enc", "ECDH-ES+A256KW", "private_key_file", &enc),
        "",
    );
    let token = encrypted_token(&config, "enc", "carol");
    let (code, stdout, _) = run(&["verify", "--key", path_str(&sign), "--alg", "ES256", &token]);
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        stdout.contains("give --decrypt-key FILE and --decrypt-alg ALG"),
        "{stdout}"
    );

    // Claims encrypted but never signed: anyone with the public key can
    // make those, so they are refused as the gateway refuses them.
    warden::crypto::install_providers();
    let private = std::fs::read(&enc).unwrap();
    let key = warden::auth::jwe::DecryptionKey::from_private_pem(
        "enc",
        warden::auth::jwe::KeyAlg::EcdhEsA256Kw,
        &private,
    )
    .unwrap();
    let claims = format!(r#"{{"iss":"{ISS}","aud":"warden","sub":"mallory","exp":4102444800}}"#);
    for cty in [None, Some("JWT")] {
        let bare = warden::auth::jwe::encrypt_with(
            &key.encryption_key().unwrap(),
            warden::auth::jwe::Enc::A256Gcm,
            cty,
            claims.as_bytes(),
        )
        .unwrap();
        let (code, stdout) = verify_decrypting(&dir, &bare, &enc, "ECDH-ES+A256KW");
        assert_eq!(code, Some(1), "{stdout}");
        assert!(stdout.contains("\ninvalid: token not signed\n"), "{stdout}");
        assert!(!stdout.contains("signature: valid"), "{stdout}");
    }

    // A JWS given with --decrypt-key is verified as it is.
    let jws = ok(&["token", "--config", config.path_str(), "--sub", "carol"]);
    let (code, stdout) = verify_decrypting(&dir, jws.trim(), &enc, "ECDH-ES+A256KW");
    assert_eq!(code, Some(0), "{stdout}");
    assert!(!stdout.contains("jwe header"), "{stdout}");
}

#[test]
fn token_encrypt_to_refuses_signing_and_unknown_kids() {
    let (dir, _) = signing_dir("bad-kid");
    let config = config_with(&dir, "", "");
    for (kid, wanted) in [
        ("sign", "is a signing key: it never encrypts"),
        ("nobody", "no [[keys]] entry has kid \"nobody\""),
    ] {
        let (code, stdout, stderr) = run(&[
            "token",
            "--config",
            config.path_str(),
            "--sub",
            "dave",
            "--encrypt-to",
            kid,
        ]);
        assert_eq!(code, Some(1), "{kid}: {stderr}");
        assert!(stdout.is_empty(), "no token is printed: {stdout}");
        assert!(stderr.contains(wanted), "{kid}: {stderr}");
    }
}

#[tokio::test]
async fn the_gateway_accepts_a_token_made_with_encrypt_to_one_of_its_keys() {
    let (dir, _) = signing_dir("gateway-accepts");
    let (enc, _) = keygen_pair(&dir, "ECDH-ES+A256KW", Some("X25519"), "enc");
    let routes = r#"
[[routes]]
name = "orders"
path_prefix = "/orders"
upstream = "builtin:echo"
scopes = ["orders:read"]
"#;
    let entries = entry("enc", "ECDH-ES+A256KW", "private_key_file", &enc);
    let toml = config(
        "",
        &format!(
            r#"
[[keys]]
kid = "sign"
alg = "ES256"
private_key_file = "{sign}"
{entries}
[issuer]
iss = "{ISS}"
aud = ["warden"]
signing_kid = "sign"
{routes}"#,
            sign = path_str(&dir.join("sign.pem")),
        ),
    );
    let file = ConfigFile::new(&toml);
    let token = encrypted_token(&file, "enc", "erin");
    let (writer, audit) = audit_capture(64);
    let options = warden::StartOptions {
        audit_writer: Some(writer),
        ..warden::StartOptions::default()
    };
    let gateway = spawn_gateway_with(&toml, options).await;
    let url = gateway.url("/orders/1");
    let reply = get_with(&url, &[("authorization", &format!("Bearer {token}"))]).await;
    assert_eq!(
        reply.status,
        200,
        "{:?}",
        String::from_utf8_lossy(&reply.body)
    );
    let used = audit
        .wait_for(|e| e["event"] == "token_use" && e["sub"] == "erin")
        .await;
    assert_eq!(used["decision"], "allow", "{used}");
    assert_eq!(used["jwe"], true, "{used}");
    assert_eq!(used["jwe_kid"], "enc", "{used}");
    gateway.shutdown().await;
}
