//! Emulator throughput: full 10,000-machine pages served on loopback and read by a
//! client (reqwest), so it can be checked the emulator is never the bottleneck of an
//! ingest benchmark. Criterion reports the time per page and MiB/s.
//!
//!   cargo bench --bench emulator

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mdesnap::emulator::{Emulator, EmulatorConfig};

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let config = EmulatorConfig {
        machines: 20_000,
        page_size: 10_000,
        calls_per_minute: u32::MAX,
        calls_per_hour: u32::MAX,
        ..EmulatorConfig::default()
    };
    let emu = rt.block_on(Emulator::start(config)).expect("starts");
    mdesnap::ingest::http::install_crypto_provider();
    let client = reqwest::Client::new();
    let token: String = rt.block_on(async {
        let v: serde_json::Value = client
            .post(format!("{}/emulator-tenant/oauth2/v2.0/token", emu.url()))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("grant_type=client_credentials&client_id=emulator-client&client_secret=emulator-secret&scope=https://api.securitycenter.microsoft.com/.default")
            .send()
            .await
            .expect("token call")
            .json()
            .await
            .expect("token json");
        v["access_token"].as_str().expect("token").to_string()
    });
    let fetch = |path: &'static str| {
        let url = format!("{}{path}", emu.url());
        let client = client.clone();
        let token = token.clone();
        async move {
            client
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("page")
                .bytes()
                .await
                .expect("body")
                .len()
        }
    };
    let page = rt.block_on(fetch("/api/machines"));
    let mut group = c.benchmark_group("emulator");
    group.sample_size(20);
    group.throughput(Throughput::Bytes(page as u64));
    group.bench_function("full 10,000-machine page", |b| {
        b.iter(|| rt.block_on(fetch("/api/machines")))
    });
    group.bench_function("filtered page (riskScore eq High)", |b| {
        b.iter(|| rt.block_on(fetch("/api/machines?$filter=riskScore%20eq%20'High'")))
    });
    group.finish();
    eprintln!("one full page is {page} bytes");
}

criterion_group!(benches, bench);
criterion_main!(benches);
