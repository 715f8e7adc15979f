//! Each journaled delivery keeps the decision made about it: which source rule made it a
//! deployment (or why it is not one), the tool's words and shiplog's names with the rule that
//! gave each (`shiplog explain`, `Delivery.decision`). Deliveries journaled before have none.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Deliveries {
    Table,
    Decision,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Deliveries::Table)
                    .add_column(text_null(Deliveries::Decision))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Deliveries::Table)
                    .drop_column(Deliveries::Decision)
                    .to_owned(),
            )
            .await
    }
}
