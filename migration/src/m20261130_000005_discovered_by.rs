//! Each deployment keeps how shiplog first learned of it: a webhook, `shiplog import`, or the
//! server's reconciliation against the tool's API (one webhooks missed). Deployments stored
//! before were all learned from webhooks.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Deployments {
    Table,
    DiscoveredBy,
}

const INDEX: &str = "deployments_discovered_by";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Deployments::Table)
                    .add_column(string(Deployments::DiscoveredBy).default("webhook"))
                    .to_owned(),
            )
            .await?;
        // Counting what reconciliation found reads only the few deployments it discovered.
        manager
            .create_index(
                Index::create()
                    .name(INDEX)
                    .table(Deployments::Table)
                    .col(Deployments::DiscoveredBy)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(Index::drop().name(INDEX).table(Deployments::Table).to_owned())
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Deployments::Table)
                    .drop_column(Deployments::DiscoveredBy)
                    .to_owned(),
            )
            .await
    }
}
