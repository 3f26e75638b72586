//! The shape of the house, checked: what the README's "How it works" promises a newcomer.
//!
//! What is read: every library module of every crate of the workspace (`src/` and
//! `crates/*/src`, binaries aside), as code: comments cut, and test code cut. Test code is
//! every item under `#[cfg(test)]` (a `mod tests { … }` block, a `#[cfg(test)] fn` helper, a
//! `#[cfg(test)] mod x;` declaration and the file it names), cut to the end of that item by
//! brace matching, so code below a test helper is still read; and every file named
//! `tests.rs` or `tests_*.rs`, or under a `tests/` directory.
//!
//! What is checked (each rule keeps a test on a case it must catch):
//!
//! - **No import cycles** between modules, in every crate. A module depends on another when
//!   its code names it (`use crate::a::b`, `crate::a::f()`, `super::x`, `self::x`). A module
//!   directory is one room: a parent and its children may name each other (the facade every
//!   Rust module directory has), but sibling modules must not import each other in a circle,
//!   and neither must top-level modules.
//! - **A type's methods live with the type**: every inherent `impl T { … }` is in the file
//!   that defines `T` (`impl Trait for T` may be anywhere). One struct whose methods are
//!   spread over files that call each other through `self` is one room however many files
//!   it spans: the module paths above cannot see those calls, this rule does. The few types
//!   that are one handle with its methods split by topic are listed in [`FACADES`], each with
//!   its reason and the directory it must stay in.
//! - **No SQL outside the store**: SQL statements appear in `src/store/` only (and nowhere in
//!   the other crates).
//!
//! What is reported, not failed: modules over 500 lines of code (blank lines, comments and
//! tests aside) and functions over 80 lines, in every crate, biggest first. A file is split
//! when it holds two topics, not when it passes a count; the report says where to look.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Lines of code (blank lines, comments and tests aside) past which a module is reported.
const MODULE_LINES: usize = 500;
/// Lines past which a function is reported.
const FUNCTION_LINES: usize = 80;

/// The types whose inherent methods may sit in more than one file: (type, the paths its
/// definition and its `impl` blocks must all be under, relative to the workspace root,
/// why). Each is one handle whose methods are split by topic; none of them is a place
/// where parts with their own state call each other.
const FACADES: &[(&str, &[&str], &str)] = &[
    (
        "Store",
        &["src/store/"],
        "one handle over one SQLite connection: its queries are split by topic (clips, \
         listing, transitions, hotspots, multipart), and SQL lives only there",
    ),
    (
        "S3Destination",
        &["src/upload/s3/"],
        "one client for one bucket: its requests are split by topic (single PUT, multipart, \
         overlapped upload, verification, the doctor's checks)",
    ),
    (
        "Nm",
        &["src/wifi/nm.rs", "src/wifi/nm/"],
        "one D-Bus connection to NetworkManager: its calls are split by topic (access \
         points, joining a hotspot, the uplink and settings profiles)",
    ),
    (
        "Config",
        &["src/config/"],
        "one parsed config file: reading it, validating it and resolving its hotspots are \
         split by topic",
    ),
];

// ---------------------------------------------------------------------------------------
// Reading the code

/// `text` with its comments blanked (`.0`), and with the contents of its string and char
/// literals blanked too (`.1`). Both keep every byte offset and every line of `text`, so
/// that braces in strings, chars or comments never count and line numbers stay the file's.
fn lex(text: &str) -> (String, String) {
    let b = text.as_bytes();
    let (mut code, mut masked) = (b.to_vec(), b.to_vec());
    fn blank(v: &mut [u8]) {
        v.iter_mut()
            .filter(|x| **x != b'\n')
            .for_each(|x| *x = b' ');
    }
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let at = |i: usize| b.get(i).copied();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'/' && at(i + 1) == Some(b'/') {
            let end = text[i..].find('\n').map_or(b.len(), |n| i + n);
            blank(&mut code[i..end]);
            blank(&mut masked[i..end]);
            i = end;
        } else if c == b'/' && at(i + 1) == Some(b'*') {
            let (mut depth, mut j) = (1, i + 2);
            while j < b.len() && depth > 0 {
                match (b[j], at(j + 1)) {
                    (b'/', Some(b'*')) => (depth, j) = (depth + 1, j + 2),
                    (b'*', Some(b'/')) => (depth, j) = (depth - 1, j + 2),
                    _ => j += 1,
                }
            }
            blank(&mut code[i..j]);
            blank(&mut masked[i..j]);
            i = j;
        } else if c == b'r'
            && (i == 0
                || !ident(b[i - 1])
                || (matches!(b[i - 1], b'b' | b'c') && (i < 2 || !ident(b[i - 2]))))
            && {
                let h = b[i + 1..].iter().take_while(|x| **x == b'#').count();
                at(i + 1 + h) == Some(b'"')
            }
        {
            // r"…", r#"…"#, br"…", cr#"…"#
            let h = b[i + 1..].iter().take_while(|x| **x == b'#').count();
            let open = i + 2 + h;
            let close: String = std::iter::once('"').chain("#".repeat(h).chars()).collect();
            let end = text[open..].find(&close).map_or(b.len(), |n| open + n);
            blank(&mut masked[open..end]);
            i = (end + close.len()).min(b.len());
        } else if c == b'"' {
            let mut j = i + 1;
            while j < b.len() && b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            let j = j.min(b.len());
            blank(&mut masked[i + 1..j]);
            i = j + 1;
        } else if c == b'\'' {
            // a char literal ('x', '\n', '\'', '\u{1F600}'), else a lifetime ('a, '_)
            if at(i + 1) == Some(b'\\') {
                let end = text
                    .get(i + 3..)
                    .and_then(|r| r.find('\''))
                    .map_or(b.len(), |n| i + 3 + n);
                blank(&mut masked[i + 1..end]);
                i = end + 1;
            } else {
                let w = text[i + 1..].chars().next().map_or(1, char::len_utf8);
                if at(i + 1 + w) == Some(b'\'') {
                    blank(&mut masked[i + 1..i + 1 + w]);
                    i += 2 + w;
                } else {
                    i += 1;
                }
            }
        } else {
            i += 1;
        }
    }
    let s = |v: Vec<u8>| String::from_utf8(v).expect("blanking keeps UTF-8");
    (s(code), s(masked))
}

/// The attribute that starts at `s` (a `#`) in `m`: its content, the offset past its `]`,
/// and whether it is an inner attribute (`#![…]`).
fn attribute(m: &[u8], s: usize) -> Option<(String, usize, bool)> {
    let mut j = s + 1;
    let inner = m.get(j) == Some(&b'!');
    if inner {
        j += 1;
    }
    while m.get(j).is_some_and(u8::is_ascii_whitespace) {
        j += 1;
    }
    if m.get(j) != Some(&b'[') {
        return None;
    }
    let (start, mut depth) = (j + 1, 0i32);
    for (k, c) in m.iter().enumerate().skip(j) {
        match c {
            b'[' => depth += 1,
            b']' => {
                depth -= 1;
                if depth == 0 {
                    let content = String::from_utf8_lossy(&m[start..k]).to_string();
                    return Some((content, k + 1, inner));
                }
            }
            _ => {}
        }
    }
    None
}

/// Whether an attribute's content gates its item to tests: `cfg(test)`, `cfg(all(test, …))`.
fn is_test_cfg(content: &str) -> bool {
    let s: String = content.chars().filter(|c| !c.is_whitespace()).collect();
    s == "cfg(test)"
        || s.strip_prefix("cfg(all(")
            .and_then(|r| r.strip_suffix("))"))
            .is_some_and(|r| r.split(',').any(|p| p == "test"))
}

/// Where the item (or field, arm, statement) that starts at `s` in `m` ends, and the name
/// of the module it declares when it is `mod name;`.
fn item_end(m: &str, s: usize) -> (usize, Option<String>) {
    let words: Vec<&str> = m[s..]
        .split(|c: char| !ident_char(c))
        .filter(|w| !w.is_empty())
        .take(4)
        .collect();
    let words: Vec<&str> = match words.first() {
        Some(&"pub") if m[s + 3..].trim_start().starts_with('(') => words[2..].to_vec(),
        Some(&"pub") => words[1..].to_vec(),
        _ => words,
    };
    const BLOCKS: [&str; 8] = [
        "fn",
        "mod",
        "impl",
        "trait",
        "struct",
        "enum",
        "union",
        "macro_rules",
    ];
    let block = words.iter().take(3).any(|w| BLOCKS.contains(w));
    let statement = !block
        && words
            .first()
            .is_some_and(|w| matches!(*w, "use" | "const" | "static" | "let" | "type" | "extern"));
    let declared = (words.first() == Some(&"mod")).then(|| words.get(1).map(|w| w.to_string()));
    let b = m.as_bytes();
    let mut depth = 0i32;
    for (k, c) in b.iter().enumerate().skip(s) {
        match c {
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' if depth == 0 => return (k, None), // the enclosing block ends
            b')' | b']' => depth -= 1,
            b'}' => {
                depth -= 1;
                if depth == 0 && !statement {
                    return (k + 1, None);
                }
            }
            b';' if depth == 0 => return (k + 1, declared.flatten()),
            b',' if depth == 0 && !block && !statement => return (k + 1, None),
            _ => {}
        }
    }
    (b.len(), None)
}

/// A file's code with its test items cut (blanked, lines kept).
struct Cut {
    /// Comments and tests cut; literals kept (what the SQL rule reads).
    code: String,
    /// Literals' contents blanked too (what every other rule reads).
    masked: String,
    /// The modules it declares under `#[cfg(test)]` (`mod tests;`).
    test_children: Vec<String>,
    /// Whether the whole file is test code (`#![cfg(test)]`).
    all_test: bool,
}

/// The code of a file: comments cut, and every `#[cfg(test)]` item cut to its end.
fn code_of(text: &str) -> Cut {
    let (code, masked) = lex(text);
    let (mut code, mut masked) = (code.into_bytes(), masked.into_bytes());
    let mut cut = Cut {
        code: String::new(),
        masked: String::new(),
        test_children: Vec::new(),
        all_test: false,
    };
    // What follows the cursor is never blanked before it is read: one copy serves.
    let text = String::from_utf8(masked.clone()).expect("UTF-8");
    let mut i = 0;
    while let Some(n) = masked[i..].iter().position(|c| *c == b'#') {
        let s = i + n;
        let Some((content, end, inner)) = attribute(&masked, s) else {
            i = s + 1;
            continue;
        };
        if !is_test_cfg(&content) {
            i = end;
            continue;
        }
        if inner {
            cut.all_test = true;
            break;
        }
        let mut j = end;
        loop {
            while masked.get(j).is_some_and(u8::is_ascii_whitespace) {
                j += 1;
            }
            match attribute(&masked, j) {
                Some((_, e, false)) if masked.get(j) == Some(&b'#') => j = e,
                _ => break,
            }
        }
        let (e, declared) = item_end(&text, j);
        cut.test_children.extend(declared);
        for v in [&mut code, &mut masked] {
            v[s..e]
                .iter_mut()
                .filter(|x| **x != b'\n')
                .for_each(|x| *x = b' ');
        }
        i = e;
    }
    cut.code = String::from_utf8(code).expect("UTF-8");
    cut.masked = String::from_utf8(masked).expect("UTF-8");
    cut
}

/// One source file of production code: its module path (`["commands", "run"]`), and its
/// code with comments and tests cut (see [`Cut`]).
struct Module {
    /// The file, relative to the workspace root (`src/agent/pass.rs`).
    file: PathBuf,
    path: Vec<String>,
    code: String,
    masked: String,
}

/// The module path of the file at `rel` (relative to its crate's `src`), or `None` for a
/// binary's root.
fn module_path(rel: &Path) -> Option<Vec<String>> {
    let mut path: Vec<String> = rel
        .iter()
        .map(|c| c.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if path.first().is_some_and(|p| p == "bin") {
        return None;
    }
    if matches!(path.last().map(String::as_str), Some("mod" | "lib")) {
        path.pop();
    }
    (path != ["main"]).then_some(path)
}

/// Whether a module path is a test module by its name: `tests`, `tests_*`, or below one.
fn named_as_test(path: &[String]) -> bool {
    path.iter().any(|p| p == "tests" || p.starts_with("tests_"))
}

/// The production modules of a crate from its files (path relative to `src`, text): test
/// files, and files declared under `#[cfg(test)]`, aside. `src` is the crate's `src` dir,
/// relative to the workspace root.
fn modules_of(src: &Path, files: Vec<(PathBuf, String)>) -> Vec<Module> {
    let mut all = Vec::new();
    let mut test_roots: Vec<Vec<String>> = Vec::new();
    for (rel, text) in files {
        let Some(path) = module_path(&rel) else {
            continue;
        };
        let cut = code_of(&text);
        test_roots.extend(cut.test_children.iter().map(|c| {
            let mut p = path.clone();
            p.push(c.clone());
            p
        }));
        if cut.all_test {
            test_roots.push(path.clone());
        }
        all.push(Module {
            file: src.join(&rel),
            path,
            code: cut.code,
            masked: cut.masked,
        });
    }
    let mut out: Vec<Module> = all
        .into_iter()
        .filter(|m| !named_as_test(&m.path) && !test_roots.iter().any(|t| m.path.starts_with(t)))
        .collect();
    out.sort_by(|a, b| a.file.cmp(&b.file));
    out
}

/// The production modules of the crate whose `src` dir is `src`.
fn modules(src: &Path) -> Vec<Module> {
    let mut files = Vec::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&p).expect("readable source");
                files.push((p.strip_prefix(src).expect("under src").to_path_buf(), text));
            }
        }
    }
    let rel_src = src.strip_prefix(ROOT).unwrap_or(src);
    modules_of(rel_src, files)
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

fn ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The line of byte offset `at` in `text`.
fn line_of(text: &str, at: usize) -> usize {
    text[..at].matches('\n').count() + 1
}

/// A fixture file: `path` relative to `src`, and its text.
fn file(path: &str, text: &str) -> (PathBuf, String) {
    (PathBuf::from(path), text.to_string())
}

#[test]
fn the_reader_cuts_test_items_not_what_follows_them() {
    let text = r##"fn a() {}
#[cfg(test)]
fn helper() { let s = "}"; let c = '{'; /* } */ let r = r#"}"#; }
use crate::b::X;
impl A {
    #[cfg(test)]
    pub(crate) async fn for_tests(&self) -> u8 { if true { 1 } else { 2 } }
    fn kept<'a>(&'a self) -> &'a str { "// not a comment" }
}
#[cfg(test)]
#[path = "x.rs"]
mod tests_x;
#[cfg(all(test, unix))]
mod tests {
    fn t() { "{" }
}
// fn commented() {}
fn after() {}
"##;
    let cut = code_of(text);
    for seen in [
        "fn a()",
        "use crate::b::X;",
        "impl A {",
        "fn kept<'a>",
        "fn after()",
    ] {
        assert!(cut.masked.contains(seen), "{seen} cut:\n{}", cut.masked);
    }
    for gone in [
        "helper",
        "for_tests",
        "tests_x",
        "fn t()",
        "commented",
        "x.rs",
    ] {
        assert!(!cut.masked.contains(gone), "{gone} kept:\n{}", cut.masked);
        assert!(!cut.code.contains(gone), "{gone} kept:\n{}", cut.code);
    }
    assert!(cut.code.contains("\"// not a comment\""), "{}", cut.code);
    assert_eq!(cut.test_children, vec!["tests_x".to_string()]);
    assert!(!cut.all_test);
    assert_eq!(text.lines().count(), cut.code.lines().count());
    // `impl A` still closes: its braces balance once the test fn is cut.
    let opens = cut.masked.matches('{').count();
    assert_eq!(opens, cut.masked.matches('}').count());
    assert!(code_of("#![cfg(test)]\nfn f() {}").all_test);
    assert!(
        !code_of("#[cfg(not(test))]\nfn f() {}")
            .masked
            .trim()
            .is_empty()
    );
}

#[test]
fn test_files_are_not_production_code() {
    let mods = modules_of(
        Path::new("src"),
        vec![
            file("lib.rs", "mod a;\nmod store;\nmod bin_helpers;"),
            file("main.rs", "fn main() {}"),
            file("bin/tool.rs", "fn main() {}"),
            file("a.rs", "pub fn x() {}"),
            file(
                "store/mod.rs",
                "#[cfg(test)]\nmod checks;\npub struct Store;",
            ),
            file("store/tests.rs", "use crate::a::x;"),
            file("store/tests_identity.rs", "use crate::a::x;"),
            file("store/checks.rs", "use crate::a::x;"),
            file("store/checks/deep.rs", "use crate::a::x;"),
            file("store/tests/more.rs", "use crate::a::x;"),
        ],
    );
    let paths: Vec<String> = mods.iter().map(|m| m.path.join("::")).collect();
    assert_eq!(paths, vec!["a", "", "store"]);
    assert_eq!(mods[0].file, Path::new("src/a.rs"));
}

// ---------------------------------------------------------------------------------------
// No import cycles

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
        for (anchor, p) in named_paths(&m.masked) {
            let to = resolve(&known, &m.path, anchor, &p);
            if to.starts_with(&m.path) || m.path.starts_with(&to) {
                continue; // itself, a descendant or an ancestor: the same room
            }
            let k = m.path.iter().zip(&to).take_while(|(a, b)| a == b).count();
            let (a, b) = (m.path[..=k].to_vec(), to[..=k].to_vec());
            g.entry(a).or_default().insert(b);
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

#[test]
fn no_module_imports_a_module_that_imports_it_back() {
    for src in crate_srcs() {
        let mods = modules(&src);
        assert!(mods.len() > 1, "no modules found under {}", src.display());
        let found = cycles(&graph(&mods));
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
    let mods = |files: &[(&str, &str)]| {
        modules_of(
            Path::new("src"),
            files.iter().map(|(p, t)| file(p, t)).collect(),
        )
    };
    let cyclic = mods(&[
        ("a.rs", "use crate::b::{self, X};"),
        ("b.rs", "fn f() { crate::a::g() }"),
    ]);
    assert_eq!(
        cycles(&graph(&cyclic)),
        vec![vec!["a".to_string(), "b".to_string()]]
    );
    let facade = mods(&[
        (
            "up/mod.rs",
            "mod s3;\npub use s3::S3;\npub use self::s3::{A, B};",
        ),
        ("up/s3.rs", "use super::{Meta, Error};"),
    ]);
    assert!(cycles(&graph(&facade)).is_empty());
    let siblings = mods(&[
        ("c/mod.rs", ""),
        ("c/run.rs", "use super::daemon::daemon;"),
        ("c/daemon.rs", "use super::run::{GRACE, cameras};"),
    ]);
    assert_eq!(cycles(&graph(&siblings)).len(), 1);
    // Code below a test helper is still read.
    let below = mods(&[
        ("a.rs", "#[cfg(test)]\nfn helper() {}\nuse crate::b::X;"),
        ("b.rs", "use crate::a::Y;"),
    ]);
    assert_eq!(cycles(&graph(&below)).len(), 1);
    // A test module's imports are not the module's: neither inline nor in a tests file.
    let tests = mods(&[
        ("a.rs", "#[cfg(test)]\nmod tests { use crate::b::Y; }"),
        ("b/mod.rs", "use crate::a::X;\n#[cfg(test)]\nmod tests;"),
        ("b/tests.rs", "use crate::a::Z;"),
        ("b/tests_more.rs", "use crate::a::Z;"),
        ("a/tests/deep.rs", "use crate::b::Z;"),
    ]);
    assert!(cycles(&graph(&tests)).is_empty());
    let strings = mods(&[
        ("a.rs", "use crate::b::X;"),
        ("b.rs", "const S: &str = \"crate::a::Y\"; // crate::a::Z"),
    ]);
    assert!(cycles(&graph(&strings)).is_empty());
}

// ---------------------------------------------------------------------------------------
// A type's methods live with the type

/// The tokens of masked code: identifiers, `::`, `->`, `=>`, and single characters.
fn tokens(masked: &str) -> Vec<(usize, &str)> {
    let b = masked.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80;
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let n = if c.is_ascii_whitespace() {
            i += 1;
            continue;
        } else if word(c) {
            b[i..].iter().take_while(|x| word(**x)).count()
        } else if matches!(&b[i..(i + 2).min(b.len())], b"::" | b"->" | b"=>") {
            2
        } else {
            1
        };
        out.push((i, &masked[i..i + n]));
        i += n;
    }
    out
}

/// The index past the `>` that closes the `<` at `t[j]`.
fn past_angles(t: &[(usize, &str)], mut j: usize) -> usize {
    let mut depth = 0;
    while j < t.len() {
        match t[j].1 {
            "<" => depth += 1,
            ">" => {
                depth -= 1;
                if depth == 0 {
                    return j + 1;
                }
            }
            "{" | ";" => return j,
            _ => {}
        }
        j += 1;
    }
    j
}

/// The inherent `impl` blocks of masked code (not `impl Trait for T`, not `-> impl Trait`):
/// (line, the type's name, whether it is named by a path other than its bare name).
fn inherent_impls(masked: &str) -> Vec<(usize, String, bool)> {
    let t = tokens(masked);
    let word = |j: usize| t.get(j).map_or("", |x| x.1);
    let mut out = Vec::new();
    for k in 0..t.len() {
        if word(k) != "impl" {
            continue;
        }
        let mut p = k;
        while p > 0 && matches!(word(p - 1), "unsafe" | "default") {
            p -= 1;
        }
        if p > 0 && !matches!(word(p - 1), "}" | ";" | "{" | "]") {
            continue; // `-> impl Trait`, `x: impl Fn()`
        }
        let mut j = k + 1;
        if word(j) == "<" {
            j = past_angles(&t, j);
        }
        if word(j) == "!" {
            continue; // `impl !Send for T`
        }
        if word(j) == "dyn" {
            j += 1;
        }
        if word(j) == "::" {
            j += 1;
        }
        let mut segs = Vec::new();
        while word(j).starts_with(|c: char| c.is_alphabetic() || c == '_') {
            segs.push(word(j).to_string());
            j += 1;
            if word(j) == "<" {
                j = past_angles(&t, j);
            }
            if word(j) != "::" {
                break;
            }
            j += 1;
        }
        if let Some(name) = segs.last()
            && matches!(word(j), "{" | "where")
        {
            let qualified = segs.len() > 1 && segs[0] != "self";
            out.push((line_of(masked, t[k].0), name.clone(), qualified));
        }
    }
    out
}

/// The names of the types (and traits) that masked code defines.
fn defined_types(masked: &str) -> BTreeSet<String> {
    let t = tokens(masked);
    t.windows(2)
        .filter(|w| matches!(w[0].1, "struct" | "enum" | "union" | "trait" | "type"))
        .filter(|w| w[1].1.starts_with(|c: char| c.is_alphabetic() || c == '_'))
        .map(|w| w[1].1.to_string())
        .collect()
}

/// The inherent `impl` blocks of a crate's modules that are not in the file defining their
/// type, facades aside: `file:line: impl T (T is defined in …)`.
fn misplaced_impls(mods: &[Module], facades: &[(&str, &[&str], &str)]) -> Vec<String> {
    let defs: Vec<(&Module, BTreeSet<String>)> =
        mods.iter().map(|m| (m, defined_types(&m.masked))).collect();
    let under = |f: &Path, prefixes: &[&str]| {
        let f = f.to_string_lossy().replace('\\', "/");
        prefixes.iter().any(|p| f.starts_with(p))
    };
    let mut out = Vec::new();
    for (m, here) in &defs {
        for (line, name, qualified) in inherent_impls(&m.masked) {
            if !qualified && here.contains(&name) {
                continue;
            }
            let homes: Vec<&Path> = defs
                .iter()
                .filter(|(_, d)| d.contains(&name))
                .map(|(o, _)| o.file.as_path())
                .collect();
            let facade = facades.iter().any(|(ty, prefixes, _)| {
                *ty == name
                    && under(&m.file, prefixes)
                    && !homes.is_empty()
                    && homes.iter().all(|h| under(h, prefixes))
            });
            if !facade {
                let homes: Vec<String> = homes.iter().map(|h| h.display().to_string()).collect();
                out.push(format!(
                    "{}:{line}: impl {name} (defined in {})",
                    m.file.display(),
                    if homes.is_empty() {
                        "no file of this crate".to_string()
                    } else {
                        homes.join(", ")
                    }
                ));
            }
        }
    }
    out
}

#[test]
fn a_types_methods_live_in_the_file_that_defines_it() {
    let mut found = Vec::new();
    for src in crate_srcs() {
        found.extend(misplaced_impls(&modules(&src), FACADES));
    }
    assert!(
        found.is_empty(),
        "inherent methods outside the file that defines their type (a part's methods \
         belong with its state; parts talk through what they export, not through one \
         `self`): {found:#?}"
    );
}

#[test]
fn the_impl_check_sees_methods_away_from_their_type() {
    let mods = modules_of(
        Path::new("src"),
        vec![
            file(
                "a.rs",
                "pub struct A;\nimpl A {\n    pub fn new() -> Self { A }\n}\n\
                 pub enum E { X }\nimpl<'a> E { fn f() -> impl Iterator<Item = u8> { None.into_iter() } }",
            ),
            file(
                "b.rs",
                "use crate::a::{A, E};\n\
                 impl A {\n    fn more(&self) {}\n}\n\
                 impl std::fmt::Display for A { fn fmt(&self, f: &mut F) -> R { todo!() } }\n\
                 impl<T> From<T> for A where for<'x> &'x T: Sized { fn from(_: T) -> A { A } }\n\
                 unsafe impl Send for A {}\nimpl !Sync for E {}\n\
                 fn g(x: impl Fn(u8) -> u8) -> impl Fn() { || () }\n\
                 impl<F: Fn(u8) -> u8> crate::a::E\nwhere F: Copy\n{\n}\n\
                 #[cfg(test)]\nimpl A { fn for_tests(&self) {} }",
            ),
            file(
                "c.rs",
                "pub struct W<F>(F);\nimpl<F: Fn(u8) -> u8> W<F> {}\nimpl<'a> W<&'a str> {}",
            ),
            file("store/mod.rs", "pub struct Store;\nimpl Store {}"),
            file("store/queries.rs", "impl super::Store {}\nimpl Store {}"),
            file(
                "agent/mod.rs",
                "mod pass;\npub struct Agent;\nimpl crate::store::Store {}",
            ),
            // A child of the module that defines the type: one room for the import rule,
            // not for this one.
            file(
                "agent/pass.rs",
                "use super::Agent;\nimpl Agent {\n    fn pass(&mut self) { self.visit() }\n}",
            ),
            file("store/tests.rs", "impl Store {}"),
        ],
    );
    let facades: &[(&str, &[&str], &str)] = &[("Store", &["src/store/"], "one handle")];
    assert_eq!(
        misplaced_impls(&mods, facades),
        vec![
            "src/agent/mod.rs:3: impl Store (defined in src/store/mod.rs)",
            "src/agent/pass.rs:2: impl Agent (defined in src/agent/mod.rs)",
            "src/b.rs:2: impl A (defined in src/a.rs)",
            "src/b.rs:10: impl E (defined in src/a.rs)",
        ]
    );
    assert_eq!(misplaced_impls(&mods, &[]).len(), 6);
}

// ---------------------------------------------------------------------------------------
// No SQL outside the store

#[test]
fn sql_lives_in_the_store_only() {
    let mut offenders = Vec::new();
    for src in crate_srcs() {
        for m in modules(&src) {
            if m.file.starts_with("src/store") {
                continue;
            }
            for (i, line) in m.code.lines().enumerate() {
                if opens_sql(line) {
                    offenders.push(format!("{}:{}", m.file.display(), i + 1));
                }
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
    // Below a test helper, SQL is still seen; in a comment or a test, it is not.
    let m = modules_of(
        Path::new("src"),
        vec![file(
            "a.rs",
            "#[cfg(test)]\nfn helper() {}\n// \"SELECT 1\"\nfn f() { q(\"SELECT 1\") }\n\
             #[cfg(test)]\nmod tests { fn t() { q(\"DELETE FROM clips\") } }",
        )],
    );
    let lines: Vec<usize> = m[0]
        .code
        .lines()
        .enumerate()
        .filter(|(_, l)| opens_sql(l))
        .map(|(i, _)| i + 1)
        .collect();
    assert_eq!(lines, vec![4]);
}

// ---------------------------------------------------------------------------------------
// Sizes, reported

/// The functions of a file, from its masked code (where its braces are) and its code
/// (which lines hold code): (line, name, lines of code from `fn` to its closing brace,
/// blank lines and comments aside).
fn functions(masked: &str, code: &str) -> Vec<(usize, String, usize)> {
    let lines: Vec<&str> = masked.lines().collect();
    let code: Vec<&str> = code.lines().collect();
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
                let n = code[i..=j].iter().filter(|l| !l.trim().is_empty()).count();
                out.push((i + 1, name.clone(), n));
                break;
            }
        }
    }
    out
}

/// Lines of code: blank lines aside (comments and tests are already cut; the lines of a
/// multi-line string, such as a migration's SQL, count).
fn code_lines(code: &str) -> usize {
    code.lines().filter(|l| !l.trim().is_empty()).count()
}

/// The modules and functions of `mods` over the limits, biggest first: (lines, what).
fn oversized(mods: &[Module]) -> Vec<(usize, String)> {
    let mut big = Vec::new();
    for m in mods {
        let n = code_lines(&m.code);
        if n > MODULE_LINES {
            big.push((n, format!("{}: {n} lines of code", m.file.display())));
        }
        for (line, name, len) in functions(&m.masked, &m.code) {
            if len > FUNCTION_LINES {
                big.push((
                    len,
                    format!("{}:{line}: fn {name}: {len} lines", m.file.display()),
                ));
            }
        }
    }
    big.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    big
}

#[test]
fn report_the_big_rooms() {
    let mut big = Vec::new();
    for src in crate_srcs() {
        big.extend(oversized(&modules(&src)));
    }
    let mut report = format!(
        "house: {} module(s) over {MODULE_LINES} lines of code or function(s) over \
         {FUNCTION_LINES} lines (a report, not a failure: split a file when it holds two \
         topics)\n",
        big.len()
    );
    for (_, what) in &big {
        report.push_str(&format!("  {what}\n"));
    }
    // Past the harness's capture: the report is shown on every run.
    let _ = std::io::stderr().lock().write_all(report.as_bytes());
}

#[test]
fn the_counters_count_lines() {
    // A function of N lines is counted as N; braces in strings, chars and comments do not
    // count, nor do blank lines, comments or a test helper.
    let fns = |text: &str| {
        let cut = code_of(text);
        functions(&cut.masked, &cut.code)
    };
    let code = "fn short() {\n    let s = \"{not a brace\";\n}\npub async fn long(x: u8) -> u8 {\n    if x > 0 { // {\n\n        // a comment\n        '{';\n    } else {\n        2\n    }\n}\nfn decl();\n";
    assert_eq!(
        fns(code),
        vec![(1, "short".to_string(), 3), (4, "long".to_string(), 7)]
    );
    let of_lines = |name: &str, n: usize| {
        let body: String = (0..n - 2).map(|i| format!("    f({i});\n")).collect();
        format!("fn {name}() {{\n{body}}}\n")
    };
    let counted = |text: &str| fns(text)[0].2;
    for n in [2, 3, FUNCTION_LINES, FUNCTION_LINES + 1, 500] {
        assert_eq!(counted(&of_lines("f", n)), n);
    }
    // Module size: blank lines, comments and tests aside.
    let text = "// a comment\n\nfn a() {}\n/* a\n   block */\nfn b() {}\nconst Q: &str = \"\n    SELECT 1\n\";\n#[cfg(test)]\nmod tests {\n    fn t() {}\n}\n";
    assert_eq!(code_lines(&code_of(text).code), 5);
    // What is reported: production modules and functions over the limits, not tests.
    let long_fn = of_lines("long", FUNCTION_LINES + 1);
    let module = "fn f() {}\n".repeat(MODULE_LINES + 1);
    let mods = modules_of(
        Path::new("src"),
        vec![
            file("a.rs", &long_fn),
            file("a2.rs", &of_lines("at_the_limit", FUNCTION_LINES)),
            file("b.rs", &module),
            file("c.rs", &"fn f() {}\n".repeat(MODULE_LINES)),
            file("d/tests.rs", &format!("{module}{long_fn}")),
            file("d/tests_more.rs", &format!("{module}{long_fn}")),
            file(
                "e.rs",
                &format!("#[cfg(test)]\nmod tests {{\n{module}{long_fn}}}\n"),
            ),
        ],
    );
    let reported: Vec<String> = oversized(&mods).into_iter().map(|(_, w)| w).collect();
    assert_eq!(
        reported,
        vec![
            format!("src/b.rs: {} lines of code", MODULE_LINES + 1),
            format!("src/a.rs:1: fn long: {} lines", FUNCTION_LINES + 1),
        ]
    );
}
