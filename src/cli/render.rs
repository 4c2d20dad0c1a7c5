//! Text rendering shared by the commands: one finding as a labelled
//! message with its fix under it.

use std::fmt::Write;

use crate::report::{Finding, Severity};

/// Appends `finding` indented by `indent`, e.g.
/// `  error: get data1: no such volume` / `    fix: ...`.
pub fn finding(out: &mut String, indent: &str, f: &Finding) {
    let label = match f.severity {
        Severity::Fatal => "FATAL",
        Severity::Error => "error",
        Severity::Warning => "warning",
        Severity::Info => "note",
    };
    let _ = writeln!(out, "{indent}{label}: {}", f.message);
    // Notes are context, not problems: their fix stays in the JSON.
    if f.severity == Severity::Info {
        return;
    }
    let pad = " ".repeat(label.len().saturating_sub(3));
    let _ = writeln!(out, "{indent}{pad}fix: {}", f.fix);
}

/// `1 thing` / `2 things`.
pub fn count(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

/// Bytes as a person reads them: `1.5 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `text` with control characters (a NUL or an escape sequence from a
/// hostile bundle's names) shown as `\x00`, so a terminal prints what the
/// bytes were instead of obeying them. Newlines and tabs stay.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() && c != '\n' && c != '\t' {
            let _ = write!(out, "\\x{:02x}", c as u32);
        } else {
            out.push(c);
        }
    }
    out
}
