//! What the pages show: one walk of the dead-letter queue per selection, kept as a [`Snapshot`] for
//! a while, and the one broker connection every walk and every action shares, one at a time.
//!
//! # Why a cached walk
//! Reading 100,000 dead letters takes RabbitMQ 10 to 20 seconds; a page must answer in one. So a
//! selection's walk is kept and pages are drawn from it: the groups exactly as `dlq stats` counts
//! them ([`crate::dlq::stats::count`]), the records exactly as `dlq list --json` prints them
//! ([`crate::dlq::record::json_record`]), the dead letters per hour. A snapshot older than
//! `--max-age` is read again when a page asks for it; meanwhile the page shows the old one and says
//! how old it is. An action (replay, export, purge) makes every snapshot stale at once.
//!
//! # Why a spool file
//! The records are written to an unnamed temporary file ([`tempfile::tempfile`]: created with mode
//! 0600 and unlinked at once, so it disappears with the snapshot or the process, whatever happens)
//! and only their offsets are kept in memory, about 40 bytes a dead letter. Rejected: the records in
//! memory (100,000 dead letters with their bodies are some 150 MiB, a million ten times that), and
//! a walk per page (the 10 to 20 seconds above, on every click).
//!
//! # Why one walk at a time, and never on a timer
//! A walk holds what it has read until it ends, invisible to any other reader: two walks at once
//! would each see part of the queue. So the walks and actions take turns on one connection
//! ([`Broker`]), and the console walks only when a page needs it — an idle console leaves the
//! queue alone, for the operator's own `dlq` commands. Should a walk fail half-way, the connection
//! is closed, which makes the broker give back everything it held, in place (as for a killed
//! `dlq list`).

use super::chart::{Hours, hour_of};
use super::selection::Selection;
use crate::amqp::{self, AmqpError};
use crate::config::AmqpArgs;
use crate::dlq::archive::restore;
use crate::dlq::filter::Filter;
use crate::dlq::group::{Group, Stats};
use crate::dlq::record::{Described, describe, describe_parts, json_record};
use crate::dlq::stats::{count, group_json};
use crate::dlq::walk::{Selection as WalkSelection, Walk};
use lapin::{BasicProperties, Connection};
use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Selections kept at once; the one used longest ago goes first.
const MAX_SELECTIONS: usize = 4;
/// How long a page waits for a first walk before it shows the walk's progress instead.
const FIRST_WAIT: Duration = Duration::from_secs(3);
/// How long a page waits for a fresh walk before it shows the stale one.
const STALE_WAIT: Duration = Duration::from_millis(500);
/// How long an API call waits for a walk: scripts want the data, not a progress page.
const SCRIPT_WAIT: Duration = Duration::from_secs(600);
/// Dead letters between two progress reports of a walk.
const PROGRESS_EVERY: u64 = 256;

/// Why the queue could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    /// The broker or the queue failed: the next page tries again.
    #[error(transparent)]
    Broker(#[from] AmqpError),
    /// The spool file could not be written or read: free the temporary directory's disk.
    #[error("cannot use the console's spool file (in the temporary directory): {0}")]
    Spool(#[from] std::io::Error),
    /// The console is shutting down.
    #[error("the console is shutting down")]
    Interrupted,
}

impl From<lapin::Error> for ReadError {
    fn from(error: lapin::Error) -> Self {
        ReadError::Broker(error.into())
    }
}

/// The connection every walk and action uses, one at a time: hold the lock to use it.
pub(crate) struct Broker {
    pub(crate) amqp: AmqpArgs,
    connection: Option<Connection>,
}

impl Broker {
    /// The connection, opened again when it was lost.
    pub(crate) async fn connection(&mut self) -> Result<&Connection, AmqpError> {
        if self
            .connection
            .as_ref()
            .is_some_and(|connection| !connection.status().connected())
        {
            self.connection = None;
        }
        let connection = match self.connection.take() {
            Some(connection) => connection,
            None => amqp::connect(&self.amqp, "job-closer dlq serve").await?,
        };
        Ok(self.connection.insert(connection))
    }

    /// Closes the connection after a failure: the broker gives back whatever a broken walk held.
    pub(crate) async fn reset(&mut self) {
        if let Some(connection) = self.connection.take() {
            let _ = connection.close(200, "walk failed".into()).await;
        }
    }
}

/// One dead letter of a snapshot: where its record is in the spool, and what the pages sort by.
#[derive(Clone, Copy, Debug)]
struct Entry {
    offset: u64,
    len: u32,
    position: u64,
    fingerprint: u64,
}

/// A failure group of a snapshot: the group as `dlq stats` counts it, its `stats --json` line, and
/// its dead letters.
pub(crate) struct GroupView {
    pub(crate) group: Group,
    pub(crate) json: String,
    /// Indices of its dead letters in the snapshot, in queue order.
    members: Vec<u32>,
    pub(crate) hours: Hours,
    pub(crate) untimed: u64,
}

impl GroupView {
    pub(crate) fn count(&self) -> u64 {
        self.members.len() as u64
    }
}

/// A dead letter read back from a snapshot's spool.
pub(crate) struct Letter {
    pub(crate) position: u64,
    pub(crate) fingerprint: u64,
    pub(crate) body: Vec<u8>,
    pub(crate) properties: BasicProperties,
    pub(crate) described: Described,
}

/// One walk of one selection.
pub(crate) struct Snapshot {
    /// The filter the walk applied (ages resolved when it started).
    pub(crate) filter: Filter,
    pub(crate) taken: OffsetDateTime,
    taken_at: Instant,
    generation: u64,
    /// Messages in the queue when the walk started.
    pub(crate) total: u64,
    /// The groups in `dlq stats` order: largest first, equal counts in queue order.
    pub(crate) groups: Vec<GroupView>,
    by_group: HashMap<String, usize>,
    entries: Vec<Entry>,
    by_fingerprint: HashMap<u64, u32>,
    pub(crate) hours: Hours,
    pub(crate) untimed: u64,
    spool: std::fs::File,
}

impl Snapshot {
    pub(crate) fn age(&self) -> Duration {
        self.taken_at.elapsed()
    }

    /// Dead letters the walk selected.
    pub(crate) fn selected(&self) -> u64 {
        self.entries.len() as u64
    }

    pub(crate) fn group(&self, id: &str) -> Option<&GroupView> {
        self.groups.get(*self.by_group.get(id)?)
    }

    /// The groups, the one whose newest dead letter is newest first (the overview's order).
    pub(crate) fn newest_first(&self) -> Vec<&GroupView> {
        let mut groups: Vec<&GroupView> = self.groups.iter().collect();
        groups.sort_by_cached_key(|view| {
            std::cmp::Reverse(view.group.newest.as_deref().and_then(millis))
        });
        groups
    }

    /// The `dlq list --json` records of a group's dead letters in `range` (of its members).
    pub(crate) fn records(
        &self,
        group: &GroupView,
        range: std::ops::Range<u64>,
    ) -> Result<Vec<String>, ReadError> {
        self.member_indices(group, range)
            .map(|index| self.record(index))
            .collect()
    }

    /// A group's dead letters in `range` (of its members), read back.
    pub(crate) fn letters(
        &self,
        group: &GroupView,
        range: std::ops::Range<u64>,
    ) -> Result<Vec<Letter>, ReadError> {
        self.member_indices(group, range)
            .map(|index| self.letter(index))
            .collect()
    }

    /// The dead letter a message page names by its fingerprint.
    pub(crate) fn find(&self, fingerprint: u64) -> Option<Result<Letter, ReadError>> {
        let index = *self.by_fingerprint.get(&fingerprint)?;
        Some(self.letter(index as usize))
    }

    /// The `dlq list --json` record of the dead letter a fingerprint names.
    pub(crate) fn record_of(&self, fingerprint: u64) -> Option<Result<String, ReadError>> {
        let index = *self.by_fingerprint.get(&fingerprint)?;
        Some(self.record(index as usize))
    }

    fn member_indices<'s>(
        &'s self,
        group: &'s GroupView,
        range: std::ops::Range<u64>,
    ) -> impl Iterator<Item = usize> + 's {
        let start = usize::try_from(range.start).unwrap_or(usize::MAX);
        let end = usize::try_from(range.end).unwrap_or(usize::MAX);
        group
            .members
            .get(start.min(end)..end.min(group.members.len()))
            .unwrap_or_default()
            .iter()
            .map(|index| *index as usize)
    }

    fn record(&self, index: usize) -> Result<String, ReadError> {
        let entry = self.entries[index];
        let mut bytes = vec![0u8; entry.len as usize];
        self.spool.read_exact_at(&mut bytes, entry.offset)?;
        String::from_utf8(bytes).map_err(|_| {
            ReadError::Spool(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "a spooled record is not UTF-8",
            ))
        })
    }

    fn letter(&self, index: usize) -> Result<Letter, ReadError> {
        let entry = self.entries[index];
        let record = self.record(index)?;
        // The spool holds what `json_record` wrote a moment ago; `restore` reads it back exactly.
        let restored = restore(&record).map_err(|why| {
            ReadError::Spool(std::io::Error::new(std::io::ErrorKind::InvalidData, why))
        })?;
        let described = describe_parts(&restored.body, &restored.properties);
        Ok(Letter {
            position: entry.position,
            fingerprint: entry.fingerprint,
            body: restored.body,
            properties: restored.properties,
            described,
        })
    }
}

/// A time as milliseconds since the epoch.
pub(crate) fn millis(rfc3339: &str) -> Option<i64> {
    let at = OffsetDateTime::parse(rfc3339, &Rfc3339).ok()?;
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).ok()
}

/// A dead letter's fingerprint: FNV-1a over its record without the position (which shifts as the
/// queue changes), so that a message page's link names the same dead letter from one walk to the
/// next.
pub(crate) fn fingerprint(record: &str) -> u64 {
    let rest = record.split_once(',').map_or(record, |(_, rest)| rest);
    rest.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Where a walk is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Walking {
    Reading { read: u64, total: u64 },
    Done,
}

/// What a page gets.
pub(crate) enum Looked {
    /// A snapshot: `refreshing` when it is stale and being read again; `error` when reading it
    /// again failed (the page shows the old one, and why).
    Ready {
        snapshot: Arc<Snapshot>,
        refreshing: bool,
        error: Option<String>,
    },
    /// The first walk of this selection is under way.
    Reading { read: u64, total: u64 },
    /// The first walk of this selection failed.
    Failed { error: String },
}

/// How long a request waits for a walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Patience {
    /// A page: shows progress, or the stale snapshot, rather than keep a person waiting.
    Page,
    /// A script: waits for the data.
    Script,
}

#[derive(Default)]
struct Slot {
    snapshot: Option<Arc<Snapshot>>,
    walking: Option<watch::Receiver<Walking>>,
    failed: Option<String>,
    used: Option<Instant>,
}

/// The snapshots, by selection, and the broker they are read from.
pub(crate) struct Cache {
    broker: tokio::sync::Mutex<Broker>,
    slots: Mutex<HashMap<String, Slot>>,
    base: Filter,
    max_age: Duration,
    generation: AtomicU64,
    shutdown: CancellationToken,
}

impl Cache {
    pub(crate) fn new(
        amqp: AmqpArgs,
        base: Filter,
        max_age: Duration,
        shutdown: CancellationToken,
    ) -> Cache {
        Cache {
            broker: tokio::sync::Mutex::new(Broker {
                amqp,
                connection: None,
            }),
            slots: Mutex::new(HashMap::new()),
            base,
            max_age,
            generation: AtomicU64::new(0),
            shutdown,
        }
    }

    /// The console's own filters (`dlq serve --contract …`).
    pub(crate) fn base(&self) -> &Filter {
        &self.base
    }

    /// The broker, for a walk or an action: waits for whatever uses it now.
    pub(crate) async fn broker(&self) -> tokio::sync::MutexGuard<'_, Broker> {
        self.broker.lock().await
    }

    /// Every snapshot is stale from now on (an action moved dead letters).
    pub(crate) fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    fn is_fresh(&self, snapshot: &Snapshot) -> bool {
        snapshot.generation == self.generation.load(Ordering::SeqCst)
            && snapshot.age() <= self.max_age
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The snapshot of a selection: fresh, or stale while it is read again, or the progress of its
    /// first walk. `Err` when the selection itself is wrong (a 400).
    pub(crate) async fn look(
        self: &Arc<Self>,
        selection: &Selection,
        patience: Patience,
    ) -> Result<Looked, String> {
        let key = selection.key();
        let (mut walking, had_snapshot) = {
            let mut slots = self.slots();
            self.evict(&mut slots, &key);
            let slot = slots.entry(key.clone()).or_default();
            slot.used = Some(Instant::now());
            if let Some(snapshot) = &slot.snapshot
                && self.is_fresh(snapshot)
            {
                return Ok(Looked::Ready {
                    snapshot: snapshot.clone(),
                    refreshing: false,
                    error: None,
                });
            }
            let walking = match &slot.walking {
                Some(walking) => walking.clone(),
                None => {
                    let filter = selection.filter(&self.base, OffsetDateTime::now_utc())?;
                    let (sender, receiver) = watch::channel(Walking::Reading { read: 0, total: 0 });
                    slot.walking = Some(receiver.clone());
                    tokio::spawn(self.clone().read(key.clone(), filter, sender));
                    receiver
                }
            };
            (walking, slot.snapshot.is_some())
        };
        let wait = match (patience, had_snapshot) {
            (Patience::Script, _) => SCRIPT_WAIT,
            (Patience::Page, false) => FIRST_WAIT,
            (Patience::Page, true) => STALE_WAIT,
        };
        let _ = tokio::time::timeout(wait, walking.wait_for(|w| *w == Walking::Done)).await;
        let progress = *walking.borrow();
        let slots = self.slots();
        let Some(slot) = slots.get(&key) else {
            return Ok(Looked::Reading { read: 0, total: 0 });
        };
        let walking_now = slot.walking.is_some();
        Ok(match (&slot.snapshot, &slot.failed, progress) {
            (Some(snapshot), failed, _) => Looked::Ready {
                snapshot: snapshot.clone(),
                refreshing: walking_now,
                error: failed.clone().filter(|_| !walking_now),
            },
            (None, Some(error), _) if !walking_now => Looked::Failed {
                error: error.clone(),
            },
            (None, _, Walking::Reading { read, total }) => Looked::Reading { read, total },
            (None, _, Walking::Done) => Looked::Reading { read: 0, total: 0 },
        })
    }

    /// Makes room for one more selection: drops the one used longest ago that is not being read.
    fn evict(&self, slots: &mut HashMap<String, Slot>, keep: &str) {
        if slots.len() < MAX_SELECTIONS || slots.contains_key(keep) {
            return;
        }
        if let Some(oldest) = slots
            .iter()
            .filter(|(_, slot)| slot.walking.is_none())
            .min_by_key(|(_, slot)| slot.used)
            .map(|(key, _)| key.clone())
        {
            slots.remove(&oldest);
        }
    }

    /// Reads a selection into a new snapshot (the walk task of [`Cache::look`]).
    async fn read(self: Arc<Self>, key: String, filter: Filter, progress: watch::Sender<Walking>) {
        let generation = self.generation.load(Ordering::SeqCst);
        let started = Instant::now();
        let result = {
            let mut broker = self.broker().await;
            let amqp = broker.amqp.clone();
            let result = match broker.connection().await {
                Ok(connection) => {
                    read_snapshot(connection, &amqp, filter, &self.shutdown, &progress).await
                }
                Err(error) => Err(error.into()),
            };
            if result.is_err() {
                broker.reset().await;
            }
            result
        };
        let mut slots = self.slots();
        let slot = slots.entry(key.clone()).or_default();
        slot.walking = None;
        match result {
            Ok(mut snapshot) => {
                snapshot.generation = generation;
                debug!(
                    selection = %key,
                    selected = snapshot.selected(),
                    groups = snapshot.groups.len(),
                    took_ms = started.elapsed().as_millis() as u64,
                    "Read the dead-letter queue."
                );
                slot.snapshot = Some(Arc::new(snapshot));
                slot.failed = None;
            }
            Err(error) => {
                warn!(selection = %key, %error, "Cannot read the dead-letter queue.");
                slot.failed = Some(error.to_string());
            }
        }
        drop(slots);
        progress.send_replace(Walking::Done);
    }

    /// Waits for any walk to end, then closes the connection (at shutdown).
    pub(crate) async fn close(&self) {
        let mut broker = self.broker().await;
        if let Some(connection) = broker.connection.take() {
            let _ = connection.close(200, "console stopped".into()).await;
            info!("Closed the console's broker connection.");
        }
    }
}

/// What one walk builds as it goes.
#[derive(Default)]
struct Builder {
    stats: Stats,
    entries: Vec<Entry>,
    members: HashMap<String, Vec<u32>>,
    by_fingerprint: HashMap<u64, u32>,
    hours: Hours,
    group_hours: HashMap<String, (Hours, u64)>,
    untimed: u64,
    offset: u64,
}

impl Builder {
    fn add(&mut self, position: u64, described: &Described, record: &str) {
        count(&mut self.stats, position, described);
        let index = self.entries.len() as u32;
        let fingerprint = fingerprint(record);
        let hour = described
            .dead_lettered_at
            .as_deref()
            .and_then(millis)
            .map(hour_of);
        let (group_hours, group_untimed) = self
            .group_hours
            .entry(described.group_id.clone())
            .or_default();
        match hour {
            Some(hour) => {
                *self.hours.entry(hour).or_default() += 1;
                *group_hours.entry(hour).or_default() += 1;
            }
            None => {
                self.untimed += 1;
                *group_untimed += 1;
            }
        }
        self.members
            .entry(described.group_id.clone())
            .or_default()
            .push(index);
        self.by_fingerprint.entry(fingerprint).or_insert(index);
        // A record is far below 4 GiB: the AMQP frame limit bounds a body.
        let len = u32::try_from(record.len()).unwrap_or(u32::MAX);
        self.entries.push(Entry {
            offset: self.offset,
            len,
            position,
            fingerprint,
        });
        self.offset += u64::from(len) + 1;
    }

    fn finish(mut self, filter: Filter, total: u64, spool: std::fs::File) -> Snapshot {
        let groups: Vec<GroupView> = std::mem::take(&mut self.stats)
            .into_groups()
            .into_iter()
            .map(|group| {
                let (hours, untimed) = self.group_hours.remove(&group.id).unwrap_or_default();
                GroupView {
                    json: group_json(&group),
                    members: self.members.remove(&group.id).unwrap_or_default(),
                    group,
                    hours,
                    untimed,
                }
            })
            .collect();
        let by_group = groups
            .iter()
            .enumerate()
            .map(|(index, view)| (view.group.id.clone(), index))
            .collect();
        Snapshot {
            filter,
            taken: OffsetDateTime::now_utc(),
            taken_at: Instant::now(),
            generation: 0,
            total,
            groups,
            by_group,
            entries: self.entries,
            by_fingerprint: self.by_fingerprint,
            hours: self.hours,
            untimed: self.untimed,
            spool,
        }
    }
}

/// One walk over the selection, into a snapshot; everything it held goes back when it ends.
async fn read_snapshot(
    connection: &Connection,
    amqp: &AmqpArgs,
    filter: Filter,
    shutdown: &CancellationToken,
    progress: &watch::Sender<Walking>,
) -> Result<Snapshot, ReadError> {
    let mut spool = BufWriter::new(tempfile::tempfile()?);
    // No progress bar: the console has no terminal to draw it on.
    let mut walk = Walk::start(
        connection,
        amqp,
        WalkSelection::new(&filter, None),
        shutdown,
        true,
    )
    .await?;
    let mut builder = Builder::default();
    let mut written: Result<(), ReadError> = Ok(());
    loop {
        let letter = match walk.next().await {
            Ok(Some(letter)) => letter,
            Ok(None) => break,
            Err(error) => {
                written = Err(error.into());
                break;
            }
        };
        let described = describe(&letter);
        let record = json_record(&letter, &described);
        if let Err(error) = writeln!(spool, "{record}") {
            written = Err(error.into());
            break;
        }
        builder.add(letter.position, &described, &record);
        if (builder.entries.len() as u64).is_multiple_of(PROGRESS_EVERY) {
            let (read, total) = walk.progress();
            progress.send_replace(Walking::Reading { read, total });
        }
    }
    let walked = walk.finish().await?;
    written?;
    if walked.interrupted {
        return Err(ReadError::Interrupted);
    }
    let spool = spool
        .into_inner()
        .map_err(|error| ReadError::Spool(error.into_error()))?;
    Ok(builder.finish(filter, walked.total, spool))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fingerprint_ignores_the_position_only() {
        let a = r#"{"position":1,"body":"x","group":"g"}"#;
        let moved = r#"{"position":7,"body":"x","group":"g"}"#;
        let other = r#"{"position":1,"body":"y","group":"g"}"#;
        assert_eq!(fingerprint(a), fingerprint(moved));
        assert_ne!(fingerprint(a), fingerprint(other));
        assert_eq!(millis("1970-01-01T00:00:01.5Z"), Some(1500));
        assert_eq!(millis("not a time"), None);
    }
}
