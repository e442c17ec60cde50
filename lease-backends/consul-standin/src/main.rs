//! `ltxd-consul-standin`: the Consul stand-in as a process of its own, for tests that start
//! ltxd nodes as processes. It prints `listening on http://<addr>` once it accepts
//! connections, and runs until it is interrupted or killed.
//!
//! Usage: `ltxd-consul-standin [--addr 127.0.0.1:8500] [--token T] [--min-ttl 10s]
//! [--ttl-multiplier 2]`

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use ltxd_consul_standin::{parse_duration, Options, Standin};

/// A stand-in for the parts of Consul's HTTP API that ltxd's Consul lease uses. It is not
/// Consul: state lives in memory and is lost when it exits.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Address to listen on; port 0 picks a free port (printed on start).
    #[arg(long, default_value = "127.0.0.1:8500")]
    addr: SocketAddr,
    /// ACL token every request must carry (X-Consul-Token); none by default.
    #[arg(long)]
    token: Option<String>,
    /// Shortest session TTL accepted, as a Go duration (Consul: 10s).
    #[arg(long, default_value = "10s", value_parser = duration)]
    min_ttl: Duration,
    /// Sessions are invalidated after TTL times this without renewal (Consul: 2).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=10))]
    ttl_multiplier: u32,
}

fn duration(text: &str) -> Result<Duration, String> {
    parse_duration(text).ok_or_else(|| format!("not a duration such as 10s or 500ms: {text:?}"))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("ltxd-consul-standin: cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let options = Options {
            token: args.token,
            min_ttl: args.min_ttl,
            ttl_multiplier: args.ttl_multiplier,
        };
        let standin = match Standin::start(args.addr, options).await {
            Ok(standin) => standin,
            Err(e) => {
                eprintln!("ltxd-consul-standin: cannot listen on {}: {e}", args.addr);
                return ExitCode::FAILURE;
            }
        };
        println!("listening on {}", standin.url());
        match tokio::signal::ctrl_c().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ltxd-consul-standin: cannot wait for a signal: {e}");
                ExitCode::FAILURE
            }
        }
    })
}
