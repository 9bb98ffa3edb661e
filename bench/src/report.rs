//! What a run found: rows (service next to the direct upstream call), targets, errors; printed
//! as tables and written as JSON.

use serde::Serialize;

/// One measured figure, for the service and (where it has one) the direct call to the fake.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub scenario: String,
    pub measure: String,
    pub unit: String,
    pub service: Option<f64>,
    pub direct: Option<f64>,
    /// service - direct
    pub added: Option<f64>,
    /// service / direct
    pub ratio: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Target {
    pub name: String,
    /// e.g. "<= 0.5 ms"
    pub target: String,
    pub measured: Option<f64>,
    pub unit: String,
    /// `None` when not judged (quick mode, or the scenario did not run).
    pub met: Option<bool>,
    pub note: String,
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub rows: Vec<Row>,
    pub targets: Vec<Target>,
    pub errors: Vec<String>,
    /// Free-form details per scenario (counts, fits, samples).
    pub details: serde_json::Map<String, serde_json::Value>,
}

impl Report {
    /// A figure measured on both sides.
    pub fn pair(&mut self, scenario: &str, measure: &str, unit: &str, service: f64, direct: f64) {
        self.rows.push(Row {
            scenario: scenario.into(),
            measure: measure.into(),
            unit: unit.into(),
            service: Some(service),
            direct: Some(direct),
            added: Some(service - direct),
            ratio: (direct != 0.0).then(|| service / direct),
        });
    }

    /// A figure of the service alone.
    pub fn single(&mut self, scenario: &str, measure: &str, unit: &str, service: f64) {
        self.rows.push(Row {
            scenario: scenario.into(),
            measure: measure.into(),
            unit: unit.into(),
            service: Some(service),
            direct: None,
            added: None,
            ratio: None,
        });
    }

    pub fn find(&self, scenario: &str, measure: &str) -> Option<&Row> {
        self.rows
            .iter()
            .find(|r| r.scenario == scenario && r.measure == measure)
    }

    pub fn error(&mut self, scenario: &str, count: u64, samples: &[String]) {
        if count == 0 {
            return;
        }
        let mut text = format!("{scenario}: {count} unexpected answer(s)");
        for s in samples {
            text.push_str("\n    ");
            text.push_str(s);
        }
        self.errors.push(text);
    }

    pub fn detail(&mut self, key: &str, value: serde_json::Value) {
        self.details.insert(key.into(), value);
    }

    pub fn print(&self) {
        let mut table = vec![[
            "scenario".to_owned(),
            "measure".to_owned(),
            "unit".to_owned(),
            "service".to_owned(),
            "direct".to_owned(),
            "added".to_owned(),
            "ratio".to_owned(),
        ]];
        for r in &self.rows {
            table.push([
                r.scenario.clone(),
                r.measure.clone(),
                r.unit.clone(),
                num(r.service),
                num(r.direct),
                num(r.added),
                r.ratio.map_or("-".into(), |x| format!("{x:.2}x")),
            ]);
        }
        print_table(&table, &[false, false, false, true, true, true, true]);
        println!();
        let mut targets = vec![[
            "target".to_owned(),
            "wanted".to_owned(),
            "measured".to_owned(),
            "verdict".to_owned(),
            "note".to_owned(),
        ]];
        for t in &self.targets {
            targets.push([
                t.name.clone(),
                t.target.clone(),
                t.measured
                    .map_or("-".into(), |m| format!("{} {}", fmt(m), t.unit)),
                match t.met {
                    Some(true) => "met".into(),
                    Some(false) => "MISSED".into(),
                    None => "not judged".into(),
                },
                t.note.clone(),
            ]);
        }
        print_table(&targets, &[false, false, true, false, false]);
        if !self.errors.is_empty() {
            println!();
            println!("ERRORS:");
            for e in &self.errors {
                println!("  {e}");
            }
        }
    }
}

fn num(x: Option<f64>) -> String {
    x.map_or("-".into(), fmt)
}

/// Three significant decimals for small figures, fewer for large ones.
pub fn fmt(x: f64) -> String {
    let a = x.abs();
    if a >= 1000.0 {
        format!("{x:.0}")
    } else if a >= 100.0 {
        format!("{x:.1}")
    } else if a >= 10.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

fn print_table<const N: usize>(rows: &[[String; N]], right: &[bool; N]) {
    let mut widths = [0usize; N];
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    for (k, row) in rows.iter().enumerate() {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if right[i] {
                    format!("{c:>w$}", w = widths[i])
                } else {
                    format!("{c:<w$}", w = widths[i])
                }
            })
            .collect();
        println!("| {} |", cells.join(" | "));
        if k == 0 {
            let rule: Vec<String> = widths
                .iter()
                .enumerate()
                .map(|(i, w)| {
                    if right[i] {
                        format!("{}:", "-".repeat(w.saturating_sub(1).max(2)))
                    } else {
                        "-".repeat((*w).max(3))
                    }
                })
                .collect();
            println!("| {} |", rule.join(" | "));
        }
    }
}
