//! The shipped configuration files parse: `config.example.toml` and every complete
//! config snippet in the README and in the pages under `docs/`. A snippet that is only part
//! of a config is fenced ```` ```toml fragment ```` and not loaded.

use std::path::Path;

use qucam_offload::config::Config;

#[test]
fn the_example_config_loads() {
    let cfg = Config::load(Path::new("config.example.toml")).expect("config.example.toml");
    assert_eq!(cfg.cameras[0].name, "truck-12");
    assert_eq!(cfg.s3.as_ref().unwrap().bucket, "fleet-video");
}

/// The bodies of the ```` ```toml ```` code blocks of a Markdown text.
fn toml_snippets(text: &str) -> Vec<&str> {
    let mut snippets = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("```toml\n") {
        let body = &rest[start + 8..];
        let end = body.find("```").expect("closed code block");
        snippets.push(&body[..end]);
        rest = &body[end..];
    }
    snippets
}

#[test]
fn every_readme_config_snippet_loads() {
    let readme = std::fs::read_to_string("README.md").unwrap();
    let snippets = toml_snippets(&readme);
    for (n, snippet) in snippets.iter().enumerate() {
        Config::parse(snippet, Path::new("README.md"))
            .unwrap_or_else(|e| panic!("README snippet {n} does not load: {e}"));
    }
    assert!(!snippets.is_empty(), "the README shows a config");
}

#[test]
fn every_docs_config_snippet_loads() {
    let mut pages: Vec<_> = std::fs::read_dir("docs")
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|ext| ext == "md"))
        .collect();
    pages.sort();
    let mut n = 0;
    for page in &pages {
        let text = std::fs::read_to_string(page).unwrap();
        let snippets = toml_snippets(&text);
        for (i, snippet) in snippets.iter().enumerate() {
            Config::parse(snippet, page)
                .unwrap_or_else(|e| panic!("{} snippet {i} does not load: {e}", page.display()));
        }
        n += snippets.len();
    }
    assert!(n >= 1, "the docs show a config");
}
