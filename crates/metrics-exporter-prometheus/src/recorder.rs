use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::io;
#[cfg(feature = "protobuf")]
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::sync::{Mutex, PoisonError, RwLock};

use indexmap::IndexMap;
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_util::registry::{Recency, Registry};
use metrics_util::KeyHasher;
use quanta::Instant;

use crate::common::{LabelSet, Snapshot};
use crate::distribution::{Distribution, DistributionBuilder};
use crate::formatting::{
    metric_name, render_labels, sanitize_metric_name, write_help_line, write_prepared_line,
    write_type_line,
};
use crate::registry::GenerationalAtomicStorage;

pub(crate) type DescriptionReadHandle =
    evmap::handles::ReadHandle<String, (SharedString, Option<Unit>)>;
pub(crate) type DescriptionWriteHandle =
    evmap::handles::WriteHandle<String, (SharedString, Option<Unit>)>;

/// Create new evmap handles for metric descriptions.
///
/// # Safety
///
/// This uses `evmap::new_assert_stable` because `SharedString` and `Unit` do not implement
/// `StableHashEq`. The stored description values are still deterministic with respect to `Hash`
/// and `Eq`:
/// - `SharedString` is a `Cow<'static, str>` and hashes/compares by string contents.
/// - `Unit` is a fixed enum and hashes/compares by its discriminant.
/// - The key is a sanitized metric name (`String`), which is also deterministic.
pub(crate) fn new_description_handles() -> (DescriptionWriteHandle, DescriptionReadHandle) {
    // SAFETY: description key/value hashing and equality are deterministic.
    let (mut write_handle, read_handle) = unsafe { evmap::new_assert_stable() };
    write_handle.publish();
    (write_handle, read_handle)
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub registry: Registry<Key, GenerationalAtomicStorage>,
    pub recency: Recency<Key>,
    pub distributions: RwLock<HashMap<String, IndexMap<LabelSet, Distribution>>>,
    pub distribution_builder: DistributionBuilder,
    pub(crate) descriptions_rd: Mutex<DescriptionReadHandle>,
    pub(crate) descriptions_wr: Mutex<DescriptionWriteHandle>,
    pub global_labels: IndexMap<String, String>,
    pub enable_unit_suffix: bool,
    pub counter_suffix: Option<&'static str>,
    /// Each key's series as the text exposition writes it (see [`Series`]).
    pub(crate) series: Mutex<SeriesCache>,
    /// Counts text renders, to stamp the series each one saw.
    pub(crate) render_epoch: AtomicU64,
}

/// What the text exposition writes for one key, prepared when the key is first rendered
/// instead of at every render: sanitizing names and labels, and formatting the labels of
/// every line, were most of a render's time.
#[derive(Debug)]
pub(crate) struct Series {
    name: String,
    rendered: String,
    /// The last render that saw this key.
    seen: AtomicU64,
}

pub(crate) type SeriesCache = HashMap<Key, Arc<Series>, BuildHasherDefault<KeyHasher>>;

impl Inner {
    // The protobuf exposition's snapshot; the text one is [`Inner::text_snapshot`].
    #[cfg_attr(not(feature = "protobuf"), allow(dead_code))]
    fn get_recent_metrics(&self) -> Snapshot {
        let mut counters = HashMap::new();
        let counter_handles = self.registry.get_counter_handles();
        for (key, counter) in counter_handles {
            let gen = counter.get_generation();
            if !self.recency.should_store_counter(&key, gen, &self.registry) {
                continue;
            }

            let name = sanitize_metric_name(key.name());
            let labels = LabelSet::from_key_and_global(&key, &self.global_labels);
            let value = counter.get_inner().load(Ordering::Acquire);
            let entry =
                counters.entry(name).or_insert_with(HashMap::new).entry(labels).or_insert(0);
            *entry = value;
        }

        let mut gauges = HashMap::new();
        let gauge_handles = self.registry.get_gauge_handles();
        for (key, gauge) in gauge_handles {
            let gen = gauge.get_generation();
            if !self.recency.should_store_gauge(&key, gen, &self.registry) {
                continue;
            }

            let name = sanitize_metric_name(key.name());
            let labels = LabelSet::from_key_and_global(&key, &self.global_labels);
            let value = f64::from_bits(gauge.get_inner().load(Ordering::Acquire));
            let entry =
                gauges.entry(name).or_insert_with(HashMap::new).entry(labels).or_insert(0.0);
            *entry = value;
        }

        // Update distributions
        self.drain_histograms_to_distributions();
        self.forget_expired_histograms();

        let distributions =
            self.distributions.read().unwrap_or_else(PoisonError::into_inner).clone();

        Snapshot { counters, gauges, distributions }
    }

    /// Removes the distributions of histograms the recency check expires (deleting them from
    /// the registry).
    fn forget_expired_histograms(&self) {
        let histogram_handles = self.registry.get_histogram_handles();
        for (key, histogram) in histogram_handles {
            let gen = histogram.get_generation();
            if !self.recency.should_store_histogram(&key, gen, &self.registry) {
                // Since we store aggregated distributions directly, when we're told that a metric
                // is not recent enough and should be/was deleted from the registry, we also need to
                // delete it on our side as well.
                let name = sanitize_metric_name(key.name());
                let labels = LabelSet::from_key_and_global(&key, &self.global_labels);
                let mut wg = self.distributions.write().unwrap_or_else(PoisonError::into_inner);
                let delete_by_name = if let Some(by_name) = wg.get_mut(&name) {
                    by_name.swap_remove(&labels);
                    by_name.is_empty()
                } else {
                    false
                };

                // If there's no more variants in the per-metric-name distribution map, then delete
                // it entirely, otherwise we end up with weird empty output during render.
                if delete_by_name {
                    wg.remove(&name);
                }
            }
        }
    }

    /// Drains histogram samples into distribution.
    fn drain_histograms_to_distributions(&self) {
        let histogram_handles = self.registry.get_histogram_handles();
        for (key, histogram) in histogram_handles {
            let name = sanitize_metric_name(key.name());
            let labels = LabelSet::from_key_and_global(&key, &self.global_labels);

            let mut wg = self.distributions.write().unwrap_or_else(PoisonError::into_inner);
            let entry = wg
                .entry(name.clone())
                .or_default()
                .entry(labels)
                .or_insert_with(|| self.distribution_builder.get_distribution(name.as_str()));

            histogram.get_inner().clear_with(|samples| entry.record_samples(samples));
        }
    }

    /// The series of `key` as the text exposition writes it, prepared once per key (its
    /// sanitized name, its labels and their rendered text) and stamped with this render.
    fn prepared(
        &self,
        cache: &mut SeriesCache,
        key: &Key,
        epoch: u64,
        stamped: &mut usize,
    ) -> Arc<Series> {
        let series = match cache.get(key) {
            Some(series) => Arc::clone(series),
            None => {
                let labels = LabelSet::from_key_and_global(key, &self.global_labels);
                let series = Arc::new(Series {
                    name: sanitize_metric_name(key.name()),
                    rendered: render_labels(&labels),
                    seen: AtomicU64::new(0),
                });
                cache.insert(key.clone(), Arc::clone(&series));
                series
            }
        };
        // A key is counted once, even when a counter and a gauge share it.
        if series.seen.swap(epoch, Ordering::Relaxed) != epoch {
            *stamped += 1;
        }
        series
    }

    /// Counters and gauges for the text exposition: each family's series together, ordered
    /// by name and labels; of two keys that sanitize to the same series, one is kept (as
    /// [`Inner::get_recent_metrics`] keeps one).
    fn text_snapshot(&self) -> (Vec<(Arc<Series>, u64)>, Vec<(Arc<Series>, f64)>) {
        let mut cache = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        let epoch = self.render_epoch.fetch_add(1, Ordering::Relaxed) + 1;
        let mut stamped = 0;

        let mut counters = Vec::new();
        for (key, counter) in self.registry.get_counter_handles() {
            let gen = counter.get_generation();
            if !self.recency.should_store_counter(&key, gen, &self.registry) {
                continue;
            }
            let value = counter.get_inner().load(Ordering::Acquire);
            counters.push((self.prepared(&mut cache, &key, epoch, &mut stamped), value));
        }

        let mut gauges = Vec::new();
        for (key, gauge) in self.registry.get_gauge_handles() {
            let gen = gauge.get_generation();
            if !self.recency.should_store_gauge(&key, gen, &self.registry) {
                continue;
            }
            let value = f64::from_bits(gauge.get_inner().load(Ordering::Acquire));
            gauges.push((self.prepared(&mut cache, &key, epoch, &mut stamped), value));
        }

        // Forget the series of keys the registry no longer holds.
        if cache.len() > stamped {
            cache.retain(|_, series| series.seen.load(Ordering::Relaxed) == epoch);
        }
        drop(cache);

        fn order<V>(series: &mut Vec<(Arc<Series>, V)>) {
            series.sort_by(|(a, _), (b, _)| (&a.name, &a.rendered).cmp(&(&b.name, &b.rendered)));
            series.dedup_by(|(a, _), (b, _)| a.name == b.name && a.rendered == b.rendered);
        }
        order(&mut counters);
        order(&mut gauges);
        (counters, gauges)
    }

    fn render_to_write(&self, output: &mut impl io::Write) -> io::Result<()> {
        let (counters, gauges) = self.text_snapshot();
        self.drain_histograms_to_distributions();
        self.forget_expired_histograms();

        self.commit_outstanding_description_writes();
        let descriptions = self.read_handle();
        self.write_families(output, &descriptions, "counter", self.counter_suffix, &counters)?;
        self.write_families(output, &descriptions, "gauge", None, &gauges)?;

        // Histogram text is built under the read lock, instead of from a copy of every
        // distribution, and written to `output` after the lock is released: a slow writer
        // must not hold up upkeep or other renders.
        let histograms = self.histogram_text(&descriptions);
        output.write_all(histograms.as_bytes())
    }

    /// Writes the families of `series` (ordered by [`Inner::text_snapshot`]): each one's HELP
    /// and TYPE lines, then a line per series.
    fn write_families<V: std::fmt::Display + Copy>(
        &self,
        output: &mut impl io::Write,
        descriptions: &DescriptionReadHandle,
        kind: &str,
        suffix: Option<&'static str>,
        series: &[(Arc<Series>, V)],
    ) -> io::Result<()> {
        let mut intermediate = String::new();
        for family in series.chunk_by(|(a, _), (b, _)| a.name == b.name) {
            let name = family[0].0.name.as_str();
            let unit = descriptions.get_one(name).and_then(|entry| {
                let (desc, unit) = &*entry;
                let unit = unit.filter(|_| self.enable_unit_suffix);
                write_help_line(&mut intermediate, name, unit, suffix, desc);
                unit
            });
            write_type_line(&mut intermediate, name, unit, suffix, kind);
            output.write_all(intermediate.as_bytes())?;
            intermediate.clear();

            let line_name = metric_name(name, unit, suffix);
            for (series, value) in family {
                write_prepared_line(&mut intermediate, &line_name, &series.rendered, None, *value);
                output.write_all(intermediate.as_bytes())?;
                intermediate.clear();
            }
            output.write_all(b"\n")?;
        }
        Ok(())
    }

    /// The text of every histogram and summary family.
    fn histogram_text(&self, descriptions: &DescriptionReadHandle) -> String {
        let mut intermediate = String::new();
        let distributions = self.distributions.read().unwrap_or_else(PoisonError::into_inner);
        for (name, by_labels) in distributions.iter() {
            let distribution_type = self.distribution_builder.get_distribution_type(name.as_str());

            // Skip native histograms in text format - they're only supported in protobuf format
            if distribution_type == "native_histogram" {
                continue;
            }

            let unit = descriptions.get_one(name.as_str()).and_then(|entry| {
                let (desc, unit) = &*entry;
                let unit = unit.filter(|_| self.enable_unit_suffix);
                write_help_line(&mut intermediate, name.as_str(), unit, None, desc);
                unit
            });

            write_type_line(&mut intermediate, name.as_str(), unit, None, distribution_type);

            let plain_name = metric_name(name, unit, None);
            let bucket_name = metric_name(name, unit, Some("bucket"));
            let sum_name = metric_name(name, unit, Some("sum"));
            let count_name = metric_name(name, unit, Some("count"));
            // Every series of a family has the same bounds: each is formatted once.
            let mut bounds: Vec<(f64, String)> = Vec::new();
            for (labels, distribution) in by_labels.iter() {
                let rendered = render_labels(labels);
                let (sum, count) = match distribution {
                    Distribution::Summary(summary, quantiles, sum) => {
                        let snapshot = summary.snapshot(Instant::now());
                        for quantile in quantiles.iter() {
                            let value = snapshot.quantile(quantile.value()).unwrap_or(0.0);
                            write_prepared_line(
                                &mut intermediate,
                                &plain_name,
                                &rendered,
                                Some(("quantile", &quantile.value().to_string())),
                                value,
                            );
                        }

                        (*sum, summary.count() as u64)
                    }
                    Distribution::Histogram(histogram) => {
                        for (le, count) in histogram.buckets() {
                            let le = match bounds.iter().position(|(b, _)| *b == le) {
                                Some(i) => i,
                                None => {
                                    bounds.push((le, le.to_string()));
                                    bounds.len() - 1
                                }
                            };
                            write_prepared_line(
                                &mut intermediate,
                                &bucket_name,
                                &rendered,
                                Some(("le", &bounds[le].1)),
                                count,
                            );
                        }
                        write_prepared_line(
                            &mut intermediate,
                            &bucket_name,
                            &rendered,
                            Some(("le", "+Inf")),
                            histogram.count(),
                        );

                        (histogram.sum(), histogram.count())
                    }
                    Distribution::NativeHistogram(_) => {
                        // Native histograms are not supported in text format
                        // This branch should not be reached due to the continue above
                        continue;
                    }
                };

                write_prepared_line(&mut intermediate, &sum_name, &rendered, None, sum);
                write_prepared_line(&mut intermediate, &count_name, &rendered, None, count);
            }

            intermediate.push('\n');
        }
        intermediate
    }

    fn run_upkeep(&self) {
        self.drain_histograms_to_distributions();
        self.commit_outstanding_description_writes();
    }

    fn commit_outstanding_description_writes(&self) {
        // Flush all outstanding writes to the descriptions table
        let mut descriptions = self.descriptions_wr.lock().unwrap_or_else(PoisonError::into_inner);
        descriptions.publish();
    }

    pub(crate) fn read_handle(&self) -> DescriptionReadHandle {
        self.descriptions_rd.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// A Prometheus recorder.
///
/// Most users will not need to interact directly with the recorder, and can simply deal with the
/// builder methods on [`PrometheusBuilder`](crate::PrometheusBuilder) for building and installing
/// the recorder/exporter.
#[derive(Debug)]
pub struct PrometheusRecorder {
    inner: Arc<Inner>,
}

impl PrometheusRecorder {
    /// Gets a [`PrometheusHandle`] to this recorder.
    pub fn handle(&self) -> PrometheusHandle {
        PrometheusHandle { inner: self.inner.clone() }
    }

    fn add_description_if_missing(
        &self,
        key_name: &KeyName,
        description: SharedString,
        unit: Option<Unit>,
    ) {
        let sanitized = sanitize_metric_name(key_name.as_str());
        let mut descriptions =
            self.inner.descriptions_wr.lock().unwrap_or_else(PoisonError::into_inner);
        let already_present = descriptions.contains_key(&sanitized);

        if already_present {
            return;
        }

        descriptions.update(sanitized, (description, unit));
    }
}

impl From<Inner> for PrometheusRecorder {
    fn from(inner: Inner) -> Self {
        PrometheusRecorder { inner: Arc::new(inner) }
    }
}

impl Recorder for PrometheusRecorder {
    fn describe_counter(&self, key_name: KeyName, unit: Option<Unit>, description: SharedString) {
        self.add_description_if_missing(&key_name, description, unit);
    }

    fn describe_gauge(&self, key_name: KeyName, unit: Option<Unit>, description: SharedString) {
        self.add_description_if_missing(&key_name, description, unit);
    }

    fn describe_histogram(&self, key_name: KeyName, unit: Option<Unit>, description: SharedString) {
        self.add_description_if_missing(&key_name, description, unit);
    }

    fn register_counter(&self, key: &Key, _metadata: &Metadata<'_>) -> Counter {
        let key = key.to_retained();
        self.inner.registry.get_or_create_counter(&key, |c| c.clone().into())
    }

    fn register_gauge(&self, key: &Key, _metadata: &Metadata<'_>) -> Gauge {
        let key = key.to_retained();
        self.inner.registry.get_or_create_gauge(&key, |c| c.clone().into())
    }

    fn register_histogram(&self, key: &Key, _metadata: &Metadata<'_>) -> Histogram {
        let key = key.to_retained();
        self.inner.registry.get_or_create_histogram(&key, |c| c.clone().into())
    }
}

/// Handle for accessing metrics stored via [`PrometheusRecorder`].
///
/// In certain scenarios, it may be necessary to directly handle requests that would otherwise be
/// handled directly by the HTTP listener, or push gateway background task.  [`PrometheusHandle`]
/// allows rendering a snapshot of the current metrics stored by an installed [`PrometheusRecorder`]
/// as a payload conforming to the Prometheus exposition format.
#[derive(Clone, Debug)]
pub struct PrometheusHandle {
    inner: Arc<Inner>,
}

impl PrometheusHandle {
    /// Takes a snapshot of the metrics held by the recorder and generates a payload conforming to
    /// the Prometheus exposition format.
    #[allow(clippy::missing_panics_doc)]
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // UNWRAP: writing to a Vec<u8> does not fail.
        self.inner.render_to_write(&mut buf).unwrap();
        // UNWRAP: Prometheus exposition format is always UTF-8.
        String::from_utf8(buf).unwrap()
    }

    /// Takes a snapshot of the metrics held by the recorder and generates a payload conforming to
    /// the Prometheus exposition format, incrementally. Use this function to emit metrics as a
    /// stream without buffering the entire metrics export.
    ///
    /// # Errors
    ///
    /// Writing to the provided output fails.
    pub fn render_to_write(&self, output: &mut impl io::Write) -> io::Result<()> {
        self.inner.render_to_write(output)
    }

    /// Takes a snapshot of the metrics held by the recorder and generates a payload conforming to
    /// the Prometheus protobuf format.
    #[cfg(feature = "protobuf")]
    pub fn render_protobuf(&self) -> Vec<u8> {
        let snapshot = self.inner.get_recent_metrics();
        self.inner.commit_outstanding_description_writes();
        let descriptions = self.inner.read_handle();

        crate::protobuf::render_protobuf(snapshot, &descriptions, self.inner.counter_suffix)
    }

    /// Takes a snapshot of the metrics held by the recorder and writes a payload conforming to
    /// the Prometheus protobuf format into the provided writer.
    ///
    /// # Errors
    ///
    /// Writing to the provided output fails.
    #[cfg(feature = "protobuf")]
    pub fn render_protobuf_to_write<W: Write>(&self, writer: &mut W) -> std::io::Result<()> {
        let snapshot = self.inner.get_recent_metrics();
        self.inner.commit_outstanding_description_writes();
        let descriptions = self.inner.read_handle();

        crate::protobuf::render_protobuf_to_write(
            writer,
            snapshot,
            &descriptions,
            self.inner.counter_suffix,
        )
    }

    /// Performs upkeeping operations to ensure metrics held by recorder are up-to-date and do not
    /// grow unboundedly.
    pub fn run_upkeep(&self) {
        self.inner.run_upkeep();
    }
}
