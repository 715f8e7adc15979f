//! The GraphQL API: schema, root types and loaders. Resolvers read only through `store`.

pub mod board;
pub mod budget;
pub mod catalog;
pub mod changes;
pub mod errors;
pub mod grafana;
pub mod live;
pub mod loaders;
pub mod mutation;
pub mod plain;
pub mod query;
pub mod scalars;
pub mod subscription;
pub mod types;

use async_graphql::Schema;

use crate::events::Hub;
use crate::store::Store;

/// shiplog's schema type.
pub type ShiplogSchema = Schema<Query, mutation::MutationRoot, subscription::SubscriptionRoot>;

/// The query root: the API's own fields and the Grafana-shaped ones.
#[derive(async_graphql::MergedObject, Default)]
pub struct Query(
    query::QueryRoot,
    grafana::GrafanaQuery,
    board::BoardQuery,
    catalog::CatalogQuery,
);

/// GraphiQL's introspection query needs depth 13; leave room for real queries above it.
pub const MAX_DEPTH: usize = 16;
/// Fields per query (each field counts one): GraphiQL's introspection needs about 200; the
/// board page with every deployment field, about 60.
pub const MAX_COMPLEXITY: usize = 2_000;

/// Builds the schema with the shared store and hub, and the settings its resolvers read.
pub fn schema(
    store: Store,
    hub: Hub,
    ingest: &crate::ingest::Ingest,
    settings: &crate::config::Settings,
) -> ShiplogSchema {
    Schema::build(
        Query::default(),
        mutation::MutationRoot::default(),
        subscription::SubscriptionRoot,
    )
    .data(store)
    .data(ingest.clone())
    .data(ingest.catalog_handle())
    .data(crate::commits::Served::of(&settings.api))
    .data(hub)
    .data(settings.dora.clone())
    .data(settings.board.clone())
    .data(settings.environments.clone())
    .data(budget::BigAnswers::per_core())
    .limit_depth(MAX_DEPTH)
    .limit_complexity(MAX_COMPLEXITY)
    .finish()
}

/// The catalog as last read (the settings are read again on SIGHUP or when the file changes).
pub(crate) fn catalog(
    ctx: &async_graphql::Context<'_>,
) -> async_graphql::Result<std::sync::Arc<crate::domain::Catalog>> {
    Ok(ctx
        .data::<crate::ingest::Current<crate::domain::Catalog>>()?
        .get())
}

/// The SDL that `schema.graphql` holds.
pub fn sdl() -> String {
    Schema::build(
        Query::default(),
        mutation::MutationRoot::default(),
        subscription::SubscriptionRoot,
    )
    .finish()
    .sdl()
}
