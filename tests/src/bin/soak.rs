//! The chaos soak (tests/SOAK.md): `soak [--seed N] [--seconds S] [--faults N] [--producers N]`.
//! Prints the figures and the verdict; exits 1 if a promise was broken, 2 on a bad command line. Needs the workspace's binaries built (`cargo build --workspace --bins`).

use ha_tests::soak::{self, fault::Fault, Config};
use std::time::Duration;

fn parse() -> Result<Config, String> {
    let mut config = Config {
        seed: 1,
        duration: Duration::from_secs(600),
        max_faults: usize::MAX,
        faults: Fault::ALL.to_vec(),
        producers: 2,
    };
    let usage = "usage: soak [--seed N] [--seconds S] [--faults N] [--producers N]";
    let mut args = std::env::args().skip(1);
    let number = |arg: Option<String>, what: &str| -> Result<u64, String> {
        arg.and_then(|n| n.parse().ok())
            .ok_or(format!("{what} needs a number; {usage}"))
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seed" => config.seed = number(args.next(), "--seed")?,
            "--seconds" => config.duration = Duration::from_secs(number(args.next(), "--seconds")?),
            "--faults" => config.max_faults = number(args.next(), "--faults")? as usize,
            "--producers" => config.producers = number(args.next(), "--producers")? as usize,
            "-h" | "--help" => return Err(usage.into()),
            other => return Err(format!("unknown argument {other:?}; {usage}")),
        }
    }
    Ok(config)
}

fn main() {
    let config = parse().unwrap_or_else(|e| {
        eprintln!("soak: {e}");
        std::process::exit(2);
    });
    let report = soak::run(&config);
    println!("{}", report.summary());
    std::process::exit(if report.passed() { 0 } else { 1 });
}
