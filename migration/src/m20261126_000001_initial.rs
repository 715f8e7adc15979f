//! The foundation tables: the delivery journal, systems, environments, deployments and
//! their status events, plus a small key/value table for generated settings.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Deliveries {
    Table,
    Id,
    Source,
    DeliveryKey,
    ReceivedAt,
    Body,
    Headers,
    State,
    Error,
    Attempts,
    NextAttemptAt,
    ProcessedAt,
}

#[derive(DeriveIden)]
enum Systems {
    Table,
    Id,
    Name,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Environments {
    Table,
    Id,
    Name,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Deployments {
    Table,
    Id,
    Source,
    ExternalId,
    SystemId,
    EnvironmentId,
    Status,
    RawStatus,
    RawSystem,
    RawEnvironment,
    EnvironmentTier,
    Tenant,
    CommittedAt,
    StatusAt,
    StartedAt,
    FinishedAt,
    DeployedAt,
    CommitSha,
    GitRef,
    Version,
    Url,
    Actor,
    FirstSeenAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum DeploymentEvents {
    Table,
    Id,
    DeploymentId,
    DeliveryId,
    Status,
    RawStatus,
    PreviousStatus,
    OccurredAt,
    RecordedAt,
}

#[derive(DeriveIden)]
enum BoardCells {
    Table,
    SystemId,
    EnvironmentId,
    CurrentId,
    CurrentAt,
    ProgressId,
    ProgressAt,
    FailureId,
    FailureAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Settings {
    Table,
    Key,
    Value,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Deliveries::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Deliveries::Id))
                    .col(string(Deliveries::Source))
                    .col(string(Deliveries::DeliveryKey))
                    .col(big_integer(Deliveries::ReceivedAt))
                    .col(text(Deliveries::Body))
                    .col(text(Deliveries::Headers))
                    .col(string(Deliveries::State))
                    .col(text_null(Deliveries::Error))
                    .col(integer(Deliveries::Attempts).default(0))
                    .col(big_integer_null(Deliveries::NextAttemptAt))
                    .col(big_integer_null(Deliveries::ProcessedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("deliveries_source_key")
                    .table(Deliveries::Table)
                    .col(Deliveries::Source)
                    .col(Deliveries::DeliveryKey)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("deliveries_state_next_attempt")
                    .table(Deliveries::Table)
                    .col(Deliveries::State)
                    .col(Deliveries::NextAttemptAt)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Systems::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Systems::Id))
                    .col(string_uniq(Systems::Name))
                    .col(big_integer(Systems::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Environments::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Environments::Id))
                    .col(string_uniq(Environments::Name))
                    .col(big_integer(Environments::CreatedAt))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Deployments::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Deployments::Id))
                    .col(string(Deployments::Source))
                    .col(string(Deployments::ExternalId))
                    .col(big_integer(Deployments::SystemId))
                    .col(big_integer(Deployments::EnvironmentId))
                    .col(string(Deployments::Status))
                    .col(string(Deployments::RawStatus))
                    .col(string(Deployments::RawSystem))
                    .col(string(Deployments::RawEnvironment))
                    .col(string_null(Deployments::EnvironmentTier))
                    .col(string_null(Deployments::Tenant))
                    .col(big_integer_null(Deployments::CommittedAt))
                    .col(big_integer(Deployments::StatusAt))
                    .col(big_integer_null(Deployments::StartedAt))
                    .col(big_integer_null(Deployments::FinishedAt))
                    .col(big_integer(Deployments::DeployedAt))
                    .col(string_null(Deployments::CommitSha))
                    .col(text_null(Deployments::GitRef))
                    .col(text_null(Deployments::Version))
                    .col(text_null(Deployments::Url))
                    .col(text_null(Deployments::Actor))
                    .col(big_integer(Deployments::FirstSeenAt))
                    .col(big_integer(Deployments::UpdatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(Deployments::Table, Deployments::SystemId)
                            .to(Systems::Table, Systems::Id),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(Deployments::Table, Deployments::EnvironmentId)
                            .to(Environments::Table, Environments::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("deployments_source_external_id")
                    .table(Deployments::Table)
                    .col(Deployments::Source)
                    .col(Deployments::ExternalId)
                    .unique()
                    .to_owned(),
            )
            .await?;
        // The deployments list is ordered by (deployed_at, id) newest first and filtered by
        // system or environment: one composite index per access path keeps every page an
        // index range scan, even deep pages reached by cursor.
        for (name, cols) in [
            (
                "deployments_deployed_at",
                vec![Deployments::DeployedAt, Deployments::Id],
            ),
            (
                "deployments_system_deployed_at",
                vec![Deployments::SystemId, Deployments::DeployedAt, Deployments::Id],
            ),
            (
                "deployments_environment_deployed_at",
                vec![
                    Deployments::EnvironmentId,
                    Deployments::DeployedAt,
                    Deployments::Id,
                ],
            ),
            ("deployments_commit_sha", vec![Deployments::CommitSha]),
            // Aggregations (frequency, counts) over a time window read only this index.
            (
                "deployments_time_dimensions",
                vec![
                    Deployments::DeployedAt,
                    Deployments::SystemId,
                    Deployments::EnvironmentId,
                    Deployments::Status,
                    Deployments::Source,
                ],
            ),
        ] {
            let mut index = Index::create();
            index.name(name).table(Deployments::Table);
            for col in cols {
                index.col(col);
            }
            manager.create_index(index.to_owned()).await?;
        }

        manager
            .create_table(
                Table::create()
                    .table(DeploymentEvents::Table)
                    .if_not_exists()
                    .col(big_pk_auto(DeploymentEvents::Id))
                    .col(big_integer(DeploymentEvents::DeploymentId))
                    .col(big_integer_null(DeploymentEvents::DeliveryId))
                    .col(string(DeploymentEvents::Status))
                    .col(string(DeploymentEvents::RawStatus))
                    .col(string_null(DeploymentEvents::PreviousStatus))
                    .col(big_integer(DeploymentEvents::OccurredAt))
                    .col(big_integer(DeploymentEvents::RecordedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(DeploymentEvents::Table, DeploymentEvents::DeploymentId)
                            .to(Deployments::Table, Deployments::Id),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(DeploymentEvents::Table, DeploymentEvents::DeliveryId)
                            .to(Deliveries::Table, Deliveries::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("deployment_events_deployment")
                    .table(DeploymentEvents::Table)
                    .col(DeploymentEvents::DeploymentId)
                    .col(DeploymentEvents::OccurredAt)
                    .to_owned(),
            )
            .await?;

        // What runs where: one row per system and environment, kept up to date by the ingest
        // transaction, so the board never scans deployments.
        manager
            .create_table(
                Table::create()
                    .table(BoardCells::Table)
                    .if_not_exists()
                    .col(big_integer(BoardCells::SystemId))
                    .col(big_integer(BoardCells::EnvironmentId))
                    .col(big_integer_null(BoardCells::CurrentId))
                    .col(big_integer_null(BoardCells::CurrentAt))
                    .col(big_integer_null(BoardCells::ProgressId))
                    .col(big_integer_null(BoardCells::ProgressAt))
                    .col(big_integer_null(BoardCells::FailureId))
                    .col(big_integer_null(BoardCells::FailureAt))
                    .col(big_integer(BoardCells::UpdatedAt))
                    .primary_key(
                        Index::create()
                            .col(BoardCells::SystemId)
                            .col(BoardCells::EnvironmentId),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(BoardCells::Table, BoardCells::SystemId)
                            .to(Systems::Table, Systems::Id),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(BoardCells::Table, BoardCells::EnvironmentId)
                            .to(Environments::Table, Environments::Id),
                    )
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Settings::Table)
                    .if_not_exists()
                    .col(string(Settings::Key).primary_key())
                    .col(text(Settings::Value))
                    .to_owned(),
            )
            .await?;
        Ok(())
    }
}
