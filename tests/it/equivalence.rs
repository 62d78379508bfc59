//! mdesnap's rules, operators and catalog answers against the plain engine: a seeded
//! generator writes SQL and OData queries aimed at the shapes each rule takes and at
//! its edges, and every query is run by both engines over the same lake, once as opened
//! and once with small batches over several partitions. The plain engine (DataFusion
//! alone, `EngineOptions::plain`) is the reference: any other answer is a bug of ours.
//!
//! The lake is generated once per run: a thousand machines over four days as
//! `generate` writes them (a file per table and snapshot), then two days written here
//! in small files of small row groups with odd values (empty, not ASCII, exactly 12 and
//! 13 bytes, longer than the 64 bytes Parquet keeps in its statistics), the last
//! without `user_machines` and with an empty `domain_machines`. A fifth of the queries
//! run over the committed sample lake instead.
//!
//! Answers are compared as multisets of rendered rows, and in order where the query's
//! `ORDER BY` is total. Queries are written so that DataFusion's own answer is
//! deterministic: no `LIMIT` without a total order, `lag()` over a total order within
//! its partitions or of its own order key (whose values are the same whatever order
//! ties come in), no floating-point aggregates. Each rules-on plan is looked at after
//! it ran, and the run fails unless every operator and rewrite of ours ran often
//! enough (see [`Coverage`]): the test cannot pass by testing nothing.
//!
//! `MDESNAP_EQUIV_SEED` replays a run (the default seed is the clock's), and
//! `MDESNAP_EQUIV_QUERIES` sets the number of queries (default 500, about 40 s in a
//! debug build on two cores). A failure names the seed, the query, the engines'
//! settings and the rows that differ; shapes of known differences go in [`REPORTED`].

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{SchemaRef, TimestampMicrosecondType};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use chrono::{DateTime, Duration, Utc};
use datafusion::physical_plan::{ExecutionPlan, collect, displayable};
use mdesnap::decode::{MachineDecoder, PairBuilder, SecurityStateDecoder};
use mdesnap::engine::MdesnapOptions;
use mdesnap::fleet::{Fleet, FleetConfig, Rng};
use mdesnap::lake::{SnapshotWriter, WriterOptions};
use mdesnap::schema::api_name_for_column;
use mdesnap::{Engine, EngineOptions, Names, Table};
use serde_json::{Value, json};
use tempfile::tempdir;

/// The generated fleet: its size, days written by `generate`, seed and churn.
const MACHINES: u64 = 1_000;
const DAYS: u32 = 4;
const SEED: u64 = 29;
const CHURN: f64 = 0.1;

/// Small batches and several partitions, besides the engines as opened: `(rows per
/// batch, target partitions)`, one of them for each query in turn. A batch below 8,192
/// rows lets `KeyedCountExec` count at most 512 groups before it hands over.
const SMALL: [(usize, usize); 3] = [(1000, 3), (333, 4), (4096, 2)];

/// Every `SAMPLE_EVERY`th query runs over the committed sample lake.
const SAMPLE_EVERY: u64 = 5;

/// The shape of a column's values, which decides the literals and uses it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A string of a few values (statuses): a grouping key, a short literal.
    Few,
    /// A string of many values (names, addresses), some long or not ASCII.
    Many,
    /// A machine id: 40 hex digits.
    Id,
    Int,
    Bool,
    Time,
}

use Kind::{Bool, Few, Id, Int, Many, Time};

/// A table as the generator knows it.
struct Tab {
    table: Table,
    /// Columns that tell a table's rows apart within a snapshot (checked when the
    /// lake is read): with `snapshot`, a total order.
    key: &'static [&'static str],
    columns: &'static [(&'static str, Kind)],
}

const MACHINES_TAB: Tab = Tab {
    table: Table::Machines,
    key: &["id"],
    columns: &[
        ("id", Id),
        ("computer_dns_name", Many),
        ("health_status", Few),
        ("os_platform", Few),
        ("risk_score", Few),
        ("exposure_level", Few),
        ("rbac_group_name", Few),
        ("onboarding_status", Few),
        ("last_ip_address", Many),
        ("os_build", Int),
        ("rbac_group_id", Int),
        ("is_aad_joined", Bool),
        ("last_seen", Time),
    ],
};

const TABLES: [Tab; 6] = [
    MACHINES_TAB,
    Tab {
        table: Table::IpAddresses,
        key: &["machine_id", "ip_address", "mac_address"],
        columns: &[
            ("machine_id", Id),
            ("ip_address", Many),
            ("mac_address", Many),
            ("type", Few),
            ("operational_status", Few),
        ],
    },
    Tab {
        table: Table::SecurityStates,
        key: &["id"],
        columns: &[
            ("id", Id),
            ("architecture", Few),
            ("os_version", Many),
            ("build", Int),
            ("revision", Int),
        ],
    },
    Tab {
        table: Table::UserMachines,
        key: &["user_id", "machine_id"],
        columns: &[("user_id", Many), ("machine_id", Id)],
    },
    Tab {
        table: Table::DomainMachines,
        key: &["domain", "machine_id"],
        columns: &[("domain", Many), ("machine_id", Id)],
    },
    Tab {
        table: Table::MachineChanges,
        key: &["id", "field"],
        columns: &[
            ("id", Id),
            ("change", Few),
            ("field", Few),
            ("old_value", Many),
            ("new_value", Many),
            ("computer_dns_name", Many),
        ],
    },
];

/// How often each table is picked, in the order of [`TABLES`].
const TABLE_WEIGHTS: [u64; 6] = [6, 2, 2, 2, 1, 1];

/// Strings at the edges of `ShortLiteralEquality` and of the footers' statistics:
/// empty, 11 to 13 bytes, several-byte characters (12 bytes in 6 characters), and
/// beyond 64 bytes, equal up to there. The odd snapshots hold each of them.
fn edge_strings() -> Vec<String> {
    let long = "zz-".to_string() + &"x".repeat(66);
    let mut edges: Vec<String> = [
        "",
        "abcdefghijk",
        "abcdefghijkl",
        "abcdefghijklm",
        "éééééé",
        "ééééééé",
        "Développeurs",
        "poste-müller",
        "日本語のホスト名",
        "ActiveActive",
        "ActiveActiveX",
        "Activé",
        "no such value",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    edges.extend(["a", "b", "c"].map(|end| format!("{long}{end}")));
    edges.push(format!("00-{}", "y".repeat(70)));
    edges.push(format!("Active{}", "-".repeat(64)));
    edges
}

/// A generated lake: [`DAYS`] snapshots by `generate`, then two odd ones (see the
/// module docs).
fn write_lake(dir: &Path) {
    let config = FleetConfig {
        seed: SEED,
        machines: MACHINES,
        churn: CHURN,
        start: FleetConfig::default_start(),
    };
    crate::generate_fleet(dir, &config, DAYS);
    let mut fleet = Fleet::at_day(config, DAYS);
    write_odd_snapshot(dir, &fleet, &Table::ALL);
    fleet.advance();
    let tables = [
        Table::Machines,
        Table::IpAddresses,
        Table::SecurityStates,
        Table::DomainMachines,
    ];
    write_odd_snapshot(dir, &fleet, &tables);
}

/// The fleet's day as a snapshot of `tables` in files of about 20 kB and row groups of
/// 150 rows, with odd values in some machines' names, statuses and groups, odd user
/// names and teams of users. `domain_machines`, when taken without `user_machines`, is
/// left empty.
fn write_odd_snapshot(lake: &Path, fleet: &Fleet, tables: &[Table]) {
    const CHUNK: usize = 400;
    const ROW_GROUP_ROWS: usize = 150;
    // Of the same scope as the generated days, so the tables read them all.
    let mut options = WriterOptions::new(fleet.now(), "generate", tables);
    options.row_group_rows = ROW_GROUP_ROWS;
    options.target_file_bytes = 20_000;
    let mut writer = SnapshotWriter::create(lake, options).expect("a writer");
    let edges = edge_strings();
    let mut machines = MachineDecoder::default();
    let mut states = SecurityStateDecoder::default();
    let all = fleet.machines();
    for (i, m) in all.iter().enumerate() {
        let mut record = fleet.machine_record(m);
        let odd = &edges[i / 7 % edges.len()];
        if i % 7 == 3 {
            record["computerDnsName"] = json!(odd);
        }
        if i % 11 == 5 {
            record["healthStatus"] = json!(odd);
        }
        if i % 13 == 6 {
            record["rbacGroupName"] = match i % 2 {
                0 => Value::Null,
                _ => json!("Développeurs"),
            };
        }
        machines.push(i, &record).expect("decodes");
        states
            .push(i, &fleet.security_state_record(m))
            .expect("decodes");
        if machines.len() >= CHUNK || i + 1 == all.len() {
            let (mb, ib) = machines.finish().expect("a batch");
            writer.append(Table::Machines, &mb).expect("appends");
            writer.append(Table::IpAddresses, &ib).expect("appends");
            let sb = states.finish().expect("a batch");
            writer.append(Table::SecurityStates, &sb).expect("appends");
        }
    }
    if tables.contains(&Table::UserMachines) {
        // Besides the fleet's users, two teams whose users have 7 and 10 machines
        // each: listed together, runs of equal keys too many for `KeyedCountExec`'s
        // table (more than 512 users in one file of one batch) and long enough (2 rows
        // or more on average) to be counted a run at a time.
        let teams: Vec<(String, &str)> = all
            .iter()
            .enumerate()
            .flat_map(|(i, m)| {
                let id = m.id();
                [
                    (format!("team-{:03}", i % 150), id),
                    (format!("crew-{:03}", i % 100), id),
                ]
            })
            .collect();
        let fleet_pairs = fleet.user_pairs();
        // Distinct pairs, sorted: an odd name may stand for two users of one machine.
        let pairs: std::collections::BTreeSet<(&str, &str)> = fleet_pairs
            .iter()
            .enumerate()
            .map(|(i, &(ref user, id))| match i % 9 {
                4 => (edges[i / 9 % edges.len()].as_str(), id),
                _ => (user.as_str(), id),
            })
            .chain(teams.iter().map(|(user, id)| (user.as_str(), *id)))
            .collect();
        // One append: one file.
        let mut users = PairBuilder::new(Table::UserMachines);
        for (user, id) in pairs {
            users.push(user, id);
        }
        let batch = users.finish().expect("a batch");
        writer.append(Table::UserMachines, &batch).expect("appends");
        let mut domains = PairBuilder::new(Table::DomainMachines);
        for (domain, id) in fleet.domain_pairs(500) {
            domains.push(&domain, id);
        }
        let batch = domains.finish().expect("a batch");
        writer
            .append(Table::DomainMachines, &batch)
            .expect("appends");
    }
    let manifest = writer.commit().expect("commits");
    // Several files, each of several row groups.
    let files = &manifest.tables[Table::Machines.name()].files;
    let rows: Vec<u64> = files.iter().map(|f| f.rows).collect();
    assert!(
        files.len() >= 3 && files.iter().all(|f| f.rows > ROW_GROUP_ROWS as u64),
        "rows of the files of machines: {rows:?}"
    );
}

/// Values the generator draws literals from, read from a lake.
struct Pools {
    /// The snapshots of `machines_history`, oldest first.
    snapshots: Vec<DateTime<Utc>>,
    /// Up to 40 values of each (table, column) of a string or integer kind.
    values: HashMap<(Table, &'static str), Vec<String>>,
    edges: Vec<String>,
}

impl Pools {
    /// Reads the pools from the lake `engine` opened, and checks each table's key.
    async fn read(engine: &Engine) -> Pools {
        let snapshots = "SELECT DISTINCT snapshot FROM machines_history ORDER BY 1";
        let mut times = Vec::new();
        for batch in crate::collect(engine, snapshots).await {
            let micros = batch.column(0).as_primitive::<TimestampMicrosecondType>();
            times.extend(
                micros
                    .values()
                    .iter()
                    .map(|&t| DateTime::from_timestamp_micros(t).expect("a snapshot time")),
            );
        }
        let mut values = HashMap::new();
        for tab in &TABLES {
            let from = tab.table.history_name();
            for &(column, kind) in tab.columns {
                if matches!(kind, Bool | Time) {
                    continue;
                }
                let sql = format!(
                    "SELECT DISTINCT CAST({column} AS VARCHAR) FROM {from} \
                     WHERE {column} IS NOT NULL ORDER BY 1"
                );
                let all = rows(&crate::collect(engine, &sql).await);
                let step = all.len().div_ceil(40).max(1);
                let some = all.into_iter().step_by(step).collect();
                values.insert((tab.table, column), some);
            }
            let mut key: Vec<&str> = tab.key.to_vec();
            key.push("snapshot");
            let key = key.join(", ");
            let sql = format!(
                "SELECT count(*) FROM (SELECT {key} FROM {from} GROUP BY {key} \
                 HAVING count(*) > 1) d"
            );
            let repeated = crate::scalar(engine, &sql).await;
            assert_eq!(repeated, "0", "{from}: ({key}) is not a key");
        }
        assert!(times.len() >= 3, "the lake has {} snapshots", times.len());
        Pools {
            snapshots: times,
            values,
            edges: edge_strings(),
        }
    }
}

/// A query and how its answers compare.
#[derive(Debug, Clone)]
struct Query {
    shape: &'static str,
    text: String,
    odata: bool,
    /// The order of the rows is part of the answer (a total `ORDER BY`).
    ordered: bool,
}

/// Writes queries from a seeded stream, with literals from a lake's pools.
struct Gen<'a> {
    rng: Rng,
    pools: &'a Pools,
}

/// `text` as an SQL (and OData) string literal.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The longest prefix of `text` of at most `bytes` bytes.
fn prefix(text: &str, bytes: usize) -> &str {
    let mut end = bytes.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl Gen<'_> {
    fn below(&mut self, n: usize) -> usize {
        self.rng.below(n as u64) as usize
    }

    fn percent(&mut self, p: u64) -> bool {
        self.rng.chance(p * 10_000)
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        *self.rng.pick(items)
    }

    fn table(&mut self) -> &'static Tab {
        let weighted: Vec<(u64, usize)> = TABLE_WEIGHTS.iter().copied().zip(0..).collect();
        &TABLES[*self.rng.weighted(&weighted)]
    }

    /// A column of `tab` of one of `kinds`, if it has one.
    fn column(&mut self, tab: &Tab, kinds: &[Kind]) -> Option<(&'static str, Kind)> {
        let fit: Vec<(&'static str, Kind)> = tab
            .columns
            .iter()
            .copied()
            .filter(|(_, k)| kinds.contains(k))
            .collect();
        (!fit.is_empty()).then(|| self.pick(&fit))
    }

    /// A string column of `tab` of one of `kinds`, or else any string column.
    fn string_column(&mut self, tab: &Tab, kinds: &[Kind]) -> &'static str {
        self.column(tab, kinds)
            .or_else(|| self.column(tab, &[Few, Many, Id]))
            .map_or("snapshot", |(c, _)| c)
    }

    /// The table to read: the `_history` one (always for a change table) or the latest.
    fn from(&mut self, tab: &Tab, history_percent: u64) -> (String, bool) {
        if tab.table.is_change() || self.percent(history_percent) {
            (tab.table.history_name(), true)
        } else {
            (tab.table.name().to_string(), false)
        }
    }

    fn time(&mut self) -> DateTime<Utc> {
        let snapshots = &self.pools.snapshots;
        let t = *self.rng.pick(snapshots);
        match self.below(8) {
            0 => t + Duration::hours(1),
            1 => t - Duration::hours(1),
            2 => snapshots[0] - Duration::days(1),
            3 => snapshots[snapshots.len() - 1] + Duration::days(1),
            _ => t,
        }
    }

    fn timestamp(&mut self) -> String {
        format!("TIMESTAMP '{}'", self.time().format("%Y-%m-%dT%H:%M:%SZ"))
    }

    /// A string for a comparison with `column`: one of its values, one changed a
    /// little (a byte more or less, cut to 12 or 64 bytes, upper case), or an edge.
    fn text(&mut self, table: Table, column: &str) -> String {
        let values = self
            .pools
            .values
            .get(&(table, column))
            .map_or(&[][..], Vec::as_slice);
        if values.is_empty() || self.percent(25) {
            return self.rng.pick(&self.pools.edges).clone();
        }
        let value = self.rng.pick(values).clone();
        match self.below(12) {
            0 => value + "x",
            1 => prefix(&value, value.len().saturating_sub(1)).to_string(),
            2 => prefix(&value, 12).to_string(),
            3 => prefix(&value, 64).to_string(),
            4 => value.to_uppercase(),
            _ => value,
        }
    }

    fn int(&mut self, table: Table, column: &str) -> String {
        let values = self
            .pools
            .values
            .get(&(table, column))
            .map_or(&[][..], Vec::as_slice);
        match values.is_empty() || self.percent(20) {
            true => self.pick(&["0", "-1", "140", "19045"]).to_string(),
            false => self.rng.pick(values).clone(),
        }
    }

    /// A literal for `column` of `kind`.
    fn literal(&mut self, table: Table, column: &str, kind: Kind) -> String {
        match kind {
            Few | Many | Id => quote(&self.text(table, column)),
            Int => self.int(table, column),
            Bool => self.pick(&["true", "false"]).to_string(),
            Time => self.timestamp(),
        }
    }

    /// A condition on the columns of `tab` (as `alias.column` when `alias` is given),
    /// nested `depth` deep at most.
    fn predicate(&mut self, tab: &Tab, alias: &str, depth: u32) -> String {
        if depth > 0 && self.percent(35) {
            let a = self.predicate(tab, alias, depth - 1);
            return match self.below(3) {
                0 => format!("({a} AND {})", self.predicate(tab, alias, depth - 1)),
                1 => format!("({a} OR {})", self.predicate(tab, alias, depth - 1)),
                _ => format!("NOT ({a})"),
            };
        }
        let (column, kind) = self.pick(tab.columns);
        let c = format!("{alias}{column}");
        let table = tab.table;
        let lit = |g: &mut Self| g.literal(table, column, kind);
        match kind {
            Few | Many | Id if self.percent(20) => self.string_function(table, column, &c),
            Few | Many | Id => match self.below(16) {
                0..=2 => format!("{c} = {}", lit(self)),
                3 | 4 => format!("{c} <> {}", lit(self)),
                5 => format!("{} = {c}", lit(self)),
                6 => format!("{c} IN ({}, {})", lit(self), lit(self)),
                7 => format!("{c} IS NULL"),
                8 => format!("{c} IS NOT NULL"),
                9 => {
                    let start = self.text(table, column);
                    let n = 1 + self.below(6);
                    format!("{c} LIKE {}", quote(&format!("{}%", prefix(&start, n))))
                }
                10 => format!("{c} > {}", lit(self)),
                11 => format!("lower({c}) = {}", lit(self)),
                12 => format!("coalesce({c}, '') = {}", lit(self)),
                13 => format!("NULLIF({c}, {}) <> {}", lit(self), lit(self)),
                14 => format!("{c} NOT IN ({}, {})", lit(self), lit(self)),
                _ => format!("({c} IS DISTINCT FROM {})", lit(self)),
            },
            Int => match self.below(5) {
                0 => format!("{c} > {}", lit(self)),
                1 => format!("{c} = {}", lit(self)),
                2 => format!("{c} <> {}", lit(self)),
                3 => format!("{c} IS NULL"),
                _ => format!("{c} BETWEEN {} AND {}", lit(self), lit(self)),
            },
            Bool => match self.below(3) {
                0 => c,
                1 => format!("NOT {c}"),
                _ => format!("{c} IS NULL"),
            },
            Time => match self.below(3) {
                0 => format!("{c} > {} - INTERVAL '2 days'", lit(self)),
                1 => format!("{c} IS NULL"),
                _ => format!("{c} <= {}", lit(self)),
            },
        }
    }

    /// A comparison of a string function of `c` (the column `column`) with a literal
    /// it may well equal: views that a kernel made, not the Parquet reader (a slice
    /// of a longer value, a value trimmed), compared by `ViewEquality`.
    fn string_function(&mut self, table: Table, column: &str, c: &str) -> String {
        let value = self.text(table, column);
        let chars: Vec<char> = value.chars().collect();
        let (start, n) = (1 + self.below(4), 1 + self.below(16));
        let part = |from: usize, n: usize| -> String { chars.iter().skip(from).take(n).collect() };
        let op = self.pick(&["=", "=", "<>"]);
        match self.below(5) {
            0 => format!("substr({c}, 1, {n}) {op} {}", quote(&part(0, n))),
            1 => format!(
                "substr({c}, {start}, {n}) {op} {}",
                quote(&part(start - 1, n))
            ),
            2 => {
                let first = value.split('-').next().unwrap_or_default();
                format!("split_part({c}, '-', 1) {op} {}", quote(first))
            }
            3 => {
                let trimmed = value.trim_matches(['d', 'z', '-']);
                format!("btrim({c}, 'dz-') {op} {}", quote(trimmed))
            }
            _ => format!(
                "right({c}, {n}) {op} {}",
                quote(&part(chars.len().saturating_sub(n), n))
            ),
        }
    }

    /// A condition on `snapshot` alone, some of them NULL for some snapshots.
    fn snapshot_filter(&mut self, alias: &str) -> String {
        let s = format!("{alias}snapshot");
        let one = match self.below(13) {
            0 => format!("{s} > {}", self.timestamp()),
            1 => format!("{s} >= {}", self.timestamp()),
            2 => format!("{s} < {}", self.timestamp()),
            3 => format!("{s} = {}", self.timestamp()),
            4 => format!("{s} <> {}", self.timestamp()),
            5 => format!("{s} BETWEEN {} AND {}", self.timestamp(), self.timestamp()),
            6 => format!("{s} IN ({}, {})", self.timestamp(), self.timestamp()),
            7 => format!("{s} > '{}'", self.time().format("%Y-%m-%dT%H:%M:%SZ")),
            8 => self.null_snapshot_filter(&s),
            9 => self.null_snapshot_filter(&s),
            10 => format!(
                "date_trunc('day', {s}) = {}",
                format_args!("TIMESTAMP '{}'", self.time().format("%Y-%m-%dT00:00:00Z"))
            ),
            11 => format!("{s} IS NOT NULL"),
            _ => format!("NOT ({s} = {})", self.timestamp()),
        };
        match self.below(6) {
            0 => format!("({one} OR {})", self.snapshot_filter(alias)),
            1 => format!("({one} AND {})", self.snapshot_filter(alias)),
            _ => one,
        }
    }

    /// A condition on `s`, the snapshot column, that is NULL for some snapshots.
    fn null_snapshot_filter(&mut self, s: &str) -> String {
        let (a, b) = (self.timestamp(), self.timestamp());
        match self.below(5) {
            0 => format!("NULLIF({s}, {a}) > {b}"),
            1 => format!("CASE WHEN {s} = {a} THEN NULL ELSE {s} <= {b} END"),
            2 => format!("NOT (NULLIF({s}, {a}) < {b})"),
            3 => format!("NULLIF({s}, {a}) IS NULL"),
            _ => format!("coalesce(NULLIF({s}, {a}), {b}) = {b}"),
        }
    }

    /// `WHERE` and a condition, or nothing.
    fn maybe_where(&mut self, tab: &Tab, history: bool, percent: u64) -> String {
        if !self.percent(percent) {
            return String::new();
        }
        let condition = match history && self.percent(30) {
            true => self.snapshot_filter(""),
            false => self.predicate(tab, "", 2),
        };
        format!(" WHERE {condition}")
    }

    /// A count with a `FILTER`, of a nullable column, or `DISTINCT`.
    fn count(&mut self, tab: &Tab, history: bool) -> String {
        let c = match history && self.percent(15) {
            true => "snapshot",
            false => self.pick(tab.columns).0,
        };
        match self.below(7) {
            0 | 1 => format!("count({c})"),
            2 | 3 => format!("count(*) FILTER (WHERE {})", self.predicate(tab, "", 1)),
            4 => format!("count({c}) FILTER (WHERE {})", self.predicate(tab, "", 1)),
            5 => format!("count(DISTINCT {c})"),
            _ => self.pick(&["count(1)", "count(NULL)"]).to_string(),
        }
    }

    /// A grouping key of `tab`: mostly `snapshot` and few-valued strings, sometimes
    /// names or machine ids (too many groups for `KeyedCountExec`'s table), an integer
    /// or an expression (which it does not take).
    fn group_key(&mut self, tab: &Tab, history: bool) -> String {
        match self.below(12) {
            0..=3 if history => "snapshot".to_string(),
            0..=6 => self.string_column(tab, &[Few]).to_string(),
            7 | 8 => self.string_column(tab, &[Many]).to_string(),
            9 => self.string_column(tab, &[Id]).to_string(),
            10 => match self.column(tab, &[Int, Bool]) {
                Some((c, _)) => c.to_string(),
                None => self.string_column(tab, &[Few]).to_string(),
            },
            _ => format!("lower({})", self.string_column(tab, &[Few, Many])),
        }
    }

    /// The window of a `lag()` over `tab`'s history: partitioned by the machine id, by
    /// one or two few-valued columns, a nullable name or nothing, and ordered within
    /// the partition by the table's key and `snapshot`, a total order.
    fn window(&mut self, tab: &Tab) -> String {
        let partition: Vec<&str> = match self.below(6) {
            0 | 1 => vec![self.string_column(tab, &[Id])],
            2 => vec![self.string_column(tab, &[Few])],
            3 => vec![
                self.string_column(tab, &[Few]),
                self.string_column(tab, &[Few, Many]),
            ],
            4 => vec![self.string_column(tab, &[Many])],
            _ => vec![],
        };
        let mut order: Vec<String> = Vec::new();
        let by_snapshot = |g: &mut Self| format!("snapshot{}", g.pick(&["", " DESC"]));
        if partition == tab.key {
            order.push(by_snapshot(self));
        } else {
            let snapshot_first = self.percent(60);
            if snapshot_first {
                order.push(by_snapshot(self));
            }
            for k in tab.key {
                order.push(format!("{k}{}", self.pick(&["", " DESC"])));
            }
            if !snapshot_first {
                order.push(by_snapshot(self));
            }
        }
        let partition = match partition.is_empty() {
            true => String::new(),
            false => format!("PARTITION BY {} ", partition.join(", ")),
        };
        format!("{partition}ORDER BY {}", order.join(", "))
    }

    /// A `lag()` of a column of `tab` (or an expression of one) over `window`, with an
    /// offset and a default or not; the value it lags, and a condition on the lag
    /// (named `prev`).
    fn lag(&mut self, tab: &Tab, window: &str) -> (String, String, String) {
        let (column, kind) = match self.percent(15) {
            true => ("snapshot", Time),
            false => self.pick(tab.columns),
        };
        let value = match (kind, self.below(4)) {
            (Few | Many, 0) => format!("upper({column})"),
            (Int, 0) => format!("{column} + 1"),
            _ => column.to_string(),
        };
        let offset = self.pick(&[1, 1, 1, 2, 2, 3, 5, 1000, 1500, 4096, 4097]);
        let default = match (kind, self.below(3)) {
            (Few | Many | Id, 0) => format!(", {}", quote(&self.text(tab.table, column))),
            (Int, 0) => format!(", {}", self.int(tab.table, column)),
            (Bool, 0) => ", false".to_string(),
            (_, 1) => ", NULL".to_string(),
            _ => String::new(),
        };
        let lag = match (offset, default.is_empty()) {
            (1, true) if self.percent(50) => format!("lag({value}) OVER ({window})"),
            _ => format!("lag({value}, {offset}{default}) OVER ({window})"),
        };
        let condition = match (kind, self.below(4)) {
            (Few | Many | Id, 0) => format!("prev = {}", quote(&self.text(tab.table, column))),
            (Few | Many | Id, 1) => format!("prev <> {}", quote(&self.text(tab.table, column))),
            (_, 2) => "prev IS NULL".to_string(),
            _ => "prev IS NOT NULL".to_string(),
        };
        (lag, value, condition)
    }

    /// A table for a `lag()`: `domain_machines`, the largest, only rarely.
    fn lag_table(&mut self) -> &'static Tab {
        let weighted = [(6, 0), (2, 1), (2, 2), (2, 3), (1, 5)];
        &TABLES[*self.rng.weighted(&weighted)]
    }
}

/// `window` (`[PARTITION BY ...] ORDER BY ...`) with each key of its order turned
/// around.
fn reversed(window: &str) -> String {
    let (partition, order) = window.split_once("ORDER BY ").unwrap_or((window, ""));
    let keys: Vec<String> = order
        .split(", ")
        .map(|k| match k.strip_suffix(" DESC") {
            Some(ascending) => ascending.to_string(),
            None => format!("{k} DESC"),
        })
        .collect();
    format!("{partition}ORDER BY {}", keys.join(", "))
}

/// `SELECT` list items named `a0`, `a1`, ... (or left unnamed, a fifth of them).
fn named(g: &mut Gen, items: Vec<String>) -> Vec<String> {
    let unnamed = g.percent(20);
    items
        .into_iter()
        .enumerate()
        .map(|(i, e)| if unnamed { e } else { format!("{e} AS a{i}") })
        .collect()
}

fn sql(shape: &'static str, text: String, ordered: bool) -> Query {
    Query {
        shape,
        text,
        odata: false,
        ordered,
    }
}

/// `1, 2, ..., n`: the positions of a query's first `n` columns.
fn positions(n: usize) -> String {
    (1..=n)
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Counts grouped by one to three keys (`KeyedCountExec`, its hand-over and its runs),
/// with `FILTER`s, nullable and distinct counts, `HAVING`, `ORDER BY` and `LIMIT`.
fn grouped_counts(g: &mut Gen) -> Query {
    // Each user's machines are listed together: too many users for the table, in runs.
    let by_user = g.percent(12);
    let tab = match by_user {
        true => &TABLES[3],
        false => g.table(),
    };
    let (from, history) = g.from(tab, 70);
    let mut keys: Vec<String> = Vec::new();
    if by_user {
        keys.push("user_id".into());
        if history && g.percent(50) {
            keys.push("snapshot".into());
        }
    }
    for _ in 0..g.below(3) + usize::from(!by_user) {
        let key = g.group_key(tab, history);
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    let mut aggregates = vec!["count(*)".to_string()];
    for _ in 0..g.below(4) {
        let count = g.count(tab, history);
        if !aggregates.contains(&count) {
            aggregates.push(count);
        }
    }
    if g.percent(10) {
        let (c, _) = g.pick(tab.columns);
        aggregates.push(format!("max({c})"));
    }
    let select = [keys.clone(), named(g, aggregates)].concat();
    let filter = g.maybe_where(tab, history, 50);
    let having = match g.below(10) {
        0 | 1 => format!(" HAVING count(*) > {}", g.pick(&[0, 1, 2, 10, 100])),
        2 => {
            // On an aggregate's own strings, views the aggregate made.
            let c = g.string_column(tab, &[Few, Many]);
            let op = g.pick(&["=", "<>"]);
            format!(" HAVING max({c}) {op} {}", quote(&g.text(tab.table, c)))
        }
        _ => String::new(),
    };
    let limit = match g.percent(25) {
        true => format!(" LIMIT {}", g.pick(&[1, 5, 20])),
        false => String::new(),
    };
    let text = format!(
        "SELECT {} FROM {from}{filter} GROUP BY {}{having} ORDER BY {}{limit}",
        select.join(", "),
        keys.join(", "),
        positions(keys.len())
    );
    sql("grouped counts", text, true)
}

/// Distinct counts of strings, machine ids and `snapshot`, grouped or not.
fn distinct_counts(g: &mut Gen) -> Query {
    let tab = g.table();
    let (from, history) = g.from(tab, 85);
    // Few keys, or many: distinct values handed over with the rest of a partition.
    let key = match g.below(10) {
        0..=3 if history => Some("snapshot"),
        0..=5 => Some(g.string_column(tab, &[Few])),
        6 | 7 => Some(g.string_column(tab, &[Many, Id])),
        _ => None,
    };
    let mut counted = Vec::new();
    for _ in 0..=g.below(3) {
        let c = match history && g.percent(35) {
            true => "snapshot",
            false => g.string_column(tab, &[Few, Many, Id]),
        };
        let count = format!("count(DISTINCT {c})");
        if key != Some(c) && !counted.contains(&count) {
            counted.push(count);
        }
    }
    if counted.is_empty() || g.percent(30) {
        let count = g.count(tab, history);
        if !counted.contains(&count) {
            counted.push(count);
        }
    }
    let filter = g.maybe_where(tab, history, 40);
    let aggregates = named(g, counted).join(", ");
    let text = match key {
        Some(k) => format!("SELECT {k}, {aggregates} FROM {from}{filter} GROUP BY {k} ORDER BY 1"),
        None => format!("SELECT {aggregates} FROM {from}{filter}"),
    };
    sql("distinct counts", text, true)
}

/// `lag()` at the top of the plan (`LagExec`), its rows in a total order or as a
/// multiset, with offsets beyond a batch and `MAX_OFFSET`, defaults and expressions.
fn lag_rows(g: &mut Gen) -> Query {
    let tab = g.lag_table();
    let from = tab.table.history_name();
    let window = g.window(tab);
    let mut lags: Vec<String> = Vec::new();
    for i in 0..=g.below(3) {
        // After the first, over the window turned around (which DataFusion computes
        // over the first's sort, reading it backwards), as `lead()`, `IGNORE NULLS`:
        // what `LagExec` leaves to DataFusion.
        let turned = reversed(&window);
        let (lag, _, _) = match i > 0 && g.percent(30) {
            true => g.lag(tab, &turned),
            false => g.lag(tab, &window),
        };
        lags.push(match g.below(10) {
            0 if i > 0 => lag.replacen("lag(", "lead(", 1),
            1 => lag.replacen(") OVER (", ") IGNORE NULLS OVER (", 1),
            _ => lag,
        });
    }
    let mut select: Vec<String> = tab.key.iter().map(|k| k.to_string()).collect();
    select.push("snapshot".into());
    let key = select.join(", ");
    select.extend(named(g, lags));
    let filter = g.maybe_where(tab, true, 30);
    let (order, ordered) = match g.below(4) {
        0 => (String::new(), false),
        1 => (format!(" ORDER BY {key}"), true),
        _ => (
            format!(" ORDER BY {key} LIMIT {}", g.pick(&[10, 100, 1000])),
            true,
        ),
    };
    let text = format!("SELECT {} FROM {from}{filter}{order}", select.join(", "));
    sql("lag rows", text, ordered)
}

/// `lag()` of its own order key, whose ties come in any order: the pairs of a row's
/// key and its lag are the same whatever that order. As rows, or counted.
fn lag_ties(g: &mut Gen) -> Query {
    let tab = g.lag_table();
    let from = tab.table.history_name();
    let (order, kind) = match g.below(3) {
        0 => ("snapshot", Time),
        1 => g.column(tab, &[Int]).unwrap_or(("snapshot", Time)),
        _ => (g.string_column(tab, &[Few, Many]), Few),
    };
    let partition = match g.percent(60) {
        true => format!("PARTITION BY {} ", g.string_column(tab, &[Few])),
        false => String::new(),
    };
    let direction = g.pick(&["", " DESC", " NULLS FIRST", " DESC NULLS LAST"]);
    let offset = g.pick(&[1, 1, 2, 3, 50, 1500]);
    let default = match (kind, g.below(2)) {
        (Few, 0) => format!(", {}", quote(&g.text(tab.table, order))),
        (Int, 0) => ", 0".to_string(),
        _ => String::new(),
    };
    let partition_column = partition
        .strip_prefix("PARTITION BY ")
        .map(|p| format!("{}, ", p.trim()))
        .unwrap_or_default();
    let filter = g.maybe_where(tab, true, 30);
    let inner = format!(
        "SELECT {partition_column}{order} AS o, lag({order}, {offset}{default}) OVER \
         ({partition}ORDER BY {order}{direction}) AS prev FROM {from}{filter}"
    );
    let text = match g.percent(50) {
        true => inner,
        false => format!(
            "SELECT count(*) AS n, count(prev) AS p, count(*) FILTER (WHERE prev = o) AS same, \
             count(DISTINCT prev) AS d FROM ({inner}) s"
        ),
    };
    sql("lag ties", text, false)
}

/// `lag()` under an aggregate, a filter or a full sort, where its rows' order does not
/// matter (`GroupedLagExec`), or under a sort with a `LIMIT`, where it does.
fn lag_below(g: &mut Gen) -> Query {
    let tab = g.lag_table();
    let from = tab.table.history_name();
    let window = g.window(tab);
    let (lag, value, condition) = g.lag(tab, &window);
    let group = match g.percent(50) {
        true => Some(match g.percent(50) {
            true => "snapshot",
            false => g.string_column(tab, &[Few]),
        }),
        false => None,
    };
    let mut inner: Vec<String> = tab.key.iter().map(|k| k.to_string()).collect();
    inner.push("snapshot".into());
    let key = inner.join(", ");
    if let Some(gk) = group
        && !inner.iter().any(|c| c == gk)
    {
        inner.push(gk.to_string());
    }
    inner.push(format!("{value} AS cur"));
    inner.push(format!("{lag} AS prev"));
    let filter = g.maybe_where(tab, true, 30);
    let inner = format!("SELECT {} FROM {from}{filter}", inner.join(", "));
    let outer_filter = match g.percent(60) {
        true => format!(" WHERE {condition}"),
        false => String::new(),
    };
    let counts = "count(*) AS n, count(prev) AS p, \
                  count(*) FILTER (WHERE prev IS DISTINCT FROM cur) AS changed, \
                  count(DISTINCT prev) AS d, max(prev) AS hi";
    match (g.below(3), group) {
        (0, Some(gk)) => sql(
            "lag below",
            format!(
                "SELECT {gk}, {counts} FROM ({inner}) s{outer_filter} GROUP BY {gk} ORDER BY 1"
            ),
            true,
        ),
        (0 | 1, _) => sql(
            "lag below",
            format!("SELECT {counts} FROM ({inner}) s{outer_filter}"),
            true,
        ),
        _ => {
            let limit = match g.percent(40) {
                true => format!(" LIMIT {}", g.pick(&[5, 50, 500])),
                false => String::new(),
            };
            sql(
                "lag below",
                format!("SELECT * FROM ({inner}) s{outer_filter} ORDER BY {key}{limit}"),
                true,
            )
        }
    }
}

/// `snapshot IN (the last or first n snapshots of a table)`, as the suite writes it,
/// over another table or the same (`SemiJoinOnConstants`), and subqueries that read
/// data, which stay joins.
fn last_snapshots(g: &mut Gen) -> Query {
    let tab = g.table();
    let other = g.table();
    let from = tab.table.history_name();
    let of = other.table.history_name();
    let direction = g.pick(&["DESC", "ASC", ""]);
    let n = g.pick(&[1, 1, 2, 2, 3, 5]);
    let offset = match g.percent(25) {
        true => format!(" OFFSET {}", g.pick(&[1, 2, 4, 9])),
        false => String::new(),
    };
    let within = match g.percent(25) {
        true => format!(" WHERE {}", g.snapshot_filter("")),
        false => String::new(),
    };
    let subquery = match g.below(7) {
        0 | 1 => format!(
            "SELECT snapshot FROM (SELECT DISTINCT snapshot FROM {of}{within}) s \
             ORDER BY snapshot {direction} LIMIT {n}{offset}"
        ),
        2 | 3 => format!(
            "SELECT DISTINCT snapshot FROM {of}{within} ORDER BY snapshot {direction} \
             LIMIT {n}{offset}"
        ),
        4 => format!("SELECT max(snapshot) FROM {of}{within}"),
        5 => {
            // Constants written out: timestamps or text, a NULL among them or not.
            let text = g.percent(30);
            let mut values: Vec<String> = (0..=g.below(3))
                .map(|_| match text {
                    true => format!("('{}')", g.time().format("%Y-%m-%dT%H:%M:%SZ")),
                    false => format!("({})", g.timestamp()),
                })
                .collect();
            if g.percent(30) {
                values.insert(g.below(values.len() + 1), "(NULL)".into());
            }
            let nulls = g.pick(&["", " NULLS FIRST", " NULLS LAST"]);
            format!(
                "SELECT s FROM (VALUES {}) v(s) ORDER BY s {direction}{nulls} LIMIT {n}{offset}",
                values.join(", ")
            )
        }
        _ => format!(
            "SELECT snapshot FROM {of} WHERE {}",
            g.predicate(other, "", 1)
        ),
    };
    let not = g.pick(&["", "", "", "NOT "]);
    let mut condition = format!("snapshot {not}IN ({subquery})");
    if g.percent(30) {
        condition = format!("{condition} AND {}", g.predicate(tab, "", 1));
    }
    let key = tab.key.join(", ");
    match g.percent(50) {
        true => {
            let count = g.count(tab, true);
            let counts = named(g, vec!["count(*)".into(), count]).join(", ");
            sql(
                "last snapshots",
                format!(
                    "SELECT snapshot, {counts} FROM {from} WHERE {condition} \
                     GROUP BY snapshot ORDER BY 1"
                ),
                true,
            )
        }
        false => {
            let (c, _) = g.pick(tab.columns);
            sql(
                "last snapshots",
                format!(
                    "SELECT {key}, snapshot, {c} AS v FROM {from} WHERE {condition} \
                     ORDER BY {key}, snapshot LIMIT {}",
                    g.pick(&[10, 200])
                ),
                true,
            )
        }
    }
}

/// Distinct snapshots and rows per snapshot, answered from the manifests
/// (`SnapshotsFromManifests`), with filters on `snapshot` (some NULL for some
/// snapshots) and on other columns (which need the data).
fn from_manifests(g: &mut Gen) -> Query {
    let tab = g.table();
    let from = tab.table.history_name();
    let filter = match g.below(4) {
        0 => String::new(),
        1 => format!(" WHERE {}", g.predicate(tab, "", 0)),
        _ => format!(" WHERE {}", g.snapshot_filter("")),
    };
    let (text, ordered) = match g.below(6) {
        0 => (
            format!(
                "SELECT DISTINCT snapshot FROM {from}{filter} ORDER BY 1 {}",
                g.pick(&["", "DESC"])
            ),
            true,
        ),
        1 | 2 => (
            format!(
                "SELECT snapshot, count(*){} FROM {from}{filter} GROUP BY snapshot ORDER BY 1",
                g.pick(&["", " AS n"])
            ),
            true,
        ),
        3 => (
            format!("SELECT count(*) * 10 AS tenfold FROM {from}{filter} GROUP BY snapshot"),
            false,
        ),
        4 => (
            format!(
                "SELECT snapshot FROM {from}{filter} GROUP BY snapshot HAVING count(*) > {} \
                 ORDER BY 1",
                g.pick(&[0, 300, 2000])
            ),
            true,
        ),
        _ => (
            format!("SELECT count(*) AS n FROM (SELECT DISTINCT snapshot FROM {from}{filter}) s"),
            true,
        ),
    };
    sql("from manifests", text, ordered)
}

/// `min`, `max` and counts that the footers' statistics and the manifests can answer,
/// of every kind of column (names beyond the statistics' 64 bytes among them), with
/// and without conditions.
fn statistics(g: &mut Gen) -> Query {
    let tab = g.table();
    let (from, history) = g.from(tab, 40);
    let c = match history && g.percent(25) {
        true => "snapshot",
        false => g.pick(tab.columns).0,
    };
    let mut items = vec![format!("min({c})"), format!("max({c})")];
    match g.below(3) {
        0 => items.push("count(*)".into()),
        1 => items.push(format!("count({c})")),
        _ => {}
    }
    let filter = match (history, g.below(3)) {
        (true, 0) => format!(" WHERE snapshot = {}", g.timestamp()),
        (true, 1) => format!(" WHERE {}", g.snapshot_filter("")),
        (_, 2) => format!(" WHERE {}", g.predicate(tab, "", 0)),
        _ => String::new(),
    };
    let items = named(g, items).join(", ");
    sql(
        "statistics",
        format!("SELECT {items} FROM {from}{filter}"),
        true,
    )
}

/// Conditions that are NULL for some snapshots, and over other columns, on rows and
/// counts.
fn null_partition_filters(g: &mut Gen) -> Query {
    let tab = g.table();
    let from = tab.table.history_name();
    let condition = g.null_snapshot_filter("snapshot");
    let key = tab.key.join(", ");
    match g.below(3) {
        0 => {
            let count = g.count(tab, true);
            sql(
                "null partition filters",
                format!(
                    "SELECT snapshot, count(*) AS n, {count} AS m FROM {from} WHERE {condition} \
                     GROUP BY snapshot ORDER BY 1"
                ),
                true,
            )
        }
        1 => sql(
            "null partition filters",
            format!(
                "SELECT {key}, snapshot FROM {from} WHERE {condition} AND {} \
                 ORDER BY {key}, snapshot LIMIT 100",
                g.predicate(tab, "", 1)
            ),
            true,
        ),
        _ => sql(
            "null partition filters",
            format!("SELECT count(*) AS n FROM {from} WHERE {condition}"),
            true,
        ),
    }
}

/// Joins on machine ids, of latest tables and of histories (on the snapshot too),
/// inner and outer, counted or as rows.
fn joins(g: &mut Gen) -> Query {
    let machines = &MACHINES_TAB;
    let other = loop {
        let t = g.table();
        if t.table != Table::Machines {
            break t;
        }
    };
    let history = g.percent(50);
    let (m, o) = match history {
        true => (machines.table.history_name(), other.table.history_name()),
        false => (
            machines.table.name().to_string(),
            other.table.name().to_string(),
        ),
    };
    let id = other.table.machine_id_column();
    let join = g.pick(&["JOIN", "LEFT JOIN"]);
    let on_snapshot = if history {
        " AND o.snapshot = m.snapshot"
    } else {
        ""
    };
    let mut conditions = Vec::new();
    if g.percent(60) {
        conditions.push(g.predicate(machines, "m.", 1));
    }
    if g.percent(30) {
        conditions.push(g.predicate(other, "o.", 0));
    }
    if history && g.percent(40) {
        conditions.push(g.snapshot_filter("m."));
    }
    let filter = match conditions.is_empty() {
        true => String::new(),
        false => format!(" WHERE {}", conditions.join(" AND ")),
    };
    let from = format!("{m} m {join} {o} o ON o.{id} = m.id{on_snapshot}{filter}");
    let (oc, _) = g.pick(other.columns);
    match g.percent(55) {
        true => {
            let key = match history && g.percent(50) {
                true => "m.snapshot".to_string(),
                false => format!("m.{}", g.string_column(machines, &[Few])),
            };
            sql(
                "joins",
                format!(
                    "SELECT {key}, count(*) AS n, count(o.{oc}) AS m, count(DISTINCT o.{oc}) AS d \
                     FROM {from} GROUP BY {key} ORDER BY 1"
                ),
                true,
            )
        }
        false => {
            let mut order: Vec<String> = vec!["m.id".into()];
            if history {
                order.push("m.snapshot".into());
            }
            order.extend(other.key.iter().map(|k| format!("o.{k}")));
            if !history && other.table.is_change() {
                // A change table holds every snapshot's changes.
                order.push("o.snapshot".into());
            }
            let order = order.join(", ");
            sql(
                "joins",
                format!(
                    "SELECT {order}, o.{oc} AS v FROM {from} ORDER BY {order} LIMIT {}",
                    g.pick(&[20, 300])
                ),
                true,
            )
        }
    }
}

/// Rows that a condition keeps, in a total order, or counted.
fn filters(g: &mut Gen) -> Query {
    let tab = g.table();
    let (from, history) = g.from(tab, 50);
    let condition = g.predicate(tab, "", 3);
    let mut key: Vec<&str> = tab.key.to_vec();
    if history {
        key.push("snapshot");
    }
    let key = key.join(", ");
    match g.percent(60) {
        true => {
            let (c, _) = g.pick(tab.columns);
            sql(
                "filters",
                format!(
                    "SELECT {key}, {c} AS v FROM {from} WHERE {condition} ORDER BY {key} LIMIT {}",
                    g.pick(&[10, 100, 5000])
                ),
                true,
            )
        }
        false => {
            let count = g.count(tab, history);
            sql(
                "filters",
                format!("SELECT count(*) AS n, {count} AS m FROM {from} WHERE {condition}"),
                true,
            )
        }
    }
}

/// An OData request (`engine.odata_request`): `$filter` with API names over the
/// latest table or the history, `$select`, `$orderby` on the id (total), `$top`,
/// `$skip` and `$count`.
fn odata(g: &mut Gen) -> Query {
    let tab = g.pick(&[0usize, 0, 0, 1, 2]);
    let tab = &TABLES[tab];
    let history = g.percent(40);
    let path = match history {
        true => tab.table.history_name(),
        false => tab.table.name().to_string(),
    };
    let mut options = Vec::new();
    if g.percent(85) {
        options.push(format!("$filter={}", odata_filter(g, tab, history, 2)));
    }
    let properties: Vec<&str> = tab
        .columns
        .iter()
        .filter_map(|(c, _)| api_name_for_column(tab.table, c))
        .collect();
    if g.percent(50) && !properties.is_empty() {
        let mut select: Vec<&str> = (0..=g.below(3)).map(|_| g.pick(&properties)).collect();
        if history {
            select.push("snapshot");
        }
        options.push(format!("$select={}", select.join(",")));
    }
    let by_id = properties.contains(&"id");
    let mut ordered = false;
    if by_id && g.percent(60) {
        let direction = g.pick(&["", " desc", " asc"]);
        let mut orderby = format!("id{direction}");
        if history {
            orderby.push_str(g.pick(&[",snapshot", ",snapshot desc"]));
        }
        options.push(format!("$orderby={orderby}"));
        ordered = true;
        if g.percent(60) {
            options.push(format!("$top={}", g.pick(&[1, 7, 100])));
        }
        if g.percent(30) {
            options.push(format!("$skip={}", g.pick(&[1, 50])));
        }
    }
    if g.percent(40) {
        options.push("$count=true".into());
    }
    let text = match options.is_empty() {
        true => path,
        false => format!("{path}?{}", options.join("&")),
    };
    Query {
        shape: "odata",
        text,
        odata: true,
        ordered,
    }
}

/// An OData `$filter` over `tab`'s properties (and `snapshot` in a history).
fn odata_filter(g: &mut Gen, tab: &Tab, history: bool, depth: u32) -> String {
    if depth > 0 && g.percent(35) {
        let a = odata_filter(g, tab, history, depth - 1);
        return match g.below(3) {
            0 => format!("({a} and {})", odata_filter(g, tab, history, depth - 1)),
            1 => format!("({a} or {})", odata_filter(g, tab, history, depth - 1)),
            _ => format!("not ({a})"),
        };
    }
    if history && g.percent(20) {
        let op = g.pick(&["eq", "ne", "gt", "ge", "lt"]);
        return format!("snapshot {op} {}", g.time().format("%Y-%m-%dT%H:%M:%SZ"));
    }
    if tab.table == Table::Machines && g.percent(8) {
        return format!(
            "machineTags/any(t: t eq {})",
            quote(g.pick(&["ExampleTag", "é", ""]))
        );
    }
    let (column, kind) = loop {
        let (c, k) = g.pick(tab.columns);
        if api_name_for_column(tab.table, c).is_some() {
            break (c, k);
        }
    };
    let p = api_name_for_column(tab.table, column).unwrap_or(column);
    // '&', '+', '%' and '#' mean something else in a URL.
    let text = |g: &mut Gen| {
        let t = g.text(tab.table, column);
        quote(&t.replace(['&', '+', '%', '#'], ""))
    };
    match kind {
        Few | Many | Id => match g.below(8) {
            0..=2 => format!("{p} eq {}", text(g)),
            3 => format!("{p} ne {}", text(g)),
            4 => format!("{p} {} null", g.pick(&["eq", "ne"])),
            5 => format!("startswith({p},{})", text(g)),
            6 => format!("{p} in ({},{})", text(g), text(g)),
            _ => format!("{p} gt {}", text(g)),
        },
        Int => format!(
            "{p} {} {}",
            g.pick(&["eq", "ne", "gt", "le"]),
            g.int(tab.table, column)
        ),
        Bool => format!("{p} eq {}", g.pick(&["true", "false"])),
        Time => format!(
            "{p} {} {}",
            g.pick(&["gt", "lt"]),
            g.time().format("%Y-%m-%dT%H:%M:%SZ")
        ),
    }
}

/// Every shape, each written in turn so that every one gets its share of any run.
const SHAPES: [fn(&mut Gen) -> Query; 12] = [
    grouped_counts,
    distinct_counts,
    lag_rows,
    lag_ties,
    lag_below,
    last_snapshots,
    from_manifests,
    statistics,
    null_partition_filters,
    joins,
    filters,
    odata,
];

/// Shapes whose differences are printed but do not fail the run: known differences,
/// each with what is known of it. Empty while no difference is known.
const REPORTED: &[(&str, &str)] = &[];

/// A physical plan, after it ran.
type Plan = Arc<dyn ExecutionPlan>;

/// A query's answer: the columns' names and types, the rows as text, and the count an
/// OData request asked for.
#[derive(Debug, PartialEq)]
struct Answer {
    columns: String,
    rows: Vec<String>,
    count: Option<u64>,
}

/// Each row of `batches` as its values' text, ` | ` between them.
fn rows(batches: &[RecordBatch]) -> Vec<String> {
    let options = FormatOptions::new().with_null("NULL");
    let mut out = Vec::new();
    for batch in batches {
        let formatters: Vec<ArrayFormatter> = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).expect("a formatter"))
            .collect();
        for r in 0..batch.num_rows() {
            let values: Vec<String> = formatters.iter().map(|f| f.value(r).to_string()).collect();
            out.push(values.join(" | "));
        }
    }
    out
}

fn columns(schema: &SchemaRef) -> String {
    let fields: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| format!("{} {}", f.name(), f.data_type()))
        .collect();
    fields.join(", ")
}

/// What one engine did with a query: its answer and the plan that ran.
struct Ran {
    answer: Answer,
    plan: Plan,
}

/// Runs `query` on `engine`, keeping the executed plan (with its metrics).
async fn execute(engine: &Engine, query: &Query) -> Result<Ran, String> {
    let (df, count) = match query.odata {
        true => {
            let response = engine
                .odata_request(&query.text, Names::Api)
                .await
                .map_err(|e| e.to_string())?;
            (response.df, response.count)
        }
        false => (
            engine.sql(&query.text).await.map_err(|e| e.to_string())?,
            None,
        ),
    };
    let task = Arc::new(df.task_ctx());
    let plan = df.create_physical_plan().await.map_err(|e| e.to_string())?;
    let batches = collect(Arc::clone(&plan), task)
        .await
        .map_err(|e| e.to_string())?;
    let answer = Answer {
        columns: columns(&plan.schema()),
        rows: rows(&batches),
        count,
    };
    Ok(Ran { answer, plan })
}

/// How `ours` differs from `theirs` (the plain engine's), if it does.
fn difference(ours: &Answer, theirs: &Answer, ordered: bool) -> Option<String> {
    if ours.columns != theirs.columns {
        return Some(format!(
            "columns differ:\n  rules: {}\n  plain: {}",
            ours.columns, theirs.columns
        ));
    }
    if ours.count != theirs.count {
        return Some(format!(
            "@odata.count differs: rules {:?}, plain {:?}",
            ours.count, theirs.count
        ));
    }
    if ordered && ours.rows == theirs.rows {
        return None;
    }
    let (mut a, mut b) = (ours.rows.clone(), theirs.rows.clone());
    a.sort();
    b.sort();
    if a == b {
        return match ordered {
            true => Some(format!(
                "the same {} rows in another order; first rows:\n  rules: {:?}\n  plain: {:?}",
                a.len(),
                &ours.rows[..ours.rows.len().min(5)],
                &theirs.rows[..theirs.rows.len().min(5)]
            )),
            false => None,
        };
    }
    let (mut only_ours, mut only_theirs) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) if x == y => (i, j) = (i + 1, j + 1),
            (Some(x), Some(y)) if x < y => (only_ours.push(x), i += 1).1,
            (Some(x), None) => (only_ours.push(x), i += 1).1,
            (_, Some(y)) => (only_theirs.push(y), j += 1).1,
            (None, None) => break,
        }
    }
    let show = |rows: &[&String]| {
        let shown: Vec<&str> = rows.iter().take(8).map(|r| r.as_str()).collect();
        format!("{} rows, first {:?}", rows.len(), shown)
    };
    Some(format!(
        "{} rows with the rules, {} without; only with the rules: {}; only without: {}",
        a.len(),
        b.len(),
        show(&only_ours),
        show(&only_theirs)
    ))
}

/// How many query runs each operator and rewrite of ours took part in.
#[derive(Debug, Default)]
struct Coverage(BTreeMap<&'static str, u64>);

/// What [`Coverage`] counts, with the least number of runs each must reach per 1,000
/// queries: about a third of what a run of the generator reaches.
const COVERED: [(&str, u64); 9] = [
    ("KeyedCountExec", 70),
    ("KeyedCountExec, count(DISTINCT)", 12),
    ("KeyedCountExec hand-over", 10),
    ("LagExec", 150),
    ("GroupedLagExec", 20),
    ("ViewEquality", 120),
    ("semi-join as an IN list", 40),
    ("no file read", 60),
    ("fewer rows read", 120),
];

/// Runs of fewer queries (replaying one seed, say) are not held to [`COVERED`].
const COVERED_FROM: u64 = 200;

impl Coverage {
    fn add(&mut self, seen: Vec<&'static str>) {
        for s in seen {
            *self.0.entry(s).or_default() += 1;
        }
    }
}

/// What the rules-on plan `ours` did that the plain engine's `theirs` did not, each
/// named once.
fn observe(ours: &Plan, theirs: &Plan) -> Vec<&'static str> {
    {
        let mut seen = Vec::new();
        visit(ours, None, &mut |node, parent| {
            let name = node.name();
            if name == "LagExec" || name == "GroupedLagExec" {
                seen.push(if name == "LagExec" {
                    "LagExec"
                } else {
                    "GroupedLagExec"
                });
            }
            if name != "KeyedCountExec" {
                return;
            }
            seen.push("KeyedCountExec");
            if displayable(node.as_ref())
                .one_line()
                .to_string()
                .contains("count(DISTINCT")
            {
                seen.push("KeyedCountExec, count(DISTINCT)");
            }
            // The rows DataFusion's partial aggregate gives after a hand-over are not
            // in the operator's own metrics, but are in the next operator's.
            let rows = |n: &Plan| n.metrics().and_then(|m| m.output_rows());
            if let (Some(own), Some(Some(passed))) = (rows(node), parent.map(rows))
                && passed > own
            {
                seen.push("KeyedCountExec hand-over");
            }
        });
        if format!("{ours:?}").contains("ViewEquality") {
            seen.push("ViewEquality");
        }
        let text = |p: &Plan| displayable(p.as_ref()).indent(true).to_string();
        let (ours_text, theirs_text) = (text(ours), text(theirs));
        if theirs_text.contains("LeftSemi") && !ours_text.contains("LeftSemi") {
            seen.push("semi-join as an IN list");
        }
        if theirs_text.contains("DataSourceExec") && !ours_text.contains("DataSourceExec") {
            seen.push("no file read");
        }
        if scanned(ours) < scanned(theirs) {
            seen.push("fewer rows read");
        }
        seen.sort();
        seen.dedup();
        seen
    }
}

/// Calls `f` with each node of `plan` and its parent, top down.
fn visit(plan: &Plan, parent: Option<&Plan>, f: &mut dyn FnMut(&Plan, Option<&Plan>)) {
    f(plan, parent);
    for child in plan.children() {
        visit(child, Some(plan), f);
    }
}

/// Rows the Parquet scans of an executed plan gave.
fn scanned(plan: &Plan) -> usize {
    let mut rows = 0;
    visit(plan, None, &mut |node, _| {
        if node.name() == "DataSourceExec" {
            rows += node.metrics().and_then(|m| m.output_rows()).unwrap_or(0);
        }
    });
    rows
}

/// The two engines over one lake with the same settings.
struct Pair {
    setting: String,
    rules: Arc<Engine>,
    plain: Arc<Engine>,
}

impl Pair {
    /// Engines over `lake`, with `(rows per batch, target partitions)` when given.
    async fn open(lake: &Path, small: Option<(usize, usize)>) -> Pair {
        let rules = Engine::open(lake, None).expect("opens");
        let plain = Engine::open_with(
            lake,
            EngineOptions {
                plain: true,
                ..EngineOptions::default()
            },
        )
        .expect("opens");
        let plain_engine = |e: &Engine| {
            MdesnapOptions::from_config(e.context().state().config().options()).plain_engine
        };
        assert!(
            !plain_engine(&rules),
            "the rules are off: is MDESNAP_PLAIN_ENGINE set?"
        );
        assert!(plain_engine(&plain));
        let mut setting = "as opened".to_string();
        if let Some((batch, partitions)) = small {
            for engine in [&rules, &plain] {
                for set in [
                    format!("SET datafusion.execution.batch_size = {batch}"),
                    format!("SET datafusion.execution.target_partitions = {partitions}"),
                ] {
                    crate::collect(engine, &set).await;
                }
            }
            setting = format!("batch_size = {batch}, target_partitions = {partitions}");
        }
        Pair {
            setting,
            rules: Arc::new(rules),
            plain: Arc::new(plain),
        }
    }

    /// Runs `query` on both engines at once: what ours did (see [`observe`]), and how
    /// the answers differ, if they do.
    async fn compare(&self, query: &Query) -> (Vec<&'static str>, Option<String>) {
        let run = |engine: &Arc<Engine>| {
            let (engine, query) = (Arc::clone(engine), query.clone());
            tokio::spawn(async move { execute(&engine, &query).await })
        };
        let (ours, theirs) = (run(&self.rules), run(&self.plain));
        let ended = |r: Result<_, tokio::task::JoinError>| {
            r.unwrap_or_else(|e| Err(format!("the query's task ended: {e}")))
        };
        match (ended(ours.await), ended(theirs.await)) {
            (Ok(ours), Ok(theirs)) => (
                observe(&ours.plan, &theirs.plan),
                difference(&ours.answer, &theirs.answer, query.ordered),
            ),
            (Err(a), Err(b)) => (
                Vec::new(),
                Some(format!(
                    "both engines failed (a query the generator should not write):\n  \
                     rules: {a}\n  plain: {b}"
                )),
            ),
            (Err(a), Ok(_)) => (
                Vec::new(),
                Some(format!("the rules failed, the plain engine answered: {a}")),
            ),
            (Ok(_), Err(b)) => (
                Vec::new(),
                Some(format!("the plain engine failed, the rules answered: {b}")),
            ),
        }
    }
}

/// A lake with its pools and its engines: as opened, and with each of [`SMALL`].
struct Target {
    name: &'static str,
    pools: Pools,
    pairs: Vec<Pair>,
}

impl Target {
    async fn open(name: &'static str, lake: &Path) -> Target {
        let mut pairs = vec![Pair::open(lake, None).await];
        for small in SMALL {
            pairs.push(Pair::open(lake, Some(small)).await);
        }
        let pools = Pools::read(&pairs[0].plain).await;
        Target { name, pools, pairs }
    }
}

/// On the runtime `mdesnap` itself runs on (deep stacks for DataFusion's recursion).
#[test]
fn the_rules_answer_as_the_plain_engine_does() {
    let runtime = mdesnap::runtime().expect("a runtime");
    if let Err(e) = runtime.block_on(runtime.spawn(equivalence())) {
        std::panic::resume_unwind(e.into_panic());
    }
}

async fn equivalence() {
    let started = Instant::now();
    let seed = crate::seed_from_env("MDESNAP_EQUIV_SEED");
    let total = crate::env_number("MDESNAP_EQUIV_QUERIES", 500);
    eprintln!("equivalence: {total} queries, MDESNAP_EQUIV_SEED={seed}");
    let dir = tempdir().expect("tempdir");
    write_lake(dir.path());
    let targets = [
        Target::open("generated lake", dir.path()).await,
        Target::open("sample lake", &crate::sample_data()).await,
    ];
    let setup = started.elapsed();
    let mut coverage = Coverage::default();
    let mut failures = Vec::new();
    let mut reported = Vec::new();
    let mut per_shape: BTreeMap<&str, u64> = BTreeMap::new();
    for n in 0..total {
        let target = &targets[usize::from(n % SAMPLE_EVERY == SAMPLE_EVERY - 1)];
        let mut g = Gen {
            rng: Rng::derive(seed, &[n]),
            pools: &target.pools,
        };
        let query = SHAPES[n as usize % SHAPES.len()](&mut g);
        *per_shape.entry(query.shape).or_default() += 1;
        let pairs = [
            &target.pairs[0],
            &target.pairs[1 + n as usize % SMALL.len()],
        ];
        let (opened, small) = futures::join!(pairs[0].compare(&query), pairs[1].compare(&query));
        for (pair, (seen, difference)) in pairs.into_iter().zip([opened, small]) {
            coverage.add(seen);
            let Some(difference) = difference else {
                continue;
            };
            let report = format!(
                "query {n} ({}, {}, {}): {}\n  {difference}",
                query.shape, target.name, pair.setting, query.text
            );
            match REPORTED.iter().find(|(shape, _)| *shape == query.shape) {
                Some((_, known)) => reported.push(format!("{report}\n  known: {known}")),
                None => failures.push(report),
            }
        }
        if failures.len() >= 10 {
            break;
        }
    }
    for r in &reported {
        eprintln!("equivalence: known difference: {r}");
    }
    assert!(
        failures.is_empty(),
        "MDESNAP_EQUIV_SEED={seed}: {} answers differed with the rules from the plain \
         engine's:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!(
        "equivalence: {total} queries ({per_shape:?}) agree, in {:.1?} ({setup:.1?} to \
         write and read the lakes); rules-on runs with: {:?}",
        started.elapsed(),
        coverage.0
    );
    if total < COVERED_FROM {
        return;
    }
    for (what, per_mille) in COVERED {
        let got = coverage.0.get(what).copied().unwrap_or(0);
        let least = total * per_mille / 1000;
        assert!(
            got >= least,
            "MDESNAP_EQUIV_SEED={seed}: {what} took part in {got} runs of {total} queries, \
             fewer than {least}: the generator no longer reaches it"
        );
    }
}
