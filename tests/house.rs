//! The shape of the house, checked: what the README's "How it works" promises a newcomer.
//!
//! - **No import cycles** between modules, in every crate of the workspace. A module
//!   depends on another when its code names it (`use crate::a::b`, `crate::a::f()`,
//!   `super::x`, `self::x`), test modules (`#[cfg(test)]` and below) aside. A module
//!   directory is one room: a parent and its children may name each other (the facade
//!   every Rust module directory has), but sibling modules must not import each other in
//!   a circle, and neither must top-level modules.
//! - **No SQL outside the store**: SQL statements appear in `src/store/` only.
//! - **Small rooms**: no module of the root package over 500 lines of code (blank lines,
//!   comments and tests aside), no function over 80 lines.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// One source file: its module path (`["commands", "run"]`) and its code (tests cut).
struct Module {
    file: PathBuf,
    path: Vec<String>,
    code: String,
}

/// Every library module of the crate whose `src` dir is `src`.
fn modules(src: &Path) -> Vec<Module> {
    let mut out = Vec::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                if p.file_name().is_some_and(|n| n != "bin") {
                    stack.push(p);
                }
                continue;
            }
            if p.extension().is_none_or(|x| x != "rs") {
                continue;
            }
            let rel = p.strip_prefix(src).expect("under src");
            let mut path: Vec<String> = rel
                .iter()
                .map(|c| c.to_string_lossy().trim_end_matches(".rs").to_string())
                .collect();
            if matches!(path.last().map(String::as_str), Some("mod" | "lib")) {
                path.pop();
            }
            if path == ["main"] {
                continue;
            }
            let text = std::fs::read_to_string(&p).expect("readable source");
            out.push(Module {
                file: p,
                path,
                code: code_of(&text),
            });
        }
    }
    out
}

/// The code of a file: comments and the `#[cfg(test)]` tail cut.
fn code_of(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with("#[cfg(test)]") {
            break;
        }
        if t.starts_with("//") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The paths named after `crate::`, `super::` and `self::` in `code`, expanded from
/// `{…}` groups, as (anchor, segments).
fn named_paths(code: &str) -> Vec<(&'static str, Vec<String>)> {
    let mut out = Vec::new();
    for anchor in ["crate::", "super::", "self::"] {
        let mut rest = code;
        while let Some(i) = rest.find(anchor) {
            let before = rest[..i].chars().next_back();
            rest = &rest[i + anchor.len()..];
            if before.is_some_and(|c| ident_char(c) || c == ':') {
                continue; // `super::super::` is handled by the first one; `x::crate` is none
            }
            let mut prefix: Vec<String> = Vec::new();
            let mut s = rest;
            if anchor == "super::" {
                while let Some(r) = s.strip_prefix("super::") {
                    prefix.push("super".into());
                    s = r;
                }
            }
            let key: &'static str = match anchor {
                "crate::" => "crate",
                "super::" => "super",
                _ => "self",
            };
            for p in expand(s) {
                let mut v = prefix.clone();
                v.extend(p);
                out.push((key, v));
            }
        }
    }
    out
}

/// `a::b::{c, d::e}` → [[a,b,c],[a,b,d,e]]; `a::b` → [[a,b]].
fn expand(s: &str) -> Vec<Vec<String>> {
    let s = s.trim_start();
    if let Some(inner) = s.strip_prefix('{') {
        let mut depth = 0;
        let mut end = inner.len();
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    end = i;
                    break;
                }
                '}' => depth -= 1,
                _ => {}
            }
        }
        let body = &inner[..end];
        let mut parts = Vec::new();
        let (mut depth, mut start) = (0, 0);
        for (i, c) in body.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    parts.push(&body[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        parts.push(&body[start..]);
        return parts
            .into_iter()
            .filter(|p| !p.trim().is_empty())
            .flat_map(expand)
            .collect();
    }
    let ident: String = s.chars().take_while(|c| ident_char(*c)).collect();
    if ident.is_empty() {
        return vec![vec![]];
    }
    let after = &s[ident.len()..];
    match after.strip_prefix("::") {
        Some(more) => expand(more)
            .into_iter()
            .map(|mut v| {
                v.insert(0, ident.clone());
                v
            })
            .collect(),
        None => vec![vec![ident]],
    }
}

/// The module a named path lands in: the longest module path that prefixes it.
fn resolve(
    known: &BTreeSet<Vec<String>>,
    from: &[String],
    anchor: &str,
    p: &[String],
) -> Vec<String> {
    let mut full: Vec<String> = match anchor {
        "crate" => Vec::new(),
        "self" => from.to_vec(),
        _ => from[..from.len().saturating_sub(1)].to_vec(),
    };
    for seg in p {
        if seg == "super" {
            full.pop();
        } else {
            full.push(seg.clone());
        }
    }
    while !full.is_empty() && !known.contains(&full) {
        full.pop();
    }
    full
}

/// The module dependency graph of one crate, between rooms: an edge from module `a::x` to
/// `b::y` is an edge between the two rooms under their nearest common ancestor (`a` and
/// `b`; for `c::run` and `c::daemon`, those two). A module and its own descendants are one
/// room: their edges do not count.
fn graph(mods: &[Module]) -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let known: BTreeSet<Vec<String>> = mods.iter().map(|m| m.path.clone()).collect();
    let mut g: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for m in mods {
        {
            for (anchor, p) in named_paths(&m.code) {
                let to = resolve(&known, &m.path, anchor, &p);
                if to.starts_with(&m.path) || m.path.starts_with(&to) {
                    continue; // itself, a descendant or an ancestor: the same room
                }
                let k = m.path.iter().zip(&to).take_while(|(a, b)| a == b).count();
                let (a, b) = (m.path[..=k].to_vec(), to[..=k].to_vec());
                g.entry(a).or_default().insert(b);
            }
        }
    }
    g
}

/// The groups of modules that reach each other (each group a cycle or more), sorted.
fn cycles(g: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Vec<Vec<String>> {
    let reach = |from: &Vec<String>| {
        let mut seen: BTreeSet<Vec<String>> = BTreeSet::new();
        let mut todo: Vec<&Vec<String>> = g.get(from).into_iter().flatten().collect();
        while let Some(n) = todo.pop() {
            if seen.insert(n.clone()) {
                todo.extend(g.get(n).into_iter().flatten());
            }
        }
        seen
    };
    let reaches: BTreeMap<&Vec<String>, BTreeSet<Vec<String>>> =
        g.keys().map(|n| (n, reach(n))).collect();
    let mut groups: BTreeSet<Vec<String>> = BTreeSet::new();
    for (n, r) in &reaches {
        if !r.contains(*n) {
            continue;
        }
        let group: Vec<String> = r
            .iter()
            .filter(|m| reaches.get(m).is_some_and(|back| back.contains(*n)))
            .map(|m| m.join("::"))
            .collect();
        groups.insert(group);
    }
    groups.into_iter().collect()
}

fn crate_srcs() -> Vec<PathBuf> {
    let mut v = vec![Path::new(ROOT).join("src")];
    if let Ok(rd) = std::fs::read_dir(Path::new(ROOT).join("crates")) {
        let mut more: Vec<PathBuf> = rd.flatten().map(|e| e.path().join("src")).collect();
        more.sort();
        v.extend(more.into_iter().filter(|p| p.is_dir()));
    }
    v
}

#[test]
fn no_module_imports_a_module_that_imports_it_back() {
    for src in crate_srcs() {
        let mods = modules(&src);
        assert!(mods.len() > 1, "no modules found under {}", src.display());
        let g = graph(&mods);
        let found = cycles(&g);
        assert!(
            found.is_empty(),
            "modules of {} that import each other: {found:?}",
            src.display()
        );
    }
}

#[test]
fn the_cycle_check_sees_a_cycle() {
    // The checker itself: two modules that name each other are a cycle; a parent's
    // re-export of its child is not.
    let m = |path: &[&str], code: &str| Module {
        file: PathBuf::new(),
        path: path.iter().map(|s| s.to_string()).collect(),
        code: code.into(),
    };
    let cyclic = [
        m(&["a"], "use crate::b::{self, X};"),
        m(&["b"], "fn f() { crate::a::g() }"),
    ];
    assert_eq!(
        cycles(&graph(&cyclic)),
        vec![vec!["a".to_string(), "b".to_string()]]
    );
    let facade = [
        m(
            &["up"],
            "mod s3;\npub use s3::S3;\npub use self::s3::{A, B};",
        ),
        m(&["up", "s3"], "use super::{Meta, Error};"),
    ];
    assert!(cycles(&graph(&facade)).is_empty());
    let siblings = [
        m(&["c"], ""),
        m(&["c", "run"], "use super::daemon::daemon;"),
        m(&["c", "daemon"], "use super::run::{GRACE, cameras};"),
    ];
    assert_eq!(cycles(&graph(&siblings)).len(), 1);
}

#[test]
fn sql_lives_in_the_store_only() {
    let src = Path::new(ROOT).join("src");
    let mut offenders = Vec::new();
    for m in modules(&src) {
        if m.path.first().is_some_and(|p| p == "store") {
            continue;
        }
        for (i, line) in m.code.lines().enumerate() {
            if opens_sql(line) {
                offenders.push(format!("{}:{}", m.file.display(), i + 1));
            }
        }
    }
    assert!(offenders.is_empty(), "SQL outside src/store: {offenders:?}");
}

/// Whether `line` holds a string literal that starts with an SQL statement.
fn opens_sql(line: &str) -> bool {
    const SQL: [&str; 7] = [
        "SELECT", "UPDATE", "INSERT", "DELETE", "PRAGMA", "CREATE", "WITH",
    ];
    line.split('"').skip(1).step_by(2).any(|lit| {
        let word: String = lit
            .chars()
            .take_while(|c| c.is_ascii_alphabetic())
            .collect();
        SQL.contains(&word.as_str())
            && lit[word.len()..]
                .chars()
                .next()
                .is_none_or(char::is_whitespace)
    })
}

#[test]
fn the_sql_check_sees_sql() {
    assert!(opens_sql(
        r#"  c.query_row("SELECT state FROM clips", [], f)"#
    ));
    assert!(opens_sql(r#"                "SELECT"#));
    assert!(opens_sql(
        r#"x("UPDATE clips SET state = ?2 WHERE id = ?1")"#
    ));
    assert!(!opens_sql(r#"println!("Selected {n} clips")"#));
    assert!(!opens_sql(r#"warn!("update failed")"#));
}

/// `line` with the contents of string literals blanked (`in_str` carries an open literal
/// over to the next line), so that braces in format strings do not count.
fn blank_strings(line: &str, in_str: &mut bool) -> String {
    let mut out = String::new();
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if *in_str {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => {
                    *in_str = false;
                    out.push('"');
                }
                _ => {}
            }
        } else if c == '"' {
            *in_str = true;
            out.push('"');
        } else if c == '\'' && chars.peek().is_some_and(|n| *n == '{' || *n == '}') {
            chars.next(); // a char literal '{' or '}'
        } else {
            out.push(c);
        }
    }
    out
}

/// The functions of `code` longer than `max` lines: (line, name, length).
fn long_functions(code: &str, max: usize) -> Vec<(usize, String, usize)> {
    let mut in_str = false;
    let lines: Vec<String> = code
        .lines()
        .map(|l| blank_strings(l, &mut in_str))
        .collect();
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let t = l.trim_start();
        let Some(at) = t.find("fn ") else { continue };
        let head = &t[..at];
        let is_fn = head.split_whitespace().all(|w| {
            matches!(w, "pub" | "async" | "const" | "unsafe" | "extern") || w.starts_with("pub(")
        });
        if !is_fn {
            continue;
        }
        let name: String = t[at + 3..].chars().take_while(|c| ident_char(*c)).collect();
        let (mut depth, mut opened) = (0i64, false);
        for (j, body) in lines.iter().enumerate().skip(i) {
            for c in body.chars() {
                match c {
                    '{' => {
                        depth += 1;
                        opened = true;
                    }
                    '}' => depth -= 1,
                    ';' if !opened => break,
                    _ => {}
                }
            }
            if !opened && body.trim_end().ends_with(';') {
                break; // a declaration without a body
            }
            if opened && depth <= 0 {
                let len = j - i + 1;
                if len > max {
                    out.push((i + 1, name.clone(), len));
                }
                break;
            }
        }
    }
    out
}

#[test]
fn the_length_check_measures_functions() {
    let code = "fn short() {\n    let s = \"{not a brace\";\n}\npub async fn long(x: u8) -> u8 {\n    if x > 0 {\n        1\n    } else {\n        2\n    }\n}\n";
    assert_eq!(long_functions(code, 6), vec![(4, "long".to_string(), 7)]);
    assert!(long_functions(code, 7).is_empty());
}

/// Lines of code in `code`: blank lines aside (comments and tests are already cut).
fn code_lines(code: &str) -> usize {
    code.lines().filter(|l| !l.trim().is_empty()).count()
}

#[test]
fn rooms_are_small() {
    let src = Path::new(ROOT).join("src");
    let mut big = Vec::new();
    for m in modules(&src) {
        let n = code_lines(&m.code);
        if n > 500 {
            big.push(format!("{} ({n} lines)", m.file.display()));
        }
        for (line, name, len) in long_functions(&m.code, 80) {
            big.push(format!(
                "{}: fn {name} at code line {line} ({len} lines)",
                m.file.display()
            ));
        }
    }
    assert!(big.is_empty(), "too big for a newcomer to read: {big:#?}");
}
