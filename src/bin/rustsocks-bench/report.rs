//! Results: latency summaries from hdrhistogram, one JSON line per result on
//! stdout, a readable summary and a progress line on stderr.

use std::io::Write;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{json, Value};

pub fn histogram() -> Histogram<u64> {
    // 1 µs to 60 s, 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

pub fn record(h: &mut Histogram<u64>, d: Duration) {
    let _ = h.record((d.as_micros() as u64).clamp(1, 60_000_000));
}

/// Percentiles in microseconds.
pub fn summary(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return Value::Null;
    }
    json!({
        "mean": (h.mean() * 10.0).round() / 10.0,
        "p50": h.value_at_quantile(0.50),
        "p90": h.value_at_quantile(0.90),
        "p99": h.value_at_quantile(0.99),
        "max": h.max(),
    })
}

pub fn describe(h: &Histogram<u64>) -> String {
    if h.is_empty() {
        return "no samples".into();
    }
    format!(
        "p50 {} us, p90 {} us, p99 {} us, max {} us",
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.9),
        h.value_at_quantile(0.99),
        h.max()
    )
}

/// Prints the result as one JSON line on stdout, and `lines` on stderr.
pub fn emit(result: &Value, lines: &[String]) {
    println!("{result}");
    let mut err = std::io::stderr().lock();
    for l in lines {
        let _ = writeln!(err, "{l}");
    }
}

/// A progress line on stderr, at most once a second, after the first two seconds.
pub struct Progress {
    label: &'static str,
    started: Instant,
    last: Instant,
    shown: bool,
}

impl Progress {
    pub fn new(label: &'static str) -> Self {
        let now = Instant::now();
        Self {
            label,
            started: now,
            last: now,
            shown: false,
        }
    }

    pub fn tick(&mut self, done: u64, total: u64) {
        let now = Instant::now();
        if now.duration_since(self.started) < Duration::from_secs(2)
            || now.duration_since(self.last) < Duration::from_secs(1)
        {
            return;
        }
        self.last = now;
        self.shown = true;
        let secs = now.duration_since(self.started).as_secs_f64();
        eprint!(
            "\r[{}] {done}/{total} in {secs:.1} s ({:.0}/s)   ",
            self.label,
            done as f64 / secs
        );
    }

    pub fn finish(&self) {
        if self.shown {
            eprintln!();
        }
    }
}
