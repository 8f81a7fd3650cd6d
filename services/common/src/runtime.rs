//! The tokio runtime a service runs on: `RUNTIME_FLAVOR`.
//!
//! `current-thread` runs every task (the HTTP connections, the publishes,
//! the consumers) on the main thread; `multi-thread` runs them on one worker
//! per CPU (or `TOKIO_WORKER_THREADS`, read by tokio itself). lapin runs its
//! I/O loop on a thread of its own in both. BENCHMARKS.md ("CPU per ping: where it goes")
//! has the figures that chose the default of each service.

use std::fmt;
use std::future::Future;
use std::io;
use std::process::ExitCode;
use std::str::FromStr;

use crate::config::Env;

/// Variable choosing the runtime flavour.
pub const RUNTIME_FLAVOR: &str = "RUNTIME_FLAVOR";

/// Which tokio scheduler runs the service's tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeFlavor {
    /// One thread runs every task: no task moves between threads.
    CurrentThread,
    /// A worker per CPU with work stealing.
    MultiThread,
}

impl RuntimeFlavor {
    const EXPECTED: &'static str = "current-thread or multi-thread";

    /// Reads [`RUNTIME_FLAVOR`], `default` when unset.
    pub fn from_env(env: &mut Env<'_>, default: Self) -> Self {
        env.parse(RUNTIME_FLAVOR, default, Self::EXPECTED)
    }

    /// Builds the runtime, with its I/O and time drivers.
    pub fn build(self) -> io::Result<tokio::runtime::Runtime> {
        let mut builder = match self {
            Self::CurrentThread => tokio::runtime::Builder::new_current_thread(),
            Self::MultiThread => tokio::runtime::Builder::new_multi_thread(),
        };
        builder.enable_all().build()
    }

    /// Runs `service` to completion on a runtime of this flavour: the body of each service's
    /// `main` once its configuration is parsed. A runtime that cannot start is reported on
    /// stderr, prefixed with the service's `name`, and exits with 1.
    pub fn block_on(self, name: &str, service: impl Future<Output = ExitCode>) -> ExitCode {
        match self.build() {
            Ok(runtime) => runtime.block_on(service),
            Err(error) => {
                eprintln!("{name}: cannot start the {self} runtime: {error}");
                ExitCode::FAILURE
            }
        }
    }
}

impl FromStr for RuntimeFlavor {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "current-thread" => Ok(Self::CurrentThread),
            "multi-thread" => Ok(Self::MultiThread),
            other => Err(format!("expected {}, got {other:?}", Self::EXPECTED)),
        }
    }
}

impl fmt::Display for RuntimeFlavor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::CurrentThread => "current-thread",
            Self::MultiThread => "multi-thread",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(value: Option<&str>) -> Result<RuntimeFlavor, crate::ConfigError> {
        let lookup = |key: &str| {
            (key == RUNTIME_FLAVOR)
                .then(|| value.map(str::to_owned))
                .flatten()
        };
        let mut env = Env::new(&lookup);
        let flavor = RuntimeFlavor::from_env(&mut env, RuntimeFlavor::MultiThread);
        env.finish(flavor)
    }

    #[test]
    fn unset_is_the_default_and_both_names_parse() {
        assert_eq!(parse(None).ok(), Some(RuntimeFlavor::MultiThread));
        assert_eq!(
            parse(Some("current-thread")).ok(),
            Some(RuntimeFlavor::CurrentThread)
        );
        assert_eq!(
            parse(Some("multi-thread")).ok(),
            Some(RuntimeFlavor::MultiThread)
        );
    }

    #[test]
    fn another_value_is_a_problem_naming_the_variable() {
        let error = parse(Some("single")).err().map(|error| error.to_string());
        let error = error.unwrap_or_default();
        assert!(error.contains(RUNTIME_FLAVOR), "{error}");
    }

    #[test]
    fn each_flavour_builds_a_runtime_that_runs_tasks() {
        for flavor in [RuntimeFlavor::CurrentThread, RuntimeFlavor::MultiThread] {
            let runtime = flavor.build().expect("runtime");
            let answer =
                runtime.block_on(async { tokio::spawn(async { 42 }).await.expect("task") });
            assert_eq!(answer, 42, "{flavor}");
        }
    }

    #[test]
    fn block_on_answers_what_the_service_returns() {
        for flavor in [RuntimeFlavor::CurrentThread, RuntimeFlavor::MultiThread] {
            let code = flavor.block_on("test", async { ExitCode::from(7) });
            assert_eq!(code, ExitCode::from(7), "{flavor}");
        }
    }
}
