//! The lake's write guard: nothing a statement does may change the lake.
//!
//! DataFusion runs `COPY`, `INSERT` and DDL as any session asks; a console over a lake
//! must not let them write among the lake's files (a `COPY` onto a manifest removes a
//! snapshot) or replace its tables in the session. The guard looks at every node of a
//! statement's logical plan, subqueries included, so a write wrapped in `EXPLAIN
//! ANALYZE`, a `PREPARE` or anything else is seen wherever it stands.

use std::path::{Path, PathBuf};

use datafusion::common::TableReference;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::listing::ListingTable;
use datafusion::datasource::source_as_provider;
use datafusion::logical_expr::{DdlStatement, LogicalPlan, Statement};

use super::options::MdesnapOptions;
use crate::error::{Error, Result};
use crate::lake::Lake;

/// Refuses `plan` when any node of it would write inside `lake` or create, replace or
/// drop one of `tables` (the lake's tables in the session): `COPY ... TO` and
/// `INSERT` into an external table inside the lake folder, `CREATE EXTERNAL TABLE`
/// located there (a table over the lake's files that manifests do not govern), and
/// `CREATE`/`DROP` of a lake table's name.
pub(super) fn check_plan(plan: &LogicalPlan, lake: &Lake, tables: &[String]) -> Result<()> {
    let mut refused = None;
    plan.apply_with_subqueries(|node| match check_node(node, lake, tables) {
        Ok(()) => Ok(TreeNodeRecursion::Continue),
        Err(e) => {
            refused = Some(e);
            Ok(TreeNodeRecursion::Stop)
        }
    })?;
    refused.map_or(Ok(()), Err)
}

/// One node of a plan, as [`check_plan`] judges it.
fn check_node(node: &LogicalPlan, lake: &Lake, tables: &[String]) -> Result<()> {
    let refuse_path = |statement: &'static str, target: &str| -> Result<()> {
        if path_inside(lake, target) {
            return Err(Error::WriteInLake {
                statement,
                target: target.to_string(),
                lake: lake.to_string(),
            });
        }
        Ok(())
    };
    let refuse_table = |statement: &'static str, name: &TableReference| -> Result<()> {
        let table = name.table();
        if tables.iter().any(|t| t.eq_ignore_ascii_case(table)) {
            return Err(Error::LakeTable {
                statement,
                table: table.to_string(),
            });
        }
        Ok(())
    };
    match node {
        LogicalPlan::Copy(copy) => refuse_path("COPY", &copy.output_url),
        LogicalPlan::Dml(dml) => {
            refuse_table("INSERT, UPDATE or DELETE", &dml.table_name)?;
            if let Ok(provider) = source_as_provider(&dml.target)
                && let Some(listing) = provider.downcast_ref::<ListingTable>()
            {
                for url in listing.table_paths() {
                    refuse_path("INSERT", url.as_str())?;
                }
            }
            Ok(())
        }
        LogicalPlan::Ddl(ddl) => match ddl {
            DdlStatement::CreateExternalTable(c) => {
                refuse_table("CREATE", &c.name)?;
                for location in &c.locations {
                    refuse_path("CREATE EXTERNAL TABLE", location)?;
                }
                Ok(())
            }
            DdlStatement::CreateMemoryTable(c) => refuse_table("CREATE", &c.name),
            DdlStatement::CreateView(c) => refuse_table("CREATE", &c.name),
            DdlStatement::DropTable(d) => refuse_table("DROP", &d.name),
            DdlStatement::DropView(d) => refuse_table("DROP", &d.name),
            _ => Ok(()),
        },
        _ => Ok(()),
    }
}

/// Whether `plan` sets or resets one of mdesnap's switches (`SET mdesnap.NAME = ...`).
pub(super) fn sets_mdesnap_option(plan: &LogicalPlan) -> bool {
    use datafusion::config::ConfigExtension;
    let ours = |name: &str| {
        name.to_ascii_lowercase()
            .starts_with(&format!("{}.", MdesnapOptions::PREFIX))
    };
    match plan {
        LogicalPlan::Statement(Statement::SetVariable(s)) => ours(&s.variable),
        LogicalPlan::Statement(Statement::ResetVariable(r)) => ours(&r.variable),
        _ => false,
    }
}

/// Whether `target` (a path or `file://` URL, as a statement names it) lies inside
/// `lake`. Both are resolved the way the filesystem will: relative to the working
/// folder, through symbolic links, with `..` taken into account. No local path is
/// inside a lake in an object store, and no statement can write there (the lake's
/// store is registered under a scheme of its own).
pub(super) fn path_inside(lake: &Lake, target: &str) -> bool {
    let Some(lake) = lake.local_path() else {
        return false;
    };
    let text = target.strip_prefix("file://").unwrap_or(target);
    if text.contains("://") {
        // Another scheme: not a local path, so not this lake's folder.
        return false;
    }
    let resolve = |p: &Path| -> Option<PathBuf> {
        let abs = std::path::absolute(p).ok()?;
        // Canonicalize the longest part that exists, then append the rest.
        let mut existing = abs.clone();
        let mut rest = Vec::new();
        while !existing.exists() {
            rest.push(existing.file_name()?.to_os_string());
            existing = existing.parent()?.to_path_buf();
        }
        let mut out = existing.canonicalize().ok()?;
        for part in rest.iter().rev() {
            match part.to_str() {
                Some("..") => {
                    out.pop();
                }
                Some(".") => {}
                _ => out.push(part),
            }
        }
        Some(out)
    };
    match (resolve(lake), resolve(Path::new(text))) {
        (Some(lake), Some(target)) => target.starts_with(&lake),
        // When either cannot be resolved, say "inside": refusing is the safe side.
        _ => true,
    }
}
