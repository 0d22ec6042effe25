//! What a bench run measured: throughput, latency percentiles from an HDR histogram, outcomes
//! by gRPC code and verdict; as text or JSON, and side by side with a baseline.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use super::{Outcome, Plan, Stop};

/// Latencies are kept in microseconds, from 1 µs to 10 minutes, to 3 significant digits.
const HIGHEST_MICROS: u64 = 600_000_000;

/// Outcomes and latencies as calls finish.
pub(crate) struct Tally {
    latency: Histogram<u64>,
    codes: BTreeMap<&'static str, u64>,
    verdicts: BTreeMap<String, u64>,
}

impl Tally {
    pub(crate) fn new() -> Self {
        Self {
            latency: Histogram::new_with_bounds(1, HIGHEST_MICROS, 3).expect("valid histogram bounds"),
            codes: BTreeMap::new(),
            verdicts: BTreeMap::new(),
        }
    }

    pub(crate) fn record(&mut self, latency: Duration, outcome: &Outcome) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX).clamp(1, HIGHEST_MICROS);
        self.latency.record(micros).expect("clamped into the histogram's range");
        *self.codes.entry(outcome.code).or_default() += 1;
        if let Some(verdict) = &outcome.verdict {
            *self.verdicts.entry(verdict.clone()).or_default() += 1;
        }
    }

    pub(crate) fn report(self, plan: &Plan, elapsed: Duration) -> Report {
        Report {
            name: plan.workload.name().to_owned(),
            mode: match plan.rate {
                Some(rate) => format!("open loop at {rate}/s"),
                None => "closed loop".to_owned(),
            },
            planned: match plan.stop {
                Stop::After(d) => format!("{} s", d.as_secs_f64()),
                Stop::Calls(n) => format!("{n} calls"),
            },
            elapsed,
            latency: self.latency,
            codes: self.codes,
            verdicts: self.verdicts,
        }
    }
}

/// One run's figures.
#[derive(Debug, Clone)]
pub struct Report {
    /// The workload, or the baseline's name.
    pub name: String,
    /// Closed or open loop.
    pub mode: String,
    /// The planned length.
    pub planned: String,
    /// How long the run took.
    pub elapsed: Duration,
    latency: Histogram<u64>,
    /// Calls by gRPC code name.
    pub codes: BTreeMap<&'static str, u64>,
    /// Scans answered `OK`, by verdict.
    pub verdicts: BTreeMap<String, u64>,
}

impl Report {
    /// Calls that finished, with any outcome.
    pub fn calls(&self) -> u64 {
        self.latency.len()
    }

    /// Calls answered `OK`.
    pub fn ok(&self) -> u64 {
        self.codes.get("OK").copied().unwrap_or(0)
    }

    /// Calls answered `OK`, a second.
    pub fn ok_rate(&self) -> f64 {
        self.ok() as f64 / self.elapsed.as_secs_f64()
    }

    /// The latency at `quantile` (0 to 1), in milliseconds.
    pub fn latency_ms(&self, quantile: f64) -> f64 {
        self.latency.value_at_quantile(quantile) as f64 / 1000.0
    }

    /// The largest latency, in milliseconds.
    pub fn max_ms(&self) -> f64 {
        self.latency.max() as f64 / 1000.0
    }

    /// The report as JSON.
    pub fn json(&self) -> Value {
        json!({
            "workload": self.name,
            "mode": self.mode,
            "planned": self.planned,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "calls": self.calls(),
            "ok": self.ok(),
            "ok_per_s": self.ok_rate(),
            "latency_ms": {
                "p50": self.latency_ms(0.5),
                "p90": self.latency_ms(0.9),
                "p99": self.latency_ms(0.99),
                "p99.9": self.latency_ms(0.999),
                "max": self.max_ms(),
            },
            "codes": self.codes,
            "verdicts": self.verdicts,
        })
    }

    /// The report as lines of text.
    pub fn text(&self) -> String {
        let mut out = format!(
            "{}: {}, {} calls in {:.1} s ({}), {} OK: {:.1}/s\n  latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}\n",
            self.name,
            self.mode,
            self.calls(),
            self.elapsed.as_secs_f64(),
            self.planned,
            self.ok(),
            self.ok_rate(),
            self.latency_ms(0.5),
            self.latency_ms(0.9),
            self.latency_ms(0.99),
            self.latency_ms(0.999),
            self.max_ms(),
        );
        let errors: Vec<String> =
            self.codes.iter().filter(|(code, _)| **code != "OK").map(|(code, n)| format!("{code} {n}")).collect();
        out.push_str(&format!("  errors: {}\n", if errors.is_empty() { "none".to_owned() } else { errors.join(", ") }));
        if !self.verdicts.is_empty() {
            let verdicts: Vec<String> = self.verdicts.iter().map(|(v, n)| format!("{v} {n}")).collect();
            out.push_str(&format!("  verdicts: {}\n", verdicts.join(", ")));
        }
        out
    }
}

/// epass's figure beside a bare baseline's, measured in the same run.
#[derive(Debug, Clone)]
pub struct Comparison {
    /// epass.
    pub epass: Report,
    /// The bare baseline.
    pub baseline: Report,
}

impl Comparison {
    /// epass's rate of `OK` calls over the baseline's.
    pub fn ratio(&self) -> f64 {
        self.epass.ok_rate() / self.baseline.ok_rate()
    }

    /// Both reports and the ratio, as JSON.
    pub fn json(&self) -> Value {
        json!({ "epass": self.epass.json(), "baseline": self.baseline.json(), "ratio": self.ratio() })
    }

    /// Both reports and the ratio, as text.
    pub fn text(&self) -> String {
        format!(
            "{}{}ratio: {:.2}x ({:.1}/s over {:.1}/s)\n",
            self.epass.text(),
            self.baseline.text(),
            self.ratio(),
            self.epass.ok_rate(),
            self.baseline.ok_rate()
        )
    }
}
