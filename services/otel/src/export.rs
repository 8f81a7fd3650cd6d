//! A bounded batch span processor that never blocks the code that ends a span.
//!
//! Ended spans go into a queue of at most `queue_size` spans under a mutex
//! (a push, nothing else, on the request path). One dedicated thread with
//! its own single-threaded runtime takes batches off the queue and exports
//! them, each export bounded by the export timeout. A full queue drops the
//! span, a failed or timed-out export drops the batch; both are counted in
//! [`SpanCounters`] and nothing is retried, so a slow or absent collector
//! costs memory bounded by the queue and never fails a request.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use opentelemetry::Context;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounter, IntCounterVec, Opts, Registry};

use crate::config::Export;

/// Counters of what happened to ended spans. Plain atomics, shared by every
/// clone; [`SpanCounters::register`] exposes them in a registry as
/// `<prefix>_trace_spans_exported_total` and
/// `<prefix>_trace_spans_dropped_total{reason}`.
#[derive(Clone, Default)]
pub struct SpanCounters {
    exported: Arc<AtomicU64>,
    queue_full: Arc<AtomicU64>,
    export_failed: Arc<AtomicU64>,
    shutdown: Arc<AtomicU64>,
}

/// `reason` label: the queue was full.
pub const DROPPED_QUEUE_FULL: &str = "queue_full";
/// `reason` label: the export failed or timed out.
pub const DROPPED_EXPORT_FAILED: &str = "export_failed";
/// `reason` label: ended after shutdown.
pub const DROPPED_SHUTDOWN: &str = "shutdown";

impl SpanCounters {
    /// Registers the counters in `registry` under `prefix` (e.g.
    /// `pingpong_ping`).
    pub fn register(&self, registry: &Registry, prefix: &str) -> Result<(), prometheus::Error> {
        let exported = IntCounter::with_opts(Opts::new(
            format!("{prefix}_trace_spans_exported_total"),
            "Spans the OTLP exporter delivered to the collector.",
        ))?;
        let dropped = IntCounterVec::new(
            Opts::new(
                format!("{prefix}_trace_spans_dropped_total"),
                "Sampled spans never delivered, by reason (queue_full, export_failed, shutdown).",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(Mirror {
            counters: self.clone(),
            exported,
            dropped,
        }))
    }

    /// Spans exported so far.
    pub fn exported(&self) -> u64 {
        self.exported.load(Ordering::Relaxed)
    }

    /// Spans dropped so far for `reason`.
    pub fn dropped(&self, reason: &str) -> u64 {
        self.cell(reason)
            .map_or(0, |cell| cell.load(Ordering::Relaxed))
    }

    fn cell(&self, reason: &str) -> Option<&AtomicU64> {
        match reason {
            DROPPED_QUEUE_FULL => Some(&self.queue_full),
            DROPPED_EXPORT_FAILED => Some(&self.export_failed),
            DROPPED_SHUTDOWN => Some(&self.shutdown),
            _ => None,
        }
    }

    fn drop_spans(&self, reason: &str, count: usize) {
        if let Some(cell) = self.cell(reason) {
            cell.fetch_add(count as u64, Ordering::Relaxed);
        }
    }
}

impl fmt::Debug for SpanCounters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpanCounters")
            .field("exported", &self.exported())
            .finish_non_exhaustive()
    }
}

/// Copies the atomics into Prometheus counters at each scrape.
struct Mirror {
    counters: SpanCounters,
    exported: IntCounter,
    dropped: IntCounterVec,
}

impl Collector for Mirror {
    fn desc(&self) -> Vec<&Desc> {
        let mut descs = self.exported.desc();
        descs.extend(self.dropped.desc());
        descs
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.exported.reset();
        self.exported.inc_by(self.counters.exported());
        for reason in [DROPPED_QUEUE_FULL, DROPPED_EXPORT_FAILED, DROPPED_SHUTDOWN] {
            let counter = self.dropped.with_label_values(&[reason]);
            counter.reset();
            counter.inc_by(self.counters.dropped(reason));
        }
        let mut families = self.exported.collect();
        families.extend(self.dropped.collect());
        families
    }
}

#[derive(Default)]
struct Queue {
    spans: VecDeque<SpanData>,
    /// Flushes asked for / completed (tickets).
    flush_asked: u64,
    flush_done: u64,
    shutdown: bool,
    stopped: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    /// Wakes the export thread.
    work: Condvar,
    /// Wakes callers of flush and shutdown.
    done: Condvar,
    capacity: usize,
    batch_size: usize,
    counters: SpanCounters,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The processor handed to the tracer provider.
pub struct BoundedBatchProcessor {
    shared: Arc<Shared>,
    worker: Mutex<Option<JoinHandle<()>>>,
    timeout: Duration,
}

impl fmt::Debug for BoundedBatchProcessor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoundedBatchProcessor")
            .field("capacity", &self.shared.capacity)
            .finish_non_exhaustive()
    }
}

impl BoundedBatchProcessor {
    /// Starts the export thread for `exporter` with the limits of `export`.
    pub fn start<E>(
        exporter: E,
        export: &Export,
        counters: SpanCounters,
    ) -> Result<Self, std::io::Error>
    where
        E: SpanExporter + 'static,
    {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            work: Condvar::new(),
            done: Condvar::new(),
            capacity: export.queue_size,
            batch_size: export.batch_size.max(1),
            counters,
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let worker = {
            let shared = Arc::clone(&shared);
            let delay = export.schedule_delay;
            let timeout = export.timeout;
            std::thread::Builder::new()
                .name("otel-export".to_owned())
                .spawn(move || export_loop(&shared, exporter, &runtime, delay, timeout))?
        };
        Ok(Self {
            shared,
            worker: Mutex::new(Some(worker)),
            timeout: export.timeout,
        })
    }

    /// Waits until every span queued before the call was exported (or
    /// dropped), at most `timeout`.
    fn flush_for(&self, timeout: Duration) -> OTelSdkResult {
        let deadline = Instant::now() + timeout;
        let mut queue = self.shared.lock();
        if queue.stopped {
            return Ok(());
        }
        queue.flush_asked += 1;
        let ticket = queue.flush_asked;
        self.shared.work.notify_one();
        while queue.flush_done < ticket && !queue.stopped {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(OTelSdkError::Timeout(timeout));
            }
            queue = self
                .shared
                .done
                .wait_timeout(queue, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        Ok(())
    }
}

fn export_loop<E: SpanExporter>(
    shared: &Shared,
    exporter: E,
    runtime: &tokio::runtime::Runtime,
    delay: Duration,
    timeout: Duration,
) {
    let mut next_export = Instant::now() + delay;
    loop {
        let (batch, flush_ticket, last) = {
            let mut queue = shared.lock();
            loop {
                let due = Instant::now() >= next_export;
                if queue.shutdown
                    || queue.flush_asked > queue.flush_done
                    || queue.spans.len() >= shared.batch_size
                    || (due && !queue.spans.is_empty())
                {
                    break;
                }
                if due {
                    next_export = Instant::now() + delay;
                }
                let left = next_export.saturating_duration_since(Instant::now());
                queue = shared
                    .work
                    .wait_timeout(queue, left)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            let take = queue.spans.len().min(shared.batch_size);
            let batch: Vec<SpanData> = queue.spans.drain(..take).collect();
            let drained = queue.spans.is_empty();
            (
                batch,
                drained.then_some(queue.flush_asked),
                drained && queue.shutdown,
            )
        };
        if !batch.is_empty() {
            let count = batch.len();
            let exported = runtime
                .block_on(async { tokio::time::timeout(timeout, exporter.export(batch)).await });
            match exported {
                Ok(Ok(())) => {
                    shared
                        .counters
                        .exported
                        .fetch_add(count as u64, Ordering::Relaxed);
                }
                Ok(Err(_)) | Err(_) => shared.counters.drop_spans(DROPPED_EXPORT_FAILED, count),
            }
        }
        next_export = Instant::now() + delay;
        if let Some(ticket) = flush_ticket {
            let mut queue = shared.lock();
            queue.flush_done = queue.flush_done.max(ticket);
            if last {
                queue.stopped = true;
            }
            shared.done.notify_all();
        }
        if last {
            let _ = exporter.shutdown_with_timeout(timeout);
            return;
        }
    }
}

impl SpanProcessor for BoundedBatchProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        let mut queue = self.shared.lock();
        if queue.shutdown {
            drop(queue);
            self.shared.counters.drop_spans(DROPPED_SHUTDOWN, 1);
        } else if queue.spans.len() >= self.shared.capacity {
            drop(queue);
            self.shared.counters.drop_spans(DROPPED_QUEUE_FULL, 1);
        } else {
            queue.spans.push_back(span);
            if queue.spans.len() == self.shared.batch_size {
                self.shared.work.notify_one();
            }
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.flush_for(self.timeout)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        {
            let mut queue = self.shared.lock();
            if queue.shutdown {
                return Ok(());
            }
            queue.shutdown = true;
            self.shared.work.notify_one();
        }
        let flushed = self.flush_for(timeout);
        let worker = self
            .worker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if flushed.is_ok()
            && let Some(worker) = worker
        {
            let _ = worker.join();
        }
        flushed
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::atomic::AtomicUsize;

    use opentelemetry::trace::{Tracer as _, TracerProvider as _};
    use opentelemetry_sdk::trace::SdkTracerProvider;

    use super::*;

    /// Counts exported spans; fails every export when `fail`.
    #[derive(Debug, Clone, Default)]
    struct Counting {
        spans: Arc<AtomicUsize>,
        fail: bool,
    }

    impl SpanExporter for Counting {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            if self.fail {
                return Err(OTelSdkError::InternalFailure("collector down".to_owned()));
            }
            self.spans.fetch_add(batch.len(), Ordering::SeqCst);
            Ok(())
        }
    }

    fn export(queue_size: usize) -> Export {
        Export {
            traces_url: "http://127.0.0.1:9/v1/traces".to_owned(),
            timeout: Duration::from_secs(5),
            queue_size,
            batch_size: 4,
            schedule_delay: Duration::from_secs(60),
        }
    }

    fn provider(exporter: Counting, queue_size: usize) -> (SdkTracerProvider, SpanCounters) {
        let counters = SpanCounters::default();
        let processor =
            BoundedBatchProcessor::start(exporter, &export(queue_size), counters.clone()).unwrap();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .build();
        (provider, counters)
    }

    #[test]
    fn flush_exports_every_queued_span() {
        let exporter = Counting::default();
        let (provider, counters) = provider(exporter.clone(), 100);
        let tracer = provider.tracer("test");
        for _ in 0..10 {
            tracer.in_span("work", |_| {});
        }
        provider.force_flush().unwrap();
        assert_eq!(exporter.spans.load(Ordering::SeqCst), 10);
        assert_eq!(counters.exported(), 10);
        provider.shutdown().unwrap();
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let exporter = Counting {
            fail: true,
            ..Counting::default()
        };
        // batch 4 > queue 2: the thread never wakes for a batch before the
        // flush, so the third span finds the queue full.
        let counters = SpanCounters::default();
        let mut limits = export(2);
        limits.batch_size = 4;
        let processor = BoundedBatchProcessor::start(exporter, &limits, counters.clone()).unwrap();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .build();
        let tracer = provider.tracer("test");
        for _ in 0..3 {
            tracer.in_span("work", |_| {});
        }
        assert_eq!(counters.dropped(DROPPED_QUEUE_FULL), 1);
        provider.force_flush().unwrap();
        assert_eq!(counters.dropped(DROPPED_EXPORT_FAILED), 2);
        assert_eq!(counters.exported(), 0);
        provider.shutdown().unwrap();
    }

    #[test]
    fn the_counters_show_in_the_registry() {
        let counters = SpanCounters::default();
        let registry = Registry::new();
        counters.register(&registry, "pingpong_test").unwrap();
        counters.drop_spans(DROPPED_QUEUE_FULL, 3);
        let families = registry.gather();
        let names: Vec<&str> = families.iter().map(|f| f.name()).collect();
        assert_eq!(
            names,
            [
                "pingpong_test_trace_spans_dropped_total",
                "pingpong_test_trace_spans_exported_total"
            ]
        );
        let dropped = &families[0];
        let full = dropped
            .get_metric()
            .iter()
            .find(|m| m.get_label()[0].value() == DROPPED_QUEUE_FULL)
            .unwrap();
        assert_eq!(full.get_counter().get_value(), 3.0);
    }

    #[test]
    fn shutdown_exports_what_is_left_and_later_spans_are_dropped() {
        let exporter = Counting::default();
        let (provider, counters) = provider(exporter.clone(), 100);
        let tracer = provider.tracer("test");
        tracer.in_span("work", |_| {});
        provider.shutdown().unwrap();
        assert_eq!(exporter.spans.load(Ordering::SeqCst), 1);
        assert_eq!(counters.exported(), 1);
    }
}
