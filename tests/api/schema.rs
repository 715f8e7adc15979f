//! `schema.graphql` is the SDL the server serves; it must not drift.

#[test]
fn schema_graphql_matches_what_the_server_serves() {
    let served = shiplog::graphql::sdl();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql");
    if std::env::var("UPDATE_SCHEMA").is_ok() {
        std::fs::write(path, &served).unwrap();
    }
    let checked_in = std::fs::read_to_string(path).unwrap_or_default();
    if checked_in != served {
        let diff = similar::TextDiff::from_lines(&checked_in, &served);
        let shown: String = diff
            .unified_diff()
            .context_radius(2)
            .header("schema.graphql (checked in)", "served by shiplog")
            .to_string();
        panic!(
            "schema.graphql is out of date. Regenerate it with `cargo run -- print-schema > schema.graphql` \
             (or UPDATE_SCHEMA=1 cargo test schema), and review the diff:\n{shown}"
        );
    }
}

#[test]
fn every_toml_example_in_the_readme_is_a_valid_settings_file() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let mut blocks = 0;
    for block in readme.split("```toml").skip(1) {
        let toml_text = block.split("```").next().unwrap();
        let parsed = shiplog::config::Settings::from_toml(toml_text);
        assert!(
            parsed.is_ok(),
            "README example does not parse: {parsed:?}\n{toml_text}"
        );
        let settings = parsed.unwrap();
        shiplog::sources::Registry::with_declared(&settings.sections, &settings.sources)
            .unwrap_or_else(|e| panic!("the example's rules compile: {e}\n{toml_text}"));
        blocks += 1;
    }
    assert!(blocks >= 2, "found {blocks} TOML examples");
}
