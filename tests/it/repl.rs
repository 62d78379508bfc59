//! The console: statements piped in, `-c` and `-f`, an interactive session through a
//! pseudo-terminal, and `demo`. Outputs are compared whole against snapshots
//! (`tests/it/snapshots/repl_*.snap`), timings and paths filtered.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use rexpect::session::PtySession;
use tempfile::tempdir;

use crate::{bin, sample_data, small_lake, stderr, stdout};

macro_rules! snap {
    ($name:expr, $value:expr) => {
        insta::with_settings!({ snapshot_path => "snapshots", prepend_module_to_snapshot => false }, {
            insta::assert_snapshot!($name, $value);
        })
    };
}

/// `mdesnap args` with `input` on stdin and a clean environment.
fn run_with_stdin(args: &[&str], input: &str, dir: &Path) -> Output {
    let mut child = bin()
        .args(args)
        .current_dir(dir)
        .env_remove("MDESNAP_LAKE")
        .env_remove("RUST_LOG")
        .env("MDESNAP_HISTORY", dir.join("history"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the mdesnap binary runs");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input.as_bytes()).expect("input written");
    drop(stdin);
    child.wait_with_output().expect("it ends")
}

/// Exit code, stdout and stderr, with the volatile parts replaced.
fn report(o: &Output, replace: &[(&str, &str)]) -> String {
    let clean = |s: String| {
        let mut s = s;
        for (from, to) in replace {
            s = s.replace(from, to);
        }
        s.lines()
            .map(|l| {
                if l.starts_with("Time: ") {
                    "Time: <t>".to_string()
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    format!(
        "exit: {}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code().map_or("signal".into(), |c| c.to_string()),
        clean(stdout(o)),
        clean(stderr(o))
    )
}

#[test]
fn a_piped_session_runs_every_kind_of_statement() {
    let dir = tempdir().expect("tempdir");
    let lake = sample_data().display().to_string();
    std::fs::write(
        dir.path().join("included.sql"),
        "-- an included file\nSELECT 'from the file' AS included;\n",
    )
    .expect("written");
    let script = "\
SELECT os_platform, count(*) AS n
  FROM machines
 GROUP BY 1 ORDER BY n DESC, 1 LIMIT 3;
machines?$filter=riskScore eq 'High' and contains(computerDnsName, 'contoso')&$select=computerDnsName,riskScore&$orderby=computerDnsName&$top=2
SELECT 1 AS a; SELECT 'x;y' AS b; -- two on a line
\\?
\\dt
\\d ip_addresses
\\snapshots
\\asof 2026-01-03
SELECT count(DISTINCT id) AS machines FROM machines;
\\asof latest
\\format csv
SELECT id, computer_dns_name FROM machines ORDER BY id LIMIT 2;
\\format json
SELECT 1 AS one;
\\format ndjson
SELECT 1 AS one;
\\format odata-json
machines?$select=computerDnsName&$orderby=computerDnsName&$top=1&$count=true
\\format table
\\timing on
SELECT 2 AS two;
\\timing off
\\maxrows 2
SELECT value FROM range(5) ORDER BY value;
\\maxrows all
\\o out.parquet
SELECT id, risk_score FROM machines ORDER BY id;
\\o
\\i included.sql
\\refresh
\\pager on
SELECT 'paged only on a terminal' AS note;
\\pager off
DESCRIBE user_machines;
COPY (SELECT 1 AS copied) TO 'copied.csv' STORED AS CSV;
SELECT x FROM machines WHERE
  id = 1;
SELECT 'never runs';
";
    let o = run_with_stdin(&["repl", "--lake", &lake], script, dir.path());
    snap!(
        "repl_piped_session",
        report(&o, &[(&lake, "<sample-data>")])
    );
    assert_eq!(
        o.status.code(),
        Some(2),
        "the failing statement stops the run"
    );
    // What `\o` wrote is the result, row for row and in order.
    let out = dir.path().join("out.parquet");
    let written = crate::run(&[
        "repl",
        "--lake",
        &lake,
        "--format",
        "csv",
        "-c",
        &format!(
            "CREATE EXTERNAL TABLE o STORED AS PARQUET LOCATION '{}'; SELECT string_agg(id || ':' || coalesce(risk_score, '-'), ',') AS rows FROM o",
            out.display()
        ),
    ]);
    let expected = crate::run(&[
        "repl",
        "--lake",
        &lake,
        "--format",
        "csv",
        "-c",
        "SELECT string_agg(id || ':' || coalesce(risk_score, '-'), ',' ORDER BY id) AS rows FROM machines",
    ]);
    assert_eq!(stdout(&written), stdout(&expected), "{}", stderr(&written));
    assert!(stdout(&written).len() > 306 * 40);
    let copied = std::fs::read_to_string(dir.path().join("copied.csv")).expect("COPY wrote");
    assert_eq!(copied, "copied\n1\n");
}

#[test]
fn c_and_f_run_their_statements_and_stop_at_the_first_failure() {
    let dir = tempdir().expect("tempdir");
    let lake = sample_data().display().to_string();
    let o = run_with_stdin(
        &[
            "repl",
            "--lake",
            &lake,
            "--format",
            "csv",
            "-c",
            "SELECT 1 AS a; SELECT 2 AS b",
            "-c",
            "SELECT 3 AS c",
        ],
        "",
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "a\n1\nb\n2\nc\n3\n");

    let file = dir.path().join("script.sql");
    std::fs::write(
        &file,
        "\u{feff}SELECT 'first' AS s;\nmachines?$filter=riskScor eq 'High'\nSELECT 'third' AS s;\n",
    )
    .expect("written");
    let o = run_with_stdin(
        &["repl", "--lake", &lake, "-f", &file.display().to_string()],
        "",
        dir.path(),
    );
    snap!("repl_file_failure", report(&o, &[(&lake, "<sample-data>")]));
    assert_eq!(o.status.code(), Some(2));
    assert!(!stdout(&o).contains("third"));

    // Nothing writes inside the lake folder.
    let gen_lake = dir.path().join("lake");
    small_lake(&gen_lake, 20, 1);
    let target = gen_lake.join("x.csv");
    for statement in [
        format!("\\o {}", target.display()),
        format!("COPY (SELECT 1) TO '{}' STORED AS CSV", target.display()),
    ] {
        let o = run_with_stdin(
            &[
                "repl",
                "--lake",
                &gen_lake.display().to_string(),
                "-c",
                &statement,
            ],
            "",
            dir.path(),
        );
        assert_eq!(o.status.code(), Some(2), "{statement}: {}", stdout(&o));
        assert!(stderr(&o).contains("inside the lake"), "{}", stderr(&o));
        assert!(!target.exists());
    }
}

/// The console on a pseudo-terminal, colours off (`NO_COLOR`), its history in
/// `history`.
fn console(args: &[&str], history: &Path) -> PtySession {
    console_with(args, history, Some("1"))
}

fn console_with(args: &[&str], history: &Path, no_color: Option<&str>) -> PtySession {
    spawn_console(args, |c| {
        c.env_remove("NO_COLOR").env("MDESNAP_HISTORY", history);
        if let Some(v) = no_color {
            c.env("NO_COLOR", v);
        }
    })
}

/// `mdesnap args` on a pseudo-terminal (`TERM=xterm`, no lake from the environment),
/// with `setup` adding to its environment.
fn spawn_console(args: &[&str], setup: impl FnOnce(&mut Command)) -> PtySession {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mdesnap"));
    command
        .args(args)
        .env_remove("MDESNAP_LAKE")
        .env_remove("RUST_LOG")
        .env("TERM", "xterm");
    setup(&mut command);
    rexpect::spawn_with_options(
        command,
        rexpect::reader::Options::new()
            .timeout_ms(Some(60_000))
            // The line editor's redraws are matched raw: stripping would cut them.
            .strip_ansi_escape_codes(false),
    )
    .expect("a pseudo-terminal")
}

/// Waits for the prompt: typing ahead of it could be lost when the line editor
/// switches the terminal to raw mode.
fn at_prompt(p: &mut PtySession) {
    p.exp_string("mdesnap> ").expect("a prompt");
}

/// Waits for the prompt, then leaves with Ctrl-D.
fn quit(mut p: PtySession) {
    at_prompt(&mut p);
    p.send_control('d').expect("ctrl-d");
    p.exp_eof().expect("Ctrl-D ends the console");
}

/// Types `keys` (rexpect buffers what `send` writes until a flush).
fn send(p: &mut PtySession, keys: &str) {
    p.send(keys).expect("keys sent");
    p.flush().expect("keys flushed");
}

#[test]
fn an_interactive_session_edits_completes_cancels_and_remembers() {
    let dir = tempdir().expect("tempdir");
    let history = dir.path().join("state").join("history");
    let lake = sample_data().display().to_string();
    let mut p = console(&["repl", "--lake", &lake], &history);
    p.exp_string("7 snapshots, 20260101T070000Z to 20260107T070000Z")
        .expect("the banner names the snapshot range");
    at_prompt(&mut p);

    // SQL over two lines runs at its ';'.
    p.send_line("SELECT count(DISTINCT os_platform) AS platforms")
        .expect("sent");
    p.send_line("FROM machines;").expect("sent");
    p.exp_string("| 10        |").expect("the answer");
    p.exp_string("1 row").expect("a footer");
    at_prompt(&mut p);

    // Tab completes a column name and a table name.
    send(&mut p, "SELECT computer_dn");
    send(&mut p, "\t");
    send(&mut p, " FROM machines_hi");
    send(&mut p, "\t");
    p.exp_string("SELECT computer_dns_name FROM machines_history")
        .expect("both words completed");
    p.send_line(" ORDER BY 1 LIMIT 1;").expect("sent");
    p.exp_string("| computer_dns_name")
        .expect("the completed statement runs");
    p.exp_string("1 row").expect("a footer");
    at_prompt(&mut p);

    // An OData line runs on Enter, whatever its quotes.
    p.send_line("machines?$filter=computerDnsName eq 'mymachine1.contoso.com'&$select=computerDnsName,riskScore")
        .expect("sent");
    p.exp_string("| mymachine1.contoso.com | High      |")
        .expect("the OData answer");
    at_prompt(&mut p);

    // An error in an OData line: the message and a caret.
    p.send_line("machines?$filter=riskScor eq 'High'")
        .expect("sent");
    p.exp_string("did you mean riskScore?").expect("the error");
    p.exp_string("                 ^")
        .expect("a caret under the name");
    at_prompt(&mut p);

    // Ctrl-C at the prompt clears the line.
    send(&mut p, "SELECT 'abandoned'");
    p.send_control('c').expect("ctrl-c");
    at_prompt(&mut p);
    p.send_line("SELECT 'kept' AS k;").expect("sent");
    p.exp_string("| kept |")
        .expect("the line after Ctrl-C runs alone");
    at_prompt(&mut p);

    // Ctrl-C during a long query cancels it; the session goes on.
    p.send_line("SELECT value FROM range(1000000000);")
        .expect("sent");
    p.exp_string("| 39    |").expect("the first rows at once");
    std::thread::sleep(Duration::from_millis(300));
    p.send_control('c').expect("ctrl-c");
    p.exp_string("cancelled").expect("the query is cancelled");
    at_prompt(&mut p);
    p.send_line("SELECT 7 * 6 AS answer;").expect("sent");
    p.exp_string("| 42     |").expect("the session goes on");
    at_prompt(&mut p);

    p.send_line("\\q").expect("sent");
    p.exp_eof().expect("it ends");
    let status = p.process().wait().expect("an exit status");
    assert_eq!(
        format!("{status:?}").rsplit(", ").next(),
        Some("0)"),
        "{status:?}"
    );

    // The history was written as statements were entered, and the next run has it.
    let kept = std::fs::read_to_string(&history).expect("a history file");
    assert!(kept.contains("SELECT 7 * 6 AS answer;"), "{kept}");
    let mut p = console(&["repl", "--lake", &lake], &history);
    at_prompt(&mut p);
    // Up twice: past `\q` to the answer, run again.
    send(&mut p, "\x1b[A");
    send(&mut p, "\x1b[A");
    send(&mut p, "\r");
    p.exp_string("| 42     |")
        .expect("the statement from the history runs");
    quit(p);
}

#[test]
fn the_history_lives_under_the_state_folder() {
    let dir = tempdir().expect("tempdir");
    let lake = sample_data().display().to_string();
    // (XDG_STATE_HOME, where the history must land)
    let state = dir.path().join("state");
    let home = dir.path().join("home");
    let cases = [
        (
            Some(state.display().to_string()),
            state.join("mdesnap/history"),
        ),
        (
            Some(String::new()),
            home.join(".local/state/mdesnap/history"),
        ),
        (
            Some("relative/state".to_string()),
            home.join(".local/state/mdesnap/history"),
        ),
    ];
    for (xdg, expected) in cases {
        let _ = std::fs::remove_file(&expected);
        let mut p = spawn_console(&["repl", "--lake", &lake], |c| {
            c.env_remove("MDESNAP_HISTORY")
                .env_remove("XDG_STATE_HOME")
                .env("HOME", &home)
                .env("NO_COLOR", "1");
            if let Some(x) = &xdg {
                c.env("XDG_STATE_HOME", x);
            }
        });
        at_prompt(&mut p);
        p.send_line("SELECT 'remembered' AS r;").expect("sent");
        p.exp_string("| remembered |").expect("the answer");
        quit(p);
        let kept = std::fs::read_to_string(&expected).unwrap_or_else(|e| {
            panic!(
                "XDG_STATE_HOME={xdg:?}: no history at {}: {e}",
                expected.display()
            )
        });
        assert!(kept.contains("SELECT 'remembered' AS r;"), "{kept}");
    }
}

#[test]
fn keywords_are_coloured_unless_no_color_is_set() {
    let dir = tempdir().expect("tempdir");
    let lake = sample_data().display().to_string();
    let keyword = "\x1b[1;34mSELECT\x1b[0m";
    for (no_color, coloured) in [(None, true), (Some(""), true), (Some("1"), false)] {
        let mut p = console_with(&["repl", "--lake", &lake], &dir.path().join("h"), no_color);
        at_prompt(&mut p);
        send(&mut p, "SELECT 1");
        // Everything the line editor drew for the typed line.
        std::thread::sleep(Duration::from_millis(500));
        let mut echoed = String::new();
        while let Some(c) = p.try_read() {
            echoed.push(c);
        }
        assert!(echoed.contains("SELECT"), "the line was echoed: {echoed:?}");
        assert_eq!(
            echoed.contains(keyword),
            coloured,
            "NO_COLOR={no_color:?}: {echoed:?}"
        );
        assert_eq!(echoed.contains("\x1b[1;34m"), coloured, "{echoed:?}");
        p.send_control('c').expect("ctrl-c");
        quit(p);
    }
}

#[test]
fn demo_piped_makes_a_lake_through_ingest_and_runs_sample_queries() {
    let dir = tempdir().expect("tempdir");
    let lake = dir.path().join("demo");
    let lake_s = lake.display().to_string();
    let args = ["demo", "--lake", &lake_s, "--days", "2", "--machines", "60"];
    let o = run_with_stdin(&args, "", dir.path());
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let port = stderr(&o)
        .split("http://127.0.0.1:")
        .nth(1)
        .and_then(|s| s.split(';').next())
        .unwrap_or_default()
        .to_string();
    snap!(
        "repl_demo_piped",
        report(
            &o,
            &[
                (&lake_s, "<demo>"),
                (&format!("127.0.0.1:{port}"), "127.0.0.1:<port>")
            ]
        )
    );
    // The snapshots carry the emulated days' times.
    let list = crate::run(&["snapshots", "list", "--lake", &lake_s, "--format", "csv"]);
    let listed = stdout(&list);
    let ids: Vec<&str> = listed
        .lines()
        .skip(1)
        .filter_map(|l| l.split(',').next())
        .collect();
    assert_eq!(ids, ["2026-01-01T07:00:00Z", "2026-01-02T07:00:00Z"]);

    let again = run_with_stdin(&args, "", dir.path());
    assert_eq!(again.status.code(), Some(0));
    assert!(
        stderr(&again).contains("reusing the demo lake"),
        "{}",
        stderr(&again)
    );
    let fresh: Vec<&str> = args.iter().copied().chain(["--fresh"]).collect();
    let replaced = run_with_stdin(&fresh, "", dir.path());
    assert_eq!(replaced.status.code(), Some(0));
    assert!(stderr(&replaced).contains("replacing the demo lake"));

    // A lake that is not the demo's is left alone.
    let other = dir.path().join("generated");
    small_lake(&other, 20, 1);
    let other_s = other.display().to_string();
    let refused = run_with_stdin(&["demo", "--lake", &other_s, "--fresh"], "", dir.path());
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        stderr(&refused).contains("a lake the demo did not make"),
        "{}",
        stderr(&refused)
    );
    assert!(
        crate::run(&["snapshots", "list", "--lake", &other_s])
            .status
            .success()
    );
}

#[test]
fn diff_in_the_console_prints_the_summary_and_the_stored_rows() {
    let dir = tempdir().expect("tempdir");
    let lake = sample_data().display().to_string();
    let o = run_with_stdin(
        &["repl", "--lake", &lake, "--format", "csv"],
        "\\diff\nSELECT * FROM machine_changes WHERE snapshot = '2026-01-07T07:00:00Z';\n\\diff yesterday\n",
        dir.path(),
    );
    let out = crate::stdout(&o);
    let (diff, rest) = out
        .split_once("changes from 20260106T070000Z to 20260107T070000Z\n")
        .map(|(_, r)| r.split_once("\nprevious_snapshot,").expect("rows follow"))
        .expect("the pair is named");
    assert!(
        diff.starts_with("table,change,field,rows\nmachines,added,,"),
        "{diff}"
    );
    // The rows \diff printed are the stored rows of the latest snapshot, in order.
    let (rows, stored) = rest
        .split_once("previous_snapshot,")
        .expect("the stored rows follow");
    let sorted = |t: &str| {
        let mut lines: Vec<String> = t.trim_end().lines().map(str::to_string).collect();
        lines.sort();
        lines
    };
    assert_eq!(sorted(rows), sorted(stored));
    // Ordered by machine id (then the API's property order, which SQL cannot sort by).
    let ids: Vec<&str> = rows
        .lines()
        .skip(1)
        .filter_map(|l| l.split(',').nth(1))
        .collect();
    assert!(ids.windows(2).all(|w| w[0] <= w[1]), "{ids:?}");
    assert!(rows.lines().count() > 3, "{rows}");
    // A bad argument is an error naming it, and stops the piped run.
    assert_eq!(o.status.code(), Some(2));
    assert!(
        crate::stderr(&o).contains("'yesterday' is not a snapshot id"),
        "{}",
        crate::stderr(&o)
    );
}

/// A reader that stops reading (`| head`) ends the console's output without an error:
/// exit 0, nothing on stderr.
#[test]
fn a_closed_pipe_ends_the_console_quietly() {
    use std::io::Read;
    let lake = crate::sample_data().display().to_string();
    let mut child = crate::bin()
        .args([
            "repl",
            "--lake",
            &lake,
            "-c",
            "SELECT * FROM machines_history",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starts");
    let mut first = [0u8; 64];
    child
        .stdout
        .take()
        .expect("a pipe")
        .read_exact(&mut first)
        .expect("some output");
    // The pipe's reader is dropped here, as `head` exits.
    let out = child.wait_with_output().expect("ends");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
