//! mdesnap keeps the history of a Microsoft Defender for Endpoint tenant's devices as
//! Parquet snapshots in a lake folder, and answers SQL over them with Apache DataFusion.
//!
//! The pieces, bottom up:
//! - [`rng`]: the seeded random numbers of the fleet, the emulator and the backoff;
//! - [`schema`]: the tables and their columns, and the API name <-> column mapping;
//! - [`snapshot`]: snapshot ids, the path scheme and the manifest;
//! - [`changes`]: what changed between two snapshots' batches, knowing no lake;
//! - [`lake`]: the writer with its atomic commit (changes included), the lock, the
//!   scan, pruning, and a snapshot's tables read whole;
//! - [`decode`]: API records into Arrow batches (one path for every producer);
//! - [`fleet`] and [`generate`]: a deterministic synthetic tenant, written to a lake;
//! - [`engine`]: the lake's tables in DataFusion (the catalog), mdesnap's own rules and
//!   operators, each behind a switch ([`engine::MdesnapOptions`]);
//! - [`odata`]: the `$filter` language and query options, translated to DataFusion;
//! - [`diff`]: `mdesnap diff`, the changes between any two snapshots of a lake;
//! - [`output`]: the result formats of `mdesnap query`, the streaming table printer;
//! - [`repl`]: the console: statements, meta-commands, the prompt.
//!
//! ```no_run
//! # async fn demo() -> mdesnap::Result<()> {
//! let engine = mdesnap::Engine::open(std::path::Path::new("sample-data"), None)?;
//! let df = engine.sql("SELECT os_platform, count(*) FROM machines GROUP BY 1").await?;
//! df.show().await?;
//! # Ok(())
//! # }
//! ```

pub mod cancel;
pub mod changes;
pub mod decode;
pub mod demo;
pub mod diff;
pub mod emulator;
pub mod engine;
pub mod error;
pub mod fleet;
pub mod generate;
pub mod ingest;
pub mod lake;
pub mod odata;
pub mod output;
pub mod repl;
pub mod rng;
pub mod schema;
pub mod snapshot;

/// Stack size of the threads [`runtime`] makes. DataFusion plans and drops SQL
/// expressions recursively, so a `WHERE` of thousands of `OR`s needs a deep stack;
/// the memory is reserved, not used, until a query needs it.
pub const THREAD_STACK_BYTES: usize = 64 * 1024 * 1024;

/// The multi-threaded tokio runtime the `mdesnap` command runs on, with
/// [`THREAD_STACK_BYTES`] stacks. Run work on it with `spawn` (the thread calling
/// `block_on` keeps its own, smaller stack).
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(THREAD_STACK_BYTES)
        .build()
}

pub use cancel::Cancel;
pub use engine::{Engine, EngineOptions, Names, ODataResponse};
pub use error::{Error, Result};
pub use schema::Table;
pub use snapshot::{Manifest, SnapshotId};
