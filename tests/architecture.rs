//! Architecture tests: they keep the module layout of `src/` honest.
//!
//! Modules that import each other in a circle cannot be understood, tested or
//! split on their own, so imports between top-level modules (and between the
//! children of every folder module) must point one way. Files over 600 lines
//! are a sign that a module does too much. The checks read the source text
//! with a deliberately small scanner (std only, no `syn`); it is crude, so its
//! own unit tests at the bottom make sure it cannot silently parse nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Longest a file may be, not counting its `#[cfg(test)] mod tests` at the bottom.
const MAX_LINES: usize = 600;

/// A module path below the crate root, e.g. `["auth", "jwt"]`; empty is the root.
type ModPath = Vec<String>;

/// One file under `src/`, cleaned for scanning.
struct SourceFile {
    name: String, // e.g. `src/auth/jwt.rs`, for messages
    module: ModPath,
    lines: usize, // lines before the test module
    code: String, // without comments, string literals and the test module
}

/// A `crate::`/`super::` path as written (use-groups expanded), and the
/// absolute path it names.
struct FoundPath {
    line: usize,
    written: String,
    absolute: ModPath,
}

/// An import from one child of `folder` to another, and where it comes from.
struct Edge {
    folder: ModPath,
    from: String,
    to: String,
    file: String,
    found: FoundPath,
}

fn load_sources() -> Vec<SourceFile> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut paths = Vec::new();
    collect_rs_files(&root.join("src"), &mut paths);
    paths.sort();
    let mut files = Vec::new();
    for path in paths {
        let rel = path
            .strip_prefix(root)
            .expect("file is under the manifest dir");
        let name = rel.to_string_lossy().replace('\\', "/");
        let raw = fs::read_to_string(&path).expect("source file is readable UTF-8");
        let (code, lines) = cut_test_module(&strip_comments_and_strings(&raw));
        let module = module_path(&name);
        files.push(SourceFile {
            name,
            module,
            lines,
            code,
        });
    }
    assert!(files.len() > 5, "found only {} files in src/", files.len());
    files
}

fn collect_rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("src/ directory is readable") {
        let path = entry.expect("directory entry is readable").path();
        if path.is_dir() {
            collect_rs_files(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

/// `src/auth/jwt.rs` -> auth::jwt, `src/auth/mod.rs` -> auth, `src/lib.rs` -> root.
fn module_path(name: &str) -> ModPath {
    let parts = name.trim_end_matches(".rs").split('/').skip(1); // skip "src"
    let mut parts: ModPath = parts.map(String::from).collect();
    if parts.last().is_some_and(|p| p == "mod") || parts == ["lib"] || parts == ["main"] {
        parts.pop();
    }
    parts
}

/// Index of `pat` in `b` at or after `from`, or the end of `b`.
fn find(b: &[u8], from: usize, pat: &[u8]) -> usize {
    let from = from.min(b.len());
    let at = b[from..].windows(pat.len()).position(|w| w == pat);
    at.map_or(b.len(), |p| from + p)
}

/// Blanks out comments (nested block comments too) and string and char
/// literals, keeping every newline so line numbers still match. Works on
/// bytes: all delimiters are ASCII, and blanking whole literals keeps UTF-8.
fn strip_comments_and_strings(src: &str) -> String {
    let b = src.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let (mut out, mut i) = (Vec::with_capacity(b.len()), 0);
    while i < b.len() {
        let rest = &b[i..];
        // `r"` starts a raw string only at a word start (or as `br"`).
        let raw_start =
            i == 0 || !ident(b[i - 1]) || (b[i - 1] == b'b' && (i < 2 || !ident(b[i - 2])));
        let hashes = rest.iter().skip(1).take_while(|&&c| c == b'#').count();
        let end = if rest.starts_with(b"//") {
            find(b, i, b"\n")
        } else if rest.starts_with(b"/*") {
            let (mut depth, mut j) = (0, i);
            while j == i || (depth > 0 && j < b.len()) {
                let (open, close) = (b[j..].starts_with(b"/*"), b[j..].starts_with(b"*/"));
                depth += i32::from(open) - i32::from(close);
                j += if open || close { 2 } else { 1 };
            }
            j
        } else if rest[0] == b'r' && raw_start && rest.get(1 + hashes) == Some(&b'"') {
            // Raw string r#"..."#: ends at a quote followed by as many hashes.
            let close = [b"\"".as_slice(), &b"#".repeat(hashes)].concat();
            find(b, i + 2 + hashes, &close) + close.len()
        } else if rest[0] == b'"' {
            let mut j = i + 1;
            while j < b.len() && b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            j + 1
        } else if rest[0] == b'\'' && (rest.get(1) == Some(&b'\\') || rest.get(2) == Some(&b'\'')) {
            // Char literal ('x', '\'', '\u{..}'); a lone quote is a lifetime.
            find(b, i + if rest[1] == b'\\' { 3 } else { 2 }, b"'") + 1
        } else {
            out.push(rest[0]);
            i += 1;
            continue;
        };
        let end = end.min(b.len());
        out.extend(b[i..end].iter().map(|&c| if c == b'\n' { c } else { b' ' }));
        i = end;
    }
    String::from_utf8(out).expect("blanking whole literals keeps UTF-8 valid")
}

/// Cuts everything from a `#[cfg(test)]` line followed (after blank lines or
/// other attributes) by `mod tests`. Returns the code and its line count.
fn cut_test_module(code: &str) -> (String, usize) {
    let lines: Vec<&str> = code.lines().collect();
    for start in (0..lines.len()).filter(|&n| lines[n].trim() == "#[cfg(test)]") {
        let mut rest = lines[start + 1..].iter().map(|l| l.trim());
        let item = rest.find(|l| !l.is_empty() && !l.starts_with("#["));
        if item.is_some_and(|l| l.starts_with("mod tests")) {
            return (lines[..start].join("\n"), start);
        }
    }
    (code.to_string(), lines.len())
}

/// Every `crate::` and `super::` path in the cleaned code of `module`, with
/// use-groups expanded and `super` resolved to an absolute path.
fn scan_paths(code: &str, module: &[String]) -> Vec<FoundPath> {
    let b = code.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while i < b.len() {
        // Not `my_crate::` or a macro's `$crate::`.
        let word_start = i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b"_$".contains(&b[i - 1]));
        let (mut j, mut up) = (i, 0);
        while word_start && b[j..].starts_with(b"super::") {
            (j, up) = (j + 7, up + 1);
        }
        let (base, prefix) = if word_start && b[i..].starts_with(b"crate::") {
            j += 7;
            (Some(ModPath::new()), "crate::".to_string())
        } else {
            let keep = module.len().checked_sub(up).filter(|_| up > 0);
            (keep.map(|n| module[..n].to_vec()), "super::".repeat(up))
        };
        let Some(base) = base else {
            i = j.max(i + 1); // also skips a super::super:: chain above the root
            continue;
        };
        let line = 1 + b[..i].iter().filter(|&&c| c == b'\n').count();
        for tail in parse_use_tree(b, &mut j) {
            let written = format!("{prefix}{}", tail.join("::"));
            let absolute = [base.clone(), tail].concat();
            found.push(FoundPath {
                line,
                written,
                absolute,
            });
        }
        i = j.max(i + 1);
    }
    found
}

/// Parses `a::b::C` or `a::{b::C, d::{E, F as G}}` at `*i` into the segments
/// of each leaf. Stops at anything else (`(`, `<`, `;`, `*`).
fn parse_use_tree(b: &[u8], i: &mut usize) -> Vec<ModPath> {
    let skip_while = |i: &mut usize, keep: &dyn Fn(u8) -> bool| {
        while b.get(*i).is_some_and(|&c| keep(c)) {
            *i += 1;
        }
    };
    skip_while(i, &|c| c.is_ascii_whitespace());
    if b.get(*i) == Some(&b'{') {
        *i += 1;
        let mut leaves = Vec::new();
        loop {
            skip_while(i, &|c| c.is_ascii_whitespace());
            if b.get(*i) == Some(&b'}') {
                *i += 1;
                return leaves;
            }
            leaves.extend(parse_use_tree(b, i));
            skip_while(i, &|c| !b",{}".contains(&c)); // a rename (`as X`)
            match b.get(*i) {
                Some(b',') => *i += 1,
                Some(b'}') => {}
                _ => return leaves, // malformed; give up on this group
            }
        }
    }
    let start = *i;
    skip_while(i, &|c| c.is_ascii_alphanumeric() || c == b'_');
    let ident = String::from_utf8_lossy(&b[start..*i]).into_owned();
    if ident.is_empty() {
        return vec![Vec::new()]; // `*`, `<T>` or the end of the path
    }
    if !b[*i..].starts_with(b"::") {
        return vec![vec![ident]];
    }
    *i += 2;
    let mut leaves = parse_use_tree(b, i);
    leaves.iter_mut().for_each(|l| l.insert(0, ident.clone()));
    leaves
}

/// All module edges of the crate. A path names the longest prefix of it that
/// is a module (a file or folder under src/), so `crate::Config` names the
/// root. The edge belongs to the deepest common ancestor of the two modules
/// (the root for top-level edges) and runs between two of its children; a
/// path to or from that ancestor itself (its mod.rs) is no edge.
fn module_edges(files: &[SourceFile]) -> Vec<Edge> {
    let mut modules: BTreeSet<&[String]> = BTreeSet::new(); // files and their folders
    for f in files {
        modules.extend((0..=f.module.len()).map(|n| &f.module[..n]));
    }
    let roots = ["src/lib.rs", "src/main.rs"];
    let mut edges = Vec::new();
    for file in files.iter().filter(|f| !roots.contains(&f.name.as_str())) {
        for found in scan_paths(&file.code, &file.module) {
            let mut target = found.absolute.as_slice();
            while !modules.contains(target) {
                target = &target[..target.len() - 1]; // the root is always a module
            }
            let source = &file.module;
            let common = source
                .iter()
                .zip(target)
                .take_while(|(a, b)| a == b)
                .count();
            if common < source.len() && common < target.len() {
                let (from, to) = (source[common].clone(), target[common].clone());
                let (folder, file) = (target[..common].to_vec(), file.name.clone());
                edges.push(Edge {
                    folder,
                    from,
                    to,
                    file,
                    found,
                });
            }
        }
    }
    edges
}

/// Strongly connected components with more than one module, found as sets of
/// mutually reachable nodes (graphs of a few dozen nodes: simple beats clever).
fn cycles<'e>(edges: &[&'e Edge]) -> BTreeSet<BTreeSet<&'e str>> {
    let mut next: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for e in edges {
        next.entry(&e.from).or_default().insert(&e.to);
        next.entry(&e.to).or_default();
    }
    let reach = |from: &'e str| {
        let (mut seen, mut todo) = (BTreeSet::new(), vec![from]);
        while let Some(n) = todo.pop() {
            todo.extend(next[n].iter().filter(|m| seen.insert(**m)));
        }
        seen
    };
    let reachable: BTreeMap<&str, BTreeSet<&str>> = next.keys().map(|n| (*n, reach(n))).collect();
    let component = |(n, seen): (&&str, &BTreeSet<&'e str>)| -> BTreeSet<&'e str> {
        seen.iter()
            .copied()
            .filter(|m| reachable[m].contains(n))
            .collect()
    };
    reachable
        .iter()
        .map(component)
        .filter(|c| c.len() > 1)
        .collect()
}

/// One line per cycle among the children of a folder, then one line per
/// edge inside it, file and path that creates it.
fn describe_cycles<'e>(edges: impl Iterator<Item = &'e Edge>) -> Vec<String> {
    let mut by_folder: BTreeMap<&ModPath, Vec<&Edge>> = BTreeMap::new();
    edges.for_each(|e| by_folder.entry(&e.folder).or_default().push(e));
    let mut report = Vec::new();
    for (folder, edges) in by_folder {
        let folder: String = folder.iter().map(|s| format!("::{s}")).collect();
        for cycle in cycles(&edges) {
            let names: Vec<&str> = cycle.iter().copied().collect();
            report.push(format!(
                "cycle in crate{folder} between {}:",
                names.join(", ")
            ));
            // Each edge is listed once per file and path, with all its lines.
            let mut sites: BTreeMap<String, Vec<String>> = BTreeMap::new();
            let inside = |e: &&&Edge| cycle.contains(&*e.from) && cycle.contains(&*e.to);
            for e in edges.iter().filter(inside) {
                let (from, to, file, path) = (&e.from, &e.to, &e.file, &e.found.written);
                let site = sites.entry(format!("  {from} -> {to}: {file} uses {path}"));
                site.or_default().push(e.found.line.to_string());
            }
            for (site, lines) in sites {
                report.push(format!("{site} (line {})", lines.join(", ")));
            }
        }
    }
    report
}

/// Fails with `problem` and the report, one finding a line, unless it is empty.
#[track_caller]
fn assert_no_findings(problem: &str, report: &[String]) {
    assert!(report.is_empty(), "{problem}:\n{}", report.join("\n"));
}

const MOVE_IT: &str = "move what they share so imports point one way";

#[test]
fn top_level_modules_import_each_other_one_way() {
    let edges = module_edges(&load_sources());
    let top: Vec<&Edge> = edges.iter().filter(|e| e.folder.is_empty()).collect();
    let n = top.len();
    assert!(
        n >= 10,
        "found only {n} imports between top-level modules; is the scanner broken?"
    );
    let problem = format!("top-level modules import each other in a circle; {MOVE_IT}");
    assert_no_findings(&problem, &describe_cycles(top.into_iter()));
}

#[test]
fn sibling_modules_inside_a_folder_import_each_other_one_way() {
    let edges = module_edges(&load_sources());
    let problem = format!("modules inside a folder import each other in a circle; {MOVE_IT}");
    assert_no_findings(
        &problem,
        &describe_cycles(edges.iter().filter(|e| !e.folder.is_empty())),
    );
}

#[test]
fn no_source_file_is_over_600_lines() {
    let mut files = load_sources();
    files.sort_by_key(|f| std::cmp::Reverse(f.lines));
    let long = files.iter().filter(|f| f.lines > MAX_LINES);
    let report: Vec<String> = long
        .map(|f| format!("  {}: {} lines", f.name, f.lines))
        .collect();
    let problem =
        format!("files over {MAX_LINES} lines (not counting the test module); split them");
    assert_no_findings(&problem, &report);
}

// The scanner's own tests: if it parsed nothing, the checks above would pass.

fn scan(code: &str, module: &[&str]) -> Vec<String> {
    let module: ModPath = module.iter().map(|s| s.to_string()).collect();
    let (code, _) = cut_test_module(&strip_comments_and_strings(code));
    let found = scan_paths(&code, &module).into_iter();
    found.map(|p| p.absolute.join("::")).collect()
}

#[test]
fn scanner_expands_grouped_uses_and_reads_inline_paths() {
    let code = "use crate::{a::B, c::{D, e::F as G}};\nfn f() { crate::error::E::new(1); }";
    let found = scan(code, &["x"]);
    assert_eq!(found, ["a::B", "c::D", "c::e::F", "error::E::new"]);
}

#[test]
fn scanner_resolves_super_paths_relative_to_the_module() {
    let code = "use super::jwt::Key;\nuse super::super::config::{self, C};";
    let found = scan(code, &["auth", "login", "identity"]);
    let expected = [
        "auth::login::jwt::Key",
        "auth::config::self",
        "auth::config::C",
    ];
    assert_eq!(found, expected);
    let found = scan("use super::clock;", &["auth"]);
    assert_eq!(
        found,
        ["clock"],
        "super of a mod.rs module is the module's parent"
    );
}

#[test]
fn scanner_ignores_comments_strings_and_the_test_module() {
    let code = "// use crate::a::B;\n/* crate::b /* nested */ crate::c */\n/// see crate::d\n\
        let s = \"crate::\\\"e\"; let r = r#\"crate::\"f\"#; let q = '\"';\n\
        fn g<'a>(c: char) { c == '\\''; crate::real::X }\n\
        #[cfg(test)]\n#[allow(unused)]\nmod tests {\n    use crate::tested::Y;\n}\n";
    assert_eq!(scan(code, &["x"]), ["real::X"]);
    let lines = cut_test_module(&strip_comments_and_strings(code)).1;
    assert_eq!(lines, 5, "lines before the test module");
}
