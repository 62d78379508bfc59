//! OData parse and translate costs: a typical filter, a 1,000-term `or` chain, and a
//! deep nesting. Target: a typical filter parsed and translated in under 5 us.
//!
//!   cargo bench --bench odata

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use mdesnap::Table;
use mdesnap::odata::parse_filter;
use mdesnap::odata::to_expr::{Scope, to_expr};

const TYPICAL: &str = "onboardingStatus eq 'Onboarded' and healthStatus ne 'Active' and lastSeen gt 2026-01-01T00:00:00Z and startswith(computerDnsName,'desktop')";

fn bench(c: &mut Criterion) {
    let scope = Scope::new(Table::Machines, Table::Machines.schema());
    let chain: String = (0..1000)
        .map(|i| format!("computerDnsName eq 'host{i}.contoso.com'"))
        .collect::<Vec<_>>()
        .join(" or ");
    let deep = format!("{}riskScore eq 'High'{}", "(".repeat(150), ")".repeat(150));

    c.bench_function("parse typical", |b| {
        b.iter(|| parse_filter(black_box(TYPICAL)))
    });
    c.bench_function("parse+translate typical", |b| {
        b.iter(|| {
            let ast = parse_filter(black_box(TYPICAL)).expect("parses");
            to_expr(&ast, &scope).expect("translates")
        })
    });
    c.bench_function("parse+translate 1000-term or", |b| {
        b.iter(|| {
            let ast = parse_filter(black_box(&chain)).expect("parses");
            to_expr(&ast, &scope).expect("translates")
        })
    });
    c.bench_function("parse+translate 150-deep nesting", |b| {
        b.iter(|| {
            let ast = parse_filter(black_box(&deep)).expect("parses");
            to_expr(&ast, &scope).expect("translates")
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
