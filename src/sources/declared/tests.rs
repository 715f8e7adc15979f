use axum::http::HeaderMap;

use super::*;

fn declared(toml_text: &str) -> Result<Declared, String> {
    let config: DeclaredConfig = toml::from_str(toml_text).map_err(|e| e.to_string())?;
    Declared::new("tool", config)
}

fn accept(source: &Declared, body: &str, query: Option<&str>) -> Result<Accepted, SourceError> {
    source.accept(&Delivery {
        headers: &HeaderMap::new(),
        query,
        body: body.as_bytes(),
        received_at: 1_000,
    })
}

const MINIMAL: &str = r#"
id = '.id'
system = '.app'
environment = '$query.env // "production"'
status = '.state'
finished_at = '.at'
[auth]
kind = "bearer"
[statuses]
Done = "succeeded"
"#;

#[test]
fn times_are_read_as_the_built_in_sources_read_them_and_epoch_seconds_too() {
    assert_eq!(instant(&serde_json::json!(1_700_000_000)), Ok(1_700_000_000_000));
    assert_eq!(
        instant(&serde_json::json!(1_700_000_000_123_i64)),
        Ok(1_700_000_000_123)
    );
    assert_eq!(instant(&serde_json::json!("1700000000")), Ok(1_700_000_000_000));
    assert_eq!(
        instant(&serde_json::json!(1_700_000_000.5)),
        Ok(1_700_000_000_500)
    );
    assert_eq!(
        instant(&serde_json::json!("2021-04-28 21:50:00 +0200")),
        Ok(1_619_639_400_000)
    );
    assert!(instant(&serde_json::json!("yesterday")).is_err());
}

#[test]
fn a_declaration_maps_words_case_insensitively_and_reads_the_query() {
    let source = declared(MINIMAL).unwrap();
    let accepted = accept(
        &source,
        r#"{"id": 7, "app": "billing", "state": "DONE", "at": 1700000000}"#,
        Some("env=staging"),
    )
    .unwrap();
    let Parsed::Deployments(found) = accepted.parsed else {
        panic!("a deployment")
    };
    assert_eq!(
        (found[0].external_id.as_str(), found[0].environment.as_str()),
        ("7", "staging")
    );
    assert_eq!(found[0].status, DeploymentStatus::Succeeded);
    assert_eq!(found[0].finished_at, Some(1_700_000_000_000));
    assert!(!found[0].times_estimated);
    assert_eq!(accepted.rule.as_deref(), Some("sources.tool"));
    let odd = accept(&source, r#"{"id": 8, "app": "billing", "state": "weird"}"#, None).unwrap();
    let Parsed::Deployments(found) = odd.parsed else {
        panic!("a deployment")
    };
    assert_eq!(
        (found[0].status, found[0].raw_status.as_str()),
        (DeploymentStatus::Unknown, "weird")
    );
    assert!(found[0].times_estimated, "no time: the receive time stands in");
}

#[test]
fn fields_pair_with_ids_by_position_or_apply_to_all() {
    let source = declared(
        &MINIMAL
            .replace("id = '.id'", "id = '.services[].id'")
            .replace("system = '.app'", "system = '.services[].name'"),
    )
    .unwrap();
    let body = r#"{"services": [{"id": "a1", "name": "api"}, {"id": "w1", "name": "web"}], "state": "Done"}"#;
    let Parsed::Deployments(found) = accept(&source, body, None).unwrap().parsed else {
        panic!("deployments")
    };
    let pairs: Vec<(&str, &str, &str)> = found
        .iter()
        .map(|o| (o.external_id.as_str(), o.system.as_str(), o.environment.as_str()))
        .collect();
    assert_eq!(pairs, [("a1", "api", "production"), ("w1", "web", "production")]);
    let nameless = r#"{"services": [{"id": "a1", "name": "api"}, {"id": "w1"}], "state": "Done"}"#;
    let error = accept(&source, nameless, None).unwrap_err().to_string();
    assert!(
        error.contains("`system` = '.services[].name'") && error.contains("no text"),
        "{error}"
    );
    let lists = declared(
        &MINIMAL
            .replace("id = '.id'", "id = '.ids[]'")
            .replace("system = '.app'", "system = '.names[]'"),
    )
    .unwrap();
    let uneven = r#"{"ids": ["a1", "w1", "x1"], "names": ["api", "web"], "state": "Done"}"#;
    let error = accept(&lists, uneven, None).unwrap_err().to_string();
    assert!(
        error.contains("`system`") && error.contains("2 values for 3 ids"),
        "{error}"
    );
}

#[test]
fn mistakes_name_the_source_the_key_and_the_problem() {
    let error = |text: &str| declared(text).err().unwrap_or_default();
    assert!(error(&MINIMAL.replace("'.app'", "'.app |'")).contains("[sources.tool] system: expected"));
    assert!(
        error(&MINIMAL.replace("\"bearer\"", "\"magic\"")).contains("[sources.tool.auth] kind = \"magic\"")
    );
    assert!(
        error(&MINIMAL.replace("\"succeeded\"", "\"done\""))
            .contains("[sources.tool.statuses] Done = \"done\"")
    );
    assert!(error(&MINIMAL.replace("id = '.id'\n", "")).contains("[sources.tool] id is required"));
    assert!(error(&MINIMAL.replace("'.app'", "'$secrets'")).contains("undefined variable"));
    assert!(
        error(&MINIMAL.replace("'.app'", "'env.HOME'")).contains("undefined filter `env"),
        "env is not there"
    );
    assert!(
        check_name("gitlab").is_err()
            && check_name("Bad_Name").is_err()
            && check_name("azure-devops").is_ok()
    );
}

#[test]
fn a_recipe_is_a_starting_point_whose_keys_can_be_overridden() {
    let source =
        declared("recipe = \"buildkite\"\nenvironment = '\"qa\"'\n[statuses]\npassed = \"failed\"\n")
            .unwrap();
    let body =
        include_str!("../../../tests/fixtures/buildkite/webhook_build_finished.from-rest.derived.json");
    let Parsed::Deployments(found) = accept(&source, body, None).unwrap().parsed else {
        panic!("a deployment")
    };
    assert_eq!(
        (found[0].environment.as_str(), found[0].status),
        ("qa", DeploymentStatus::Failed)
    );
    assert_eq!(found[0].system, "great-pipeline", "the recipe's own keys stay");
    for (name, _, _) in recipes::RECIPES {
        declared(&format!("recipe = \"{name}\"")).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}
