//! The shipped configuration files parse: `config.example.toml` and every complete
//! config snippet in the README.

use std::path::Path;

use qucam_offload::config::Config;

#[test]
fn the_example_config_loads() {
    let cfg = Config::load(Path::new("config.example.toml")).expect("config.example.toml");
    assert_eq!(cfg.cameras[0].name, "truck-12");
    assert_eq!(cfg.s3.as_ref().unwrap().bucket, "fleet-video");
}

#[test]
fn every_readme_config_snippet_loads() {
    let readme = std::fs::read_to_string("README.md").unwrap();
    let mut n = 0;
    let mut rest = readme.as_str();
    while let Some(start) = rest.find("```toml\n") {
        let body = &rest[start + 8..];
        let end = body.find("```").expect("closed code block");
        Config::parse(&body[..end], Path::new("README.md"))
            .unwrap_or_else(|e| panic!("README snippet {n} does not load: {e}"));
        n += 1;
        rest = &body[end..];
    }
    assert!(n >= 1, "the README shows a config");
}
