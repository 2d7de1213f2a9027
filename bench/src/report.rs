//! The table every scenario adds its figures to: scenario, figure, value,
//! the baseline measured in the same run, the target, and whether it was
//! met. Targets are printed, never asserted: a missed one is a finding.
//!
//! `BENCH.md` keeps hand-written analysis around the generated part, so
//! [`Report::write_into`] replaces only what sits between two markers.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::identities::Issuance;
use crate::plan::Plan;

/// Opens the generated section of `BENCH.md`.
const BEGIN_MARKER: &str = "<!-- restpipe-bench: generated, do not edit by hand -->";
/// Closes it.
const END_MARKER: &str = "<!-- restpipe-bench: end -->";

/// `BENCH.md` at the workspace root.
pub fn default_bench_md() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../BENCH.md")
}

/// Whether a figure met its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Target met.
    Met,
    /// Target missed.
    Missed,
    /// A figure without a target, shown for context.
    Info,
    /// The measurement could not be made (the row says why).
    NotRun,
}

impl Verdict {
    /// `Met` when `met`, else `Missed`.
    pub fn from(met: bool) -> Self {
        if met { Self::Met } else { Self::Missed }
    }

    fn cell(self) -> &'static str {
        match self {
            Self::Met => "yes",
            Self::Missed => "**no**",
            Self::Info => "—",
            Self::NotRun => "not run",
        }
    }
}

/// One line of the table.
#[derive(Debug, Clone)]
pub struct Row {
    scenario: String,
    figure: String,
    value: String,
    baseline: String,
    target: String,
    verdict: Verdict,
}

impl Row {
    /// A figure of `scenario` with no baseline and no target yet.
    pub fn new(scenario: &str, figure: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            scenario: scenario.to_owned(),
            figure: figure.into(),
            value: value.into(),
            baseline: "—".to_owned(),
            target: "—".to_owned(),
            verdict: Verdict::Info,
        }
    }

    /// The same figure measured on the baseline.
    pub fn baseline(mut self, baseline: impl Into<String>) -> Self {
        self.baseline = baseline.into();
        self
    }

    /// The target and whether it was met.
    pub fn target(mut self, target: impl Into<String>, met: bool) -> Self {
        self.target = target.into();
        self.verdict = Verdict::from(met);
        self
    }

    /// The target, for a figure that could not be judged (not run, or not
    /// meaningful in this mode).
    pub fn target_unjudged(mut self, target: impl Into<String>, verdict: Verdict) -> Self {
        self.target = target.into();
        self.verdict = verdict;
        self
    }
}

/// All figures of a run.
#[derive(Debug)]
pub struct Report {
    mode: &'static str,
    cores: usize,
    /// The benchmark's arguments, to say how the table was made.
    arguments: String,
    rows: Vec<Row>,
    notes: Vec<String>,
    elapsed: Option<Duration>,
}

impl Report {
    /// An empty report for `plan`, made by running the benchmark with
    /// `arguments`.
    pub fn new(plan: &Plan, arguments: &str) -> Self {
        Self {
            mode: plan.mode(),
            cores: plan.cores,
            arguments: arguments.to_owned(),
            rows: Vec::new(),
            notes: Vec::new(),
            elapsed: None,
        }
    }

    /// Adds a figure.
    pub fn add(&mut self, row: Row) {
        eprintln!("   {}: {} = {}", row.scenario, row.figure, row.value);
        self.rows.push(row);
    }

    /// Records that a scenario broke (the benchmark, not the pipe).
    pub fn not_run(&mut self, scenario: &str, why: &str) {
        self.add(
            Row::new(scenario, "scenario", format!("not run: {why}"))
                .target_unjudged("—", Verdict::NotRun),
        );
    }

    /// Adds a line under the table (how something was measured).
    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    /// Records the run's total time and the cost of issuing identities.
    pub fn finish(&mut self, elapsed: Duration, issuance: Option<Issuance>) {
        self.elapsed = Some(elapsed);
        if let Some(issued) = issuance {
            let rate = issued.count as f64 / issued.took.as_secs_f64().max(1e-9);
            self.note(format!(
                "Issuing the {} client identities (ECDSA P-256 key, certificate, rustls config) took {:.1} s on {} threads ({} per second); it is not part of any figure.",
                thousands(issued.count as f64),
                issued.took.as_secs_f64(),
                issued.threads,
                thousands(rate),
            ));
        }
    }

    /// Targets missed, as `scenario: figure` lines.
    pub fn missed(&self) -> Vec<String> {
        self.rows
            .iter()
            .filter(|row| row.verdict == Verdict::Missed)
            .map(|row| format!("{}: {}", row.scenario, row.figure))
            .collect()
    }

    /// The generated section: when and where, the table, the notes.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let now = time::OffsetDateTime::now_utc();
        let date = format!(
            "{}-{:02}-{:02} {:02}:{:02} UTC",
            now.year(),
            u8::from(now.month()),
            now.day(),
            now.hour(),
            now.minute()
        );
        let _ = writeln!(
            out,
            "Run of `cargo run --release -p restpipe-bench -- {}` on {date}: {} cores (`available_parallelism`){}, {} mode{}.",
            self.arguments,
            self.cores,
            cpu_model().map(|m| format!(", {m}")).unwrap_or_default(),
            self.mode,
            self.elapsed
                .map(|e| format!(", {:.1} min in all", e.as_secs_f64() / 60.0))
                .unwrap_or_default(),
        );
        out.push('\n');
        out.push_str("| scenario | figure | restpipe | baseline | target | met |\n");
        out.push_str("|---|---|---|---|---|---|\n");
        for row in &self.rows {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} |",
                cell(&row.scenario),
                cell(&row.figure),
                cell(&row.value),
                cell(&row.baseline),
                cell(&row.target),
                row.verdict.cell()
            );
        }
        let missed = self.missed();
        out.push('\n');
        if missed.is_empty() {
            out.push_str("Every target with a verdict was met.\n");
        } else {
            let _ = writeln!(out, "Targets missed: {}.", missed.join("; "));
        }
        if !self.notes.is_empty() {
            out.push('\n');
            for note in &self.notes {
                let _ = writeln!(out, "- {note}");
            }
        }
        out
    }

    /// Writes the generated section into `path`: between the markers of an
    /// existing file (everything else kept), or as a new file.
    pub fn write_into(&self, path: &Path) -> anyhow::Result<()> {
        let section = format!("{BEGIN_MARKER}\n{}{END_MARKER}\n", self.render());
        let existing = std::fs::read_to_string(path).ok();
        let text = match existing.as_deref().and_then(|text| splice(text, &section)) {
            Some(text) => text,
            None => format!("# restpipe benchmark\n\n{section}"),
        };
        std::fs::write(path, text)?;
        Ok(())
    }
}

/// `text` with the part between the markers (inclusive) replaced by
/// `section`, or `None` when the markers are missing.
fn splice(text: &str, section: &str) -> Option<String> {
    let begin = text.find(BEGIN_MARKER)?;
    let end = text[begin..].find(END_MARKER)? + begin + END_MARKER.len();
    let rest = text[end..].strip_prefix('\n').unwrap_or(&text[end..]);
    Some(format!("{}{section}{rest}", &text[..begin]))
}

/// A table cell: no pipes or line breaks.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace(['\n', '\r'], " ")
}

/// The CPU model from `/proc/cpuinfo`, for the header.
fn cpu_model() -> Option<String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    cpuinfo.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == "model name").then(|| value.trim().to_owned())
    })
}

/// `12345.6` as `12,346`.
pub fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// A latency: `87 µs`, `1.25 ms`, `2.50 s`.
pub fn latency(duration: Duration) -> String {
    let micros = duration.as_secs_f64() * 1e6;
    if micros < 1_000.0 {
        format!("{micros:.0} µs")
    } else if micros < 1_000_000.0 {
        format!("{:.2} ms", micros / 1e3)
    } else {
        format!("{:.2} s", micros / 1e6)
    }
}

/// A size: `512 B`, `28.4 KiB`, `63.1 MiB`.
pub fn size(bytes: f64) -> String {
    let sign = if bytes < 0.0 { "-" } else { "" };
    let bytes = bytes.abs();
    if bytes < 1024.0 {
        format!("{sign}{bytes:.0} B")
    } else if bytes < 1024.0 * 1024.0 {
        format!("{sign}{:.1} KiB", bytes / 1024.0)
    } else if bytes < 1024.0 * 1024.0 * 1024.0 {
        format!("{sign}{:.1} MiB", bytes / (1024.0 * 1024.0))
    } else {
        format!("{sign}{:.2} GiB", bytes / (1024.0 * 1024.0 * 1024.0))
    }
}

/// `part` as a percentage of `whole`: `61%`.
pub fn percent(part: f64, whole: f64) -> String {
    if whole <= 0.0 {
        return "—".to_owned();
    }
    format!("{:.0}%", 100.0 * part / whole)
}

/// `text` cut to `max` characters, for error messages in cells.
pub fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let cut: String = text.chars().take(max).collect();
    format!("{cut}…")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(thousands(0.4), "0");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(12_345.6), "12,346");
        assert_eq!(thousands(1_234_567.0), "1,234,567");
        assert_eq!(latency(Duration::from_micros(87)), "87 µs");
        assert_eq!(latency(Duration::from_micros(1_250)), "1.25 ms");
        assert_eq!(latency(Duration::from_millis(2_500)), "2.50 s");
        assert_eq!(size(512.0), "512 B");
        assert_eq!(size(29_082.0), "28.4 KiB");
        assert_eq!(size(-2.0 * 1024.0 * 1024.0), "-2.0 MiB");
        assert_eq!(percent(61.0, 100.0), "61%");
        assert_eq!(percent(1.0, 0.0), "—");
        assert_eq!(clip("abcdef", 3), "abc…");
    }

    #[test]
    fn the_generated_section_is_replaced_and_the_rest_kept() {
        let old =
            format!("# t\n\nintro\n\n{BEGIN_MARKER}\nold table\n{END_MARKER}\n\n## analysis\n");
        let new = splice(&old, &format!("{BEGIN_MARKER}\nnew\n{END_MARKER}\n")).unwrap();
        assert_eq!(
            new,
            format!("# t\n\nintro\n\n{BEGIN_MARKER}\nnew\n{END_MARKER}\n\n## analysis\n")
        );
        assert!(splice("no markers", "x").is_none());
    }

    #[test]
    fn cells_cannot_break_the_table() {
        assert_eq!(cell("a|b\nc"), "a\\|b c");
    }
}
