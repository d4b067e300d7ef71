//! Columns of text for the listings ctl prints (`ctl schedules`, `ctl destinations`): each
//! column as wide as its widest cell, two spaces apart, no trailing blanks.

use std::fmt::Write;

/// `header` then `rows`, one line each.
pub fn render<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(str::len);
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(header.map(String::from)).chain(rows.iter().cloned()) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            let _ = write!(line, "{cell:<width$}  ", width = widths[i]);
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn columns_are_as_wide_as_their_widest_cell() {
        let out = super::render(["A", "LONG HEADER"], &[["wide cell".into(), "x".into()]]);
        assert_eq!(out, "A          LONG HEADER\nwide cell  x\n");
    }
}
