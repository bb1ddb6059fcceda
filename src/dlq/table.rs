//! Tables that fit a terminal: fixed columns, then a last column (the error message) that gets the
//! rest of the width. Rows are printed as the walk goes, so widths are decided up front, never by
//! looking at all the rows.
//!
//! On a terminal, cells are cut (with `…`) to fit its width. Anywhere else — a pipe, a file, a test —
//! nothing is cut unless `COLUMNS` asks for it: text meant for `grep` should be whole.

use std::io::IsTerminal;

/// Below this, the last column is too narrow to read: the fixed columns shrink to their minimum.
const COMFORTABLE_LAST: usize = 40;
/// The last column never gets narrower than this, even if the line then overflows.
const NARROWEST_LAST: usize = 12;
const GAP: &str = "  ";

/// The width to fit: the terminal's when standard output is one, else `COLUMNS` when set.
pub fn output_width() -> Option<usize> {
    if std::io::stdout().is_terminal()
        && let Some((_, columns)) = console::Term::stdout().size_checked()
    {
        return Some(usize::from(columns));
    }
    std::env::var("COLUMNS").ok()?.trim().parse().ok()
}

#[derive(Clone, Copy, Debug)]
pub struct Column {
    pub title: &'static str,
    /// Width when there is room.
    pub width: usize,
    /// Width on a narrow terminal.
    pub min: usize,
    pub align_right: bool,
}

impl Column {
    pub const fn new(title: &'static str, width: usize, min: usize) -> Column {
        Column {
            title,
            width,
            min,
            align_right: false,
        }
    }

    pub const fn right(mut self) -> Column {
        self.align_right = true;
        self
    }
}

#[derive(Debug)]
pub struct Table {
    columns: Vec<Column>,
    last_title: &'static str,
    /// `None`: no width to fit, nothing is cut.
    last_width: Option<usize>,
}

impl Table {
    pub fn new(mut columns: Vec<Column>, last_title: &'static str, fit: Option<usize>) -> Table {
        let used = |columns: &[Column]| {
            columns.iter().map(|c| c.width + GAP.len()).sum::<usize>()
        };
        let last_width = fit.map(|width| {
            if width.saturating_sub(used(&columns)) < COMFORTABLE_LAST {
                for column in &mut columns {
                    column.width = column.min.max(column.title.chars().count());
                }
            }
            width.saturating_sub(used(&columns)).max(NARROWEST_LAST)
        });
        Table {
            columns,
            last_title,
            last_width,
        }
    }

    pub fn header(&self) -> String {
        let titles: Vec<String> = self.columns.iter().map(|c| c.title.to_owned()).collect();
        self.row(&titles, self.last_title)
    }

    pub fn row(&self, cells: &[String], last: &str) -> String {
        let mut line = String::new();
        for (column, cell) in self.columns.iter().zip(cells) {
            let cell = one_line(cell);
            let cell = match self.last_width {
                Some(_) => cut(&cell, column.width),
                None => cell,
            };
            let pad = column.width.saturating_sub(cell.chars().count());
            if column.align_right {
                line.extend(std::iter::repeat_n(' ', pad));
                line.push_str(&cell);
            } else {
                line.push_str(&cell);
                line.extend(std::iter::repeat_n(' ', pad));
            }
            line.push_str(GAP);
        }
        let last = one_line(last);
        match self.last_width {
            Some(width) => line.push_str(&cut(&last, width)),
            None => line.push_str(&last),
        }
        line.trim_end().to_owned()
    }
}

/// Newlines and tabs would break the table.
fn one_line(text: &str) -> String {
    if text.contains(char::is_control) || text.contains("  ") {
        text.split_whitespace().collect::<Vec<_>>().join(" ")
    } else {
        text.to_owned()
    }
}

fn cut(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    let mut kept: String = text.chars().take(width.saturating_sub(1)).collect();
    kept.push('…');
    kept
}

/// An RFC 3339 time as the table shows it: `2025-01-02 03:04:05` (UTC when the input says `Z`).
pub fn short_time(rfc3339: &str) -> String {
    rfc3339.replacen('T', " ", 1).trim_end_matches('Z').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns() -> Vec<Column> {
        vec![
            Column::new("POS", 3, 3).right(),
            Column::new("EXTERNAL ID", 20, 10),
            Column::new("WHEN", 19, 19),
        ]
    }

    #[test]
    fn rows_fit_the_width() {
        let table = Table::new(columns(), "MESSAGE", Some(100));
        let row = table.row(
            &["1".into(), "an-id-that-is-far-too-long-for-the-column".into(), "2025-01-02 03:04:05".into()],
            &"x".repeat(200),
        );
        assert_eq!(row.chars().count(), 100);
        assert!(row.starts_with("  1  an-id-that-is-far-t…  2025"), "{row}");
        assert!(row.ends_with('…'));
        assert!(table.header().starts_with("POS  EXTERNAL ID "));
    }

    #[test]
    fn narrow_terminals_shrink_the_fixed_columns() {
        let table = Table::new(columns(), "MESSAGE", Some(60));
        let row = table.row(
            &["12".into(), "abcdefghijklmnop".into(), "2025-01-02 03:04:05".into()],
            &"m".repeat(100),
        );
        assert_eq!(row.chars().count(), 60);
        assert!(row.contains(" 12  abcdefghij…  2025-01-02 03:04:05  mmm"), "{row}");
    }

    #[test]
    fn without_a_width_nothing_is_cut_and_lines_stay_lines() {
        let table = Table::new(columns(), "MESSAGE", None);
        let long_id = "i".repeat(40);
        let row = table.row(&["1".into(), long_id.clone(), "-".into()], "line one\nline two\t!");
        assert!(row.contains(&long_id));
        assert!(row.ends_with("line one line two !"), "{row}");
    }

    #[test]
    fn times_are_shortened() {
        assert_eq!(short_time("2025-01-02T03:04:05Z"), "2025-01-02 03:04:05");
    }
}
