//! One compare of a repository between two commits, as the Git host answered it (a cache:
//! deployments and drift share it).

use sea_orm::entity::prelude::*;

/// A (repository, base, head) compare and what came of it.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "commit_ranges")]
pub struct Model {
    /// `github:owner/name` or `gitlab:group/project`.
    #[sea_orm(primary_key, auto_increment = false, column_type = "Text")]
    pub repository: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub base: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub head: String,
    /// `pending`, `found`, `missing` or `failed`.
    pub state: String,
    pub total_commits: Option<i64>,
    /// Commits base has that head lacks (GitHub's `behind_by`), where the host says.
    pub behind_by: Option<i64>,
    /// The commits as a JSON array, newest first.
    #[sea_orm(column_type = "Text", nullable)]
    pub commits: Option<String>,
    #[sea_orm(column_type = "Text", nullable)]
    pub error: Option<String>,
    pub attempts: i32,
    pub next_attempt_at: Option<i64>,
    pub fetched_at: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
