//! People correct and delete deployments through the write API. A correction pins what people
//! said (a status, a system or environment in their own words, mapped like a tool's) so later
//! deliveries from the tool and `shiplog replay` keep it; a deletion keeps the row, hidden
//! from every list, count and the board, so a late delivery of the same deployment does not
//! bring it back and the audit trail still reads it by id. Environments remember when a tool
//! said it stopped them.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Environments {
    Table,
    /// When a tool last said it stopped the environment (epoch ms), or null.
    StoppedAt,
}

#[derive(DeriveIden)]
enum Deployments {
    Table,
    /// The status people set (a status word), or null.
    CorrectedStatus,
    /// The system people named, in their words (mapped by the rules like a raw name), or null.
    CorrectedSystem,
    CorrectedEnvironment,
    CorrectionReason,
    /// When people deleted it (epoch ms), or null.
    DeletedAt,
    DeletionReason,
}

fn columns() -> Vec<ColumnDef> {
    vec![
        string_null(Deployments::CorrectedStatus),
        text_null(Deployments::CorrectedSystem),
        text_null(Deployments::CorrectedEnvironment),
        text_null(Deployments::CorrectionReason),
        big_integer_null(Deployments::DeletedAt),
        text_null(Deployments::DeletionReason),
    ]
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite alters one column per statement.
        for mut column in columns() {
            manager
                .alter_table(
                    Table::alter()
                        .table(Deployments::Table)
                        .add_column(&mut column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(Environments::Table)
                    .add_column(big_integer_null(Environments::StoppedAt))
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [
            Deployments::CorrectedStatus,
            Deployments::CorrectedSystem,
            Deployments::CorrectedEnvironment,
            Deployments::CorrectionReason,
            Deployments::DeletedAt,
            Deployments::DeletionReason,
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
        manager
            .alter_table(
                Table::alter()
                    .table(Environments::Table)
                    .drop_column(Environments::StoppedAt)
                    .to_owned(),
            )
            .await?;
        Ok(())
    }
}
