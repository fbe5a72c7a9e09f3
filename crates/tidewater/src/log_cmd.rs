//! `tidewater log ...`: offline inspection of log directories.

use std::sync::Arc;

use anyhow::Context;
use tidewater_log::{Log, LogConfig, SystemClock};

use crate::cli::LogCommand;

pub(crate) fn run(command: LogCommand) -> anyhow::Result<()> {
    match command {
        LogCommand::Verify { dir } => {
            anyhow::ensure!(dir.is_dir(), "{} is not a directory", dir.display());
            let log = Log::open(&dir, LogConfig::default(), Arc::new(SystemClock))
                .with_context(|| format!("opening {}", dir.display()))?;
            let progress = tidewater_cli::progress::Progress::new(
                format!("verifying {}", dir.display()),
                Some(log.size_bytes()),
                tidewater_cli::progress::Unit::Bytes,
            );
            let report = log
                .verify_with_progress(|bytes| progress.set(bytes))
                .with_context(|| format!("verifying {}", dir.display()))?;
            progress.set(report.bytes);
            progress.finish();
            println!(
                "ok: {} segments, {} bytes, offsets {}..{}",
                report.segments,
                report.bytes,
                log.log_start_offset(),
                log.end_offset()
            );
            log.close()?;
            Ok(())
        }
    }
}
