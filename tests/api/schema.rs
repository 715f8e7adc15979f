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
