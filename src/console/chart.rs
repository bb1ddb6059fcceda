//! The chart of when things failed: dead letters per hour over the span of the queue, drawn as SVG
//! on the server, so that it shows without any script and in a page that loads nothing from
//! elsewhere.
//!
//! The walk counts dead letters per UTC hour ([`Hours`]); [`Chart::of`] lays them out as bars with
//! the empty hours in between (a gap is news too: the failures stopped). A queue spanning months
//! would make thousands of bars no one can read, so past [`MAX_BARS`] hours a bar covers 2, 3, 6,
//! 12 or 24 hours, then whole days, aligned to the clock (a day bar starts at midnight UTC); the
//! caption says which. Rejected: a chart library in the browser (script, and a download from
//! elsewhere) and a raster image (blurry on a phone, unreadable to a screen reader).
//! The bucketing is pure and tested; the drawing is a template.

use maud::{Markup, html};
use std::collections::BTreeMap;
use time::OffsetDateTime;

pub(crate) const HOUR_MS: i64 = 3_600_000;
/// Bars drawn at most (one more when the span does not start on a bar's boundary): a week of hours.
pub(crate) const MAX_BARS: i64 = 168;

/// Dead letters per UTC hour, by hour number since the epoch.
pub(crate) type Hours = BTreeMap<i64, u64>;

/// The hour (since the epoch) a time in milliseconds falls in.
pub(crate) fn hour_of(at_ms: i64) -> i64 {
    at_ms.div_euclid(HOUR_MS)
}

/// Bars over the span of some hours.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Chart {
    /// The hour the first bar starts at.
    pub(crate) first_hour: i64,
    /// Hours each bar covers.
    pub(crate) hours_per_bar: i64,
    /// Dead letters in each bar, oldest first.
    pub(crate) bars: Vec<u64>,
}

impl Chart {
    /// The bars over `hours`, or `None` when no dead letter records a time.
    pub(crate) fn of(hours: &Hours) -> Option<Chart> {
        let (&first, &last) = (hours.keys().next()?, hours.keys().next_back()?);
        let hours_per_bar = hours_per_bar(last - first + 1);
        let first_hour = first - first.rem_euclid(hours_per_bar);
        let count = usize::try_from((last - first_hour) / hours_per_bar + 1).ok()?;
        let mut bars = vec![0u64; count];
        for (hour, dead) in hours {
            let index = usize::try_from((hour - first_hour) / hours_per_bar).ok()?;
            bars[index] += dead;
        }
        Some(Chart {
            first_hour,
            hours_per_bar,
            bars,
        })
    }

    /// The most dead letters in one bar.
    pub(crate) fn peak(&self) -> u64 {
        self.bars.iter().copied().max().unwrap_or(0)
    }

    /// "per hour", "per 6 hours", "per day", "per 3 days".
    pub(crate) fn unit(&self) -> String {
        match self.hours_per_bar {
            1 => "per hour".to_owned(),
            24 => "per day".to_owned(),
            hours if hours % 24 == 0 => format!("per {} days", hours / 24),
            hours => format!("per {hours} hours"),
        }
    }
}

/// How many hours one bar covers so that `span` hours make at most [`MAX_BARS`] bars.
fn hours_per_bar(span: i64) -> i64 {
    // Spans are positive: `(span + step - 1) / step` is the number of bars, rounded up.
    let bars = |step: i64| (span + step - 1) / step;
    for step in [1, 2, 3, 6, 12, 24] {
        if bars(step) <= MAX_BARS {
            return step;
        }
    }
    24 * bars(24 * MAX_BARS)
}

/// `2026-12-01 14:00` for the start of an hour.
pub(crate) fn hour_label(hour: i64) -> String {
    OffsetDateTime::from_unix_timestamp(hour.saturating_mul(3600))
        .ok()
        .and_then(|at| {
            let format = time::macros::format_description!("[year]-[month]-[day] [hour]:00");
            at.format(format).ok()
        })
        .unwrap_or_else(|| "?".to_owned())
}

// The drawing, in the units of its viewBox; CSS scales it to the page's width.
const WIDTH: f64 = 1000.0;
const HEIGHT: f64 = 150.0;
const LEFT: f64 = 44.0;
const RIGHT: f64 = 8.0;
const TOP: f64 = 10.0;
const BOTTOM: f64 = 26.0;

/// The chart as inline SVG, with a caption; a short note when nothing records a time.
pub(crate) fn render(hours: &Hours, untimed: u64, what: &str) -> Markup {
    let Some(chart) = Chart::of(hours) else {
        return html! {
            p.note { "No " (what) " records when it was dead-lettered: nothing to chart." }
        };
    };
    let peak = chart.peak().max(1);
    let plot_width = WIDTH - LEFT - RIGHT;
    let plot_height = HEIGHT - TOP - BOTTOM;
    let slot = plot_width / chart.bars.len() as f64;
    let gap = if slot > 4.0 { 1.0 } else { 0.0 };
    let last_hour = chart.first_hour + chart.hours_per_bar * chart.bars.len() as i64;
    let caption = format!(
        "Dead letters {}, {} to {} UTC; the tallest bar is {}.",
        chart.unit(),
        hour_label(chart.first_hour),
        hour_label(last_hour),
        chart.peak()
    );
    let view_box = format!("0 0 {WIDTH} {HEIGHT}");
    html! {
        figure.chart {
            svg viewBox=(view_box) role="img" aria-label=(caption) {
                title { (caption) }
                line.axis x1=(LEFT) y1=(TOP + plot_height) x2=(WIDTH - RIGHT) y2=(TOP + plot_height) {}
                line.grid x1=(LEFT) y1=(TOP) x2=(WIDTH - RIGHT) y2=(TOP) {}
                text.tick x=(LEFT - 6.0) y=(TOP + 4.0) text-anchor="end" { (peak) }
                text.tick x=(LEFT - 6.0) y=(TOP + plot_height) text-anchor="end" { "0" }
                @for (index, count) in chart.bars.iter().enumerate() {
                    @let height = plot_height * (*count as f64) / (peak as f64);
                    @let start = chart.first_hour + chart.hours_per_bar * index as i64;
                    @if *count > 0 {
                        rect.bar
                            x=(format!("{:.2}", LEFT + slot * index as f64))
                            y=(format!("{:.2}", TOP + plot_height - height))
                            width=(format!("{:.2}", (slot - gap).max(0.5)))
                            height=(format!("{:.2}", height.max(1.0)))
                        {
                            title { (hour_label(start)) " UTC: " (count) " dead letter(s)" }
                        }
                    }
                }
                text.tick x=(LEFT) y=(HEIGHT - 6.0) text-anchor="start" { (hour_label(chart.first_hour)) }
                text.tick x=(WIDTH - RIGHT) y=(HEIGHT - 6.0) text-anchor="end" { (hour_label(last_hour)) }
            }
            figcaption {
                (caption)
                @if untimed > 0 {
                    " " (untimed) " record no time and are not charted."
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hours_become_bars_with_the_gaps_between() {
        assert_eq!(Chart::of(&Hours::new()), None);
        let at = |hour: i64, count: u64| (hour, count);
        let hours: Hours = [at(100, 3), at(103, 1)].into();
        let chart = Chart::of(&hours).unwrap();
        assert_eq!(chart.bars, [3, 0, 0, 1]);
        assert_eq!((chart.first_hour, chart.hours_per_bar), (100, 1));
        assert_eq!(chart.unit(), "per hour");
        assert_eq!(chart.peak(), 3);
        assert_eq!(hour_of(-1), -1, "before 1970 still floors");
        assert_eq!(hour_of(HOUR_MS * 5 + 1), 5);
        assert_eq!(hour_label(hour_of(1_764_597_600_000)), "2025-12-01 14:00");
    }

    #[test]
    fn long_spans_get_wider_bars_aligned_to_the_clock() {
        let week: Hours = [(0, 1), (MAX_BARS - 1, 1)].into();
        assert_eq!(Chart::of(&week).unwrap().hours_per_bar, 1);
        let longer: Hours = [(0, 1), (MAX_BARS, 1)].into();
        assert_eq!(Chart::of(&longer).unwrap().hours_per_bar, 2);
        let months: Hours = [(5, 1), (24 * 90, 2)].into();
        let chart = Chart::of(&months).unwrap();
        assert_eq!(chart.hours_per_bar, 24);
        assert_eq!(chart.first_hour, 0, "a day bar starts at midnight");
        assert_eq!(chart.unit(), "per day");
        let years: Hours = [(0, 1), (24 * 1000, 1)].into();
        assert_eq!(Chart::of(&years).unwrap().unit(), "per 6 days");
    }

    #[test]
    fn the_drawing_is_plain_svg_with_a_caption() {
        let hours: Hours = [(hour_of(1_764_597_600_000), 2)].into();
        let svg = render(&hours, 1, "dead letter").into_string();
        assert!(svg.contains("<svg viewBox=\"0 0 1000 150\""), "{svg}");
        assert!(svg.contains("class=\"bar\""), "{svg}");
        assert!(
            svg.contains("2025-12-01 14:00 UTC: 2 dead letter(s)"),
            "{svg}"
        );
        assert!(svg.contains("1 record no time"), "{svg}");
        assert!(
            !svg.contains("style="),
            "the CSP forbids inline styles: {svg}"
        );
        let nothing = render(&Hours::new(), 3, "dead letter").into_string();
        assert!(nothing.contains("nothing to chart"), "{nothing}");
    }

    proptest! {
        /// Every dead letter is in exactly one bar, and the bars stay few enough to read.
        #[test]
        fn bars_keep_every_dead_letter(
            hours in proptest::collection::btree_map(-200_000i64..200_000, 1u64..1000, 1..50)
        ) {
            let chart = Chart::of(&hours).unwrap();
            prop_assert_eq!(chart.bars.iter().sum::<u64>(), hours.values().sum::<u64>());
            prop_assert!(chart.bars.len() as i64 <= MAX_BARS + 1, "{} bars", chart.bars.len());
            prop_assert_eq!(chart.first_hour.rem_euclid(chart.hours_per_bar), 0);
            let first = *hours.keys().next().unwrap();
            prop_assert!(chart.first_hour <= first && first < chart.first_hour + chart.hours_per_bar);
        }
    }
}
