//! Deployments carry key:value tags (from the payloads that have them, the generic webhook and
//! the write API), a note, and whether people marked them as a failed change (a deployment
//! that succeeded but broke production: DORA's change failure rate counts it); and where the
//! environment can be visited, where the tool says.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Deployments {
    Table,
    /// A JSON object of strings, keys sorted (`{"tenant":"acme","tier":"1"}`), or null.
    Tags,
    Note,
    FailedChange,
    FailedChangeReason,
    /// Where the environment can be visited, as the tool last said.
    EnvironmentUrl,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite alters one column per statement.
        for column in [
            text_null(Deployments::Tags),
            text_null(Deployments::Note),
            boolean_null(Deployments::FailedChange),
            text_null(Deployments::FailedChangeReason),
            text_null(Deployments::EnvironmentUrl),
        ] {
            let mut column = column;
            manager
                .alter_table(
                    Table::alter()
                        .table(Deployments::Table)
                        .add_column(&mut column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [
            Deployments::Tags,
            Deployments::Note,
            Deployments::FailedChange,
            Deployments::FailedChangeReason,
            Deployments::EnvironmentUrl,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Deployments::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
