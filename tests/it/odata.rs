//! OData over the sample lake: every machine filter of the API contract (section 5)
//! returns rows, the same rows as hand-written SQL; plus the CLI's OData surfaces.

use std::collections::BTreeSet;

use arrow::array::AsArray;
use mdesnap::{Engine, Names};

use crate::{run, sample_data, stderr, stdout};

async fn ids(batches: Vec<arrow::array::RecordBatch>, column: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for b in batches {
        let col = b.column_by_name(column).expect("id column");
        let col = arrow::compute::cast(col, &arrow::datatypes::DataType::Utf8).expect("cast");
        for v in col.as_string::<i32>().iter().flatten() {
            out.insert(v.to_string());
        }
    }
    out
}

/// The values of a column in the order the rows came.
fn column_in_order(batches: &[arrow::array::RecordBatch], column: &str) -> Vec<Option<String>> {
    let mut out = Vec::new();
    for b in batches {
        let col = b.column_by_name(column).expect("the column");
        let col = arrow::compute::cast(col, &arrow::datatypes::DataType::Utf8).expect("cast");
        out.extend(col.as_string::<i32>().iter().map(|v| v.map(str::to_string)));
    }
    out
}

async fn odata_ids(engine: &Engine, url: &str) -> BTreeSet<String> {
    let r = engine
        .odata_request(url, Names::Sql)
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    ids(r.df.collect().await.expect("runs"), "id").await
}

async fn sql_ids(engine: &Engine, sql: &str) -> BTreeSet<String> {
    let df = engine
        .sql(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    ids(df.collect().await.expect("runs"), "id").await
}

async fn one(engine: &Engine, sql: &str) -> String {
    crate::scalar(engine, sql).await
}

#[tokio::test]
async fn contract_filters_agree_with_sql() {
    let engine = Engine::open(sample_data(), None).expect("opens");
    // Placeholders of the contract's examples, filled from the data.
    let ip = one(&engine, "SELECT last_ip_address FROM machines WHERE last_ip_address IS NOT NULL ORDER BY id LIMIT 1").await;
    let guid = one(
        &engine,
        "SELECT aad_device_id FROM machines WHERE aad_device_id IS NOT NULL ORDER BY id LIMIT 1",
    )
    .await;
    let (id1, id2) = (
        one(&engine, "SELECT id FROM machines ORDER BY id LIMIT 1").await,
        one(&engine, "SELECT id FROM machines ORDER BY id DESC LIMIT 1").await,
    );
    let cases: Vec<(String, String)> = vec![
        ("machines?$filter=machineTags/any(tag: tag eq 'ExampleTag')".into(), "array_has(machine_tags, 'ExampleTag')".into()),
        ("machines?$filter=riskScore+eq+'High'".into(), "risk_score = 'High'".into()),
        ("machines?$filter=riskScore eq 'High'".into(), "risk_score = 'High'".into()),
        ("machines?$filter=healthStatus+ne+'Active'".into(), "health_status IS DISTINCT FROM 'Active'".into()),
        ("machines?$filter=lastSeen gt 2018-08-01Z".into(), "last_seen > TIMESTAMP '2018-08-01T00:00:00Z'".into()),
        ("machines?$filter=lastSeen gt 2018-10-20Z".into(), "last_seen > TIMESTAMP '2018-10-20T00:00:00Z'".into()),
        ("machines?$filter=startswith(computerDnsName,'mymachine')".into(), "starts_with(computer_dns_name, 'mymachine')".into()),
        ("machines?$filter=computerDnsName eq 'mymachine1.contoso.com'".into(), "computer_dns_name = 'mymachine1.contoso.com'".into()),
        (
            "machines?$filter=computerDnsName eq 'mymachine1.contoso.com' or computerDnsName eq 'examples-vm10'".into(),
            "computer_dns_name IN ('mymachine1.contoso.com', 'examples-vm10')".into(),
        ),
        (
            "machines?$filter=computerDnsName in (\"desktop-39g9tgl\",\"examples-vm10\")".into(),
            "computer_dns_name IN ('desktop-39g9tgl', 'examples-vm10')".into(),
        ),
        (format!("machines?$filter=id eq '{id1}' or id eq '{id2}'"), format!("id IN ('{id1}', '{id2}')")),
        (format!("machines?$filter=lastIpAddress eq '{ip}'"), format!("last_ip_address = '{ip}'")),
        (
            "machines?$filter=onboardingStatus eq 'Onboarded' and healthStatus eq 'Active'".into(),
            "onboarding_status = 'Onboarded' AND health_status = 'Active'".into(),
        ),
        ("machines?$filter=rbacGroupId eq 140".into(), "rbac_group_id = 140".into()),
        (format!("machines?$filter=aadDeviceId eq {guid}"), format!("aad_device_id = '{guid}'")),
        ("machines?$filter=lastSeen ge 2024-01-01T00:00:00Z".into(), "last_seen >= TIMESTAMP '2024-01-01T00:00:00Z'".into()),
        ("machines?$filter=lastSeen lt 2026-01-01T00:00:00Z".into(), "last_seen < TIMESTAMP '2026-01-01T00:00:00Z'".into()),
        ("machines?$filter=onboardingstatus eq 'Onboarded'".into(), "onboarding_status = 'Onboarded'".into()),
        (
            "machines?$filter=ipAddresses/any(ip: startswith(ip/ipAddress, '10.') and ip/operationalStatus eq 'Up')".into(),
            "id IN (SELECT machine_id FROM ip_addresses WHERE starts_with(ip_address, '10.') AND operational_status = 'Up')".into(),
        ),
        ("machines?$filter=machineTags/all(t: t eq 'VIP')".into(), "NOT array_any_value_not_vip".into()),
    ];
    for (url, sql) in cases {
        let sql = if sql == "NOT array_any_value_not_vip" {
            // all(): every tag is VIP, including machines with no tags.
            "SELECT id FROM machines WHERE cardinality(array_remove_all(machine_tags, 'VIP')) = 0"
                .to_string()
        } else {
            format!("SELECT id FROM machines WHERE {sql}")
        };
        let a = odata_ids(&engine, &url).await;
        let b = sql_ids(&engine, &sql).await;
        assert!(!a.is_empty(), "{url} returns no rows");
        assert_eq!(a, b, "{url} differs from {sql}");
    }
}

#[tokio::test]
async fn top_skip_orderby_select_and_count() {
    let engine = Engine::open(sample_data(), None).expect("opens");
    let r = engine
        .odata_request(
            "/api/machines?$filter=healthStatus+ne+'Active'&$top=5&$count=true",
            Names::Api,
        )
        .await
        .expect("plans");
    let total = r.count.expect("count asked");
    let batches = r.df.collect().await.expect("runs");
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 5);
    let n = one(
        &engine,
        "SELECT count(*) FROM machines WHERE health_status IS DISTINCT FROM 'Active'",
    )
    .await;
    assert_eq!(total.to_string(), n);
    // API names by default.
    assert!(
        batches[0]
            .schema()
            .field_with_name("computerDnsName")
            .is_ok()
    );

    let r = engine
        .odata_request(
            "machines?$top=5&$orderby=lastSeen desc,computerDnsName&$select=id,lastSeen",
            Names::Sql,
        )
        .await
        .expect("plans");
    let got = column_in_order(&r.df.collect().await.expect("runs"), "id");
    let expected = column_in_order(
        &engine
            .sql("SELECT id FROM machines ORDER BY last_seen DESC NULLS LAST, computer_dns_name LIMIT 5")
            .await
            .expect("plans")
            .collect()
            .await
            .expect("runs"),
        "id",
    );
    assert_eq!(got.len(), 5);
    assert_eq!(got, expected, "the same machines in the same order");

    // OData sorts nulls first going up, last going down.
    for (url, nulls_first) in [
        (
            "machines?$orderby=rbacGroupName,id&$select=id,rbacGroupName",
            true,
        ),
        (
            "machines?$orderby=rbacGroupName desc,id&$select=id,rbacGroupName",
            false,
        ),
    ] {
        let r = engine.odata_request(url, Names::Api).await.expect("plans");
        let names = column_in_order(&r.df.collect().await.expect("runs"), "rbacGroupName");
        let nulls = names.iter().filter(|n| n.is_none()).count();
        assert!(
            nulls > 0 && nulls < names.len(),
            "{url}: some nulls, some not"
        );
        let (head, tail) = if nulls_first {
            names.split_at(nulls)
        } else {
            names.split_at(names.len() - nulls)
        };
        let (null_part, value_part) = if nulls_first {
            (head, tail)
        } else {
            (tail, head)
        };
        assert!(null_part.iter().all(Option::is_none), "{url}");
        let values: Vec<&String> = value_part.iter().flatten().collect();
        let mut sorted = values.clone();
        sorted.sort();
        if !nulls_first {
            sorted.reverse();
        }
        assert_eq!(values, sorted, "{url}: values in order");
    }

    let r = engine
        .odata_request("machines?$skip=300&$top=10000", Names::Sql)
        .await
        .expect("plans");
    let n: usize =
        r.df.collect()
            .await
            .expect("runs")
            .iter()
            .map(|b| b.num_rows())
            .sum();
    assert_eq!(
        n.to_string(),
        one(&engine, "SELECT count(*) - 300 FROM machines").await
    );
}

#[tokio::test]
async fn odata_semantics_that_differ_from_sql() {
    let engine = Engine::open(sample_data(), None).expect("opens");
    let count = |url: &'static str| {
        let e = &engine;
        async move {
            let r = e
                .odata_request(url, Names::Sql)
                .await
                .unwrap_or_else(|err| panic!("{url}: {err}"));
            r.df.collect()
                .await
                .expect("runs")
                .iter()
                .map(|b| b.num_rows())
                .sum::<usize>()
        }
    };
    let all = count("machines").await;
    // ne against null is true; relational comparisons with null are false, so `not`
    // of one is true.
    let null_names = count("machines?$filter=computerDnsName eq null").await;
    assert!(null_names > 0);
    assert_eq!(count("machines?$filter=computerDnsName ne 'x'").await, all);
    assert_eq!(
        count("machines?$filter=osBuild gt 0").await
            + count("machines?$filter=not (osBuild gt 0)").await,
        all
    );
    // contains is text, not a LIKE pattern.
    assert_eq!(
        count("machines?$filter=contains(computerDnsName, '%25')").await,
        0
    );
    assert_eq!(
        count("machines?$filter=contains(computerDnsName, '_')").await,
        0
    );
    // 0-based indexof and substring.
    assert!(count("machines?$filter=indexof(computerDnsName, 'mymachine') eq 0").await >= 2);
    assert!(count("machines?$filter=substring(computerDnsName, 2, 7) eq 'machine'").await >= 2);
    // round half away from zero.
    assert_eq!(count("machines?$filter=round(2.5) eq 3 and round(-2.5) eq -3 and id eq '1e5bc9d7e413ddd7902c2932e418702b84d0cc07'").await, 1);
    // Date functions and arithmetic.
    assert_eq!(
        count("machines?$filter=year(lastSeen) ge 2018").await
            + count("machines?$filter=lastSeen eq null").await,
        all
    );
    assert!(
        count("machines?$filter=lastSeen add duration'P30D' gt 2026-01-07T07:00:00Z").await > 0
    );
    assert!(count("machines?$filter=osBuild mod 2 eq 1 and osBuild div 2 gt 9000").await > 0);
    assert!(count("machines?$filter=length(machineTags) ge 2").await > 0);
    assert!(count("machines?$filter=vmMetadata/cloudProvider eq 'Azure'").await > 0);
    assert!(
        count(
            "machines?$filter=healthStatus has Microsoft.WindowsDefenderATP.HealthStatus'Active'"
        )
        .await
            > 0
    );
    assert!(count("machines_history?$filter=snapshot ge 2026-01-07").await > 0);
}

#[tokio::test]
async fn odata_errors_name_the_offset() {
    let engine = Engine::open(sample_data(), None).expect("opens");
    for (url, at, text) in [
        (
            "machines?$filter=computerDnsNme eq 'x'",
            17,
            "did you mean computerDnsName?",
        ),
        (
            "machines?$filter=osBuild eq 'x'",
            17,
            "cannot take Edm.Int64 and Edm.String",
        ),
        (
            "machines?$filter=startswith(osBuild, 'x')",
            28,
            "startswith expects a string as argument 1",
        ),
        ("machines?$filter=riskScore", 17, "must be true or false"),
        ("machines?$top=10001", 14, "limit of '10000' for Top query"),
        ("machines?$skip=-1", 15, "non-negative integer"),
        ("machines?$top=1&$top=2", 16, "more than once"),
        ("machines?$expand=x", 9, "not supported"),
        ("machines?$bogus=1", 9, "not supported"),
        ("machins?$top=1", 0, "did you mean machines?"),
        ("machines?$select=id,nope", 20, "unknown property 'nope'"),
        (
            "machines?$filter=riskScore+eq+'High",
            30,
            "unterminated string literal",
        ),
    ] {
        let e = engine.odata_request(url, Names::Api).await.expect_err(url);
        let mdesnap::Error::OData { source, .. } = &e else {
            panic!("{url}: {e}")
        };
        assert_eq!(source.offset(), at, "{url}: {e}");
        assert!(e.to_string().contains(text), "{url}: {e}");
    }
}

#[test]
fn cli_odata_parse_prints_canonical_or_caret() {
    let o = run(&[
        "odata",
        "parse",
        "riskScore eq 'High' and not (osBuild add 1 gt 100)",
    ]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        stdout(&o),
        "((riskScore eq 'High') and (not ((osBuild add 1) gt 100)))\n"
    );
    let o = run(&["odata", "parse", "riskScore eq 'High"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        stderr(&o),
        "error: unterminated string literal at byte 13\nriskScore eq 'High\n             ^\n"
    );
    // Nothing is decoded: + is a plus sign.
    let o = run(&["odata", "parse", "a eq +5"]);
    assert_eq!(stdout(&o), "(a eq 5)\n");
    let o = run(&["odata", "parse", "lastSeen gt 2018-08-01Z"]);
    assert_eq!(stdout(&o), "(lastSeen gt 2018-08-01T00:00:00Z)\n");
}

#[test]
fn cli_odata_query_formats() {
    let lake = sample_data();
    let lake = lake.to_str().expect("utf-8");
    let o = run(&[
        "query",
        "--lake",
        lake,
        "--format",
        "odata-json",
        "machines?$filter=rbacGroupId eq 140&$select=id,computerDnsName,rbacGroupId&$count=true",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(
        v["@odata.context"],
        "https://api.security.microsoft.com/api/$metadata#Machines"
    );
    let n = v["value"].as_array().map_or(0, Vec::len);
    assert!(n >= 2);
    assert_eq!(v["@odata.count"], n);
    assert_eq!(v["value"][0]["rbacGroupId"], 140);

    let o = run(&[
        "query",
        "--lake",
        lake,
        "--format",
        "csv",
        "--sql-names",
        "machines?$select=computerDnsName&$top=1",
    ]);
    assert_eq!(stdout(&o).lines().next(), Some("computer_dns_name"));
    let o = run(&["query", "--lake", lake, "machines?$filter=osBuild eq 'x'"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).ends_with("machines?$filter=osBuild eq 'x'\n                 ^\n"),
        "{}",
        stderr(&o)
    );
    let o = run(&[
        "query",
        "--lake",
        lake,
        "--format",
        "odata-json",
        "SELECT 1",
    ]);
    assert_eq!(o.status.code(), Some(2));
}
