//! Config and CLI papercuts (issue 14): suggestions for mistyped keys and
//! sections, type names people read, `warden check` refusing what `warden
//! run` would refuse, the warning when a reload replaces a generated key,
//! the warning when `warden token --ttl` is capped, and `/metrics` without
//! upstream series where no upstream can be called.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common::*;
use http::StatusCode;
use jsonwebtoken::Algorithm;

fn problems(toml: &str) -> String {
    match warden::Config::from_toml(toml, "gw.toml") {
        Ok(_) => panic!("the config is valid:\n{toml}"),
        Err(err) => err.to_string(),
    }
}

#[test]
fn a_mistyped_key_or_section_gets_a_did_you_mean() {
    let text = problems(&config(
        "request_timout = \"5s\"",
        "[log]\nfromat = \"json\"\n\n[credentals]\nstore = \"x\"\n",
    ));
    assert!(
        text.contains("server: unknown field `request_timout`"),
        "{text}"
    );
    assert!(
        text.contains("fix: did you mean `request_timeout`?"),
        "{text}"
    );
    assert!(text.contains("fix: did you mean `format`?"), "{text}");
    assert!(text.contains("unknown section `credentals`"), "{text}");
    assert!(text.contains("fix: did you mean `credentials`?"), "{text}");
    // Nothing close: no guess.
    let text = problems(&config("", "[log]\ncolour = \"red\"\n"));
    assert!(!text.contains("did you mean"), "{text}");
}

#[test]
fn type_errors_name_toml_types_not_rust_ones() {
    let text = problems(&config(
        "max_body_bytes = \"big\"",
        "[validation]\nmax_token_bytes = -3\n",
    ));
    assert!(text.contains("expected a whole number"), "{text}");
    for rust in ["u64", "u32", "usize", "i64", "sequence", "struct "] {
        assert!(!text.contains(rust), "{rust} in {text}");
    }
    let text = problems(&config("", "[[routes]]\nname = 5\n"));
    assert!(text.contains("expected a string"), "{text}");
    let text = problems(&config("", "[routes]\nname = \"x\"\n"));
    assert!(!text.contains("sequence"), "{text}");
}

/// `warden check --config FILE` with `env` set: exit code and stderr.
fn check(toml: &str, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let file = ConfigFile::new(toml);
    let output = warden_command(&["check", "--config", file.path_str()])
        .envs(env.iter().copied())
        .output()
        .expect("run warden check");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn warden_check_fails_on_every_unset_variable_and_missing_file_the_way_run_does() {
    let dir = TempDir::new("refs");
    let var = format!("WARDEN_TEST_UNSET_{}", std::process::id());
    let redis_var = format!("WARDEN_TEST_REDIS_{}", std::process::id());
    let missing_ca = dir.join_str("missing-ca.pem");
    let toml = config(
        "",
        &format!(
            r#"[credentials]
store = "{store}"
master_key_env = "{var}"

[shared_state]
backend = "redis"
url_env = "{redis_var}"

[[routes]]
name = "billing"
path_prefix = "/billing"
upstream = "https://127.0.0.1:8443"
ca_file = "{missing_ca}"
auth = "none"
"#,
            store = dir.join_str("credentials.store"),
        ),
    );
    let (code, stderr) = check(&toml, &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("3 problems"), "{stderr}");
    let line = |key: &str| -> String {
        stderr
            .lines()
            .find(|l| l.contains(&format!(": {key}: ")))
            .unwrap_or_else(|| panic!("no problem at {key}: {stderr}"))
            .to_owned()
    };
    let master = line("credentials.master_key_env");
    assert!(
        master.contains(&format!("the environment variable {var} is not set")),
        "{master}"
    );
    assert!(
        master.contains(".toml:"),
        "the file, line and column: {master}"
    );
    let redis = line("shared_state.url_env");
    assert!(redis.contains(&redis_var), "{redis}");
    // A file validation reads anyway is reported once, by that reader.
    let ca = line("routes[0].ca_file");
    assert!(ca.contains("missing-ca.pem"), "{ca}");
    assert!(
        stderr.contains(&format!("fix: export {var} before starting warden")),
        "{stderr}"
    );

    // `run` refuses the same config, with the same problems, before binding.
    let file = ConfigFile::new(&toml);
    let run = warden_command(&["run", "--config", file.path_str()])
        .output()
        .expect("run warden run");
    assert_eq!(run.status.code(), Some(1));
    let run_stderr = String::from_utf8_lossy(&run.stderr);
    let (_, problem) = master.split_once(".toml:").unwrap();
    assert!(run_stderr.contains(problem), "{run_stderr}");

    // Set and present: check passes.
    std::fs::write(&missing_ca, "").unwrap();
    let ca_made = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    std::fs::write(&missing_ca, ca_made.cert.pem()).unwrap();
    let master_key = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let (code, stderr) = check(
        &toml,
        &[
            (var.as_str(), master_key),
            (redis_var.as_str(), "redis://127.0.0.1:1/0"),
        ],
    );
    assert_eq!(code, Some(0), "{stderr}");
}

#[tokio::test]
async fn a_reload_that_replaces_a_generated_signing_key_says_so_in_the_log() {
    let toml = config(
        "",
        "[log]\nformat = \"json\"\n\n[[keys]]\nkid = \"demo\"\nalg = \"ES256\"\ngenerate = true\n\n[issuer]\niss = \"http://warden.test\"\naud = [\"warden\"]\nsigning_kid = \"demo\"\n",
    );
    let mut warden = spawn_warden(&toml).await;
    let status = std::process::Command::new("kill")
        .args(["-HUP", &warden.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    let line = warden
        .next_line(|line| {
            line["level"] == "WARN"
                && line["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("reload replaced the generated key"))
        })
        .await;
    assert_eq!(line["kid"], "demo", "{line}");
    assert!(
        line["message"]
            .as_str()
            .unwrap()
            .contains("every token the previous one signed stops verifying"),
        "{line}"
    );
    warden.sigterm();
    warden.wait_exit().await;
}

#[test]
fn warden_token_warns_when_its_ttl_is_capped_by_max_ttl() {
    let key = TestKey::generate("k", Algorithm::ES256);
    let file = key.file();
    let toml = config(
        "",
        &format!(
            "{}\n[issuer]\niss = \"http://warden.test\"\naud = [\"warden\"]\nsigning_kid = \"k\"\nmax_ttl = \"1h\"\n",
            key.config_entry(&file)
        ),
    );
    let config_file = ConfigFile::new(&toml);
    let token = |ttl: &str| {
        warden_command(&[
            "token",
            "--config",
            config_file.path_str(),
            "--sub",
            "ops",
            "--ttl",
            ttl,
        ])
        .output()
        .expect("run warden token")
    };
    let capped = token("48h");
    assert!(capped.status.success());
    let stderr = String::from_utf8_lossy(&capped.stderr);
    assert!(
        stderr.contains("warning: --ttl 2days is longer than issuer.max_ttl; the token lives 1h"),
        "{stderr}"
    );
    let claims = token_claims(String::from_utf8_lossy(&capped.stdout).trim());
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        3600
    );
    let fine = token("30m");
    assert!(fine.status.success());
    assert!(
        !String::from_utf8_lossy(&fine.stderr).contains("warning"),
        "no warning within max_ttl"
    );
}

#[tokio::test]
async fn metrics_have_no_upstream_series_for_endpoints_and_routes_that_never_call_one() {
    let upstream = RecordingUpstream::start(Behaviour::ok()).await;
    let toml = config(
        "",
        &format!(
            "[[keys]]\nkid = \"k\"\nalg = \"ES256\"\ngenerate = true\n\n[issuer]\niss = \"http://warden.test\"\naud = [\"warden\"]\nsigning_kid = \"k\"\n\n[login]\npath = \"/auth\"\n{}{}",
            route("echo", "/echo", "builtin:echo", ""),
            route("orders", "/orders", &upstream.url(), ""),
        ),
    );
    let gateway = spawn_gateway(&toml).await;
    assert_eq!(get(&gateway.url("/echo/x")).await.status, StatusCode::OK);
    assert_eq!(get(&gateway.url("/orders/x")).await.status, StatusCode::OK);
    assert_eq!(
        get(&gateway.url("/.well-known/jwks.json")).await.status,
        StatusCode::OK
    );
    let text = scrape_until(
        gateway.admin,
        &["warden_upstream_duration_seconds_count{route=\"orders\"} 1"],
    )
    .await;
    let upstream_routes: std::collections::BTreeSet<&str> = text
        .lines()
        .filter(|l| l.starts_with("warden_upstream_duration_seconds"))
        .filter_map(|l| l.split("route=\"").nth(1))
        .filter_map(|rest| rest.split('"').next())
        .collect();
    assert_eq!(
        upstream_routes.into_iter().collect::<Vec<_>>(),
        ["orders"],
        "only the route with an upstream has upstream series"
    );
    // The request series of the endpoints and echo are still there.
    assert!(text.contains("warden_request_duration_seconds_count{route=\"warden-jwks\"} 1"));
    assert!(text.contains("warden_request_duration_seconds_count{route=\"echo\"} 1"));
}
