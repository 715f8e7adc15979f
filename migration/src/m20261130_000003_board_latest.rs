//! A board cell also names its newest deployment whatever its status, so a cell whose only
//! deployments were cancelled (or whose status is unknown) shows them instead of looking never
//! deployed to. Existing cells are filled from the deployments.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum BoardCells {
    Table,
    LatestId,
    LatestAt,
}

/// Fills the new columns from the deployments: plain SQL both SQLite and PostgreSQL accept.
const FILL: &str = "UPDATE board_cells SET \
     latest_id = (SELECT d.id FROM deployments d WHERE d.system_id = board_cells.system_id \
       AND d.environment_id = board_cells.environment_id ORDER BY d.deployed_at DESC, d.id DESC LIMIT 1), \
     latest_at = (SELECT MAX(d.deployed_at) FROM deployments d WHERE d.system_id = board_cells.system_id \
       AND d.environment_id = board_cells.environment_id)";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters one thing at a time.
        for column in [BoardCells::LatestId, BoardCells::LatestAt] {
            manager
                .alter_table(
                    Table::alter()
                        .table(BoardCells::Table)
                        .add_column(big_integer_null(column))
                        .to_owned(),
                )
                .await?;
        }
        manager.get_connection().execute_unprepared(FILL).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [BoardCells::LatestId, BoardCells::LatestAt] {
            manager
                .alter_table(
                    Table::alter()
                        .table(BoardCells::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
