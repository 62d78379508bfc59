//! The switches of mdesnap's own rules and operators, as DataFusion options.
//!
//! Every rule of ours checks these before it touches a plan, as DataFusion's own rules
//! check `datafusion.optimizer.*`: the answers of a query must not depend on them, so the
//! plain engine (every switch off) is the reference the randomized equivalence test and a
//! doubtful user compare against. They live in the session's `ConfigOptions` under the
//! prefix `mdesnap`, so the console sets them with SQL (`SET mdesnap.plain_engine =
//! true`, `SET mdesnap.grouped_counts = false`) and `SHOW ALL` lists them;
//! `MDESNAP_PLAIN_ENGINE=1` in the environment, or [`EngineOptions::plain`], starts a
//! session with the plain engine.
//!
//! [`EngineOptions::plain`]: crate::engine::EngineOptions::plain

use datafusion::common::extensions_options;
use datafusion::config::{ConfigExtension, ConfigOptions};

extensions_options! {
    /// mdesnap's switches (`SET mdesnap.NAME = true|false`).
    pub struct MdesnapOptions {
        /// Turns every rule, operator and catalog answer of mdesnap's off: DataFusion
        /// plans and computes every query, reading every file it may need
        pub plain_engine: bool, default = false
        /// Comparisons of strings with literals of at most 12 bytes decided on whole
        /// string views (`ShortLiteralEquality`)
        pub short_literal_equality: bool, default = true
        /// Partial counts grouped by partition values and few-valued strings counted a
        /// batch at a time (`GroupedCounts`, `KeyedCountExec`)
        pub grouped_counts: bool, default = true
        /// `lag()` over sorted input as a shifted copy (`SortedLag`, `LagExec`)
        pub sorted_lag: bool, default = true
        /// `lag()` whose output order nothing depends on computed over rows grouped by a
        /// hash table instead of sorted (`UnorderedLag`, `GroupedLagExec`)
        pub unordered_lag: bool, default = true
        /// `DISTINCT snapshot` and `count(*)` per snapshot answered from the manifests
        /// (`SnapshotsFromManifests`)
        pub snapshots_from_manifests: bool, default = true
        /// A semi-join on a subquery of constants planned as an `IN` list
        /// (`SemiJoinOnConstants`)
        pub semi_join_on_constants: bool, default = true
        /// Row counts from the manifests and column statistics from the footers given
        /// to DataFusion, and files pruned by filters on `snapshot` before the scan
        pub catalog_answers: bool, default = true
    }
}

impl ConfigExtension for MdesnapOptions {
    const PREFIX: &'static str = "mdesnap";
}

/// The environment variable that starts every session with the plain engine.
pub const PLAIN_ENGINE_VAR: &str = "MDESNAP_PLAIN_ENGINE";

/// Which switch a rule checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Switch {
    ShortLiteralEquality,
    GroupedCounts,
    SortedLag,
    UnorderedLag,
    SnapshotsFromManifests,
    SemiJoinOnConstants,
    CatalogAnswers,
}

impl MdesnapOptions {
    /// The options a session holds, or the defaults where none were registered (a
    /// session made by hand, as in unit tests).
    pub fn from_config(config: &ConfigOptions) -> MdesnapOptions {
        config
            .extensions
            .get::<MdesnapOptions>()
            .cloned()
            .unwrap_or_default()
    }

    /// Whether `switch` is on: its own option, unless the plain engine is.
    pub fn on(&self, switch: Switch) -> bool {
        if self.plain_engine {
            return false;
        }
        match switch {
            Switch::ShortLiteralEquality => self.short_literal_equality,
            Switch::GroupedCounts => self.grouped_counts,
            Switch::SortedLag => self.sorted_lag,
            Switch::UnorderedLag => self.unordered_lag,
            Switch::SnapshotsFromManifests => self.snapshots_from_manifests,
            Switch::SemiJoinOnConstants => self.semi_join_on_constants,
            Switch::CatalogAnswers => self.catalog_answers,
        }
    }
}

/// Whether `MDESNAP_PLAIN_ENGINE` asks for the plain engine: any value but empty, `0`
/// or `false`.
pub fn plain_from_env() -> bool {
    std::env::var(PLAIN_ENGINE_VAR).is_ok_and(|v| {
        let v = v.trim();
        !(v.is_empty() || v == "0" || v.eq_ignore_ascii_case("false"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plain_engine_turns_every_switch_off() {
        let mut options = MdesnapOptions::default();
        assert!(options.on(Switch::GroupedCounts));
        options.grouped_counts = false;
        assert!(!options.on(Switch::GroupedCounts));
        assert!(options.on(Switch::SortedLag));
        options.plain_engine = true;
        for s in [
            Switch::ShortLiteralEquality,
            Switch::GroupedCounts,
            Switch::SortedLag,
            Switch::UnorderedLag,
            Switch::SnapshotsFromManifests,
            Switch::SemiJoinOnConstants,
            Switch::CatalogAnswers,
        ] {
            assert!(!options.on(s), "{s:?} stays on under the plain engine");
        }
    }

    #[test]
    fn set_reaches_the_options_by_their_prefix() {
        let mut config = ConfigOptions::new();
        config.extensions.insert(MdesnapOptions::default());
        config.set("mdesnap.plain_engine", "true").expect("sets");
        assert!(MdesnapOptions::from_config(&config).plain_engine);
        assert!(config.set("mdesnap.no_such_rule", "true").is_err());
    }
}

/// A memory size as `--memory-limit` takes it: bytes, or a number with `K`, `M`, `G`
/// or `T` (powers of 1,024, with or without `i` and `B`, any case): `512M`, `2GiB`.
pub fn parse_memory_size(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let digits = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a size (examples: 512M, 2G, 1073741824)"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        other => {
            return Err(format!(
                "'{other}' in '{text}' is not a unit (K, M, G or T)"
            ));
        }
    };
    let bytes = number * f64::from(1_u32 << (shift / 2)) * f64::from(1_u32 << (shift - shift / 2));
    if !bytes.is_finite() || bytes < 1.0 || bytes > usize::MAX as f64 {
        return Err(format!("'{text}' is not a usable memory size"));
    }
    Ok(bytes as usize)
}

#[cfg(test)]
mod size_tests {
    use super::parse_memory_size;

    #[test]
    fn sizes_read_with_their_units() {
        assert_eq!(parse_memory_size("1024"), Ok(1024));
        assert_eq!(parse_memory_size("512M"), Ok(512 << 20));
        assert_eq!(parse_memory_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_memory_size("1.5g"), Ok(3 << 29));
        assert_eq!(parse_memory_size("64 kb"), Ok(64 << 10));
        for bad in ["", "M", "12X", "-1G", "0", "1e3"] {
            assert!(parse_memory_size(bad).is_err(), "{bad}");
        }
    }
}
