//! The lake in an object store, against real storage servers started on loopback by
//! each test: Azurite (npm `azurite`) for Azure Blob Storage and moto's server (PyPI
//! `moto[server]`) for S3. Every command runs as a user runs it, the credentials and
//! endpoint in the environment, and its answers are compared with the same lake on
//! disk.
//!
//! Without the servers installed these tests say so and pass; `.ci/run` installs them
//! and sets `MDESNAP_STORE_TESTS=require`, which makes a missing server a failure.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use mdesnap::emulator::{Emulator, EmulatorConfig};
use tempfile::{TempDir, tempdir};

use crate::{bin, stderr, stdout};

/// Azurite's well-known development account.
const AZURITE_ACCOUNT: &str = "devstoreaccount1";
const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Azurite,
    Moto,
}

/// A storage server on a loopback port, stopped when dropped.
struct Server {
    kind: Kind,
    child: Child,
    port: u16,
    _data: TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn required() -> bool {
    std::env::var("MDESNAP_STORE_TESTS").is_ok_and(|v| v == "require")
}

impl Server {
    /// Starts the server, or `None` (and a note) when it is not installed.
    fn start(kind: Kind) -> Option<Server> {
        let data = tempdir().expect("tempdir");
        let dir = data.path().to_str().expect("utf-8").to_string();
        let (program, args): (&str, Vec<&str>) = match kind {
            Kind::Azurite => (
                "azurite-blob",
                vec![
                    "--blobHost",
                    "127.0.0.1",
                    "--blobPort",
                    "0",
                    "--location",
                    &dir,
                    "--skipApiVersionCheck",
                ],
            ),
            Kind::Moto => ("moto_server", vec!["-H", "127.0.0.1", "-p", "0"]),
        };
        let spawned = Command::new(program)
            .args(&args)
            .current_dir(data.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required() => {
                eprintln!("{program} is not installed: skipping (.ci/run installs it)");
                return None;
            }
            Err(e) => panic!("starting {program}: {e}"),
        };
        // Both print the address they listen on: Azurite on stdout, werkzeug on stderr.
        let (tx, rx) = mpsc::channel();
        for pipe in [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if let Some(rest) = line.split("http://127.0.0.1:").nth(1) {
                        let digits: String =
                            rest.chars().take_while(char::is_ascii_digit).collect();
                        if let Ok(port) = digits.parse::<u16>() {
                            let _ = tx.send(port);
                        }
                    }
                }
            });
        }
        let port = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("{program} did not say its port within 60 s"));
        Some(Server {
            kind,
            child,
            port,
            _data: data,
        })
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The environment a user of this store sets.
    fn env(&self) -> Vec<(&'static str, String)> {
        match self.kind {
            Kind::Azurite => vec![
                ("AZURE_STORAGE_USE_EMULATOR", "true".into()),
                ("AZURITE_BLOB_STORAGE_URL", self.endpoint()),
            ],
            Kind::Moto => vec![
                ("AWS_ENDPOINT_URL", self.endpoint()),
                ("AWS_ACCESS_KEY_ID", "testing".into()),
                ("AWS_SECRET_ACCESS_KEY", "testing".into()),
                ("AWS_REGION", "us-east-1".into()),
            ],
        }
    }

    /// Makes a container (bucket) and returns the URL of a lake inside it.
    async fn lake(&self, name: &str) -> String {
        match self.kind {
            Kind::Azurite => {
                let response = self
                    .azurite_request("PUT", name, &[("restype", "container")])
                    .await;
                assert_eq!(response.status().as_u16(), 201, "container {name} made");
                format!("az://{name}/lake")
            }
            Kind::Moto => {
                let response = crate::http()
                    .put(format!("{}/{name}", self.endpoint()))
                    .send()
                    .await
                    .expect("moto answers");
                assert!(response.status().is_success(), "bucket {name} made");
                format!("s3://{name}/lake")
            }
        }
    }

    /// Every object name in a container (bucket), from the server itself.
    async fn objects(&self, name: &str) -> BTreeSet<String> {
        let body = match self.kind {
            Kind::Azurite => self
                .azurite_request("GET", name, &[("comp", "list"), ("restype", "container")])
                .await
                .text()
                .await
                .expect("listing"),
            Kind::Moto => crate::http()
                .get(format!("{}/{name}?list-type=2", self.endpoint()))
                .send()
                .await
                .expect("moto answers")
                .text()
                .await
                .expect("listing"),
        };
        let tag = match self.kind {
            Kind::Azurite => "Name",
            Kind::Moto => "Key",
        };
        let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
        body.split(&open)
            .skip(1)
            .filter_map(|part| part.split(&close).next())
            .map(str::to_string)
            .collect()
    }

    /// A request to Azurite signed with the development account's shared key.
    async fn azurite_request(
        &self,
        method: &str,
        container: &str,
        query: &[(&str, &str)],
    ) -> reqwest::Response {
        let date = chrono::Utc::now()
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        let version = "2021-08-06";
        let mut resource = format!("/{AZURITE_ACCOUNT}/{AZURITE_ACCOUNT}/{container}");
        for (k, v) in query {
            resource.push_str(&format!("\n{k}:{v}"));
        }
        // Content-Length is signed empty when zero.
        let to_sign = format!(
            "{method}\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n{resource}"
        );
        let b64 = base64::engine::general_purpose::STANDARD;
        let key = ring::hmac::Key::new(
            ring::hmac::HMAC_SHA256,
            &b64.decode(AZURITE_KEY).expect("key"),
        );
        let signature = b64.encode(ring::hmac::sign(&key, to_sign.as_bytes()).as_ref());
        let query: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let url = format!(
            "{}/{AZURITE_ACCOUNT}/{container}?{}",
            self.endpoint(),
            query.join("&")
        );
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = crate::http()
            .request(method.clone(), url)
            .header("x-ms-date", date)
            .header("x-ms-version", version)
            .header(
                "Authorization",
                format!("SharedKey {AZURITE_ACCOUNT}:{signature}"),
            );
        if method == reqwest::Method::PUT {
            request = request.header("Content-Length", "0");
        }
        request.send().await.expect("azurite answers")
    }
}

/// `mdesnap ARGS` with the store's environment, from an empty working folder (so a
/// URL mistaken for a path would show up as a folder there).
fn mdesnap(server: &Server, cwd: &std::path::Path, args: &[&str]) -> Command {
    let mut c = bin();
    c.args(args)
        .current_dir(cwd)
        .env_remove("MDESNAP_LAKE")
        .env_remove("RUST_LOG")
        .env_remove("AZURE_TENANT_ID")
        .env_remove("AZURE_CLIENT_ID")
        .env_remove("AZURE_CLIENT_SECRET")
        .envs(server.env());
    c
}

async fn output(mut command: Command) -> Output {
    tokio::task::spawn_blocking(move || command.output().expect("mdesnap runs"))
        .await
        .expect("joined")
}

fn ok(o: &Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what}: exit {:?}\n{}",
        o.status.code(),
        stderr(o)
    );
    stdout(o)
}

/// The text with each data file's writer id (`part-00000-<uuid>.parquet`, new at
/// every write) made `part-00000-UUID.parquet`.
fn without_job_ids(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("part-") {
        let (head, tail) = rest.split_at(at);
        out.push_str(head);
        let name_len = "part-00000-".len() + 36;
        if tail.len() >= name_len && tail[name_len..].starts_with(".parquet") {
            out.push_str(&tail[.."part-00000-".len()]);
            out.push_str("UUID");
            rest = &tail[name_len..];
        } else {
            out.push_str("part-");
            rest = &tail["part-".len()..];
        }
    }
    out.push_str(rest);
    out
}

/// What a lake answers, for comparing a lake in a store with the same lake on disk:
/// each read goes through the data files, not the manifests' counts.
const QUESTIONS: &[&[&str]] = &[
    &["snapshots", "list", "--format", "csv"],
    &["snapshots", "show", "latest"],
    &[
        "query",
        "--format",
        "csv",
        "SELECT arrow_cast(snapshot, 'Utf8') AS s, count(DISTINCT id) AS ids, sum(length(computer_dns_name)) AS name_chars FROM machines_history GROUP BY 1 ORDER BY 1",
    ],
    &[
        "query",
        "--format",
        "csv",
        "SELECT m.id, m.health_status, count(a.ip_address) AS addresses FROM machines m LEFT JOIN ip_addresses a ON a.machine_id = m.id GROUP BY 1, 2 ORDER BY 1 LIMIT 25",
    ],
    &[
        "query",
        "--format",
        "csv",
        "--as-of",
        "2026-01-02T12:00:00Z",
        "SELECT id, risk_score, os_platform FROM machines ORDER BY id LIMIT 20",
    ],
    &[
        "query",
        "--format",
        "csv",
        "SELECT field, change, count(*) AS n FROM machine_changes GROUP BY 1, 2 ORDER BY 1, 2",
    ],
    &[
        "query",
        "--format",
        "csv",
        "machines?$filter=healthStatus eq 'Active' and riskScore ne 'None'&$orderby=id&$top=7&$select=id,riskScore",
    ],
    &["diff", "--format", "csv"],
];

/// Generate, every kind of read, prune and ingest on a store, each answer compared
/// with the same work on a local lake.
async fn the_whole_lake_works_on(kind: Kind) {
    let Some(server) = Server::start(kind) else {
        return;
    };
    let container = "mdesnap-it";
    let url = server.lake(container).await;
    let cwd = tempdir().expect("tempdir");
    let local_dir = tempdir().expect("tempdir");
    let local = local_dir.path().join("lake");
    let local = local.to_str().expect("utf-8");
    let generate = [
        "generate",
        "--machines",
        "300",
        "--days",
        "4",
        "--seed",
        "7",
        "--start",
        "2026-01-01T07:00:00Z",
        "--quiet",
    ];
    let started = Instant::now();
    for lake in [url.as_str(), local] {
        let mut args = generate.to_vec();
        args.extend(["--lake", lake]);
        ok(
            &output(mdesnap(&server, cwd.path(), &args)).await,
            "generate",
        );
    }
    eprintln!("{kind:?}: generate took {:?} for both", started.elapsed());

    for question in QUESTIONS {
        let ask = |lake: &str| {
            let mut args = question.to_vec();
            args.extend(["--lake", lake]);
            mdesnap(&server, cwd.path(), &args)
        };
        let remote = without_job_ids(&ok(
            &output(ask(&url)).await,
            &format!("{question:?} on {url}"),
        ));
        let on_disk = without_job_ids(&ok(
            &output(ask(local)).await,
            &format!("{question:?} on disk"),
        ));
        assert!(remote.lines().count() > 1, "{question:?} answers rows");
        assert_eq!(
            remote, on_disk,
            "{question:?}: the store answers as the disk does"
        );
    }
    assert_eq!(
        std::fs::read_dir(cwd.path()).expect("cwd").count(),
        0,
        "nothing was written to the working folder"
    );

    // Every object is a manifest, a listed data file or the lock.
    let objects = server.objects(container).await;
    let manifests: Vec<&String> = objects
        .iter()
        .filter(|o| o.starts_with("lake/_snapshots/"))
        .collect();
    assert_eq!(manifests.len(), 4, "{manifests:?}");
    assert!(objects.contains("lake/_lock"), "{objects:?}");
    let first = "20260101T070000Z";
    assert!(
        objects
            .iter()
            .any(|o| o.contains(&format!("snapshot={first}/")))
    );

    // Prune: the oldest snapshot's manifest and every one of its files go.
    let prune = ["snapshots", "prune", "--keep", "3", "--lake", url.as_str()];
    let said = ok(&output(mdesnap(&server, cwd.path(), &prune)).await, "prune");
    assert!(
        said.contains(&format!("removed snapshot {first}")),
        "{said}"
    );
    let objects = server.objects(container).await;
    let left: Vec<&String> = objects.iter().filter(|o| o.contains(first)).collect();
    assert!(
        left.is_empty(),
        "pruned snapshot's objects remain: {left:?}"
    );
    let list = [
        "snapshots",
        "list",
        "--format",
        "csv",
        "--lake",
        url.as_str(),
    ];
    let listed = ok(&output(mdesnap(&server, cwd.path(), &list)).await, "list");
    assert_eq!(listed.lines().count(), 1 + 3, "{listed}");

    // Ingest from the Defender emulator into the store, the same rows as on disk.
    let emu = Emulator::start(EmulatorConfig {
        machines: 120,
        ..EmulatorConfig::default()
    })
    .await
    .expect("emulator starts");
    let api = emu.url();
    let ingest_lake = format!("{}/{}", url.trim_end_matches("/lake"), "ingested");
    for lake in [ingest_lake.as_str(), local] {
        let mut c = mdesnap(
            &server,
            cwd.path(),
            &[
                "ingest",
                "--quiet",
                "--lake",
                lake,
                "--base-url",
                &api,
                "--authority-url",
                &api,
                "--graph-base-url",
                &api,
            ],
        );
        c.env("AZURE_TENANT_ID", "emulator-tenant")
            .env("AZURE_CLIENT_ID", "emulator-client")
            .env("AZURE_CLIENT_SECRET", "emulator-secret");
        ok(&output(c).await, &format!("ingest into {lake}"));
    }
    let rows = "SELECT id, computer_dns_name, health_status, os_platform FROM machines ORDER BY id";
    let ingested = ok(
        &output(mdesnap(
            &server,
            cwd.path(),
            &["query", "--format", "csv", "--lake", &ingest_lake, rows],
        ))
        .await,
        "query the ingested lake",
    );
    let on_disk = ok(
        &output(mdesnap(
            &server,
            cwd.path(),
            &["query", "--format", "csv", "--lake", local, rows],
        ))
        .await,
        "query the local ingest",
    );
    assert_eq!(ingested.lines().count(), 1 + 120);
    assert_eq!(ingested, on_disk);

    // What a writer killed mid-upload leaves: data of a snapshot without a manifest,
    // a stray file beside a committed snapshot's files. Planted by hand on S3, where
    // moto takes a plain PUT; the next writer removes both.
    if kind == Kind::Moto {
        let latest = "20260104T070000Z";
        let planted = [
            "lake/machines/snapshot=20260105T070000Z/part-00000-x.parquet".to_string(),
            format!("lake/ip_addresses/snapshot={latest}/part-00009-x.parquet"),
        ];
        for key in &planted {
            let put = crate::http()
                .put(format!("{}/{container}/{key}", server.endpoint()))
                .body("half a file")
                .send()
                .await
                .expect("moto answers");
            assert!(put.status().is_success());
        }
        let dry = ["snapshots", "prune", "--dry-run", "--lake", url.as_str()];
        let said = ok(&output(mdesnap(&server, cwd.path(), &dry)).await, "dry run");
        assert!(
            said.contains(
                "would remove leftover s3://mdesnap-it/lake/machines/snapshot=20260105T070000Z/\n"
            ),
            "{said}"
        );
        assert!(
            said.contains(&format!(
                "would remove leftover s3://mdesnap-it/{}\n",
                planted[1]
            )),
            "{said}"
        );
        let append = [
            "generate",
            "--append",
            "--days",
            "1",
            "--quiet",
            "--lake",
            url.as_str(),
        ];
        ok(
            &output(mdesnap(&server, cwd.path(), &append)).await,
            "append",
        );
        let objects = server.objects(container).await;
        for key in &planted {
            assert!(!objects.contains(key), "{key} removed by the next writer");
        }
    }

    // Nothing left behind by any of it.
    let dry = [
        "snapshots",
        "prune",
        "--dry-run",
        "--lake",
        ingest_lake.as_str(),
    ];
    let said = ok(&output(mdesnap(&server, cwd.path(), &dry)).await, "dry run");
    assert!(
        said.ends_with("would remove 0 snapshots and 0 leftovers\n"),
        "{said}"
    );
    eprintln!("{kind:?}: whole suite took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_lake_works_on_azurite() {
    the_whole_lake_works_on(Kind::Azurite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_lake_works_on_s3() {
    the_whole_lake_works_on(Kind::Moto).await;
}

/// Two writers started together: one commits, the other is told the lake is locked,
/// and nothing of the loser's shows.
async fn two_writers_race_on(kind: Kind) {
    let Some(server) = Server::start(kind) else {
        return;
    };
    let url = server.lake("race").await;
    let cwd = tempdir().expect("tempdir");
    let args = [
        "generate",
        "--append",
        "--machines",
        "3000",
        "--days",
        "2",
        "--quiet",
        "--lake",
        url.as_str(),
    ];
    let mut a = mdesnap(&server, cwd.path(), &args);
    let mut b = mdesnap(&server, cwd.path(), &args);
    for c in [&mut a, &mut b] {
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
    }
    let (a, b) = tokio::task::spawn_blocking(move || {
        let (ca, cb) = (a.spawn().expect("a"), b.spawn().expect("b"));
        (
            ca.wait_with_output().expect("a ends"),
            cb.wait_with_output().expect("b ends"),
        )
    })
    .await
    .expect("joined");
    let (won, lost): (Vec<&Output>, Vec<&Output>) =
        [&a, &b].into_iter().partition(|o| o.status.success());
    assert_eq!(
        (won.len(), lost.len()),
        (1, 1),
        "one wins:\n{}\n{}",
        stderr(&a),
        stderr(&b)
    );
    assert_eq!(lost[0].status.code(), Some(2));
    let said = stderr(lost[0]);
    assert!(
        said.contains(&format!("lake {url} is locked by another writer (pid "))
            && said.contains("pass --wait"),
        "{said}"
    );
    let list = [
        "snapshots",
        "list",
        "--format",
        "csv",
        "--lake",
        url.as_str(),
    ];
    let listed = ok(&output(mdesnap(&server, cwd.path(), &list)).await, "list");
    assert_eq!(
        listed.lines().count(),
        1 + 2,
        "only the winner's snapshots: {listed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_race_on_azurite() {
    two_writers_race_on(Kind::Azurite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_race_on_s3() {
    two_writers_race_on(Kind::Moto).await;
}

/// `generate` killed with SIGKILL at moments spread over its run, on Azurite: no
/// snapshot is ever partly visible, every visible one reads whole, and the next writer
/// takes the dead one's lock over once its lease ends and removes its leftovers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_writer_on_azurite_leaves_nothing_visible() {
    let Some(server) = Server::start(Kind::Azurite) else {
        return;
    };
    let container = "killed";
    let url = server.lake(container).await;
    let cwd = tempdir().expect("tempdir");
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    let mut rng = mdesnap::fleet::Rng::derive(seed, &[]);
    eprintln!("store kill test seed {seed}");
    let mut leftovers_seen = 0;
    for round in 0..4 {
        let mut c = mdesnap(
            &server,
            cwd.path(),
            &[
                "generate",
                "--append",
                "--wait",
                "--machines",
                "2000",
                "--days",
                "3",
                "--quiet",
                "--lake",
                &url,
            ],
        );
        c.env("MDESNAP_LOCK_LEASE", "2s")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = c.spawn().expect("spawns");
        // After up to 2 s waiting out the last round's lease, each day takes about
        // a second in a debug build.
        let wait = rng.range(1500, 7000);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let _ = child.kill();
        let _ = child.wait();

        let listed = output(mdesnap(
            &server,
            cwd.path(),
            &["snapshots", "list", "--format", "csv", "--lake", &url],
        ))
        .await;
        assert!(
            !stderr(&listed).contains("unreadable"),
            "round {round}: {}",
            stderr(&listed)
        );
        let snapshots: Vec<String> = stdout(&listed)
            .lines()
            .skip(1)
            .map(str::to_string)
            .collect();
        eprintln!(
            "round {round}: killed at {wait} ms; {} snapshots",
            snapshots.len()
        );
        if snapshots.is_empty() {
            continue;
        }
        assert_eq!(
            reads_whole(&server, cwd.path(), &url).await,
            snapshots.len()
        );
        let objects = server.objects(container).await;
        let data = objects.iter().filter(|o| o.ends_with(".parquet")).count();
        let dry = ok(
            &output(mdesnap(
                &server,
                cwd.path(),
                &["snapshots", "prune", "--dry-run", "--wait", "--lake", &url],
            ))
            .await,
            "dry run",
        );
        if !dry.ends_with("0 leftovers\n") {
            leftovers_seen += 1;
        }
        eprintln!(
            "round {round}: {data} data files; {}",
            dry.lines().last().unwrap_or("")
        );
    }
    // The next writer waits out the dead one's lease, takes the lock over and
    // removes what it left.
    let mut c = mdesnap(
        &server,
        cwd.path(),
        &[
            "generate",
            "--append",
            "--wait",
            "--machines",
            "2000",
            "--days",
            "1",
            "--quiet",
            "--lake",
            &url,
        ],
    );
    c.env("MDESNAP_LOCK_LEASE", "2s");
    ok(&output(c).await, "the next run");
    let dry = ok(
        &output(mdesnap(
            &server,
            cwd.path(),
            &["snapshots", "prune", "--dry-run", "--lake", &url],
        ))
        .await,
        "dry run",
    );
    assert!(
        dry.ends_with("would remove 0 snapshots and 0 leftovers\n"),
        "{dry}"
    );
    eprintln!("kill rounds that left leftovers for the next writer: {leftovers_seen}");
    assert!(reads_whole(&server, cwd.path(), &url).await >= 1);
}

/// Checks that each visible snapshot of `url` reads whole (distinct ids from its data
/// equal its manifest's machine count); returns how many there are.
async fn reads_whole(server: &Server, cwd: &std::path::Path, url: &str) -> usize {
    let read = ok(
        &output(mdesnap(
            server,
            cwd,
            &[
                "query",
                "--format",
                "csv",
                "--lake",
                url,
                "SELECT arrow_cast(h.snapshot, 'Utf8') AS s, count(DISTINCT h.id) = max(s.machines_rows) AS whole FROM machines_history h JOIN snapshots s ON s.snapshot = h.snapshot GROUP BY 1 ORDER BY 1",
            ],
        ))
        .await,
        "read every snapshot",
    );
    assert!(read.lines().skip(1).all(|l| l.ends_with(",true")), "{read}");
    read.lines().count() - 1
}

/// A credential the store refuses: the command fails with exit 2, names the lake, and
/// shows neither the SAS token nor the key, wherever the store's error quoted them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_credential_is_named_and_never_shown() {
    let Some(server) = Server::start(Kind::Azurite) else {
        return;
    };
    let url = server.lake("secrets").await;
    let cwd = tempdir().expect("tempdir");
    let sas = "sv=2021-08-06&ss=b&srt=sco&sp=rl&se=2030-01-01T00:00:00Z&sig=SECRETSIGNATURE123";
    let key = base64::engine::general_purpose::STANDARD.encode("SECRETKEY-not-the-account-key");
    for (var, secret, shown) in [
        ("AZURE_STORAGE_SAS_TOKEN", sas, "SECRETSIGNATURE123"),
        ("AZURE_STORAGE_ACCOUNT_KEY", key.as_str(), key.as_str()),
    ] {
        for args in [
            vec!["query", "--lake", url.as_str(), "SELECT 1"],
            vec![
                "generate",
                "--days",
                "1",
                "--machines",
                "5",
                "--lake",
                url.as_str(),
            ],
        ] {
            let mut c = mdesnap(&server, cwd.path(), &args);
            c.env(var, secret).env("RUST_LOG", "debug");
            let o = output(c).await;
            let (out, err) = (stdout(&o), stderr(&o));
            assert_eq!(o.status.code(), Some(2), "{var} {args:?}: {err}");
            assert!(
                err.contains(&url),
                "{var} {args:?}: the lake is named: {err}"
            );
            assert!(
                !out.contains(shown) && !err.contains(shown),
                "{var} {args:?}: the secret is shown: {err}"
            );
        }
    }
}

/// The manifest cache (`_manifests.json`) of a lake of many snapshots is written and
/// used, but never trusted past a listing: after `changes rebuild --force` replaced
/// every manifest (new change files, the old ones removed) and a prune removed some,
/// every answer still equals the same work on disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manifest_cache_never_outlives_a_manifest() {
    let Some(server) = Server::start(Kind::Azurite) else {
        return;
    };
    let container = "cached";
    let url = server.lake(container).await;
    let cwd = tempdir().expect("tempdir");
    let local_dir = tempdir().expect("tempdir");
    let local = local_dir.path().join("lake");
    let local = local.to_str().expect("utf-8");
    let run = |args: Vec<&str>| output(mdesnap(&server, cwd.path(), &args));
    for lake in [url.as_str(), local] {
        let generate = vec![
            "generate",
            "--machines",
            "40",
            "--days",
            "20",
            "--churn",
            "0.2",
            "--quiet",
            "--lake",
            lake,
        ];
        ok(&run(generate).await, "generate");
    }
    assert!(
        server
            .objects(container)
            .await
            .contains("lake/_manifests.json"),
        "20 snapshots: the cache is written"
    );
    let questions = [
        "SELECT arrow_cast(snapshot, 'Utf8') AS s, count(*) AS n, count(DISTINCT id) AS ids FROM machines_history GROUP BY 1 ORDER BY 1",
        "SELECT arrow_cast(snapshot, 'Utf8') AS s, field, count(*) AS n FROM machine_changes GROUP BY 1, 2 ORDER BY 1, 2",
    ];
    for step in [
        "as written",
        "after rebuild --force",
        "after prune --keep 17",
    ] {
        match step {
            "after rebuild --force" => {
                for lake in [url.as_str(), local] {
                    ok(
                        &run(vec!["changes", "rebuild", "--force", "--lake", lake]).await,
                        step,
                    );
                }
            }
            "after prune --keep 17" => {
                for lake in [url.as_str(), local] {
                    ok(
                        &run(vec!["snapshots", "prune", "--keep", "17", "--lake", lake]).await,
                        step,
                    );
                }
            }
            _ => {}
        }
        for sql in questions {
            let remote = ok(
                &run(vec![
                    "query",
                    "--format",
                    "csv",
                    "--lake",
                    url.as_str(),
                    sql,
                ])
                .await,
                step,
            );
            let on_disk = ok(
                &run(vec!["query", "--format", "csv", "--lake", local, sql]).await,
                step,
            );
            assert!(remote.lines().count() > 6, "{step}: {remote}");
            assert_eq!(remote, on_disk, "{step}: {sql}");
        }
    }
}

/// A SAS pasted into the lake's URL is refused, by flag or environment, and the error
/// never repeats it (clap's own error would have printed the value whole).
#[test]
fn a_lake_url_with_a_query_is_refused_without_echoing_it() {
    let url = "az://container/lake?sv=2021-08-06&sig=SECRETSIGNATURE123";
    let expected = "error: --lake: 'az://container/lake' is not a lake URL: a query or fragment is not allowed (give credentials in the environment)\n";
    let by_flag = crate::run(&["query", "--lake", url, "SELECT 1"]);
    let by_env = bin()
        .args(["snapshots", "list"])
        .env("MDESNAP_LAKE", url)
        .output()
        .expect("runs");
    for o in [by_flag, by_env] {
        assert_eq!(o.status.code(), Some(2));
        assert_eq!(stderr(&o), expected);
        assert!(stdout(&o).is_empty());
    }
    let o = crate::run(&["query", "--lake", "gs://bucket/lake", "SELECT 1"]);
    assert_eq!(
        stderr(&o),
        "error: --lake: 'gs://bucket/lake' is not a lake URL: its scheme is none of az://, abfs://, abfss://, s3:// or file://\n"
    );
}
