//! What each deployment changed: the commits between the previous successful deployment of its
//! system in its environment and it, read from the Git host's compare API by a background
//! worker. `commit_ranges` caches one compare per (repository, base, head); several deployments
//! (and drift between environments) share one. `deployment_changes` says which range is a
//! deployment's, so a page of deployments reads its changes in two statements.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum CommitRanges {
    Table,
    /// `github:owner/name` or `gitlab:group/project`.
    Repository,
    Base,
    Head,
    /// `pending`, `found`, `missing` (the host has no such repository or commit), `failed`
    /// (retried later).
    State,
    /// How many commits the host says the range holds (more than `commits` when capped).
    TotalCommits,
    /// How many commits base has that head lacks (GitHub's `behind_by`; null on GitLab).
    BehindBy,
    /// The commits as a JSON array, newest first.
    Commits,
    Error,
    Attempts,
    NextAttemptAt,
    FetchedAt,
}

#[derive(DeriveIden)]
enum DeploymentChanges {
    Table,
    DeploymentId,
    Repository,
    Base,
    Head,
    RecordedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(CommitRanges::Table)
                    .if_not_exists()
                    .col(text(CommitRanges::Repository))
                    .col(string(CommitRanges::Base))
                    .col(string(CommitRanges::Head))
                    .col(string(CommitRanges::State))
                    .col(big_integer_null(CommitRanges::TotalCommits))
                    .col(big_integer_null(CommitRanges::BehindBy))
                    .col(text_null(CommitRanges::Commits))
                    .col(text_null(CommitRanges::Error))
                    .col(integer(CommitRanges::Attempts))
                    .col(big_integer_null(CommitRanges::NextAttemptAt))
                    .col(big_integer_null(CommitRanges::FetchedAt))
                    .primary_key(
                        Index::create()
                            .col(CommitRanges::Repository)
                            .col(CommitRanges::Base)
                            .col(CommitRanges::Head),
                    )
                    .to_owned(),
            )
            .await?;
        // The worker's queue: ranges still to read, by when they are due.
        manager
            .create_index(
                Index::create()
                    .name("commit_ranges_due")
                    .table(CommitRanges::Table)
                    .col(CommitRanges::State)
                    .col(CommitRanges::NextAttemptAt)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(DeploymentChanges::Table)
                    .if_not_exists()
                    .col(big_integer(DeploymentChanges::DeploymentId).primary_key())
                    .col(text(DeploymentChanges::Repository))
                    .col(string(DeploymentChanges::Base))
                    .col(string(DeploymentChanges::Head))
                    .col(big_integer(DeploymentChanges::RecordedAt))
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(DeploymentChanges::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(CommitRanges::Table).to_owned())
            .await?;
        Ok(())
    }
}
