//! A deployment's place in its history: the success it replaced (the newest success of the
//! same system in the same environment before it) and whether an earlier one shipped the
//! same version (a rollback). Every succeeded deployment is placed once, in the background, and
//! GraphQL asks for both. Without these, SQLite walked a whole environment's deployments (all
//! systems) back in time, and every upgrade read its system's whole history looking for its
//! new version there.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Deployments {
    Table,
    SystemId,
    EnvironmentId,
    Version,
    DeployedAt,
    Id,
}

const HISTORY: &str = "deployments_history";
const HISTORY_VERSION: &str = "deployments_history_version";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name(HISTORY)
                    .table(Deployments::Table)
                    .col(Deployments::SystemId)
                    .col(Deployments::EnvironmentId)
                    .col(Deployments::DeployedAt)
                    .col(Deployments::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name(HISTORY_VERSION)
                    .table(Deployments::Table)
                    .col(Deployments::SystemId)
                    .col(Deployments::EnvironmentId)
                    .col(Deployments::Version)
                    .col(Deployments::DeployedAt)
                    .col(Deployments::Id)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for name in [HISTORY_VERSION, HISTORY] {
            manager
                .drop_index(Index::drop().name(name).table(Deployments::Table).to_owned())
                .await?;
        }
        Ok(())
    }
}
