//! The command line's output, compared whole against committed snapshots
//! (`tests/it/snapshots/*.snap`, reviewed with `cargo insta review` or by reading the
//! diff): every `--help` page, and the outputs and errors users' scripts read. Paths
//! that change from run to run are replaced by placeholders before comparing.
//!
//! After an intended change of output: `INSTA_UPDATE=always cargo test snapshots`,
//! then read the diff of the `.snap` files before committing them.

use crate::{run_with, sample_data};

/// stdout, stderr and the exit code of `mdesnap args`, with the sample lake's path
/// replaced by `<sample-data>`.
fn cli(args: &[&str]) -> String {
    cli_with(args, &[])
}

/// [`cli`] with the environment variables `vars` set.
fn cli_with(args: &[&str], vars: &[(&str, &str)]) -> String {
    let o = run_with(args, vars);
    let lake = sample_data().display().to_string();
    let clean = |s: &[u8]| String::from_utf8_lossy(s).replace(&lake, "<sample-data>");
    format!(
        "exit: {}\n--- stdout\n{}--- stderr\n{}",
        o.status
            .code()
            .map_or("signal".to_string(), |c| c.to_string()),
        clean(&o.stdout),
        clean(&o.stderr)
    )
}

fn lake() -> String {
    sample_data().display().to_string()
}

macro_rules! snap {
    ($name:expr, $value:expr) => {
        insta::with_settings!({ snapshot_path => "snapshots", prepend_module_to_snapshot => false }, {
            insta::assert_snapshot!($name, $value);
        })
    };
}

#[test]
fn help_pages() {
    for (name, args) in [
        ("help", vec!["--help"]),
        ("help_query", vec!["query", "--help"]),
        ("help_repl", vec!["repl", "--help"]),
        ("help_demo", vec!["demo", "--help"]),
        ("help_snapshots", vec!["snapshots", "--help"]),
        ("help_snapshots_list", vec!["snapshots", "list", "--help"]),
        ("help_snapshots_show", vec!["snapshots", "show", "--help"]),
        ("help_snapshots_prune", vec!["snapshots", "prune", "--help"]),
        ("help_generate", vec!["generate", "--help"]),
        ("help_ingest", vec!["ingest", "--help"]),
        ("help_emulate", vec!["emulate", "--help"]),
        ("help_odata", vec!["odata", "--help"]),
        ("help_odata_parse", vec!["odata", "parse", "--help"]),
        ("help_diff", vec!["diff", "--help"]),
        ("help_changes_rebuild", vec!["changes", "rebuild", "--help"]),
    ] {
        snap!(name, cli(&args));
    }
}

#[test]
fn query_outputs() {
    let lake = lake();
    let l = lake.as_str();
    for (name, args) in [
        (
            "query_table",
            vec![
                "query",
                "--lake",
                l,
                "SELECT os_platform, count(DISTINCT id) AS machines FROM machines GROUP BY 1 ORDER BY 2 DESC, 1",
            ],
        ),
        (
            "query_csv_nested",
            vec![
                "query",
                "--lake",
                l,
                "--format",
                "csv",
                "SELECT computer_dns_name, last_seen, machine_tags, ip_addresses, vm_metadata FROM machines WHERE computer_dns_name LIKE 'examples%' OR computer_dns_name LIKE 'mymachine%' ORDER BY 1",
            ],
        ),
        (
            "query_ndjson_history",
            vec![
                "query",
                "--lake",
                l,
                "--format",
                "ndjson",
                "SELECT snapshot, count(DISTINCT id) AS machines, count(*) FILTER (WHERE risk_score = 'High') AS high FROM machines_history GROUP BY 1 ORDER BY 1",
            ],
        ),
        (
            "query_odata_json",
            vec![
                "query",
                "--lake",
                l,
                "--format",
                "odata-json",
                "machines?$filter=machineTags/any(t: t eq 'ExampleTag')&$select=lastSeen,computerDnsName,ipAddresses,id&$orderby=computerDnsName&$top=3&$count=true",
            ],
        ),
        (
            "query_odata_table",
            vec![
                "query",
                "--lake",
                l,
                "/api/machines?$filter=rbacGroupId+eq+140&$select=computerDnsName,vmMetadata&$orderby=computerDnsName",
            ],
        ),
        (
            "query_bom",
            vec!["query", "--lake", l, "\u{feff}SELECT 'é' AS text"],
        ),
        (
            "query_odata_error_caret",
            vec!["query", "--lake", l, "machines?$orderby=nämé"],
        ),
        (
            "query_odata_filter_error",
            vec![
                "query",
                "--lake",
                l,
                "machines?$filter=riskScore eq 'High' and healthStatuz eq 'Active'",
            ],
        ),
        (
            "query_odata_json_for_sql",
            vec!["query", "--lake", l, "--format", "odata-json", "SELECT 1"],
        ),
        (
            "query_copy_into_lake",
            vec![
                "query",
                "--lake",
                l,
                &format!("COPY (SELECT 1) TO '{l}/machines/x.parquet'"),
            ],
        ),
        (
            "query_drop_lake_table",
            vec!["query", "--lake", l, "DROP TABLE machines_history"],
        ),
        (
            "query_output_into_lake",
            vec![
                "query",
                "--lake",
                l,
                "--output",
                &format!("{l}/out.csv"),
                "SELECT 1",
            ],
        ),
        ("snapshots_list", vec!["snapshots", "list", "--lake", l]),
        (
            "snapshots_prune_dry_run",
            vec!["snapshots", "prune", "--lake", l, "--dry-run"],
        ),
    ] {
        snap!(name, cli(&args));
        // DataFusion alone, mdesnap's rules off, prints the same.
        snap!(name, cli_with(&args, &[("MDESNAP_PLAIN_ENGINE", "1")]));
    }
}

#[test]
fn odata_parse_outputs() {
    for (name, filter) in [
        (
            "odata_parse_canonical",
            "riskScore eq 'High' and not (osBuild add 1 gt 100)",
        ),
        ("odata_parse_minus", "-X lt 0"),
        (
            "odata_parse_quirks",
            "lastSeen gt 2018-08-01Z and computerDnsName in (\"a\",\"b\")",
        ),
        ("odata_parse_unterminated", "riskScore eq 'High"),
        ("odata_parse_non_ascii", "computerDnsName eq 'é' and ü"),
        (
            "odata_parse_unknown_function",
            "startwith(computerDnsName,'a')",
        ),
    ] {
        snap!(name, cli(&["odata", "parse", filter]));
    }
}

#[test]
fn bad_flags() {
    for (name, args) in [
        (
            "emulate_zero_rate",
            vec!["emulate", "--calls-per-minute", "0"],
        ),
        (
            "emulate_inf_window",
            vec!["emulate", "--window-scale", "inf"],
        ),
        (
            "emulate_late_start",
            vec!["emulate", "--start", "9999-06-01", "--day", "365"],
        ),
        (
            "generate_too_many_machines",
            vec!["generate", "--machines", "99999999999"],
        ),
        (
            "generate_too_many_days",
            vec!["generate", "--days", "4000000000"],
        ),
        (
            "prune_bad_duration",
            vec!["snapshots", "prune", "--older-than", "soon"],
        ),
        ("ingest_no_tenant", vec!["ingest"]),
        (
            "ingest_plain_http",
            vec![
                "ingest",
                "--tenant-id",
                "t",
                "--client-id",
                "c",
                "--client-secret",
                "s",
                "--base-url",
                "http://api.example.com",
            ],
        ),
        (
            "ingest_bad_filter",
            vec![
                "ingest",
                "--tenant-id",
                "t",
                "--client-id",
                "c",
                "--client-secret",
                "s",
                "--filter",
                "riskScore eq 'High",
            ],
        ),
        (
            "ingest_region_outside_commercial",
            vec!["ingest", "--cloud", "gcc-high", "--region", "eu"],
        ),
    ] {
        snap!(name, cli(&args));
    }
}
