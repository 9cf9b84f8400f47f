//! Allocator benchmark: ferrolb's interval allocator against a straightforward
//! first-fit scan (what an allocator that rescans the pool per Service does),
//! on the same workloads in the same run. Run with `cargo bench -p ferrolb-controller`.

use std::collections::{BTreeMap, HashSet};
use std::hint::black_box;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use ferrolb_controller::alloc::{Allocator, Policy, Request, Sharing};
use ferrolb_crds::{IPAddressPool, IPAddressPoolSpec};
use ferrolb_model::{Config, Family, from_u128, parse_range, to_u128};

fn allocator_for(cidr: &str) -> Allocator {
    let pool = IPAddressPool::new(
        "bench",
        IPAddressPoolSpec {
            addresses: vec![cidr.into()],
            auto_assign: true,
            avoid_buggy_ips: false,
            service_allocation: None,
        },
    );
    let mut a = Allocator::new();
    a.set_config(Config::build(&[pool], &[], BTreeMap::new()));
    a
}

fn request(i: usize, family: Family) -> Request {
    Request {
        key: ferrolb_model::ServiceKey::new("bench", &format!("svc-{i}")),
        namespace: "bench".into(),
        labels: Default::default(),
        families: vec![family],
        policy: Policy::SingleStack,
        requested: vec![],
        pool: None,
        sharing: Sharing::default(),
        allocated_before: false,
    }
}

/// ferrolb: `n` allocations, then `n/10` release-and-reallocate cycles in the middle of the pool.
fn ours(cidr: &str, family: Family, n: usize) -> Duration {
    let mut a = allocator_for(cidr);
    let start = Instant::now();
    for i in 0..n {
        black_box(a.assign(&request(i, family), &[]).expect("pool large enough"));
    }
    for i in (0..n).step_by(10) {
        a.release(&format!("bench/svc-{i}"));
        black_box(a.assign(&request(n + i, family), &[]).expect("a released address is free"));
    }
    start.elapsed()
}

/// The baseline: first free address found by scanning the pool from its start.
fn first_fit(cidr: &str, n: usize, bitmap: bool) -> Duration {
    let r = parse_range(cidr).unwrap();
    let start = Instant::now();
    if bitmap {
        // IPv4: a bitmap over the whole pool, scanned from the start for each allocation.
        let size = r.size() as usize;
        let mut used = vec![false; size];
        let alloc = |used: &mut Vec<bool>| {
            let i = used.iter().position(|u| !*u).expect("pool large enough");
            used[i] = true;
            i
        };
        let holder: Vec<usize> = (0..n).map(|_| black_box(alloc(&mut used))).collect();
        for i in (0..n).step_by(10) {
            used[holder[i]] = false;
            black_box(alloc(&mut used));
        }
    } else {
        // IPv6: a set of used addresses, probed from the pool's start for each allocation.
        let mut used: HashSet<IpAddr> = HashSet::new();
        let mut holder = Vec::with_capacity(n);
        let alloc = |used: &mut HashSet<IpAddr>| {
            let mut x = r.start;
            loop {
                let ip = from_u128(r.family, x);
                if used.insert(ip) {
                    return ip;
                }
                x += 1;
            }
        };
        for _ in 0..n {
            holder.push(black_box(alloc(&mut used)));
        }
        for i in (0..n).step_by(10) {
            used.remove(&holder[i]);
            black_box(alloc(&mut used));
        }
        black_box(to_u128(&holder[0]));
    }
    start.elapsed()
}

fn row(name: &str, n: usize, ours: Duration, base: Option<Duration>) {
    let ops = (n + n / 10) as f64;
    let per = |d: Duration| d.as_secs_f64() * 1e9 / ops;
    match base {
        Some(b) => println!(
            "{name:<34} {n:>8} {:>12.3} {:>12.0} {:>12.3} {:>12.0} {:>9.1}x",
            ours.as_secs_f64() * 1e3,
            per(ours),
            b.as_secs_f64() * 1e3,
            per(b),
            b.as_secs_f64() / ours.as_secs_f64()
        ),
        None => println!(
            "{name:<34} {n:>8} {:>12.3} {:>12.0} {:>12} {:>12} {:>10}",
            ours.as_secs_f64() * 1e3,
            per(ours),
            "-",
            "-",
            "-"
        ),
    }
}

fn main() {
    // `cargo test --benches` passes --bench-less flags; run a tiny smoke version then.
    let quick = std::env::args().any(|a| a == "--quick") || !std::env::args().any(|a| a == "--bench");
    let scale = if quick { 100 } else { 1 };
    println!(
        "{:<34} {:>8} {:>12} {:>12} {:>12} {:>12} {:>10}",
        "workload", "allocs", "ferrolb ms", "ns/op", "first-fit ms", "ns/op", "speedup"
    );
    let fill = 65_536 / scale;
    row("fill IPv4 /16", fill, ours("10.0.0.0/16", Family::V4, fill), Some(first_fit("10.0.0.0/16", fill, true)));
    let v6 = 100_000 / scale;
    row("IPv6 /64, 100k allocations", v6, ours("fd42:f1b::/64", Family::V6, v6), None);
    // The scanning baseline is quadratic: compare on a smaller count, same workload shape.
    let v6_cmp = 20_000 / scale;
    row(
        "IPv6 /64, 20k (vs first-fit)",
        v6_cmp,
        ours("fd42:f1b::/64", Family::V6, v6_cmp),
        Some(first_fit("fd42:f1b::/64", v6_cmp, false)),
    );
}
