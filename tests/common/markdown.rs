//! Markdown as GitHub renders it, as far as the docs checks need: the anchors of a page's headings,
//! the relative links it makes, and its tables. A careful hand parser rather than a Markdown crate
//! (none is in the tree): the pages use ATX headings (`## Title`), inline links and pipe tables,
//! and what must be skipped is small and exact — fenced code blocks and code spans, where a `[x](y)`
//! or a `# comment` is text, not a link or a heading. Setext headings, reference-style links
//! beyond `[label]: target` lines, and HTML anchors are not used in the docs and not read.

use std::collections::{BTreeMap, BTreeSet};

/// GitHub's anchor for a heading's text: lowercase, punctuation dropped except `-` and `_`, each
/// space a `-` (runs of spaces are not merged, as on GitHub). Inline markup is dropped first:
/// backticks, emphasis stars, and a link keeps only its text.
pub fn slug(heading: &str) -> String {
    rendered_text(heading)
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// A heading's text as shown: code spans without their backticks, `*` gone, `[text](url)` as text.
fn rendered_text(heading: &str) -> String {
    let mut text = String::new();
    let mut rest = heading;
    while let Some(open) = rest.find('[') {
        let Some((label, after)) = inline_link(&rest[open..]) else {
            text.push_str(&rest[..=open]);
            rest = &rest[open + 1..];
            continue;
        };
        text.push_str(&rest[..open]);
        text.push_str(label);
        rest = after;
    }
    text.push_str(rest);
    text.replace(['`', '*'], "")
}

/// `[label](target)` at the start of `text`: the label and what follows the link.
fn inline_link(text: &str) -> Option<(&str, &str)> {
    let close = text.find("](")?;
    let end = text[close..].find(')')? + close;
    Some((&text[1..close], &text[end + 1..]))
}

/// The lines outside fenced code blocks, numbered from 1.
pub fn prose_lines(markdown: &str) -> Vec<(usize, &str)> {
    let mut fence: Option<(char, usize)> = None;
    let mut lines = Vec::new();
    for (index, line) in markdown.lines().enumerate() {
        let trimmed = line.trim_start();
        let run = |c: char| trimmed.chars().take_while(|&x| x == c).count();
        let opening = ['`', '~']
            .into_iter()
            .map(|c| (c, run(c)))
            .find(|&(_, n)| n >= 3);
        match (fence, opening) {
            (None, Some(opened)) => fence = Some(opened),
            (Some((c, n)), Some((c2, n2)))
                if c == c2 && n2 >= n && trimmed[n2..].trim().is_empty() =>
            {
                fence = None
            }
            (None, None) => lines.push((index + 1, line)),
            (Some(_), _) => {}
        }
    }
    lines
}

/// A prose line with its code spans blanked out (a run of n backticks up to the next run of exactly
/// n), so that nothing inside them reads as a link. A backtick run without its closing run is text.
pub fn without_code_spans(line: &str) -> String {
    let chars: Vec<char> = line.chars().collect();
    let run_at = |i: usize| chars[i..].iter().take_while(|&&c| c == '`').count();
    let mut out = String::with_capacity(line.len());
    let mut i = 0;
    while i < chars.len() {
        if chars[i] != '`' {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        let n = run_at(i);
        let mut j = i + n;
        let mut close = None;
        while j < chars.len() {
            if chars[j] == '`' {
                let m = run_at(j);
                if m == n {
                    close = Some(j);
                    break;
                }
                j += m;
            } else {
                j += 1;
            }
        }
        match close {
            Some(j) => {
                out.extend(std::iter::repeat_n(' ', j + n - i));
                i = j + n;
            }
            None => {
                out.extend(std::iter::repeat_n('`', n));
                i += n;
            }
        }
    }
    out
}

/// The anchors a page's headings get, in order, the repeats numbered as GitHub numbers them:
/// `name`, `name-1`, `name-2`.
pub fn anchors(markdown: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut anchors = BTreeSet::new();
    for (_, line) in prose_lines(markdown) {
        let Some(text) = heading(line) else { continue };
        let base = slug(text);
        let count = seen.entry(base.clone()).or_insert(0);
        let anchor = if *count == 0 {
            base.clone()
        } else {
            format!("{base}-{count}")
        };
        *count += 1;
        anchors.insert(anchor);
    }
    anchors
}

/// The text of an ATX heading (`#` to `######`, then a space), without a closing run of `#`.
fn heading(line: &str) -> Option<&str> {
    let trimmed = line.trim_start();
    if line.len() - trimmed.len() > 3 {
        return None;
    }
    let level = trimmed.chars().take_while(|&c| c == '#').count();
    if !(1..=6).contains(&level) {
        return None;
    }
    let text = &trimmed[level..];
    if !text.is_empty() && !text.starts_with(' ') {
        return None;
    }
    Some(text.trim().trim_end_matches('#').trim_end())
}

/// A link a page makes: its line and its target as written (`path`, `path#anchor`, `#anchor`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub line: usize,
    pub target: String,
}

/// Every inline link and image (`[text](target)`, `![alt](target)`) and reference definition
/// (`[label]: target`) outside code.
pub fn links(markdown: &str) -> Vec<Link> {
    let mut links = Vec::new();
    for (number, line) in prose_lines(markdown) {
        let line = without_code_spans(line);
        let trimmed = line.trim_start();
        if trimmed.starts_with('[')
            && let Some(close) = trimmed.find("]: ")
        {
            let target = trimmed[close + 3..].split_whitespace().next().unwrap_or("");
            links.push(Link {
                line: number,
                target: target.to_owned(),
            });
            continue;
        }
        let mut rest = line.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let target = match after.strip_prefix('<') {
                Some(bracketed) => bracketed.split('>').next().unwrap_or(""),
                None => after
                    .split(|c: char| c == ')' || c.is_whitespace())
                    .next()
                    .unwrap_or(""),
            };
            links.push(Link {
                line: number,
                target: target.to_owned(),
            });
            rest = after;
        }
    }
    links
}

/// The pipe tables of a page, outside code: each a header row and its body rows, cells trimmed.
/// An escaped `\|` stays inside its cell, as on GitHub.
pub fn tables(markdown: &str) -> Vec<Table> {
    let mut tables = Vec::new();
    let mut block: Vec<(usize, &str)> = Vec::new();
    let lines = prose_lines(markdown);
    let mut previous = 0;
    for &(number, line) in lines.iter().chain(std::iter::once(&(usize::MAX, ""))) {
        let is_row = line.trim_start().starts_with('|');
        if is_row && (block.is_empty() || number == previous + 1) {
            block.push((number, line));
        } else {
            if block.len() >= 2 && is_separator(block[1].1) {
                tables.push(Table {
                    line: block[0].0,
                    header: cells(block[0].1),
                    rows: block[2..].iter().map(|&(n, l)| (n, cells(l))).collect(),
                });
            }
            block.clear();
            if is_row {
                block.push((number, line));
            }
        }
        previous = number;
    }
    tables
}

#[derive(Debug)]
pub struct Table {
    /// The header's line number.
    pub line: usize,
    pub header: Vec<String>,
    /// Each body row with its line number.
    pub rows: Vec<(usize, Vec<String>)>,
}

fn is_separator(line: &str) -> bool {
    cells(line)
        .iter()
        .all(|cell| !cell.is_empty() && cell.chars().all(|c| matches!(c, '-' | ':' | ' ')))
}

fn cells(line: &str) -> Vec<String> {
    let line = line.trim();
    let line = line.strip_prefix('|').unwrap_or(line);
    let line = line.strip_suffix('|').unwrap_or(line);
    let mut cells = vec![String::new()];
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                chars.next();
                cells.last_mut().expect("a cell").push('|');
            }
            '|' => cells.push(String::new()),
            c => cells.last_mut().expect("a cell").push(c),
        }
    }
    cells.iter().map(|cell| cell.trim().to_owned()).collect()
}

/// The contents of a cell's code spans: `` `A`, `B` `` gives `A` and `B`.
pub fn code_spans(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}
