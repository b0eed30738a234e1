//! Measures one argon2id verification at the configured parameters, on one core
//! and through credd's worker pool. Run it with `--release`:
//!
//! ```sh
//! cargo run --release --example argon2_cost -- [M_KIB T P] [ROUNDS]
//! ```

use std::time::Instant;

use credd::service::hasher::{Hasher, HasherConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<u32> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let mut config = HasherConfig::owasp();
    if let [m, t, p, ..] = args[..] {
        (config.m_kib, config.t, config.p) = (m, t, p);
    }
    let rounds = args.get(3).copied().unwrap_or(50) as usize;
    let hasher = Hasher::new(config)?;
    let phc = hasher.hash("credd_cs_benchmark-secret".into()).await?;

    let mut one_core = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let started = Instant::now();
        assert!(
            hasher
                .verify("credd_cs_benchmark-secret".into(), Some(phc.clone()))
                .await?
        );
        one_core.push(started.elapsed().as_secs_f64() * 1e3);
    }
    one_core.sort_by(f64::total_cmp);

    let started = Instant::now();
    let calls: Vec<_> = (0..rounds * config.workers)
        .map(|_| {
            let (hasher, phc) = (hasher.clone(), phc.clone());
            tokio::spawn(async move {
                hasher
                    .verify("credd_cs_benchmark-secret".into(), Some(phc))
                    .await
            })
        })
        .collect();
    for call in calls {
        assert!(call.await??);
    }
    let per_second = (rounds * config.workers) as f64 / started.elapsed().as_secs_f64();

    println!(
        "argon2id m={} KiB t={} p={}: one verification p50 {:.1} ms, p90 {:.1} ms (n={rounds}); \
         {} workers: {per_second:.0} verifications/s",
        config.m_kib,
        config.t,
        config.p,
        one_core[rounds / 2],
        one_core[rounds * 9 / 10],
        config.workers,
    );
    Ok(())
}
