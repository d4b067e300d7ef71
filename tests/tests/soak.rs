//! The chaos soak's CI configuration: a fixed seed, every fault (the filesystem stall only as
//! root, on bindfs), a bounded run. `soak --seconds N` runs longer (tests/SOAK.md).

use ha_tests::soak::{self, fault::Fault, Config};
use std::time::Duration;

#[test]
fn a_short_fixed_seed_soak_loses_nothing_and_never_has_two_brokers() {
    let report = soak::run(&Config {
        seed: 8,
        duration: Duration::from_secs(75),
        max_faults: 40,
        faults: Fault::ALL.to_vec(),
        producers: 2,
    });
    eprintln!("{}", report.summary());
    assert!(report.faults.values().sum::<usize>() >= 5, "{report:?}");
    assert!(report.verdict.receipted > 0, "{report:?}");
    assert!(report.passed(), "{}", report.summary());
}
