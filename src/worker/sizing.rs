//! How big a request should be, and how to split one LinkedIn refused for a job it did not name, as
//! pure functions of the estimated culprit rate — the share of elements that turn out to be such a
//! culprit (a job LinkedIn already closed or that expired, a 422 enum, a poison element's 500).
//!
//! This is group testing. A request is a test of its group: accepted, every element is settled; refused
//! with an unnamed one-job fault, all LinkedIn says is "at least one of these". A culprit is only
//! known once it is refused alone (LinkedIn's own verdict for it: nothing is ever settled by
//! deduction, so no close is acked that LinkedIn did not answer for). Every element sent is a record
//! of LinkedIn's quota and every request a round trip, so [`cost`] is the expected elements plus
//! [`REQUEST_WEIGHT`] × the expected requests per close, with culprits independent at rate `p`:
//! - a refused group of `n` is split into `m` near-equal pieces, each sent; a piece refused is split
//!   again. [`isolation`] finds the best `m` for every `n` by dynamic programming over the expected
//!   cost (a piece of `k` is refused, given that its group was, with chance `(1 − qᵏ)/(1 − qⁿ)`,
//!   `q = 1 − p`);
//! - a fresh request of `s` costs `s + w`, plus the isolation when refused (chance `1 − qˢ`);
//!   [`Plan::fresh_size`] is the `s` up to `BATCH_SIZE` with the least cost per close.
//!
//! Dorfman's rule (a refused group goes out as single elements) and halving are both candidates of
//! the search (`m = n` and `m = 2`), so the plan is never worse than either in expectation. At a rate
//! near zero it gives `BATCH_SIZE` and the few largest pieces; at 2 % requests of 5 or 6 whose refusals
//! go out one by one; from about 15 % single elements, each its own verdict. Hwang's generalized
//! binary splitting saves tests by deducing that the last piece of a refused group holds the culprit
//! once every other piece passed; that only pays with a test per element saved, which we may not
//! take (the last piece must still be answered alone), so it is not used.
//!
//! [`Plan`] holds the answers for a grid of rates (rounded up, so a rate between two grid points gets
//! the smaller requests), computed once per row when first asked: the worker asks per delivery.
//! Rejected: halving every refused group (today's rule until issue 18): right for a rare culprit, but
//! with several culprits in a batch it resends most of the batch at every level — 5.5 elements per
//! close at 10 % already closed, where this plan spends about 1.3.

use std::sync::OnceLock;

/// What one request weighs against one element sent. Records are LinkedIn's scarcer quota (60,000 a
/// day against 100,000 requests), but each request also holds one of `MAX_IN_FLIGHT` slots for a
/// round trip, which at LinkedIn's latencies is what limits the pace. Weighed as much as an element,
/// sizes stay near 3 from 6 % to 12 % culprits and near 5 at 2 %. (At 1.25 the sizes were 6 at 2 %:
/// a few requests fewer for 0.02 more elements per close, the share of the quota the issue bounds
/// most tightly; below about 0.8, 10 % culprits go out one by one, a request per close.)
pub(crate) const REQUEST_WEIGHT: f64 = 1.0;

/// Rates below this are treated as zero (and a zero rate as this): the limit of the formulas.
const NEGLIGIBLE_RATE: f64 = 1e-12;

/// The chance that a piece of `k` elements holds a culprit, given that its group of `n` holds one.
fn refused_given_group(k: usize, n: usize, rate: f64) -> f64 {
    let rate = rate.clamp(NEGLIGIBLE_RATE, 1.0);
    if rate >= 1.0 {
        return 1.0;
    }
    let log_q = (-rate).ln_1p();
    // 1 − qᵏ, computed without cancelling when the rate is tiny.
    let refused = |size: usize| -(size as f64 * log_q).exp_m1();
    refused(k) / refused(n)
}

/// The chance that a fresh request of `s` elements holds a culprit.
fn refused_fresh(s: usize, rate: f64) -> f64 {
    let rate = rate.clamp(0.0, 1.0);
    if rate >= 1.0 {
        return 1.0;
    }
    -(s as f64 * (-rate).ln_1p()).exp_m1()
}

/// `n` elements in `pieces` near-equal pieces (the larger first).
pub(crate) fn near_equal(n: usize, pieces: usize) -> Vec<usize> {
    let pieces = pieces.clamp(1, n.max(1));
    let (base, larger) = (n / pieces, n % pieces);
    (0..pieces)
        .map(|i| base + usize::from(i < larger))
        .collect()
}

/// For every group size up to `max`, the expected cost of isolating a refused group of that size
/// and into how many pieces to split it.
#[derive(Clone, Debug)]
pub(crate) struct Isolation {
    /// `cost[n]`: expected elements + weighted requests still to come once a group of `n` was refused.
    pub(crate) cost: Vec<f64>,
    /// `pieces[n]`: how many near-equal pieces a refused group of `n` goes out in (0 and 1: none).
    pub(crate) pieces: Vec<usize>,
}

/// The best split of every refused group size up to `max`, at `rate`.
pub(crate) fn isolation(rate: f64, max: usize) -> Isolation {
    let mut cost = vec![0.0; max + 1];
    let mut pieces = vec![0; max + 1];
    for n in 2..=max {
        let mut best = (f64::INFINITY, n);
        for m in 2..=n {
            let (base, larger) = (n / m, n % m);
            let piece =
                |k: usize| k as f64 + REQUEST_WEIGHT + refused_given_group(k, n, rate) * cost[k];
            let total = larger as f64 * piece(base + 1) + (m - larger) as f64 * piece(base);
            if total < best.0 * (1.0 - 1e-12) {
                best = (total, m);
            }
        }
        cost[n] = best.0;
        pieces[n] = best.1;
    }
    Isolation { cost, pieces }
}

/// The expected cost per close of fresh requests of `s` at `rate`, with `isolation` after a refusal.
pub(crate) fn cost(s: usize, rate: f64, isolation: &Isolation) -> f64 {
    (s as f64 + REQUEST_WEIGHT + refused_fresh(s, rate) * isolation.cost[s]) / s as f64
}

/// The size of a fresh request at `rate`: the one of least expected cost per close, at most
/// `batch_size` (the largest of equal costs). [`Plan::fresh_size`] is this at its grid's rates.
#[cfg(test)]
pub(crate) fn fresh_size(rate: f64, batch_size: usize) -> usize {
    let batch_size = batch_size.max(1);
    let isolation = isolation(rate, batch_size);
    fresh_size_with(rate, batch_size, &isolation)
}

fn fresh_size_with(rate: f64, batch_size: usize, isolation: &Isolation) -> usize {
    let mut best = (f64::INFINITY, batch_size);
    for s in (1..=batch_size).rev() {
        let per_close = cost(s, rate, isolation);
        if per_close < best.0 * (1.0 - 1e-12) {
            best = (per_close, s);
        }
    }
    best.1
}

/// How a refused group of `n` goes out again at `rate`: the sizes of its pieces. [`Plan::split`] is
/// this at its grid's rates.
#[cfg(test)]
pub(crate) fn split(n: usize, rate: f64) -> Vec<usize> {
    near_equal(n, isolation(rate, n).pieces[n.max(2)].max(2))
}

/// How a fresh group of `len` cut when the target was larger goes out now that it is `target`:
/// `None` if it fits, else the sizes of near-equal pieces of at most `target`.
pub(crate) fn recut(len: usize, target: usize) -> Option<Vec<usize>> {
    let target = target.max(1);
    (len > target).then(|| near_equal(len, len.div_ceil(target)))
}

/// Rows per factor of ten of the rate.
const ROWS_PER_DECADE: f64 = 20.0;
/// The smallest rate with a row of its own; anything below (zero included) uses the first row.
const SMALLEST_RATE: f64 = 1e-6;
/// Rows from [`SMALLEST_RATE`] to a rate of 1.
const ROWS: usize = 121;

/// The answers at one rate of the grid.
#[derive(Debug)]
struct Row {
    fresh: usize,
    /// Pieces per refused group size.
    pieces: Vec<usize>,
}

/// The sizes for a grid of rates (`fresh_size` and `split`, the reference forms the tests check it
/// against), each row computed once, when first asked.
#[derive(Debug)]
pub(crate) struct Plan {
    batch_size: usize,
    rows: Vec<OnceLock<Row>>,
}

impl Plan {
    pub(crate) fn new(batch_size: usize) -> Plan {
        Plan {
            batch_size: batch_size.max(1),
            rows: (0..ROWS).map(|_| OnceLock::new()).collect(),
        }
    }

    /// The grid's rate at `index`.
    fn rate_of(index: usize) -> f64 {
        10f64
            .powf(SMALLEST_RATE.log10() + index as f64 / ROWS_PER_DECADE)
            .min(1.0)
    }

    /// The row of the least grid rate at or above `rate`.
    fn row(&self, rate: f64) -> &Row {
        let index = if rate.is_nan() || rate <= SMALLEST_RATE {
            0
        } else {
            let steps = (rate.log10() - SMALLEST_RATE.log10()) * ROWS_PER_DECADE;
            // A hair below a grid point is that point, not the next one.
            ((steps - 1e-9).ceil().max(0.0) as usize).min(ROWS - 1)
        };
        self.rows[index].get_or_init(|| {
            let rate = Plan::rate_of(index);
            let isolation = isolation(rate, self.batch_size);
            Row {
                fresh: fresh_size_with(rate, self.batch_size, &isolation),
                pieces: isolation.pieces,
            }
        })
    }

    /// The largest request: `BATCH_SIZE`.
    pub(crate) fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// The size of a fresh request at `rate`, 1 to `BATCH_SIZE`.
    pub(crate) fn fresh_size(&self, rate: f64) -> usize {
        self.row(rate).fresh
    }

    /// The sizes of the pieces a refused group of `n` goes out in at `rate` (at least two for a
    /// group of several; a group larger than `BATCH_SIZE` is halved).
    pub(crate) fn split(&self, n: usize, rate: f64) -> Vec<usize> {
        let pieces = self.row(rate).pieces.get(n).copied().unwrap_or(2);
        near_equal(n, pieces.max(2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planned(rate: f64, batch_size: usize) -> (usize, f64, f64) {
        let s = fresh_size(rate, batch_size);
        let isolation = isolation(rate, batch_size);
        let (e, r) = super::tests_support::expected(s, rate, &|n| isolation.pieces[n]);
        (s, e, r)
    }

    #[test]
    fn no_culprits_means_full_batches() {
        assert_eq!(fresh_size(0.0, 100), 100);
        assert_eq!(fresh_size(1e-7, 100), 100);
        assert_eq!(Plan::new(100).fresh_size(0.0), 100);
        assert_eq!(Plan::new(40).fresh_size(0.0), 40);
        assert_eq!(fresh_size(0.5, 100), 1);
        assert_eq!(Plan::new(100).fresh_size(1.0), 1);
    }

    /// The issue's figures for the plan itself, culprits independent at a known rate (the worker's
    /// figures add what learning the rate costs, measured end to end in `tests/it/isolation.rs`).
    #[test]
    fn expected_figures_at_the_issues_rates() {
        // The issue bounds no requests at 30 %: single elements cost one each.
        for (rate, max_elements, max_requests) in
            [(0.02, 1.2, 0.4), (0.10, 1.5, 0.7), (0.30, 2.0, 1.05)]
        {
            let (s, e, r) = planned(rate, 100);
            assert!(
                e <= max_elements - 0.05 && r <= max_requests - 0.05,
                "{rate}: size {s}, {e:.3} elements and {r:.3} requests per close"
            );
        }
    }

    #[test]
    fn a_refused_group_of_100_is_split_by_the_rate() {
        // Rare culprits: a few large pieces; common ones: many small ones; very common: singles.
        let plan = Plan::new(100);
        let rare = plan.split(100, 1e-4);
        let common = plan.split(100, 0.02);
        assert!(rare.len() < common.len(), "{rare:?} {common:?}");
        assert_eq!(plan.split(100, 0.3), vec![1; 100]);
        assert_eq!(plan.split(2, 0.0), vec![1, 1]);
        assert_eq!(
            plan.split(150, 0.1),
            vec![75, 75],
            "beyond the plan: halves"
        );
    }

    #[test]
    fn the_grid_rounds_the_rate_up() {
        let plan = Plan::new(100);
        for rate in [1e-5, 3e-4, 0.0123, 0.1, 0.47] {
            let row = plan.row(rate) as *const Row;
            let index = plan
                .rows
                .iter()
                .position(|r| r.get().is_some_and(|r| std::ptr::eq(r, row)));
            let rate_of_row = Plan::rate_of(index.expect("computed"));
            assert!(
                rate_of_row >= rate * (1.0 - 1e-6),
                "{rate} -> {rate_of_row}"
            );
            assert!(rate_of_row <= rate * 10f64.powf(1.0 / ROWS_PER_DECADE) * (1.0 + 1e-6));
        }
    }

    #[test]
    fn the_plan_is_the_pure_functions_at_its_grid_points() {
        let plan = Plan::new(100);
        for index in (0..ROWS).step_by(7) {
            let rate = Plan::rate_of(index);
            assert_eq!(plan.fresh_size(rate), fresh_size(rate, 100), "{rate}");
            for n in [2, 3, 17, 64, 100] {
                assert_eq!(plan.split(n, rate), split(n, rate), "{n} at {rate}");
            }
        }
    }

    #[test]
    fn a_fresh_group_too_big_for_the_target_is_recut() {
        assert_eq!(recut(100, 100), None);
        assert_eq!(recut(5, 6), None);
        assert_eq!(recut(100, 6), Some(near_equal(100, 17)));
        assert_eq!(recut(7, 3), Some(vec![3, 2, 2]));
        assert_eq!(recut(2, 0), Some(vec![1, 1]));
    }

    #[test]
    fn near_equal_pieces() {
        assert_eq!(near_equal(10, 3), vec![4, 3, 3]);
        assert_eq!(near_equal(3, 5), vec![1, 1, 1]);
        assert_eq!(near_equal(7, 1), vec![7]);
    }
}

#[cfg(test)]
mod properties {
    //! The sizing's properties over every rate and batch size, and a simulation of its cost against
    //! culprits drawn at random.
    use super::*;
    use proptest::prelude::*;
    use rand::{RngExt, SeedableRng};

    /// Elements and requests spent to settle `culprits` (one flag per element), sending fresh
    /// requests of `s` and splitting refused groups with `split`.
    fn play(culprits: &[bool], s: usize, split: &dyn Fn(usize) -> Vec<usize>) -> (usize, usize) {
        let (mut elements, mut requests) = (0, 0);
        let mut groups: Vec<&[bool]> = culprits.chunks(s).collect();
        while let Some(group) = groups.pop() {
            elements += group.len();
            requests += 1;
            if group.len() > 1 && group.iter().any(|&c| c) {
                let mut rest = group;
                for size in split(group.len()) {
                    let (piece, after) = rest.split_at(size);
                    groups.push(piece);
                    rest = after;
                }
            }
        }
        (elements, requests)
    }

    fn halves(n: usize) -> Vec<usize> {
        near_equal(n, 2)
    }

    proptest! {
        #[test]
        fn a_fresh_request_holds_1_to_batch_size(rate in 0.0f64..=1.0, batch_size in 1usize..=100) {
            let s = fresh_size(rate, batch_size);
            prop_assert!((1..=batch_size).contains(&s), "{}", s);
            let planned = Plan::new(batch_size).fresh_size(rate);
            prop_assert!((1..=batch_size).contains(&planned), "{}", planned);
        }

        #[test]
        fn fresh_size_never_grows_with_the_rate(a in 0.0f64..=1.0, b in 0.0f64..=1.0, batch_size in 1usize..=100) {
            let (low, high) = if a <= b { (a, b) } else { (b, a) };
            prop_assert!(fresh_size(low, batch_size) >= fresh_size(high, batch_size));
            let plan = Plan::new(batch_size);
            prop_assert!(plan.fresh_size(low) >= plan.fresh_size(high));
        }

        #[test]
        fn pieces_cover_the_group(n in 2usize..=100, rate in 0.0f64..=1.0) {
            let pieces = Plan::new(100).split(n, rate);
            prop_assert!(pieces.len() >= 2);
            prop_assert_eq!(pieces.iter().sum::<usize>(), n);
            prop_assert!(pieces.iter().all(|&k| k >= 1));
            let (max, min) = (pieces.iter().max().unwrap(), pieces.iter().min().unwrap());
            prop_assert!(max - min <= 1);
        }

        #[test]
        fn the_plan_never_expects_more_than_halving(rate in 1e-6f64..0.6, s in 2usize..=100) {
            let isolation = isolation(rate, s);
            let weighted = |(e, r): (f64, f64)| e + REQUEST_WEIGHT * r;
            let planned = weighted(super::tests_support::expected(s, rate, &|n| isolation.pieces[n]));
            let halving = weighted(super::tests_support::expected(s, rate, &|_| 2));
            prop_assert!(planned <= halving * (1.0 + 1e-9), "{} > {}", planned, halving);
        }
    }

    /// The simulated cost of 20,000 closes at each rate matches the expectation the plan is built on,
    /// and beats halving's (the old rule) wherever culprits are more than rare.
    #[test]
    fn simulated_cost_matches_the_expectation_and_beats_halving() {
        let mut random = rand::rngs::StdRng::seed_from_u64(18);
        for rate in [0.001, 0.02, 0.10, 0.30] {
            let closes = 20_000;
            let culprits: Vec<bool> = (0..closes).map(|_| random.random_bool(rate)).collect();
            let s = fresh_size(rate, 100);
            let isolation = isolation(rate, 100);
            let (elements, requests) = play(&culprits, s, &|n| near_equal(n, isolation.pieces[n]));
            let (e, r) = (
                elements as f64 / closes as f64,
                requests as f64 / closes as f64,
            );
            let (expected_e, expected_r) =
                super::tests_support::expected(s, rate, &|n| isolation.pieces[n]);
            assert!(
                (e - expected_e).abs() < 0.03 && (r - expected_r).abs() < 0.03,
                "{rate}: simulated {e:.3}/{r:.3}, expected {expected_e:.3}/{expected_r:.3}"
            );
            let (halving_elements, halving_requests) = play(&culprits, 100, &halves);
            let halving = (halving_elements + halving_requests) as f64;
            if rate >= 0.02 {
                assert!(
                    (elements + requests) as f64 <= halving * 0.6,
                    "{rate}: {elements}+{requests} against halving's {halving_elements}+{halving_requests}"
                );
            }
            println!(
                "rate {rate}: size {s}, {e:.3} elements and {r:.3} requests per close; halving from 100: {:.3} and {:.3}",
                halving_elements as f64 / closes as f64,
                halving_requests as f64 / closes as f64
            );
        }
    }
}

#[cfg(test)]
mod tests_support {
    use super::*;

    /// Expected elements and requests per close of fresh requests of `s` at `rate`, when a refused
    /// group of `n` is split into `pieces(n)` near-equal pieces.
    pub(super) fn expected(s: usize, rate: f64, pieces: &dyn Fn(usize) -> usize) -> (f64, f64) {
        let mut elements = vec![0.0; s + 1];
        let mut requests = vec![0.0; s + 1];
        for n in 2..=s {
            for k in near_equal(n, pieces(n)) {
                let again = refused_given_group(k, n, rate);
                elements[n] += k as f64 + again * elements[k];
                requests[n] += 1.0 + again * requests[k];
            }
        }
        let refused = refused_fresh(s, rate);
        (
            (s as f64 + refused * elements[s]) / s as f64,
            (1.0 + refused * requests[s]) / s as f64,
        )
    }
}
