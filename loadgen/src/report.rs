//! A run's figures and their three forms: the table on stdout, the JSON
//! file for scripts (`--json`) and the SVG percentile plot (`--plot`).
//!
//! All latencies are in microseconds. "Latency" is corrected: receive time
//! minus the time the message was *due* (free of coordinated omission).
//! "Service time" is uncorrected: receive time minus the time the generator
//! actually handed it to the socket.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::options::Options;
use crate::proto::Protocol;
use crate::Error;

/// Latency percentiles in µs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub p9999: f64,
    pub max: f64,
    pub mean: f64,
    /// Samples behind these figures.
    pub samples: u64,
}

impl Percentiles {
    /// The percentiles of a histogram of nanoseconds.
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Percentiles::default();
        }
        let us = |ns: u64| ns as f64 / 1e3;
        Percentiles {
            p50: us(h.value_at_quantile(0.5)),
            p90: us(h.value_at_quantile(0.9)),
            p99: us(h.value_at_quantile(0.99)),
            p999: us(h.value_at_quantile(0.999)),
            p9999: us(h.value_at_quantile(0.9999)),
            max: us(h.max()),
            mean: h.mean() / 1e3,
            samples: h.len(),
        }
    }
}

/// Everything a run measured. Serialized as the `--json` file.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub protocol: Protocol,
    pub target: String,
    pub publishers: usize,
    pub subscribers: usize,
    pub subjects: usize,
    pub group: Option<String>,
    /// Requested total rate (0 = as fast as possible).
    pub rate: u64,
    pub window: usize,
    pub size: usize,
    pub duration_s: f64,
    pub warmup_s: f64,
    /// The run went to the end without an error.
    pub complete: bool,
    /// Every message sent had arrived when the run stopped.
    pub drained: bool,
    /// Why the run stopped early, if it did.
    pub error: Option<String>,
    /// Messages due in the measured window (after warm-up) and sent.
    pub sent: u64,
    /// Deliveries of those messages.
    pub received: u64,
    /// Deliveries they should have produced (`sent` × subscribers, or ×1
    /// with a queue group).
    pub expected: u64,
    pub sent_per_s: f64,
    pub received_per_s: f64,
    /// Payload megabytes (10⁶) delivered per second.
    pub mb_per_s: f64,
    /// Integrity over the whole run, warm-up included.
    pub lost: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub corrupt: u64,
    /// Messages sent over the whole run.
    pub sent_total: u64,
    /// Corrected latency (receive − intended send).
    pub latency_us: Percentiles,
    /// Uncorrected latency (receive − actual send).
    pub service_time_us: Percentiles,
    /// How late the generator sent (actual − intended send; zero at
    /// `--rate 0`). When this is large, the generator fell behind its own
    /// schedule (starved of CPU, or blocked by a full socket) and the
    /// corrected latency includes that delay.
    pub send_lag_us: Percentiles,
    /// The generator's CPU use over the measured window, in % of one core
    /// (above 100 with several workers).
    pub client_cpu_pct: f64,
    /// Time the busiest worker spent working rather than waiting, in %:
    /// near 100 means the generator, not the server, was the limit.
    pub client_busy_pct: f64,
    pub client_workers: usize,
    /// Wall time actually measured (shorter than `duration_s` if the run
    /// stopped early).
    pub measured_s: f64,
    #[serde(skip)]
    pub latency: Histogram<u64>,
    #[serde(skip)]
    pub service_time: Histogram<u64>,
}

impl Report {
    /// Whether every message arrived exactly once and in order.
    pub fn integrity_ok(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.reordered == 0 && self.corrupt == 0
    }

    /// The human-readable summary.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let rate = if self.rate == 0 {
            format!("max rate (window {})", self.window)
        } else {
            format!("{} msgs/s", fmt_count(self.rate))
        };
        let group = self
            .group
            .as_ref()
            .map(|g| format!(", queue group {g}"))
            .unwrap_or_default();
        let _ = writeln!(
            s,
            "{} → {}: {} pub → {} sub{group}, {} subject(s), {} B, {rate}, {}s (+{}s warm-up){}",
            self.protocol,
            self.target,
            self.publishers,
            self.subscribers,
            self.subjects,
            self.size,
            self.duration_s,
            self.warmup_s,
            if self.complete { "" } else { "  [INCOMPLETE]" },
        );
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "{:>13} {:>13} {:>12} {:>12} {:>9} {:>8} {:>6} {:>6} {:>6}",
            "sent", "received", "sent/s", "received/s", "MB/s", "lost", "dup", "reord", "corrupt"
        );
        let _ = writeln!(
            s,
            "{:>13} {:>13} {:>12} {:>12} {:>9.2} {:>8} {:>6} {:>6} {:>6}",
            fmt_count(self.sent),
            fmt_count(self.received),
            fmt_count(self.sent_per_s.round() as u64),
            fmt_count(self.received_per_s.round() as u64),
            self.mb_per_s,
            self.lost,
            self.duplicated,
            self.reordered,
            self.corrupt,
        );
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "{:<24} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "latency (µs)", "p50", "p90", "p99", "p99.9", "p99.99", "max"
        );
        let mut rows = vec![
            ("corrected (intended)", &self.latency_us),
            ("uncorrected (actual)", &self.service_time_us),
        ];
        if self.rate > 0 {
            rows.push(("send lag (client)", &self.send_lag_us));
        }
        for (name, p) in rows {
            let _ = writeln!(
                s,
                "{name:<24} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
                fmt_us(p.p50),
                fmt_us(p.p90),
                fmt_us(p.p99),
                fmt_us(p.p999),
                fmt_us(p.p9999),
                fmt_us(p.max)
            );
        }
        let _ = writeln!(s);
        let _ = write!(
            s,
            "client: {:.0}% CPU ({} worker{}), busiest worker {:.0}% busy",
            self.client_cpu_pct,
            self.client_workers,
            if self.client_workers == 1 { "" } else { "s" },
            self.client_busy_pct
        );
        if let Some(note) = self.generator_limit_note() {
            let _ = write!(s, " — {note}");
        }
        let _ = writeln!(s);
        if self.rate > 0 && self.send_lag_us.p99 > 0.5 * self.latency_us.p99.max(100.0) {
            let _ = writeln!(
                s,
                "note: the generator sent late (send lag p99 {} µs): it was starved of CPU or \
                 blocked by a full socket, and the corrected latency includes that delay",
                fmt_us(self.send_lag_us.p99)
            );
        }
        if !self.drained {
            let _ = writeln!(
                s,
                "note: not every message had arrived when the drain timeout expired"
            );
        }
        if !self.integrity_ok() {
            let _ = writeln!(
                s,
                "INTEGRITY: {} lost, {} duplicated, {} reordered, {} corrupt",
                self.lost, self.duplicated, self.reordered, self.corrupt
            );
        }
        s
    }

    /// What to say when the generator was busy enough to be the limit:
    /// whether more CPUs could help depends on whether some worker served
    /// several connections (said as it is: the run may already have
    /// `--cores`).
    fn generator_limit_note(&self) -> Option<String> {
        if self.client_busy_pct <= 90.0 {
            return None;
        }
        let connections = self.publishers + self.subscribers;
        let workers = self.client_workers;
        let plural = |n: usize| if n == 1 { "" } else { "s" };
        Some(if workers < connections {
            format!(
                "the generator may be the limit, not the server: {workers} worker{} for \
                 {connections} connections; give it more CPUs (--cores) if the machine has \
                 spare ones",
                plural(workers)
            )
        } else {
            "the generator may be the limit, not the server: each connection already has a \
             worker of its own, so more CPUs would not help"
                .to_string()
        })
    }

    /// Writes the `--json` and `--plot` files the options ask for.
    pub fn write_files(&self, opts: &Options) -> Result<(), Error> {
        if let Some(path) = &opts.json {
            let io = |e: io::Error| Error::Io {
                what: format!("writing --json {}", path.display()),
                source: e,
            };
            let mut f = BufWriter::new(File::create(path).map_err(io)?);
            serde_json::to_writer_pretty(&mut f, self).map_err(|e| io(e.into()))?;
            f.write_all(b"\n").and_then(|()| f.flush()).map_err(io)?;
        }
        if let Some(path) = &opts.plot {
            self.plot(path).map_err(|e| Error::Io {
                what: format!("writing --plot {}", path.display()),
                source: io::Error::other(e),
            })?;
        }
        Ok(())
    }

    /// Draws the percentile distribution of both latencies, the way
    /// HdrHistogram plots are drawn: x is the percentile on a log scale of
    /// 1/(1−p), so 90%, 99%, 99.9% … are evenly spaced.
    pub fn plot(&self, path: &Path) -> Result<(), String> {
        use plotters::prelude::*;

        /// Legend, `(1/(1−p), µs)` points, colour.
        type Curve<'a> = (&'a str, Vec<(f64, f64)>, RGBColor);
        let series: Vec<Curve> = [
            (
                "corrected (receive − intended send)",
                &self.latency,
                RGBColor(0xd6, 0x27, 0x28),
            ),
            (
                "uncorrected (receive − actual send)",
                &self.service_time,
                RGBColor(0x1f, 0x77, 0xb4),
            ),
        ]
        .into_iter()
        .map(|(name, h, color)| (name, percentile_curve(h), color))
        .collect();
        let max_x = series
            .iter()
            .flat_map(|(_, pts, _)| pts.iter().map(|p| p.0))
            .fold(10.0, f64::max);
        let max_y = series
            .iter()
            .flat_map(|(_, pts, _)| pts.iter().map(|p| p.1))
            .fold(1.0, f64::max)
            * 1.2;
        // Latency on a log axis too: the median (tens of µs) and the tail
        // (milliseconds) are both readable on one plot.
        let min_y = (series
            .iter()
            .flat_map(|(_, pts, _)| pts.iter().map(|p| p.1))
            .fold(f64::MAX, f64::min)
            * 0.8)
            .clamp(0.5, max_y / 2.0);

        let root = SVGBackend::new(path, (960, 600)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let caption = format!(
            "{} {} — {} pub → {} sub, {} B, {}",
            self.protocol,
            self.target,
            self.publishers,
            self.subscribers,
            self.size,
            if self.rate == 0 {
                "max rate".to_string()
            } else {
                format!("{} msgs/s", fmt_count(self.rate))
            }
        );
        let mut chart = ChartBuilder::on(&root)
            .caption(caption, ("sans-serif", 20))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(72)
            .build_cartesian_2d((1.0..max_x).log_scale(), (min_y..max_y).log_scale())
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("percentile")
            .y_desc("latency (µs)")
            .x_label_formatter(&|x| percentile_label(*x))
            .y_label_formatter(&|y| fmt_us(*y))
            .draw()
            .map_err(|e| e.to_string())?;
        for (name, points, color) in series {
            if points.is_empty() {
                continue;
            }
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))
                .map_err(|e| e.to_string())?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())
    }
}

/// `(1/(1−q), µs)` points of a histogram's percentile distribution, up to
/// the last percentile the sample count supports.
fn percentile_curve(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    // Beyond 1/(1−q) = n the percentile says nothing new (it is the max).
    let limit = (h.len() as f64).max(10.0);
    let mut points: Vec<(f64, f64)> = h
        .iter_quantiles(4)
        .map(|v| (v.quantile_iterated_to(), v.value_iterated_to() as f64 / 1e3))
        .filter(|&(q, _)| q < 1.0)
        .map(|(q, us)| ((1.0 / (1.0 - q)).min(limit), us))
        .collect();
    points.push((limit, h.max() as f64 / 1e3));
    points
}

fn percentile_label(x: f64) -> String {
    let p = 100.0 * (1.0 - 1.0 / x);
    if p <= 0.0 {
        return "0%".into();
    }
    // As many decimals as the nines need: 99.9, 99.99 …
    let decimals = (x.log10().round() as i32 - 2).clamp(0, 6) as usize;
    format!("{p:.decimals$}%")
}

/// `1234567` → `1,234,567`.
pub fn fmt_count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Microseconds with a precision that suits their size.
pub fn fmt_us(us: f64) -> String {
    if us < 10.0 {
        format!("{us:.2}")
    } else if us < 1000.0 {
        format!("{us:.1}")
    } else {
        fmt_count(us.round() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::new_histogram;

    fn report() -> Report {
        let mut lat = new_histogram();
        let mut svc = new_histogram();
        for i in 1..=10_000u64 {
            lat.record(i * 1_000).unwrap();
            svc.record(i * 500).unwrap();
        }
        Report {
            protocol: Protocol::Line,
            target: "127.0.0.1:7000".into(),
            publishers: 1,
            subscribers: 2,
            subjects: 1,
            group: None,
            rate: 50_000,
            window: 1000,
            size: 128,
            duration_s: 10.0,
            warmup_s: 2.0,
            complete: true,
            drained: true,
            error: None,
            sent: 500_000,
            received: 1_000_000,
            expected: 1_000_000,
            sent_per_s: 50_000.0,
            received_per_s: 100_000.0,
            mb_per_s: 12.8,
            lost: 0,
            duplicated: 0,
            reordered: 0,
            corrupt: 0,
            sent_total: 600_000,
            latency_us: Percentiles::of(&lat),
            service_time_us: Percentiles::of(&svc),
            send_lag_us: Percentiles::default(),
            client_cpu_pct: 25.0,
            client_busy_pct: 10.0,
            client_workers: 1,
            measured_s: 10.0,
            latency: lat,
            service_time: svc,
        }
    }

    #[test]
    fn percentiles_in_microseconds() {
        let r = report();
        let p = r.latency_us;
        assert_eq!(p.samples, 10_000);
        assert!((p.p50 - 5_000.0).abs() / 5_000.0 < 0.002, "{}", p.p50);
        assert!((p.p99 - 9_900.0).abs() / 9_900.0 < 0.002, "{}", p.p99);
        assert!((p.max - 10_000.0).abs() / 10_000.0 < 0.002, "{}", p.max);
        assert_eq!(Percentiles::of(&new_histogram()), Percentiles::default());
    }

    #[test]
    fn json_has_the_documented_keys() {
        let v = serde_json::to_value(report()).unwrap();
        for key in [
            "sent",
            "received",
            "sent_per_s",
            "received_per_s",
            "lost",
            "duplicated",
            "reordered",
            "latency_us",
            "service_time_us",
            "client_cpu_pct",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        for key in ["p50", "p90", "p99", "p999", "p9999", "max"] {
            assert!(
                v["latency_us"].get(key).is_some(),
                "missing latency_us.{key}"
            );
            assert!(v["service_time_us"].get(key).is_some());
        }
        assert_eq!(v["protocol"], "line");
        assert!(v.get("latency").is_none(), "histograms are not serialized");
    }

    #[test]
    fn table_shows_figures_and_problems() {
        let mut r = report();
        let t = r.table();
        assert!(t.contains("500,000") && t.contains("1,000,000"), "{t}");
        assert!(t.contains("corrected") && t.contains("p99.99"));
        assert!(!t.contains("INTEGRITY"));
        assert!(t.contains("send lag") && !t.contains("sent late"));
        r.send_lag_us.p99 = 9_000.0;
        assert!(r.table().contains("the generator sent late"));
        assert!(!r.table().contains("may be the limit"));
        r.lost = 3;
        r.complete = false;
        let t = r.table();
        assert!(
            t.contains("INTEGRITY: 3 lost") && t.contains("INCOMPLETE"),
            "{t}"
        );
    }

    #[test]
    fn a_busy_generator_is_told_what_could_help() {
        let mut r = report();
        r.client_busy_pct = 97.0;
        // 1 publisher and 2 subscribers on one worker (e.g. --cores 1):
        // more CPUs would help, whether or not --cores was given.
        r.client_workers = 1;
        let t = r.table();
        assert!(
            t.contains("the generator may be the limit, not the server: 1 worker for 3 connections; give it more CPUs (--cores) if the machine has spare ones"),
            "{t}"
        );
        assert!(!t.contains("add --cores"), "{t}");
        r.client_workers = 3;
        let t = r.table();
        assert!(
            t.contains("each connection already has a worker of its own"),
            "{t}"
        );
        assert!(!t.contains("more CPUs (--cores)"), "{t}");
    }

    #[test]
    fn plot_is_an_svg_with_both_curves() {
        let dir = std::env::temp_dir().join(format!("loadgen-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("p.svg");
        report().plot(&path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("corrected (receive"));
        assert!(svg.contains("uncorrected (receive"));
        assert!(svg.contains("99%"), "percentile axis labels");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn labels_and_numbers() {
        assert_eq!(percentile_label(1.0), "0%");
        assert_eq!(percentile_label(10.0), "90%");
        assert_eq!(percentile_label(100.0), "99%");
        assert_eq!(percentile_label(1000.0), "99.9%");
        assert_eq!(percentile_label(10000.0), "99.99%");
        assert_eq!(fmt_count(0), "0");
        assert_eq!(fmt_count(1234567), "1,234,567");
        assert_eq!(fmt_us(1.234), "1.23");
        assert_eq!(fmt_us(123.45), "123.5");
        assert_eq!(fmt_us(12345.6), "12,346");
    }
}
