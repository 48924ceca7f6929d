//! Keeps the module map of `docs/ARCHITECTURE.md` true: reads `host/src` as text and
//! fails when a module imports one that comes after it in the documented order, or
//! when a policy module reaches into a layer it must not know.
//!
//! The order and the written-down exceptions are read from the document itself (the
//! fenced blocks after `<!-- module-order -->` and `<!-- order-exceptions -->`), so the
//! test and the doc cannot drift apart.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Modules that decide policy: they must stay free of HTTP, Wasm and the layers above.
const POLICY: &[&str] = &["zone", "balance", "health", "retry", "ratelimit"];
/// What a policy module may never name (crates and our own modules).
const POLICY_FORBIDDEN_CRATES: &[&str] = &["hyper", "hyper_util", "wasmtime", "wasmtime_wasi"];
const POLICY_FORBIDDEN_MODULES: &[&str] = &["proxy", "admin", "app", "control", "plugin", "snapshot", "store"];
/// Modules allowed to import every other one.
const TOP: &[&str] = &["app", "demo", "main", "lib"];

/// One broken rule, for the failure message.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Violation {
    file: String,
    line: usize,
    rule: String,
}

/// The rules: the order, and the imports allowed against it.
struct Rules {
    order: Vec<String>,
    exceptions: BTreeSet<(String, String)>,
}

impl Rules {
    fn from_doc(doc: &str) -> Rules {
        let order = fenced_after(doc, "<!-- module-order -->")
            .expect("docs/ARCHITECTURE.md has a module-order block")
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        let exceptions = fenced_after(doc, "<!-- order-exceptions -->")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let (from, rest) = l.split_once("->")?;
                let to = rest.split(':').next()?.trim();
                Some((from.trim().to_string(), to.to_string()))
            })
            .collect();
        Rules { order, exceptions }
    }

    fn rank(&self, module: &str) -> Option<usize> {
        self.order.iter().position(|m| m == module)
    }

    /// Checks every top-level module under `src`.
    fn check(&self, src: &Path) -> Vec<Violation> {
        let mut out = Vec::new();
        let modules = top_level_modules(src);
        for (module, files) in &modules {
            if !TOP.contains(&module.as_str()) && self.rank(module).is_none() {
                out.push(Violation {
                    file: module.clone(),
                    line: 0,
                    rule: format!("module `{module}` is not in the documented order"),
                });
                continue;
            }
            for file in files {
                let text = std::fs::read_to_string(file).expect("source file reads");
                let shown = file.strip_prefix(src).unwrap_or(file).display().to_string();
                for (line, target) in crate_imports(&without_tests(&text)) {
                    if let Some(rule) = self.judge(module, &target.module, modules.contains_key(&target.module)) {
                        out.push(Violation {
                            file: shown.clone(),
                            line,
                            rule,
                        });
                    }
                }
                if POLICY.contains(&module.as_str()) {
                    for (line, krate) in extern_uses(&without_tests(&text)) {
                        if POLICY_FORBIDDEN_CRATES.contains(&krate.as_str()) {
                            out.push(Violation {
                                file: shown.clone(),
                                line,
                                rule: format!("policy module `{module}` uses `{krate}`"),
                            });
                        }
                    }
                }
            }
        }
        out.sort();
        out
    }

    fn judge(&self, from: &str, to: &str, exists: bool) -> Option<String> {
        if from == to || !exists || TOP.contains(&from) {
            return None;
        }
        if POLICY.contains(&from) && POLICY_FORBIDDEN_MODULES.contains(&to) {
            return Some(format!("policy module `{from}` imports `{to}`"));
        }
        if self.exceptions.contains(&(from.to_string(), to.to_string())) {
            return None;
        }
        match (self.rank(from), self.rank(to)) {
            (Some(f), Some(t)) if t > f => Some(format!("`{from}` imports `{to}`, which comes after it")),
            (_, None) if TOP.contains(&to) => Some(format!("`{from}` imports the top-level `{to}`")),
            _ => None,
        }
    }
}

struct Target {
    module: String,
}

/// The text of a fenced code block that follows `marker`.
fn fenced_after(doc: &str, marker: &str) -> Option<String> {
    let rest = &doc[doc.find(marker)? + marker.len()..];
    let start = rest.find("```")?;
    let body = &rest[start + 3..];
    let body = &body[body.find('\n')? + 1..];
    let end = body.find("```")?;
    Some(body[..end].to_string())
}

/// Top-level modules of `src`: `name.rs` or `name/` with every `.rs` below it.
fn top_level_modules(src: &Path) -> BTreeMap<String, Vec<PathBuf>> {
    let mut out: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for entry in std::fs::read_dir(src).expect("src is a directory") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            let mut files = Vec::new();
            collect_rs(&path, &mut files);
            out.entry(name).or_default().extend(files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let name = path.file_stem().unwrap().to_string_lossy().to_string();
            out.entry(name).or_default().push(path);
        }
    }
    out
}

fn collect_rs(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("module directory reads") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            collect_rs(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") && !is_test_file(&path) {
            out.push(path);
        }
    }
}

/// Unit-test files (`tests.rs`, `*_tests.rs`) may reach anywhere to build fixtures.
fn is_test_file(path: &Path) -> bool {
    let stem = path.file_stem().unwrap().to_string_lossy();
    stem == "tests" || stem.ends_with("_tests")
}

/// The file without its trailing `#[cfg(test)] mod tests { ... }` block.
fn without_tests(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        if l.trim() == "#[cfg(test)]"
            && lines
                .get(i + 1)
                .is_some_and(|next| next.trim_start().starts_with("mod ") && next.trim_end().ends_with('{'))
        {
            return lines[..i].join("\n");
        }
    }
    text.to_string()
}

/// Every `crate::name` in code and in intra-doc links (a link is a dependency
/// too: rustdoc resolves it), with its 1-based line, including the names inside
/// `use crate::{a, b::c}` groups. A plain mention in a comment does not count.
fn crate_imports(text: &str) -> Vec<(usize, Target)> {
    let mut out = Vec::new();
    let links = doc_links(text);
    let code = code_lines(text).map(|(i, l)| (i, l.to_string()));
    for (i, line) in code.chain(links) {
        let mut rest = line.as_str();
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            if let Some(group) = after.strip_prefix('{') {
                let inner = group.split('}').next().unwrap_or("");
                for item in inner.split(',') {
                    let name: String = item
                        .trim()
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() && name != "self" {
                        out.push((i, Target { module: name }));
                    }
                }
            } else {
                let name: String = after.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if !name.is_empty() {
                    out.push((i, Target { module: name }));
                }
            }
            rest = after;
        }
    }
    out
}

/// External crates named in `use` lines and in paths like `hyper::Request`.
fn extern_uses(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (i, line) in code_lines(text) {
        for krate in POLICY_FORBIDDEN_CRATES {
            let needle = format!("{krate}::");
            let mut rest = line;
            while let Some(at) = rest.find(&needle) {
                let before = rest[..at].chars().last();
                if !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                    out.push((i, krate.to_string()));
                    break;
                }
                rest = &rest[at + needle.len()..];
            }
        }
    }
    out
}

/// The `crate::` targets of intra-doc links (``[`crate::x`]``, `[..](crate::x)`) in
/// doc comments, with their 1-based lines.
fn doc_links(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (i, l) in text.lines().enumerate() {
        let t = l.trim_start();
        if !(t.starts_with("///") || t.starts_with("//!")) {
            continue;
        }
        for opener in ["[`crate::", "](crate::"] {
            let mut rest = t;
            while let Some(at) = rest.find(opener) {
                rest = &rest[at + opener.len()..];
                let path: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                out.push((i + 1, format!("crate::{path}")));
            }
        }
    }
    out
}

/// Lines with their 1-based numbers, comments and doc comments removed.
fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().filter_map(|(i, l)| {
        let code = l.split("//").next().unwrap_or("");
        (!code.trim().is_empty()).then_some((i + 1, code))
    })
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

#[test]
fn host_modules_follow_the_documented_order() {
    let doc = std::fs::read_to_string(repo_root().join("docs/ARCHITECTURE.md")).unwrap();
    let rules = Rules::from_doc(&doc);
    let violations = rules.check(&repo_root().join("host/src"));
    assert!(
        violations.is_empty(),
        "{} import(s) break the module order of docs/ARCHITECTURE.md:\n{}",
        violations.len(),
        violations
            .iter()
            .map(|v| format!("  {}:{}: {}", v.file, v.line, v.rule))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The checker itself: a small tree with each kind of forbidden import is caught, and
/// a clean one passes.
#[test]
fn the_checker_catches_each_kind_of_forbidden_import() {
    let doc = "<!-- module-order -->\n```\nleaf, policy_like, balance, proxy\n```\n\
               <!-- order-exceptions -->\n```\nleaf -> proxy: a written-down reason\n```\n";
    let rules = Rules::from_doc(doc);
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    let write = |name: &str, text: &str| {
        let path = src.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write("leaf.rs", "use crate::proxy::Thing; // allowed by the exception\n");
    write("policy_like.rs", "use crate::leaf::X;\n");
    write(
        "balance/mod.rs",
        "use crate::leaf::X;\n/// crate::proxy in a comment is fine\n",
    );
    write("proxy.rs", "use crate::{balance, leaf::Y};\n");
    assert_eq!(rules.check(src), vec![], "a clean tree passes");

    write("policy_like.rs", "use crate::balance::Z;\n");
    write(
        "balance/pick.rs",
        "fn f(r: hyper::Request<()>) {}\nuse crate::proxy::body::Body;\n/// See [`crate::proxy::Thing`].\n",
    );
    write("unlisted.rs", "\n");
    write("balance/tests.rs", "use crate::proxy::anything;\n");
    write(
        "leaf.rs",
        "use crate::{policy_like::P, proxy::Q};\n#[cfg(test)]\nmod tests {\n    use crate::balance::B;\n}\n",
    );
    let rules_broken: Vec<String> = rules
        .check(src)
        .into_iter()
        .map(|v| format!("{}:{}: {}", v.file, v.line, v.rule))
        .collect();
    assert_eq!(
        rules_broken,
        vec![
            "balance/pick.rs:1: policy module `balance` uses `hyper`".to_string(),
            "balance/pick.rs:2: policy module `balance` imports `proxy`".to_string(),
            "balance/pick.rs:3: policy module `balance` imports `proxy`".to_string(),
            "leaf.rs:1: `leaf` imports `policy_like`, which comes after it".to_string(),
            "policy_like.rs:1: `policy_like` imports `balance`, which comes after it".to_string(),
            "unlisted:0: module `unlisted` is not in the documented order".to_string(),
        ]
    );
}
