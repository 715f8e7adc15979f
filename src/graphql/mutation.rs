//! `Mutation`: the write API. Every mutation needs one of `SHIPLOG_WRITE_TOKENS` (with none
//! configured, none runs) and goes through the ingest pipeline as a journaled delivery, so
//! replay reproduces it, the journal says which token made it, and subscribers hear of it.

use async_graphql::{Context, InputObject, Object, Result, SimpleObject};
use axum::http::{HeaderMap, HeaderValue};
use serde_json::{Map, Value};

use super::scalars::Instant;
use super::types::{Deployment, internal, user_error};
use crate::domain::{DeploymentStatus, Discovery, format_millis, now_millis};
use crate::ingest::{Ingest, IngestError, Record};
use crate::sources::{WRITER_HEADER, body_key};
use crate::store::amend::{Amendment, Change, Renamed};
use crate::store::{Outcome, Store};

/// The request's write token, by fingerprint: present only when the request presented one of
/// `SHIPLOG_WRITE_TOKENS`.
#[derive(Clone, Debug)]
pub struct WriteAccess {
    pub writer: String,
}

/// A deployment to record: the generic webhook's fields, with its meaning.
#[derive(InputObject)]
pub struct RecordDeploymentInput {
    /// The deployment's id: recording the same id again updates that deployment (by the same
    /// rules as a webhook: a late RUNNING never overwrites SUCCEEDED).
    pub id: String,
    pub system: String,
    pub environment: String,
    pub status: DeploymentStatus,
    pub started_at: Option<Instant>,
    pub finished_at: Option<Instant>,
    /// When the deployed commit was made (DORA's lead time).
    pub committed_at: Option<Instant>,
    pub commit_sha: Option<String>,
    #[graphql(name = "ref")]
    pub git_ref: Option<String>,
    pub version: Option<String>,
    pub url: Option<String>,
    /// Who deployed (defaults to nobody: the journal keeps which token recorded it).
    pub actor: Option<String>,
}

impl RecordDeploymentInput {
    /// The generic webhook's body for this input.
    fn body(&self) -> String {
        let mut body = Map::new();
        let mut put = |field: &str, value: Option<String>| {
            if let Some(value) = value {
                body.insert(field.to_string(), Value::String(value));
            }
        };
        put("id", Some(self.id.clone()));
        put("system", Some(self.system.clone()));
        put("environment", Some(self.environment.clone()));
        put("status", Some(self.status.as_str().to_string()));
        put("startedAt", self.started_at.map(|i| format_millis(i.0)));
        put("finishedAt", self.finished_at.map(|i| format_millis(i.0)));
        put("committedAt", self.committed_at.map(|i| format_millis(i.0)));
        put("commitSha", self.commit_sha.clone());
        put("ref", self.git_ref.clone());
        put("version", self.version.clone());
        put("url", self.url.clone());
        put("actor", self.actor.clone());
        Value::Object(body).to_string()
    }
}

/// What `recordDeployment` did.
#[derive(SimpleObject)]
pub struct RecordedDeployment {
    /// The journaled delivery (`Query.delivery`): which token, when, what. Null when the same
    /// record was made before (nothing changed).
    delivery_id: Option<async_graphql::ID>,
    /// `accepted`, or `duplicate` when the same record was made before.
    outcome: String,
    deployment: Option<Deployment>,
}

/// The root of every write.
#[derive(async_graphql::MergedObject, Default)]
pub struct MutationRoot(RecordRoot, AmendRoot);

/// Recording deployments.
#[derive(Default)]
pub struct RecordRoot;

#[Object]
impl RecordRoot {
    /// Records a deployment (a manual or hotfix deploy, a tool with no webhook), as the generic
    /// webhook would (`source` is `generic`, `discoveredBy` is `API`). Needs a write token.
    async fn record_deployment(
        &self,
        ctx: &Context<'_>,
        input: RecordDeploymentInput,
    ) -> Result<RecordedDeployment> {
        let writer = write_access(ctx)?;
        let ingest = ctx.data::<Ingest>()?;
        let body = input.body();
        let mut headers = HeaderMap::new();
        let fingerprint = HeaderValue::from_str(&writer.writer).map_err(|_| {
            user_error(
                "INTERNAL_SERVER_ERROR",
                "the write token's fingerprint is not a header value",
            )
        })?;
        headers.insert(WRITER_HEADER, fingerprint);
        check_generic(ingest, &headers, &body)?;
        let record = Record {
            source: "generic",
            key: body_key(body.as_bytes()),
            body,
            headers,
            received_at: now_millis(),
        };
        let outcome = ingest
            .import(record, Discovery::Api)
            .await
            .map_err(|error| match error {
                IngestError::Invalid { message, .. } => user_error("BAD_USER_INPUT", &message),
                other => user_error("UNAVAILABLE", &format!("not recorded, try again: {other}")),
            })?;
        let delivery_id = match &outcome {
            Outcome::Applied { delivery_id, .. } => Some(*delivery_id),
            Outcome::Duplicate { .. } => None,
            other => {
                return Err(user_error(
                    "BAD_USER_INPUT",
                    &format!(
                        "the deployment was journaled but not recorded ({})",
                        other.label()
                    ),
                ));
            }
        };
        let store = ctx.data::<Store>()?;
        let deployment = store
            .deployment_in("generic", input.id.trim())
            .await
            .map_err(internal)?
            .map(Deployment::new);
        Ok(RecordedDeployment {
            delivery_id: delivery_id.map(|id| async_graphql::ID(id.to_string())),
            outcome: outcome.label().to_string(),
            deployment,
        })
    }
}

/// A tag to set; a null `value` removes the key.
#[derive(InputObject)]
pub struct TagInput {
    pub key: String,
    pub value: Option<String>,
}

/// What `annotateDeployment` and `markFailedChange` did.
#[derive(SimpleObject)]
pub struct AmendedDeployment {
    /// The journaled change (`Query.delivery`: `kind` API, `recordedBy`, the arguments as body).
    delivery_id: async_graphql::ID,
    deployment: Deployment,
}

/// The write API's changes to a stored deployment.
#[derive(Default)]
pub struct AmendRoot;

#[Object]
impl AmendRoot {
    /// Sets tags (a null value removes one) and, when given, the note (an empty note clears
    /// it) on a deployment. Needs a write token.
    async fn annotate_deployment(
        &self,
        ctx: &Context<'_>,
        id: async_graphql::ID,
        #[graphql(default)] tags: Vec<TagInput>,
        note: Option<String>,
    ) -> Result<AmendedDeployment> {
        let mut checked = std::collections::BTreeMap::new();
        let mut problems = Vec::new();
        for tag in &tags {
            match &tag.value {
                Some(value) => match crate::domain::tags::checked(&tag.key, value) {
                    Ok((key, value)) => {
                        checked.insert(key, Some(value));
                    }
                    Err(problem) => problems.push(problem),
                },
                None => {
                    checked.insert(tag.key.trim().to_string(), None);
                }
            }
        }
        if note
            .as_ref()
            .is_some_and(|n| n.len() > crate::domain::MAX_TEXT_LEN)
        {
            problems.push(format!(
                "`note` is longer than {} bytes",
                crate::domain::MAX_TEXT_LEN
            ));
        }
        if !problems.is_empty() {
            return Err(user_error("BAD_USER_INPUT", &problems.join("; ")));
        }
        let body = serde_json::json!({
            "mutation": "annotateDeployment",
            "id": id.as_str(),
            "tags": tags.iter().map(|t| (t.key.clone(), t.value.clone())).collect::<std::collections::BTreeMap<_, _>>(),
            "note": note,
        });
        let change = Change::Annotate { tags: checked, note };
        amend(ctx, &id, change, body).await
    }

    /// Marks a deployment as a failed change (`failed: true`: it succeeded but broke
    /// production; DORA's change failure rate counts it, and the next success of the system in
    /// the environment is its recovery), as not one (`false`: a failed deployment that did not
    /// hurt production), or takes the mark back (`null`: its status decides again). Needs a
    /// write token.
    async fn mark_failed_change(
        &self,
        ctx: &Context<'_>,
        id: async_graphql::ID,
        failed: Option<bool>,
        reason: Option<String>,
    ) -> Result<AmendedDeployment> {
        if reason
            .as_ref()
            .is_some_and(|r| r.len() > crate::domain::MAX_TEXT_LEN)
        {
            return Err(user_error(
                "BAD_USER_INPUT",
                &format!("`reason` is longer than {} bytes", crate::domain::MAX_TEXT_LEN),
            ));
        }
        let reason = reason.map(|r| r.trim().to_string()).filter(|r| !r.is_empty());
        let body = serde_json::json!({
            "mutation": "markFailedChange", "id": id.as_str(), "failed": failed, "reason": reason,
        });
        amend(ctx, &id, Change::FailedChange { failed, reason }, body).await
    }

    /// Corrects what a tool got wrong: the status (a deployment stuck RUNNING that died, a
    /// failure that was in fact fine), or the system or environment it belongs to. System and
    /// environment are read as a tool's words are (`[mapping]` rules and catalog aliases apply,
    /// and `shiplog replay` maps them again after the rules change). What people correct stays
    /// when the tool reports the deployment again; the tool's own words stay readable
    /// (`rawStatus`, `rawSystem`, `rawEnvironment`). Needs a write token.
    async fn correct_deployment(
        &self,
        ctx: &Context<'_>,
        id: async_graphql::ID,
        status: Option<DeploymentStatus>,
        system: Option<String>,
        environment: Option<String>,
        reason: Option<String>,
    ) -> Result<AmendedDeployment> {
        let mut problems = Vec::new();
        if status.is_none() && system.is_none() && environment.is_none() {
            problems.push("give at least one of `status`, `system`, `environment` to correct".to_string());
        }
        let ingest = ctx.data::<Ingest>()?;
        let mut renamed = |field: &str, given: &Option<String>, map: &dyn Fn(&str) -> String| {
            let given = given.as_ref()?.trim().to_string();
            if given.is_empty() || given.len() > crate::domain::MAX_NAME_LEN {
                problems.push(format!(
                    "`{field}` is a name of 1 to {} bytes",
                    crate::domain::MAX_NAME_LEN
                ));
                return None;
            }
            let mapped = map(&given);
            Some(Renamed { given, mapped })
        };
        let rules = ingest.rules();
        let system = renamed("system", &system, &|name| rules.system(name));
        let environment = renamed("environment", &environment, &|name| rules.environment(name));
        let reason = checked_reason(reason, &mut problems);
        if !problems.is_empty() {
            return Err(user_error("BAD_USER_INPUT", &problems.join("; ")));
        }
        let body = serde_json::json!({
            "mutation": "correctDeployment", "id": id.as_str(),
            "status": status.map(|s| s.as_str()),
            "system": system.as_ref().map(|s| &s.given),
            "environment": environment.as_ref().map(|e| &e.given),
            "reason": reason,
        });
        let change = Change::Correct {
            status,
            system,
            environment,
            reason,
        };
        amend(ctx, &id, change, body).await
    }

    /// Deletes a deployment that should not count (a test run, a duplicate from a second
    /// tool): it leaves every list, count, DORA metric and the board, and a later delivery of
    /// it from the tool does not bring it back. The journal keeps everything, and
    /// `Query.deployment(id)` still reads it with `deletedAt` and `deletionReason`. Needs a
    /// write token and a reason.
    async fn delete_deployment(
        &self,
        ctx: &Context<'_>,
        id: async_graphql::ID,
        reason: String,
    ) -> Result<AmendedDeployment> {
        let mut problems = Vec::new();
        let reason = checked_reason(Some(reason), &mut problems);
        if reason.is_none() && problems.is_empty() {
            problems.push("`reason` says why the deployment is deleted; it may not be empty".into());
        }
        let (Some(reason), true) = (reason, problems.is_empty()) else {
            return Err(user_error("BAD_USER_INPUT", &problems.join("; ")));
        };
        let body = serde_json::json!({
            "mutation": "deleteDeployment", "id": id.as_str(), "reason": reason,
        });
        amend(ctx, &id, Change::Delete { reason }, body).await
    }
}

/// A reason, trimmed (none when empty), or a problem when too long.
fn checked_reason(reason: Option<String>, problems: &mut Vec<String>) -> Option<String> {
    let reason = reason.map(|r| r.trim().to_string()).filter(|r| !r.is_empty())?;
    if reason.len() > crate::domain::MAX_TEXT_LEN {
        problems.push(format!(
            "`reason` is longer than {} bytes",
            crate::domain::MAX_TEXT_LEN
        ));
        return None;
    }
    Some(reason)
}

/// Journals and applies one change, publishes its event, answers with the deployment.
async fn amend(
    ctx: &Context<'_>,
    id: &async_graphql::ID,
    change: Change,
    body: serde_json::Value,
) -> Result<AmendedDeployment> {
    let writer = write_access(ctx)?;
    let deployment_id: i64 = id.parse().map_err(|_| {
        user_error(
            "BAD_USER_INPUT",
            "a deployment id is a number, as `Deployment.id` gives it",
        )
    })?;
    let headers = serde_json::json!({
        crate::sources::IMPORT_HEADER: Discovery::Api.as_str(),
        WRITER_HEADER: writer.writer,
    });
    let amendment = Amendment {
        deployment_id,
        change,
        body: body.to_string(),
        headers: headers.to_string(),
        at: now_millis(),
    };
    let store = ctx.data::<Store>()?;
    let amended = match store.amend(amendment).await {
        Ok(Some(amended)) => amended,
        Ok(None) => {
            return Err(user_error(
                "NOT_FOUND",
                &format!("no deployment has id {deployment_id}"),
            ));
        }
        Err(crate::store::StoreError::Invalid(message)) => {
            return Err(user_error("BAD_USER_INPUT", &message));
        }
        Err(error) => return Err(internal(error)),
    };
    ctx.data::<crate::events::Hub>()?.publish([amended.event]);
    Ok(AmendedDeployment {
        delivery_id: async_graphql::ID(amended.delivery_id.to_string()),
        deployment: Deployment::new(amended.deployment),
    })
}

/// The request's write access, or FORBIDDEN saying what to send.
fn write_access<'a>(ctx: &'a Context<'_>) -> Result<&'a WriteAccess> {
    ctx.data_opt::<WriteAccess>().ok_or_else(|| {
        user_error(
            "FORBIDDEN",
            "mutations need one of SHIPLOG_WRITE_TOKENS as `Authorization: Bearer <token>` over POST \
             (read tokens only read; with no write token configured, no mutation runs)",
        )
    })
}

/// Reads the body as the generic source does before anything is journaled: bad input is
/// refused with every problem named, and writes nothing.
fn check_generic(ingest: &Ingest, headers: &HeaderMap, body: &str) -> Result<()> {
    let source = ingest
        .sources()
        .get("generic")
        .ok_or_else(|| user_error("UNAVAILABLE", "the generic source is not served"))?;
    let delivery = crate::sources::Delivery {
        headers,
        query: None,
        body: body.as_bytes(),
        received_at: now_millis(),
    };
    source
        .accept(&delivery)
        .map(|_| ())
        .map_err(|error| user_error("BAD_USER_INPUT", &error.to_string()))
}
