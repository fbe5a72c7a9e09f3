//! The [`Registry`]: every family by name, in the order it was first registered, and the
//! collectors that read values from live state at scrape time.
//!
//! Registering is idempotent: asking for a family that exists returns the same one, so two
//! brokers in one test process, or a job restarted by its supervisor, add to the same series
//! rather than hiding each other. Asking for an existing name with another type or other label
//! names is a bug in Tidewater and panics, which every test that registers it would show.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};

use crate::exposition::{Exposition, MetricType};
use crate::metric::{Counter, Gauge, Histogram};

/// The registry of this process.
pub fn global() -> &'static Registry {
    static GLOBAL: OnceLock<Registry> = OnceLock::new();
    GLOBAL.get_or_init(Registry::default)
}

/// Values read at scrape time from state a component keeps anyway (a high watermark, a
/// group's committed offsets). Writes whole families to the page.
pub trait Collect: Send + Sync {
    fn collect(&self, page: &mut Exposition);
}

/// The series of one metric, one per combination of label values. `series` locks only to
/// find or add a series; a caller keeps the returned `Arc` and updates it lock-free.
#[derive(Debug)]
pub struct Family<M> {
    label_names: &'static [&'static str],
    series: RwLock<BTreeMap<Vec<String>, Arc<M>>>,
}

impl<M: Default> Family<M> {
    fn new(label_names: &'static [&'static str]) -> Family<M> {
        Family { label_names, series: RwLock::new(BTreeMap::new()) }
    }

    /// The series of these label values (in the order of the family's label names), made on
    /// first use.
    pub fn series(&self, label_values: &[&str]) -> Arc<M> {
        assert_eq!(label_values.len(), self.label_names.len(), "label values for {:?}", self.label_names);
        let key: Vec<String> = label_values.iter().map(|value| value.to_string()).collect();
        if let Some(series) = self.series.read().expect("metrics lock poisoned").get(&key) {
            return series.clone();
        }
        self.series.write().expect("metrics lock poisoned").entry(key).or_default().clone()
    }

    /// Whether the series of these label values exists.
    pub fn contains(&self, label_values: &[&str]) -> bool {
        let key: Vec<String> = label_values.iter().map(|value| value.to_string()).collect();
        self.series.read().expect("metrics lock poisoned").contains_key(&key)
    }

    /// Drops a series (a deleted topic, a stopped job), so the page stops showing it.
    pub fn remove(&self, label_values: &[&str]) {
        let key: Vec<String> = label_values.iter().map(|value| value.to_string()).collect();
        self.series.write().expect("metrics lock poisoned").remove(&key);
    }

    fn each(&self, mut visit: impl FnMut(&[(&str, &str)], &M)) {
        let series = self.series.read().expect("metrics lock poisoned");
        for (values, metric) in series.iter() {
            let labels: Vec<(&str, &str)> =
                self.label_names.iter().copied().zip(values.iter().map(String::as_str)).collect();
            visit(&labels, metric);
        }
    }
}

#[derive(Debug, Clone)]
enum Families {
    Counters(Arc<Family<Counter>>),
    Gauges(Arc<Family<Gauge>>),
    Histograms(Arc<Family<Histogram>>),
}

#[derive(Debug)]
struct Entry {
    name: &'static str,
    help: &'static str,
    families: Families,
}

/// Every family of the process, and the collectors.
#[derive(Default)]
pub struct Registry {
    entries: Mutex<Vec<Entry>>,
    collectors: Mutex<Vec<Weak<dyn Collect>>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Registry").finish_non_exhaustive()
    }
}

impl Registry {
    pub fn counters(
        &self,
        name: &'static str,
        help: &'static str,
        label_names: &'static [&'static str],
    ) -> Arc<Family<Counter>> {
        let families = self.register(name, help, || Families::Counters(Arc::new(Family::new(label_names))));
        match families {
            Families::Counters(family) if family.label_names == label_names => family,
            other => panic!("metric {name} is registered already as {other:?}"),
        }
    }

    pub fn gauges(
        &self,
        name: &'static str,
        help: &'static str,
        label_names: &'static [&'static str],
    ) -> Arc<Family<Gauge>> {
        let families = self.register(name, help, || Families::Gauges(Arc::new(Family::new(label_names))));
        match families {
            Families::Gauges(family) if family.label_names == label_names => family,
            other => panic!("metric {name} is registered already as {other:?}"),
        }
    }

    pub fn histograms(
        &self,
        name: &'static str,
        help: &'static str,
        label_names: &'static [&'static str],
    ) -> Arc<Family<Histogram>> {
        let families = self.register(name, help, || Families::Histograms(Arc::new(Family::new(label_names))));
        match families {
            Families::Histograms(family) if family.label_names == label_names => family,
            other => panic!("metric {name} is registered already as {other:?}"),
        }
    }

    /// A counter without labels.
    pub fn counter(&self, name: &'static str, help: &'static str) -> Arc<Counter> {
        self.counters(name, help, &[]).series(&[])
    }

    /// A gauge without labels.
    pub fn gauge(&self, name: &'static str, help: &'static str) -> Arc<Gauge> {
        self.gauges(name, help, &[]).series(&[])
    }

    /// A histogram without labels.
    pub fn histogram(&self, name: &'static str, help: &'static str) -> Arc<Histogram> {
        self.histograms(name, help, &[]).series(&[])
    }

    /// Adds a collector for as long as it lives: the registry holds it weakly, so a component
    /// that is dropped (a broker closed in a test) leaves the page by itself.
    pub fn add_collector(&self, collector: Weak<dyn Collect>) {
        self.collectors.lock().expect("metrics lock poisoned").push(collector);
    }

    /// The whole page in the text exposition format.
    pub fn render(&self) -> String {
        let mut page = Exposition::default();
        let families: Vec<(&'static str, &'static str, Families)> = {
            let entries = self.entries.lock().expect("metrics lock poisoned");
            entries.iter().map(|entry| (entry.name, entry.help, entry.families.clone())).collect()
        };
        for (name, help, families) in families {
            match families {
                Families::Counters(family) => {
                    page.family(name, help, MetricType::Counter);
                    family.each(|labels, counter| page.sample(name, labels, counter.get() as f64));
                }
                Families::Gauges(family) => {
                    page.family(name, help, MetricType::Gauge);
                    family.each(|labels, gauge| page.sample(name, labels, gauge.get()));
                }
                Families::Histograms(family) => {
                    page.family(name, help, MetricType::Histogram);
                    family.each(|labels, histogram| page.histogram(name, labels, histogram));
                }
            }
        }
        let collectors: Vec<Arc<dyn Collect>> = {
            let mut collectors = self.collectors.lock().expect("metrics lock poisoned");
            collectors.retain(|collector| collector.strong_count() > 0);
            collectors.iter().filter_map(Weak::upgrade).collect()
        };
        for collector in collectors {
            collector.collect(&mut page);
        }
        page.into_text()
    }

    fn register(&self, name: &'static str, help: &'static str, make: impl FnOnce() -> Families) -> Families {
        let mut entries = self.entries.lock().expect("metrics lock poisoned");
        if let Some(entry) = entries.iter().find(|entry| entry.name == name) {
            return entry.families.clone();
        }
        let families = make();
        entries.push(Entry { name, help, families: families.clone() });
        families
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asking_twice_for_a_family_gives_the_same_series() {
        let registry = Registry::default();
        let first = registry.counters("t_records_total", "records", &["topic"]);
        first.series(&["a"]).add(2);
        registry.counters("t_records_total", "records", &["topic"]).series(&["a"]).add(3);
        assert_eq!(first.series(&["a"]).get(), 5);
        assert_eq!(
            registry.render(),
            "# HELP t_records_total records\n# TYPE t_records_total counter\nt_records_total{topic=\"a\"} 5\n"
        );
    }

    #[test]
    fn a_removed_series_leaves_the_page() {
        let registry = Registry::default();
        let family = registry.gauges("t_level", "level", &["job"]);
        family.series(&["a"]).set(1.0);
        family.series(&["b"]).set(2.0);
        family.remove(&["a"]);
        assert_eq!(registry.render(), "# HELP t_level level\n# TYPE t_level gauge\nt_level{job=\"b\"} 2\n");
    }

    struct Fixed;

    impl Collect for Fixed {
        fn collect(&self, page: &mut Exposition) {
            page.family("t_fixed", "fixed", MetricType::Gauge);
            page.sample("t_fixed", &[], 7.0);
        }
    }

    #[test]
    fn a_collector_shows_while_it_lives() {
        let registry = Registry::default();
        let collector: Arc<dyn Collect> = Arc::new(Fixed);
        registry.add_collector(Arc::downgrade(&collector));
        assert!(registry.render().contains("t_fixed 7\n"));
        drop(collector);
        assert_eq!(registry.render(), "");
    }

    #[test]
    fn one_name_cannot_be_two_types() {
        let registry = Registry::default();
        registry.counter("t_thing", "thing");
        let refused =
            std::panic::catch_unwind(|| registry.gauge("t_thing", "thing")).expect_err("a second type");
        let message = refused.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(message.contains("registered already"), "{message}");
    }
}
