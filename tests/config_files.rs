//! The shipped configuration files parse: `config.example.toml` and every complete
//! config snippet in the README and in the pages under `docs/`. A snippet that is only part
//! of a config is fenced ```` ```toml fragment ```` and not loaded.
//!
//! And the package ships what it should where it should: the polkit rule that lets the
//! service drive NetworkManager is not put into polkit's rules directories by the package
//! (only `postinst`, where the config has `[wifi]`, or the operator enables it).

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

/// `[package.metadata.deb] assets` of Cargo.toml: (source, destination) pairs.
fn deb_assets() -> Vec<(String, String)> {
    let text = std::fs::read_to_string("Cargo.toml").expect("Cargo.toml");
    let cargo: toml::Table = toml::from_str(&text).expect("Cargo.toml parses");
    let assets = cargo["package"]["metadata"]["deb"]["assets"]
        .as_array()
        .expect("deb assets")
        .clone();
    assets
        .iter()
        .map(|a| {
            let a = a.as_array().expect("an asset is a list");
            let s = |i: usize| a[i].as_str().expect("asset text").to_string();
            (s(0), s(1))
        })
        .collect()
}

#[test]
fn the_deb_ships_the_polkit_rule_but_enables_it_only_where_wifi_is_used() {
    let assets = deb_assets();
    for (src, dest) in &assets {
        assert!(
            !dest.contains("polkit-1"),
            "{src} installed into {dest}: the package must not enable a polkit rule"
        );
    }
    assert!(
        assets
            .iter()
            .any(|(src, dest)| src == "systemd/50-qucam-offload.rules"
                && dest == "usr/share/qucam-offload/"),
        "the rule is shipped under /usr/share/qucam-offload/: {assets:?}"
    );
    // The step that enables it names that path, in the package and in the docs.
    let link = "/usr/share/qucam-offload/50-qucam-offload.rules";
    let postinst = std::fs::read_to_string("debian/postinst").unwrap();
    assert!(
        postinst.contains(link) && postinst.contains("[wifi]") && postinst.contains("ln -s"),
        "{postinst}"
    );
    let step = format!("sudo ln -s {link} /etc/polkit-1/rules.d/");
    for doc in ["docs/depot-wifi.md", "docs/install.md"] {
        let text = std::fs::read_to_string(doc).unwrap();
        assert!(text.contains(&step), "{doc} shows: {step}");
    }
}
