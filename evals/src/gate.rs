//! The quality gate: a candidate (a quantized artifact) passes when, against its base model on the
//! same text and task items, perplexity rises by at most a few percent, the mean KL divergence
//! and the top-1 disagreement stay small, and task accuracy drops by at most a few points. The
//! policy (thresholds, what to run, per-format overrides) is TOML; the verdict comes with
//! report.json, report.md and a size-versus-quality chart.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use runtime::Model;
use serde::{Deserialize, Serialize};

use crate::error::{EvalError, Result};
use crate::kld::Kld;
use crate::scoring::TaskResult;
use crate::stats::{Estimate, Moments};

/// Pass/fail limits.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Thresholds {
    /// PPL(candidate)/PPL(base) − 1, in percent.
    pub max_ppl_increase_pct: f64,
    pub max_mean_kld: f64,
    /// Positions where both models' most likely token agrees, in percent.
    pub min_top1_pct: f64,
    /// Mean over the tasks of base − candidate accuracy (each task's primary metric), in points.
    pub max_acc_drop_points: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            max_ppl_increase_pct: 3.0,
            max_mean_kld: 0.05,
            min_top1_pct: 90.0,
            max_acc_drop_points: 2.0,
        }
    }
}

/// Thresholds a format overrides (absent ones keep the defaults).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overrides {
    pub max_ppl_increase_pct: Option<f64>,
    pub max_mean_kld: Option<f64>,
    pub min_top1_pct: Option<f64>,
    pub max_acc_drop_points: Option<f64>,
}

/// What the gate evaluates. Defaults keep a gate of a 135M model under a few minutes on two cores.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GateData {
    /// Perplexity text (default: the asset cache's Wikipedia summaries).
    pub text: Option<PathBuf>,
    pub ctx: usize,
    pub chunks: usize,
    pub tasks: Vec<String>,
    /// Items per task.
    pub limit: usize,
    pub shots: Option<usize>,
}

impl Default for GateData {
    fn default() -> Self {
        GateData {
            text: None,
            ctx: 512,
            chunks: 8,
            tasks: vec!["arc_easy".into(), "hellaswag".into(), "piqa".into()],
            limit: 50,
            shots: None,
        }
    }
}

/// A gate policy (gate.toml):
///
/// ```toml
/// [thresholds]             # defaults shown
/// max_ppl_increase_pct = 3.0
/// max_mean_kld = 0.05
/// min_top1_pct = 90.0
/// max_acc_drop_points = 2.0
///
/// [data]
/// text = "wiki.txt"        # relative paths are relative to the policy file
/// ctx = 512
/// chunks = 8
/// tasks = ["arc_easy", "hellaswag", "piqa"]
/// limit = 50
///
/// [formats.Q4_0]           # keyed by the candidate's weight format (see `weight_format`)
/// max_ppl_increase_pct = 8.0
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    pub thresholds: Thresholds,
    pub data: GateData,
    pub formats: BTreeMap<String, Overrides>,
}

impl Policy {
    pub fn load(path: &Path) -> Result<Policy> {
        let text = std::fs::read_to_string(path).map_err(EvalError::io(path))?;
        let mut p: Policy = toml::from_str(&text).map_err(|e| EvalError::Policy {
            path: path.to_owned(),
            msg: e.to_string(),
        })?;
        if let Some(t) = &p.data.text {
            if t.is_relative() {
                p.data.text = Some(path.parent().unwrap_or(Path::new(".")).join(t));
            }
        }
        let bad = |msg: String| EvalError::Policy {
            path: path.to_owned(),
            msg,
        };
        if p.data.chunks == 0 || p.data.limit == 0 {
            return Err(bad("data.chunks and data.limit must be at least 1".into()));
        }
        let check = |name: &str, t: &Thresholds| -> Result<()> {
            let ok = [
                t.max_ppl_increase_pct,
                t.max_mean_kld,
                t.max_acc_drop_points,
            ]
            .iter()
            .all(|v| v.is_finite() && *v >= 0.0)
                && (0.0..=100.0).contains(&t.min_top1_pct);
            if ok {
                Ok(())
            } else {
                Err(bad(format!(
                    "{name}: thresholds must be non-negative (top-1 in 0–100)"
                )))
            }
        };
        check("thresholds", &p.thresholds)?;
        for (k, o) in &p.formats {
            check(&format!("formats.{k}"), &p.thresholds_with(o))?;
        }
        Ok(p)
    }

    fn thresholds_with(&self, o: &Overrides) -> Thresholds {
        let t = self.thresholds;
        Thresholds {
            max_ppl_increase_pct: o.max_ppl_increase_pct.unwrap_or(t.max_ppl_increase_pct),
            max_mean_kld: o.max_mean_kld.unwrap_or(t.max_mean_kld),
            min_top1_pct: o.min_top1_pct.unwrap_or(t.min_top1_pct),
            max_acc_drop_points: o.max_acc_drop_points.unwrap_or(t.max_acc_drop_points),
        }
    }

    /// The thresholds for a candidate of weight format `format`: an override whose key equals the
    /// format, or is its first word ("int4" for "int4 g128 asym"), applies.
    pub fn thresholds_for(&self, format: &str) -> (Thresholds, Option<String>) {
        let first = format.split_whitespace().next().unwrap_or(format);
        let hit = self
            .formats
            .get_key_value(format)
            .or_else(|| self.formats.get_key_value(first));
        match hit {
            Some((k, o)) => (self.thresholds_with(o), Some(k.clone())),
            None => (self.thresholds, None),
        }
    }
}

/// A model's format for reports and per-format thresholds: a GGUF file's llama.cpp file type
/// (general.file_type, e.g. "Q4_K_M", whose tensors mix several types), else the weight format
/// holding most of the linear parameters (`Matrix::format`, e.g. "BF16", "int4 g128 asym").
pub fn weight_format(model: &Model, path: &Path) -> String {
    let file_type = quant::gguf::GgufFile::open(path).ok().and_then(|g| {
        let id = g.get("general.file_type")?.as_i64()?;
        quant::ggml::mix::LlamaFtype::from_id(u32::try_from(id).ok()?)
    });
    if let Some(t) = file_type {
        return t.name().to_string();
    }
    let mut by: BTreeMap<String, usize> = BTreeMap::new();
    for l in &model.layers {
        for k in runtime::model::LinearKind::ALL {
            let w = &l.linear(k).w;
            *by.entry(w.format()).or_default() += w.rows() * w.cols();
        }
    }
    by.into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|(f, _)| f)
        .unwrap_or_else(|| "unknown".into())
}

/// How big a model is.
#[derive(Clone, Debug, Serialize)]
pub struct Size {
    pub params: usize,
    /// Bytes the weights take in their stored form.
    pub weight_bytes: usize,
    pub bits_per_weight: f64,
    /// Bytes on disk (the file, or every file of the folder).
    pub file_bytes: u64,
}

impl Size {
    pub fn of(model: &Model, path: &Path) -> Size {
        let (params, weight_bytes) = (model.n_params(), model.storage_bytes());
        Size {
            params,
            weight_bytes,
            bits_per_weight: weight_bytes as f64 * 8.0 / params.max(1) as f64,
            file_bytes: disk_bytes(path),
        }
    }
}

fn disk_bytes(path: &Path) -> u64 {
    if path.is_dir() {
        std::fs::read_dir(path)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| disk_bytes(&e.path()))
                    .sum()
            })
            .unwrap_or(0)
    } else {
        std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
    }
}

/// Everything measured on one model.
#[derive(Clone, Debug, Serialize)]
pub struct Measured {
    pub path: PathBuf,
    pub source: String,
    pub format: String,
    pub size: Size,
    pub ppl: Estimate,
    /// Against the base (None for the base itself).
    pub kld: Option<Kld>,
    pub tasks: Vec<TaskResult>,
}

/// One pass/fail line.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    /// "ppl", "kld", "top1", "accuracy".
    pub metric: String,
    pub base: f64,
    pub candidate: f64,
    pub delta: f64,
    /// Standard error of `delta` (paired over the same tokens or items).
    pub delta_stderr: f64,
    pub threshold: f64,
    pub pass: bool,
    /// What a failure says.
    pub reason: String,
}

/// Per-task accuracy of a candidate next to the base.
#[derive(Clone, Debug, Serialize)]
pub struct TaskDelta {
    pub task: String,
    pub metric: String,
    pub items: usize,
    pub base: f64,
    pub candidate: f64,
    /// Base − candidate, in points, with the paired standard error.
    pub drop_points: Estimate,
}

#[derive(Clone, Debug, Serialize)]
pub struct Verdict {
    pub candidate: Measured,
    pub thresholds: Thresholds,
    /// The policy's [formats.KEY] applied, if any.
    pub override_key: Option<String>,
    pub checks: Vec<Check>,
    pub tasks: Vec<TaskDelta>,
    pub pass: bool,
}

/// Applies the thresholds to a candidate measured against `base`.
pub fn judge(policy: &Policy, base: &Measured, cand: Measured) -> Verdict {
    let (t, override_key) = policy.thresholds_for(&cand.format);
    let name = cand.path.display().to_string();
    let mut checks = Vec::new();
    let mut check = |metric: &str,
                     b: f64,
                     c: f64,
                     delta: f64,
                     se: f64,
                     threshold: f64,
                     pass: bool,
                     what: String| {
        checks.push(Check {
            metric: metric.into(),
            base: b,
            candidate: c,
            delta,
            delta_stderr: se,
            threshold,
            pass,
            reason: if pass {
                String::new()
            } else {
                format!("{name}: {what}")
            },
        });
    };
    if let Some(k) = &cand.kld {
        let inc = 100.0 * (k.ppl_ratio.value - 1.0);
        check(
            "ppl",
            k.ppl_base.value,
            k.ppl.value,
            inc,
            100.0 * k.ppl_ratio.stderr,
            t.max_ppl_increase_pct,
            inc <= t.max_ppl_increase_pct,
            format!(
                "perplexity rises {inc:.2}% ({:.4} → {:.4}), more than {}%",
                k.ppl_base.value, k.ppl.value, t.max_ppl_increase_pct
            ),
        );
        check(
            "kld",
            0.0,
            k.kld.value,
            k.kld.value,
            k.kld.stderr,
            t.max_mean_kld,
            k.kld.value <= t.max_mean_kld,
            format!(
                "mean KL divergence {:.5} exceeds {}",
                k.kld.value, t.max_mean_kld
            ),
        );
        let top1 = 100.0 * k.top1.value;
        check(
            "top1",
            100.0,
            top1,
            top1 - 100.0,
            100.0 * k.top1.stderr,
            t.min_top1_pct,
            top1 >= t.min_top1_pct,
            format!("top-1 agreement {top1:.2}% is below {}%", t.min_top1_pct),
        );
    }
    let mut tasks = Vec::new();
    for c in &cand.tasks {
        let Some(b) = base.tasks.iter().find(|b| b.task == c.task) else {
            continue;
        };
        let mut d = Moments::default();
        for (x, y) in b.correct.iter().zip(&c.correct) {
            d.push(100.0 * (*x as u8 as f64 - *y as u8 as f64));
        }
        tasks.push(TaskDelta {
            task: c.task.clone(),
            metric: c.primary_name().into(),
            items: c.items,
            base: 100.0 * b.primary_value().value,
            candidate: 100.0 * c.primary_value().value,
            drop_points: d.estimate(),
        });
    }
    if !tasks.is_empty() {
        let n = tasks.len() as f64;
        let mean = |f: &dyn Fn(&TaskDelta) -> f64| tasks.iter().map(f).sum::<f64>() / n;
        let drop = mean(&|t| t.drop_points.value);
        // Tasks are independent samples: the error of their mean.
        let se = (tasks
            .iter()
            .map(|t| t.drop_points.stderr.powi(2))
            .sum::<f64>())
        .sqrt()
            / n;
        check(
            "accuracy",
            mean(&|t| t.base),
            mean(&|t| t.candidate),
            -drop,
            se,
            t.max_acc_drop_points,
            drop <= t.max_acc_drop_points,
            format!(
                "mean accuracy over {} drops {drop:.2} points, more than {}",
                tasks
                    .iter()
                    .map(|t| t.task.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                t.max_acc_drop_points
            ),
        );
    }
    let pass = checks.iter().all(|c| c.pass);
    Verdict {
        candidate: cand,
        thresholds: t,
        override_key,
        checks,
        tasks,
        pass,
    }
}

/// The whole gate result (report.json).
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub pass: bool,
    pub policy: Policy,
    pub base: Measured,
    pub candidates: Vec<Verdict>,
    pub seconds: f64,
}

impl Report {
    /// One line per failed check.
    pub fn failures(&self) -> Vec<String> {
        self.candidates
            .iter()
            .flat_map(|v| {
                v.checks
                    .iter()
                    .filter(|c| !c.pass)
                    .map(|c| c.reason.clone())
            })
            .collect()
    }

    /// Writes report.json, report.md and chart.svg into `dir` (atomically, replacing `dir`).
    pub fn write(&self, dir: &Path) -> Result<()> {
        let out = quant::atomic::AtomicOutput::dir(dir).map_err(EvalError::io(dir))?;
        let put = |name: &str, text: String| {
            let p = out.path().join(name);
            std::fs::write(&p, text).map_err(EvalError::io(dir.join(name)))
        };
        put(
            "report.json",
            serde_json::to_string_pretty(self).expect("the report serializes") + "\n",
        )?;
        put("report.md", self.markdown())?;
        put("chart.svg", self.chart())?;
        out.commit().map_err(EvalError::io(dir))?;
        Ok(())
    }

    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let verdict = if self.pass { "PASS" } else { "FAIL" };
        let _ = writeln!(s, "# Quality gate: {verdict}\n");
        let b = &self.base;
        let _ = writeln!(
            s,
            "Base: `{}` ({}, {:.2} bits/weight). Text: {} chunks of {} tokens. Tasks: {} ({} items each). {:.0} s.\n",
            b.path.display(),
            b.format,
            b.size.bits_per_weight,
            self.policy.data.chunks,
            self.policy.data.ctx,
            self.policy.data.tasks.join(", "),
            self.policy.data.limit,
            self.seconds
        );
        let _ = writeln!(s, "| candidate | format | bits/weight | file MB | thresholds | verdict |\n|---|---|---|---|---|---|");
        for v in &self.candidates {
            let c = &v.candidate;
            let _ = writeln!(
                s,
                "| `{}` | {} | {:.2} | {:.1} | {} | {} |",
                c.path.display(),
                c.format,
                c.size.bits_per_weight,
                c.size.file_bytes as f64 / 1e6,
                v.override_key
                    .as_ref()
                    .map(|k| format!("formats.{k}"))
                    .unwrap_or_else(|| "default".into()),
                if v.pass { "pass" } else { "**FAIL**" }
            );
        }
        let sections = [
            ("ppl", "Perplexity (increase, %)", "≤"),
            ("kld", "Mean KL divergence", "≤"),
            ("top1", "Top-1 agreement (%)", "≥"),
            ("accuracy", "Mean task accuracy (change, points)", "drop ≤"),
        ];
        for (metric, title, rel) in sections {
            let rows: Vec<(&Verdict, &Check)> = self
                .candidates
                .iter()
                .filter_map(|v| v.checks.iter().find(|c| c.metric == metric).map(|c| (v, c)))
                .collect();
            if rows.is_empty() {
                continue;
            }
            let _ = writeln!(s, "\n## {title}\n\n| candidate | base | candidate | delta | threshold | result |\n|---|---|---|---|---|---|");
            for (v, c) in rows {
                let _ = writeln!(
                    s,
                    "| `{}` | {:.4} | {:.4} | {:+.4} ± {:.4} | {rel} {} | {} |",
                    v.candidate.path.display(),
                    c.base,
                    c.candidate,
                    c.delta,
                    c.delta_stderr,
                    c.threshold,
                    if c.pass { "pass" } else { "**FAIL**" }
                );
            }
        }
        if self.candidates.iter().any(|v| !v.tasks.is_empty()) {
            let _ = writeln!(s, "\n## Accuracy per task (points)\n\n| candidate | task | metric | items | base | candidate | drop |\n|---|---|---|---|---|---|---|");
            for v in &self.candidates {
                for t in &v.tasks {
                    let _ = writeln!(
                        s,
                        "| `{}` | {} | {} | {} | {:.2} | {:.2} | {:+.2} ± {:.2} |",
                        v.candidate.path.display(),
                        t.task,
                        t.metric,
                        t.items,
                        t.base,
                        t.candidate,
                        t.drop_points.value,
                        t.drop_points.stderr
                    );
                }
            }
        }
        let fails = self.failures();
        if !fails.is_empty() {
            let _ = writeln!(s, "\n## Failures\n");
            for f in fails {
                let _ = writeln!(s, "- {f}");
            }
        }
        let _ = writeln!(s, "\n![size vs quality](chart.svg)");
        s
    }

    /// Two panels, bits per weight against perplexity and against mean KLD, one point per model.
    pub fn chart(&self) -> String {
        let mut pts = vec![Point {
            label: "base".into(),
            bpw: self.base.size.bits_per_weight,
            ppl: self.base.ppl.value,
            kld: 0.0,
            pass: None,
        }];
        for (i, v) in self.candidates.iter().enumerate() {
            let c = &v.candidate;
            pts.push(Point {
                label: format!("{} {}", i + 1, c.format),
                bpw: c.size.bits_per_weight,
                ppl: c.kld.as_ref().map_or(c.ppl.value, |k| k.ppl.value),
                kld: c.kld.as_ref().map_or(0.0, |k| k.kld.value),
                pass: Some(v.pass),
            });
        }
        svg_chart(&pts)
    }
}

struct Point {
    label: String,
    bpw: f64,
    ppl: f64,
    kld: f64,
    pass: Option<bool>,
}

/// "Nice" tick values covering [lo, hi].
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = (hi - lo).max(1e-12);
    let raw = span / 4.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| span / s <= 5.0)
        .unwrap_or(10.0 * mag);
    let start = (lo / step).floor() * step;
    (0..=((hi - start) / step).ceil() as usize)
        .map(|i| start + i as f64 * step)
        .collect()
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn svg_chart(pts: &[Point]) -> String {
    let (w, h, pad) = (360.0, 260.0, 50.0);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n",
        2.0 * w,
        h + 30.0
    );
    let bpw: Vec<f64> = pts.iter().map(|p| p.bpw).collect();
    let (xlo, xhi) = bounds(&bpw, false);
    for (panel, (title, ys)) in [
        ("perplexity", pts.iter().map(|p| p.ppl).collect::<Vec<_>>()),
        ("mean KL divergence", pts.iter().map(|p| p.kld).collect()),
    ]
    .into_iter()
    .enumerate()
    {
        let ox = panel as f64 * w;
        let (ylo, yhi) = bounds(&ys, panel == 1);
        let xt = ticks(xlo, xhi);
        let yt = ticks(ylo, yhi);
        let (x0, x1) = (xt[0], *xt.last().unwrap());
        let (y0, y1) = (yt[0], *yt.last().unwrap());
        let px = |x: f64| ox + pad + (x - x0) / (x1 - x0).max(1e-12) * (w - 1.5 * pad);
        let py = |y: f64| 20.0 + (h - pad) - (y - y0) / (y1 - y0).max(1e-12) * (h - pad - 10.0);
        let _ = writeln!(s, "<text x=\"{}\" y=\"14\" text-anchor=\"middle\" font-size=\"13\">{title} vs bits per weight</text>", ox + w / 2.0);
        let _ = writeln!(
            s,
            "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>",
            px(x0),
            py(y0),
            px(x1),
            py(y0)
        );
        let _ = writeln!(
            s,
            "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>",
            px(x0),
            py(y0),
            px(x0),
            py(y1)
        );
        for &t in &xt {
            let _ = writeln!(
                s,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                px(t),
                py(y0) + 14.0,
                fmt_tick(t)
            );
        }
        for &t in &yt {
            let _ = writeln!(
                s,
                "<line x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#ddd\"/>",
                px(x0),
                py(t),
                px(x1),
                py(t)
            );
            let _ = writeln!(
                s,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                px(x0) - 4.0,
                py(t) + 4.0,
                fmt_tick(t)
            );
        }
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">bits per weight</text>",
            ox + w / 2.0,
            h + 24.0
        );
        for (p, &y) in pts.iter().zip(&ys) {
            let color = match p.pass {
                None => "#1f5fbf",
                Some(true) => "#1a8f3a",
                Some(false) => "#c62828",
            };
            let _ = writeln!(
                s,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"4\" fill=\"{color}\"><title>{}: {:.3} bpw, {y:.4}</title></circle>\n<text x=\"{:.1}\" y=\"{:.1}\" fill=\"{color}\">{}</text>",
                px(p.bpw),
                py(y),
                esc(&p.label),
                p.bpw,
                px(p.bpw) + 6.0,
                py(y) - 6.0,
                esc(&p.label)
            );
        }
    }
    s + "</svg>\n"
}

fn bounds(v: &[f64], from_zero: bool) -> (f64, f64) {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let m = ((hi - lo) * 0.1).max(hi.abs() * 0.02).max(1e-6);
    (if from_zero { 0.0 } else { lo - m }, hi + m)
}

fn fmt_tick(t: f64) -> String {
    let s = format!("{t:.4}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_defaults_overrides_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("gate.toml");
        std::fs::write(
            &p,
            "[thresholds]\nmax_mean_kld = 0.1\n[data]\ntext = \"t.txt\"\nlimit = 7\n[formats.Q4_0]\nmax_ppl_increase_pct = 8.0\n[formats.int4]\nmin_top1_pct = 80\n",
        )
        .unwrap();
        let pol = Policy::load(&p).unwrap();
        assert_eq!(pol.thresholds.max_mean_kld, 0.1);
        assert_eq!(pol.thresholds.max_ppl_increase_pct, 3.0);
        assert_eq!(pol.data.limit, 7);
        assert_eq!(pol.data.chunks, GateData::default().chunks);
        assert_eq!(
            pol.data.text.as_deref(),
            Some(dir.path().join("t.txt").as_path())
        );
        let (t, k) = pol.thresholds_for("Q4_0");
        assert_eq!(
            (t.max_ppl_increase_pct, t.max_mean_kld, k.as_deref()),
            (8.0, 0.1, Some("Q4_0"))
        );
        let (t, k) = pol.thresholds_for("int4 g128 asym");
        assert_eq!((t.min_top1_pct, k.as_deref()), (80.0, Some("int4")));
        assert_eq!(pol.thresholds_for("Q8_0").1, None);
        for (text, needle) in [
            ("[thresholds]\nmax_kld = 1\n", "unknown field `max_kld`"),
            ("[thresholds]\nmin_top1_pct = 120\n", "thresholds"),
            ("[data]\nlimit = 0\n", "at least 1"),
            ("[formats.Q4_0]\nmax_mean_kld = -1\n", "formats.Q4_0"),
            ("not toml", "gate.toml"),
        ] {
            std::fs::write(&p, text).unwrap();
            let e = Policy::load(&p).unwrap_err().to_string();
            assert!(e.contains(needle) && e.contains("gate.toml"), "{e}");
        }
    }

    #[test]
    fn ticks_cover_the_range_with_round_steps() {
        let t = ticks(3.9, 16.2);
        assert!(t[0] <= 3.9 && *t.last().unwrap() >= 16.2, "{t:?}");
        assert!(t.len() <= 7);
        let step = t[1] - t[0];
        assert!([1.0, 2.0, 2.5, 5.0]
            .iter()
            .any(|m| (step / m).log10().fract().abs() < 1e-9));
        assert_eq!(fmt_tick(2.5), "2.5");
        assert_eq!(fmt_tick(10.0), "10");
    }
}
