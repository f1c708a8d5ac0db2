//! `docs/configuration.md` names every key the parser accepts, and no other.
//!
//! The accepted keys come from the serde structs themselves
//! (`warden::config::reference::accepted_keys`, which probes each section's
//! struct), so a key added to the parser and not to the reference fails
//! here. In the reference, a key is documented by a row of a key table (a
//! table whose header is `| key | type | … |`): a section's own keys in
//! its `## [section]` part, keys of nested tables (`server.tls`,
//! `routes[].rate_limit`, `login.api_keys[]`, …) in any key table.

use std::collections::{BTreeMap, BTreeSet};

use warden::config::reference::{accepted_keys, known_sections, probed_sections};

/// The rows of key tables: (section of the `##` part it is in, key).
fn documented(doc: &str) -> Vec<(Option<String>, String)> {
    let mut rows = Vec::new();
    let mut region: Option<String> = None;
    let mut in_table = false;
    for line in doc.lines() {
        if let Some(heading) = line.strip_prefix("## ") {
            // "## `[server]`", "## `[[routes]]`"; other parts are no section.
            let name = heading.trim().trim_matches('`');
            region = (name.starts_with('[') && name.ends_with(']'))
                .then(|| name.trim_matches(|c| c == '[' || c == ']').to_owned());
            in_table = false;
            continue;
        }
        if line.starts_with("| key | type |") && !line.contains("holds") {
            in_table = true;
            continue;
        }
        if !line.starts_with('|') {
            in_table = false;
            continue;
        }
        if !in_table || line.starts_with("|---") {
            continue;
        }
        let first = line.split('|').nth(1).unwrap_or_default();
        for (i, part) in first.split('`').enumerate() {
            if i % 2 == 1 && !part.is_empty() {
                rows.push((region.clone(), part.to_owned()));
            }
        }
    }
    rows
}

/// `routes[].rate_limit.burst` → (`routes`, [`rate_limit`, `burst`]).
fn split_key(key: &str) -> (&str, Vec<&str>) {
    let mut segments = key.split('.').map(|s| s.trim_end_matches("[]"));
    let section = segments.next().unwrap_or_default();
    (section, segments.collect())
}

/// What is wrong between `accepted` keys and the reference `doc`.
fn mismatches(accepted: &BTreeSet<String>, doc: &str) -> Vec<String> {
    let rows = documented(doc);
    let mut by_region: BTreeMap<Option<String>, BTreeSet<String>> = BTreeMap::new();
    for (region, key) in &rows {
        by_region
            .entry(region.clone())
            .or_default()
            .insert(key.clone());
    }
    let anywhere: BTreeSet<&String> = rows.iter().map(|(_, k)| k).collect();
    let mut direct: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut nested: BTreeSet<&str> = BTreeSet::new();
    let mut problems = Vec::new();
    for key in accepted {
        let (section, path) = split_key(key);
        let Some(leaf) = path.last().copied() else {
            continue;
        };
        if path.len() == 1 {
            direct.entry(section).or_default().insert(leaf);
            let here = by_region
                .get(&Some(section.to_owned()))
                .is_some_and(|keys| keys.contains(leaf));
            if !here {
                problems.push(format!(
                    "`{key}` is accepted but not documented in the [{section}] part"
                ));
            }
        } else {
            nested.insert(leaf);
            if !anywhere.contains(&leaf.to_owned()) {
                problems.push(format!("`{key}` is accepted but not documented"));
            }
        }
    }
    for (region, key) in &rows {
        let ok = match region {
            Some(section) => {
                direct
                    .get(section.as_str())
                    .is_some_and(|keys| keys.contains(key.as_str()))
                    || nested.contains(key.as_str())
            }
            None => {
                nested.contains(key.as_str()) || direct.values().any(|k| k.contains(key.as_str()))
            }
        };
        if !ok {
            problems.push(format!(
                "`{key}` is documented{} but the parser accepts no such key",
                region
                    .as_ref()
                    .map(|r| format!(" in the [{r}] part"))
                    .unwrap_or_default()
            ));
        }
    }
    problems
}

fn reference() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/configuration.md");
    std::fs::read_to_string(path).expect("read docs/configuration.md")
}

#[test]
fn every_section_the_parser_knows_is_probed_for_its_keys() {
    let mut known = known_sections();
    let mut probed = probed_sections();
    known.sort_unstable();
    probed.sort_unstable();
    assert_eq!(
        known, probed,
        "a section was added to the parser: add its struct to SECTION_PROBES in src/config/reference.rs"
    );
    let keys = accepted_keys();
    for section in probed {
        assert!(
            keys.iter().any(|k| split_key(k).0 == section),
            "no key probed for [{section}]"
        );
    }
}

#[test]
fn the_configuration_reference_names_every_accepted_key_and_no_other() {
    let accepted = accepted_keys();
    assert!(accepted.len() > 80, "{accepted:?}");
    let problems = mismatches(&accepted, &reference());
    assert!(
        problems.is_empty(),
        "docs/configuration.md and the parser disagree:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_check_fails_on_an_undocumented_key_and_on_a_documented_key_nobody_parses() {
    let doc = reference();
    let mut more = accepted_keys();
    more.insert("server.colour".into());
    more.insert("routes[].rate_limit.jitter".into());
    let problems = mismatches(&more, &doc);
    assert!(
        problems.iter().any(|p| p.contains("`server.colour`")),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.contains("`routes[].rate_limit.jitter`")),
        "{problems:?}"
    );
    // A key documented in the wrong part: `leeway` under [server].
    let moved = doc.replacen(
        "| `listen` |",
        "| `leeway` | duration | x | x |\n| `listen` |",
        1,
    );
    let problems = mismatches(&accepted_keys(), &moved);
    assert!(
        problems
            .iter()
            .any(|p| p.contains("`leeway` is documented in the [server] part")),
        "{problems:?}"
    );
}
