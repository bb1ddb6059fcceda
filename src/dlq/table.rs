//! Tables that fit a terminal: a few short columns, then a last column (the error message) that gets
//! the rest of the width.
//!
//! Rows are printed as the walk goes, so the widths are decided from the first [`SAMPLE_ROWS`] rows
//! (held back until then) rather than from all of them: columns as wide as their content, up to a
//! cap. On a terminal, cells are cut to fit its width, and the message is cut in the middle, since its
//! end (a contract URN, a field path) is as telling as its start; on a narrow one (80 columns) the
//! message goes on a line of its own under its row. Anywhere else — a pipe, a file, a
//! test — nothing is cut unless `COLUMNS` asks for it: text meant for `grep` should be whole.

use std::io::IsTerminal;

/// Rows looked at before the widths are fixed.
pub(crate) const SAMPLE_ROWS: usize = 200;
/// Below this, the last column is too narrow to read: the other columns shrink to their minimum.
const COMFORTABLE_LAST: usize = 50;
/// Narrower than this, the last column goes on a line of its own under each row.
const NARROWEST_LAST: usize = 30;
/// Indent of the last column when it has a line of its own.
const WRAP_INDENT: &str = "    ";
const GAP: &str = "  ";

/// The width to fit: the terminal's when standard output is one, else `COLUMNS` when set.
pub(crate) fn output_width() -> Option<usize> {
    if std::io::stdout().is_terminal()
        && let Some((_, columns)) = console::Term::stdout().size_checked()
    {
        return Some(usize::from(columns));
    }
    std::env::var("COLUMNS").ok()?.trim().parse().ok()
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Column {
    pub(crate) title: &'static str,
    /// Widest the column gets, however long its content.
    pub(crate) max: usize,
    /// Narrowest it gets on a narrow terminal.
    pub(crate) min: usize,
    pub(crate) align_right: bool,
}

impl Column {
    pub(crate) const fn new(title: &'static str, max: usize, min: usize) -> Column {
        Column {
            title,
            max,
            min,
            align_right: false,
        }
    }

    pub(crate) const fn right(mut self) -> Column {
        self.align_right = true;
        self
    }
}

/// A row: the cells of the short columns, and the last column's text.
pub(crate) type Row = (Vec<String>, String);

#[derive(Debug)]
pub(crate) struct Table {
    columns: Vec<Column>,
    widths: Vec<usize>,
    last_title: &'static str,
    /// `None`: no width to fit, nothing is cut.
    last_width: Option<usize>,
    /// The terminal is too narrow: the last column goes under each row.
    wrap: bool,
}

impl Table {
    /// Widths from the sample rows' content (between the title's width and each column's `max`),
    /// shrunk towards each column's `min` when `fit` leaves the last column too little.
    pub(crate) fn new(
        columns: Vec<Column>,
        last_title: &'static str,
        sample: &[Row],
        fit: Option<usize>,
    ) -> Table {
        let mut widths: Vec<usize> = columns
            .iter()
            .enumerate()
            .map(|(index, column)| {
                let content = sample
                    .iter()
                    .filter_map(|(cells, _)| cells.get(index))
                    .map(|cell| one_line(cell).chars().count())
                    .max()
                    .unwrap_or(0);
                content.min(column.max).max(column.title.chars().count())
            })
            .collect();
        let used = |widths: &[usize]| widths.iter().map(|w| w + GAP.len()).sum::<usize>();
        let mut wrap = false;
        let last_width = fit.map(|width| {
            if width.saturating_sub(used(&widths)) < COMFORTABLE_LAST {
                for (column, current) in columns.iter().zip(&mut widths) {
                    *current = (*current).min(column.min.max(column.title.chars().count()));
                }
            }
            let left = width.saturating_sub(used(&widths));
            if left < NARROWEST_LAST {
                wrap = true;
                width.saturating_sub(WRAP_INDENT.len()).max(NARROWEST_LAST)
            } else {
                left
            }
        });
        Table {
            columns,
            widths,
            last_title,
            last_width,
            wrap,
        }
    }

    pub(crate) fn header(&self) -> String {
        let titles: Vec<String> = self.columns.iter().map(|c| c.title.to_owned()).collect();
        self.row(&titles, self.last_title)
    }

    pub(crate) fn row(&self, cells: &[String], last: &str) -> String {
        let mut line = String::new();
        for ((column, width), cell) in self.columns.iter().zip(&self.widths).zip(cells) {
            let cell = one_line(cell);
            let cell = match self.last_width {
                Some(_) => cut_end(&cell, *width),
                None => cell,
            };
            let pad = width.saturating_sub(cell.chars().count());
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
        let last = match self.last_width {
            Some(width) => cut_middle(&last, width),
            None => last,
        };
        if self.wrap {
            format!("{}\n{WRAP_INDENT}{last}", line.trim_end())
        } else {
            line.push_str(&last);
            line.trim_end().to_owned()
        }
    }
}

/// Holds rows back until the widths can be decided, then prints as they come.
pub(crate) struct Printer {
    columns: Vec<Column>,
    last_title: &'static str,
    fit: Option<usize>,
    held: Vec<Row>,
    table: Option<Table>,
}

impl Printer {
    pub(crate) fn new(
        columns: Vec<Column>,
        last_title: &'static str,
        fit: Option<usize>,
    ) -> Printer {
        Printer {
            columns,
            last_title,
            fit,
            held: Vec::new(),
            table: None,
        }
    }

    /// Takes a row; returns the lines now ready to print (none while the sample is being gathered).
    pub(crate) fn push(&mut self, row: Row) -> Vec<String> {
        match &self.table {
            Some(table) => vec![table.row(&row.0, &row.1)],
            None => {
                self.held.push(row);
                if self.held.len() < SAMPLE_ROWS {
                    Vec::new()
                } else {
                    self.release()
                }
            }
        }
    }

    /// The lines still held back (with the header, if nothing was printed yet).
    pub(crate) fn finish(&mut self) -> Vec<String> {
        match self.table {
            Some(_) => Vec::new(),
            None => self.release(),
        }
    }

    fn release(&mut self) -> Vec<String> {
        let table = Table::new(self.columns.clone(), self.last_title, &self.held, self.fit);
        let mut lines = vec![table.header()];
        lines.extend(
            self.held
                .drain(..)
                .map(|(cells, last)| table.row(&cells, &last)),
        );
        self.table = Some(table);
        lines
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

fn cut_end(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    let mut kept: String = text.chars().take(width.saturating_sub(1)).collect();
    kept.push('…');
    kept
}

/// Keeps the start and the end: `Caller is not authorized … urn:li:contract:9`.
fn cut_middle(text: &str, width: usize) -> String {
    let length = text.chars().count();
    if length <= width {
        return text.to_owned();
    }
    let kept = width.saturating_sub(1);
    let tail = kept / 2;
    let head = kept - tail;
    let mut cut: String = text.chars().take(head).collect();
    cut.push('…');
    cut.extend(text.chars().skip(length - tail));
    cut
}

/// An RFC 3339 time as the table shows it: `2025-01-02 03:04:05` (UTC when the input says `Z`).
pub(crate) fn short_time(rfc3339: &str) -> String {
    rfc3339
        .replacen('T', " ", 1)
        .trim_end_matches('Z')
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns() -> Vec<Column> {
        vec![
            Column::new("POS", 6, 3).right(),
            Column::new("EXTERNAL ID", 24, 12),
            Column::new("WHEN", 19, 19),
        ]
    }

    fn row(cells: [&str; 3], last: &str) -> Row {
        (cells.map(str::to_owned).to_vec(), last.to_owned())
    }

    #[test]
    fn columns_are_as_wide_as_their_content_up_to_their_cap() {
        let sample = [
            row(["1", "JOB-1", "2025-01-02 03:04:05"], "m"),
            row(["2", "JOB-22", "-"], "m"),
        ];
        let table = Table::new(columns(), "MESSAGE", &sample, None);
        assert_eq!(
            table.header(),
            "POS  EXTERNAL ID  WHEN                 MESSAGE"
        );
        assert_eq!(
            table.row(&sample[1].0, "a message"),
            "  2  JOB-22       -                    a message"
        );
        let long = [row(["1", &"i".repeat(40), "-"], "m")];
        let capped = Table::new(columns(), "MESSAGE", &long, Some(200));
        assert!(
            capped
                .row(&long[0].0, "m")
                .contains(&format!("{}…  -", "i".repeat(23)))
        );
    }

    #[test]
    fn rows_fit_the_terminal_and_keep_the_end_of_the_message() {
        let sample = [row(["1", "JOB-1", "2025-01-02 03:04:05"], "")];
        let table = Table::new(columns(), "MESSAGE", &sample, Some(80));
        let message = "Caller is not authorized to access the jobs for contract: urn:li:contract:9";
        let line = table.row(&sample[0].0, message);
        assert_eq!(line.chars().count(), 80, "{line}");
        assert!(line.contains("Caller is not"), "{line}");
        assert!(line.ends_with("urn:li:contract:9"), "{line}");
        assert!(line.contains('…'));
    }

    #[test]
    fn narrow_terminals_shrink_the_other_columns_then_wrap() {
        let sample = [row(
            ["12", "abcdefghijklmnopqrst", "2025-01-02 03:04:05"],
            "",
        )];
        let table = Table::new(columns(), "MESSAGE", &sample, Some(90));
        let line = table.row(&sample[0].0, &"m".repeat(100));
        assert_eq!(line.chars().count(), 90);
        assert!(
            line.contains(" 12  abcdefghijk…  2025-01-02 03:04:05  mmm"),
            "{line}"
        );
        let table = Table::new(columns(), "MESSAGE", &sample, Some(60));
        let message = format!("start {} end", "m".repeat(100));
        let row = table.row(&sample[0].0, &message);
        let lines: Vec<&str> = row.lines().collect();
        assert_eq!(lines.len(), 2, "{row}");
        assert!(lines[0].ends_with("2025-01-02 03:04:05"), "{row}");
        assert!(
            lines[1].starts_with("    start") && lines[1].ends_with("end"),
            "{row}"
        );
        assert_eq!(lines[1].chars().count(), 60);
    }

    #[test]
    fn without_a_width_nothing_is_cut_and_lines_stay_lines() {
        let long_id = "i".repeat(40);
        let sample = [row(["1", &long_id, "-"], "")];
        let table = Table::new(columns(), "MESSAGE", &sample, None);
        let line = table.row(&sample[0].0, "line one\nline two\t!");
        assert!(line.contains(&long_id));
        assert!(line.ends_with("line one line two !"), "{line}");
    }

    #[test]
    fn the_printer_holds_the_sample_back_then_streams() {
        let mut printer = Printer::new(columns(), "MESSAGE", None);
        for n in 0..SAMPLE_ROWS - 1 {
            assert!(
                printer
                    .push(row([&n.to_string(), "id", "-"], "m"))
                    .is_empty()
            );
        }
        let released = printer.push(row(["last", "id", "-"], "m"));
        assert_eq!(released.len(), SAMPLE_ROWS + 1, "header and the sample");
        assert!(released[0].trim_start().starts_with("POS"));
        assert_eq!(printer.push(row(["x", "id", "-"], "m")).len(), 1);
        assert!(printer.finish().is_empty());
        let mut empty = Printer::new(columns(), "MESSAGE", None);
        assert_eq!(empty.finish(), ["POS  EXTERNAL ID  WHEN  MESSAGE"]);
    }

    #[test]
    fn times_are_shortened() {
        assert_eq!(short_time("2025-01-02T03:04:05Z"), "2025-01-02 03:04:05");
    }
}
