use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use pureflash_operator::cli::{self, Cli, LogFormat};

fn main() -> ExitCode {
    let cli = Cli::parse();
    cli::init_logging(&cli.log);
    let log_format = cli.log.format;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    let result = runtime.block_on(cli::run(cli));
    // A blocking task stuck in the kernel (a `stat` on a hung mount) must not hold the exit
    // up, as dropping the runtime would: it waits for every blocking task.
    runtime.shutdown_timeout(Duration::from_secs(2));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            match log_format {
                LogFormat::Text => eprintln!("error: {error}"),
                // A log collector reads every stderr line as a JSON record: the reason the
                // operator exits is the one line it must not drop as unreadable. Written as
                // the log's records are, but whatever --log filters out.
                LogFormat::Json => eprintln!(
                    "{}",
                    serde_json::json!({
                        // As the log's records have it: microseconds, always six digits.
                        "timestamp": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
                        "level": "ERROR",
                        "fields": {"message": "exiting", "error": error.to_string()},
                        "target": "pureflash_operator",
                    })
                ),
            }
            ExitCode::FAILURE
        }
    }
}
