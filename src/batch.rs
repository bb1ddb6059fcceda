//! The batching rules, as pure data: which elements may share a request, and when a request is due.
//!
//! A batch holds at most `max_size` elements — a target that may change while batches are open (the
//! worker sizes fresh requests to how often LinkedIn refuses them for a job it does not name) —
//! never two with the same `externalJobPostingId` (LinkedIn
//! forbids it) and never two keys: the worker keys by contract (a contract's 403 must only touch that
//! contract's jobs) and by whether the delivery is a redelivery (likely a re-close LinkedIn answers
//! with a request-level 409, which must not cost fresh closes a split). A batch
//! is due when full, or `linger` after its first element arrived (the worker takes a due partial batch
//! only once a request slot is free, so it may grow meanwhile). The batcher knows nothing of queues
//! or HTTP: the worker feeds it and sends what comes out, and tests drive it with made-up instants.
//!
//! Ids are compared by a keyed 64-bit hash ([`IdKey`]) rather than stored as strings: a push costs no
//! allocation. Equal ids always have equal keys, so duplicates never share a batch; two different ids
//! whose keys collide (about one chance in 10^16 per pair) only go in separate batches.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::OnceLock;
use std::time::Duration;
use tokio::time::Instant;

/// An `externalJobPostingId` as the batcher tells ids apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IdKey(u64);

impl IdKey {
    pub(crate) fn of(external_id: &str) -> Self {
        // Keyed per process, so ids crafted to collide cannot split every batch.
        static KEYS: OnceLock<RandomState> = OnceLock::new();
        IdKey(KEYS.get_or_init(RandomState::new).hash_one(external_id))
    }
}

impl From<&str> for IdKey {
    fn from(external_id: &str) -> Self {
        IdKey::of(external_id)
    }
}

/// What a batch is grouped by by default: the contract's raw JSON text, or none.
pub(crate) type ContractKey = Option<String>;

/// Elements that may go out in one request.
#[derive(Debug)]
pub(crate) struct Batch<T, K = ContractKey> {
    /// What every element of the batch shares.
    pub(crate) key: K,
    pub(crate) items: Vec<T>,
    ids: Vec<IdKey>,
    first_arrival: Instant,
}

impl<T, K> Batch<T, K> {
    fn new(key: K, now: Instant, capacity: usize) -> Self {
        Batch {
            key,
            items: Vec::with_capacity(capacity),
            ids: Vec::with_capacity(capacity),
            first_arrival: now,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }
}

/// Collects elements into batches per key.
#[derive(Debug)]
pub(crate) struct Batcher<T, K = ContractKey> {
    max_size: usize,
    linger: Duration,
    /// Per contract, the open batches oldest first; a duplicate id spills into a later one.
    open: HashMap<K, Vec<Batch<T, K>>>,
}

impl<T, K: std::hash::Hash + Eq + Clone> Batcher<T, K> {
    pub(crate) fn new(max_size: usize, linger: Duration) -> Self {
        assert!(max_size > 0, "a batch holds at least one element");
        Batcher {
            max_size,
            linger,
            open: HashMap::new(),
        }
    }

    /// Adds an element; returns the batch it filled, if it filled one.
    pub(crate) fn push(
        &mut self,
        item: T,
        external_id: impl Into<IdKey>,
        contract: K,
        now: Instant,
    ) -> Option<Batch<T, K>> {
        let id = external_id.into();
        let max_size = self.max_size;
        // Looked up first: the key is only cloned for a contract's first open batch.
        if !self.open.contains_key(&contract) {
            self.open.insert(contract.clone(), Vec::new());
        }
        let batches = self.open.get_mut(&contract).expect("inserted above");
        let index = match batches.iter().position(|b| !b.ids.contains(&id)) {
            Some(index) => index,
            None => {
                batches.push(Batch::new(contract.clone(), now, max_size));
                batches.len() - 1
            }
        };
        let batch = &mut batches[index];
        batch.ids.push(id);
        batch.items.push(item);
        if batch.len() < max_size {
            return None;
        }
        let full = batches.remove(index);
        if batches.is_empty() {
            self.open.remove(&contract);
        }
        Some(full)
    }

    /// A new target size. Later pushes fill batches up to `max_size`; open batches that already hold
    /// that many are handed out. A batch is never cut here: one larger than a shrunk target goes as it
    /// is, and the sender cuts it again if it still must.
    pub(crate) fn resize(&mut self, max_size: usize) -> Vec<Batch<T, K>> {
        let max_size = max_size.max(1);
        if max_size == self.max_size {
            return Vec::new();
        }
        let shrunk = max_size < self.max_size;
        self.max_size = max_size;
        if !shrunk {
            return Vec::new();
        }
        self.take_where(|b| b.len() >= max_size)
    }

    /// When the oldest open batch is due, if any is open.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.open
            .values()
            .flatten()
            .map(|b| b.first_arrival + self.linger)
            .min()
    }

    /// Hands out every batch whose linger has run out by `now`.
    pub(crate) fn take_due(&mut self, now: Instant) -> Vec<Batch<T, K>> {
        let linger = self.linger;
        self.take_where(|b| b.first_arrival + linger <= now)
    }

    /// Hands out everything, due or not (shutdown).
    pub(crate) fn take_all(&mut self) -> Vec<Batch<T, K>> {
        self.take_where(|_| true)
    }

    fn take_where(&mut self, mut due: impl FnMut(&Batch<T, K>) -> bool) -> Vec<Batch<T, K>> {
        let mut out = Vec::new();
        self.open.retain(|_, batches| {
            let mut index = 0;
            while index < batches.len() {
                if due(&batches[index]) {
                    out.push(batches.remove(index));
                } else {
                    index += 1;
                }
            }
            !batches.is_empty()
        });
        out.sort_by_key(|b| b.first_arrival);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl<T, K> Batcher<T, K> {
        /// Elements held, not yet handed out.
        fn len(&self) -> usize {
            self.open.values().flatten().map(Batch::len).sum()
        }

        fn is_empty(&self) -> bool {
            self.len() == 0
        }
    }

    fn ids<T: Clone>(b: &Batch<T>) -> Vec<T> {
        b.items.clone()
    }

    #[test]
    fn a_full_batch_comes_out_at_once() {
        let now = Instant::now();
        let mut batcher = Batcher::new(3, Duration::from_millis(500));
        assert!(batcher.push("a", "a", None, now).is_none());
        assert!(batcher.push("b", "b", None, now).is_none());
        let full = batcher.push("c", "c", None, now).expect("full");
        assert_eq!(ids(&full), vec!["a", "b", "c"]);
        assert!(batcher.is_empty());
        assert_eq!(batcher.next_deadline(), None);
    }

    #[test]
    fn a_partial_batch_is_due_linger_after_its_first_element() {
        let start = Instant::now();
        let linger = Duration::from_millis(500);
        let mut batcher = Batcher::new(100, linger);
        batcher.push(1, "1", None, start);
        batcher.push(2, "2", None, start + Duration::from_millis(400));
        assert_eq!(batcher.next_deadline(), Some(start + linger));
        assert!(
            batcher
                .take_due(start + Duration::from_millis(499))
                .is_empty()
        );
        let due = batcher.take_due(start + linger);
        assert_eq!(due.len(), 1);
        assert_eq!(ids(&due[0]), vec![1, 2]);
        assert_eq!(batcher.len(), 0);
    }

    #[test]
    fn duplicates_never_share_a_batch() {
        let now = Instant::now();
        let mut batcher = Batcher::new(2, Duration::from_secs(1));
        batcher.push("x1", "x", None, now);
        batcher.push("x2", "x", None, now);
        batcher.push("x3", "x", None, now);
        assert_eq!(batcher.len(), 3);
        // The next distinct id fills the oldest batch that lacks it.
        let full = batcher.push("y", "y", None, now).expect("full");
        assert_eq!(ids(&full), vec!["x1", "y"]);
        let rest = batcher.take_all();
        assert_eq!(
            rest.iter().map(ids).collect::<Vec<_>>(),
            vec![vec!["x2"], vec!["x3"]]
        );
        for batch in &rest {
            assert_eq!(batch.ids.len(), batch.len());
        }
    }

    #[test]
    fn contracts_never_share_a_batch() {
        let now = Instant::now();
        let mut batcher = Batcher::new(2, Duration::from_secs(1));
        let a = Some("\"urn:li:contract:1\"".to_string());
        let b = Some("\"urn:li:contract:2\"".to_string());
        batcher.push("a1", "a1", a.clone(), now);
        batcher.push("b1", "b1", b.clone(), now);
        batcher.push("n1", "n1", None, now);
        let full = batcher
            .push("a2", "a2", a.clone(), now)
            .expect("contract 1 full");
        assert_eq!(full.key, a);
        assert_eq!(ids(&full), vec!["a1", "a2"]);
        let rest = batcher.take_all();
        assert_eq!(rest.len(), 2);
        assert!(rest.iter().all(|batch| batch.len() == 1));
        assert!(rest.iter().any(|batch| batch.key == b));
        assert!(rest.iter().any(|batch| batch.key.is_none()));
    }

    #[test]
    fn a_changing_target_size() {
        let now = Instant::now();
        let mut batcher = Batcher::new(10, Duration::from_secs(1));
        for id in ["a", "b", "c", "d"] {
            assert!(batcher.push(id, id, None, now).is_none());
        }
        batcher.push("x", "x", Some("\"c\"".into()), now);
        assert!(batcher.resize(10).is_empty(), "unchanged");
        let full = batcher.resize(3);
        assert_eq!(
            full.len(),
            1,
            "the batch of 4 is handed out whole, the one of 1 stays"
        );
        assert_eq!(ids(&full[0]), vec!["a", "b", "c", "d"]);
        batcher.push("e", "e", None, now);
        batcher.push("f", "f", None, now);
        assert_eq!(
            ids(&batcher.push("g", "g", None, now).expect("3 is full")),
            vec!["e", "f", "g"]
        );
        assert!(batcher.resize(5).is_empty(), "growing hands out nothing");
        for id in ["h", "i", "j", "k"] {
            assert!(batcher.push(id, id, None, now).is_none());
        }
        assert_eq!(
            batcher.push("l", "l", None, now).expect("5 is full").len(),
            5
        );
        assert_eq!(
            batcher.resize(0).len(),
            1,
            "at least one element: the contract's batch"
        );
    }

    #[test]
    fn take_due_leaves_younger_batches() {
        let start = Instant::now();
        let linger = Duration::from_millis(100);
        let mut batcher = Batcher::new(10, linger);
        batcher.push(1, "1", Some("\"c1\"".into()), start);
        batcher.push(
            2,
            "2",
            Some("\"c2\"".into()),
            start + Duration::from_millis(80),
        );
        let due = batcher.take_due(start + linger);
        assert_eq!(due.len(), 1);
        assert_eq!(ids(&due[0]), vec![1]);
        assert_eq!(batcher.len(), 1);
        assert_eq!(
            batcher.next_deadline(),
            Some(start + Duration::from_millis(180))
        );
    }
}
