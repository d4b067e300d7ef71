//! Progress bars for `ctl send`, `ctl receive` and `ctl bench` (indicatif), shown only when
//! stdout is a terminal. They are drawn on stderr and cleared when the run ends, so what a run
//! prints is the same with or without them, and scripts reading stdout see nothing new.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::time::Duration;

/// A run of known length.
const BAR: &str = "{spinner} {prefix} [{bar:30}] {pos}/{len} ({per_sec}, {eta} left) {msg}";
/// A run until something stops it (`ctl receive --count 0`).
const SPINNER: &str = "{spinner} {prefix} {pos} ({per_sec}) {msg}";

/// How often a bar redraws on its own (for the rate and ETA while nothing moves).
const TICK: Duration = Duration::from_millis(100);

/// A bar for a run of `len` items (a spinner with a count when `None`), called `what`, or a
/// hidden one when stdout is not a terminal.
pub fn bar(len: Option<u64>, what: &str) -> ProgressBar {
    if !std::io::stdout().is_terminal() {
        return ProgressBar::hidden();
    }
    let (bar, template) = match len {
        Some(len) => (ProgressBar::new(len), BAR),
        None => (ProgressBar::new_spinner(), SPINNER),
    };
    // The templates are constants: a failure here is a bug caught by the unit test below.
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(what.to_string());
    bar.enable_steady_tick(TICK);
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_templates_parse() {
        for template in [BAR, SPINNER] {
            ProgressStyle::with_template(template).unwrap();
        }
    }
}
